"""The device's Flower client, in its own low-priority process beside the runtime.

:func:`start_fleet_client` spawns the process (multiprocessing ``spawn``, like the learner: a
crash or out-of-memory there never takes capture down; it dies with its parent). The process
lowers its priority with the learner's settings (``learner.nice``, ``learner.torch_threads``),
connects to ``fleet.server_address`` (TLS with ``fleet.ca_cert`` when set) and answers the
server's rounds through :class:`~edgecl.fleet.device.FleetDevice`; when the server goes away
it reconnects after ``fleet.retry_s`` (doubling while it stays away, up to
:data:`MAX_RETRY_S`). Every fit and adoption takes the device's
one-round-at-a-time lock, so it never runs beside a local learning round (it skips instead).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import socket
import time
from pathlib import Path

from edgecl.config import Config
from edgecl.fleet import wire

log = logging.getLogger(__name__)

# A device whose server stays away retries after fleet.retry_s, doubling up to this.
MAX_RETRY_S = 600.0


def device_name(cfg: Config) -> str:
    """This device's name in the fleet (``fleet.device_name``, else the host name)."""
    return cfg.fleet.device_name or socket.gethostname()


def check_client_security(cfg: Config) -> None:
    """Refuse a device configuration that would talk to a remote server without TLS and a token.

    Raises:
        ConfigError: one line naming what is missing.
    """
    fc = cfg.fleet
    wire.check_security(fc.server_address, certs={"fleet.ca_cert": fc.ca_cert},
                        token=wire.resolve_token(fc.token), role="device")


def make_client(cfg: Config, test_yaml: str | None = None):
    """Build the Flower ``NumPyClient`` of this device.

    Args:
        cfg: the device's configuration.
        test_yaml: a ``tasks.yaml`` whose test splits every adoption is also scored on, by
            class name (the simulation's common yardstick); ``None`` on a real device.

    Returns:
        The client (``flwr.client.NumPyClient``).
    """
    from flwr.client import NumPyClient

    from edgecl.fleet.device import FleetDevice

    name = device_name(cfg)
    token = wire.resolve_token(cfg.fleet.token)
    device = FleetDevice(cfg)

    class FleetClient(NumPyClient):
        """Answers fit (learn on the global model) and evaluate (adopt the new one)."""

        faults = 0
        token_warned = False

        def get_parameters(self, config):
            return []

        def _signed(self, config) -> dict:
            rnd = int(config.get("round", 0))
            return {"device": name, "auth": wire.sign(token, str(config.get("nonce", "")), rnd, name)}

        def _token_mismatch(self, config) -> str:
            """Why this round is not served (the tokens differ), or "" (logged once)."""
            if wire.server_is_authentic(token, config):
                return ""
            why = ("this device's fleet token does not match the server's (set the same "
                   f"fleet.token or ${wire.TOKEN_ENV} on both)")
            if not FleetClient.token_warned:
                log.error("fleet round %s: %s; the device neither trains for nor adopts this "
                          "server's models", config.get("round"), why)
                FleetClient.token_warned = True
            return why

        def fit(self, parameters, config):
            rnd = int(config.get("round", 0))
            metrics = self._signed(config)
            mismatch = self._token_mismatch(config)
            if mismatch:
                return [], 0, {**metrics, "skipped": mismatch}
            try:
                arrays = wire.from_wire(wire.loads(config.get("keys"), []), parameters)
                out = device.fit(arrays, wire.loads(config.get("names"), []), rnd,
                                 arch=wire.loads(config.get("arch"), None))
            except Exception as exc:  # a device fault is contained, logged, counted, reported
                FleetClient.faults += 1
                log.exception("fleet round %d: fit failed", rnd)
                return [], 0, {**metrics, "skipped": f"failed: {type(exc).__name__}: {exc}"[:300]}
            if out.skipped:
                log.info("fleet round %d: skipped (%s)", rnd, out.skipped)
                return [], 0, {**metrics, "skipped": out.skipped}
            keys, arrays = wire.to_wire(out.arrays, cfg.fleet.wire_dtype)
            return arrays, int(out.samples), {
                **metrics, "keys": wire.dumps(keys), "names": wire.dumps(out.names),
                "per_class_ap": wire.dumps(out.per_class_ap),
                "forgetting": wire.dumps(out.forgetting), "steps": int(out.steps),
                "train_s": float(out.train_s)}

        def evaluate(self, parameters, config):
            rnd = int(config.get("round", 0))
            metrics = self._signed(config)
            mismatch = self._token_mismatch(config)
            if mismatch:
                metrics.update(status="skipped", reason=mismatch)
                return 0.0, 0, metrics
            try:
                arrays = wire.from_wire(wire.loads(config.get("keys"), []), parameters)
                out = device.adopt(arrays, wire.loads(config.get("names"), []), rnd,
                                   server=cfg.fleet.server_address,
                                   arch=wire.loads(config.get("arch"), None))
                metrics.update(status=out.status, reason=out.reason[:300], version=out.version,
                               per_class_ap=wire.dumps(out.per_class_ap))
                if test_yaml:
                    metrics["test_ap"] = wire.dumps(score_current(cfg, test_yaml))
            except Exception as exc:  # a device fault is contained, logged, counted, reported
                FleetClient.faults += 1
                log.exception("fleet round %d: adoption failed", rnd)
                metrics.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300])
            return 0.0, 0, metrics

    return FleetClient()


def score_current(cfg: Config, test_yaml: str) -> dict:
    """Per-class AP50-95 of the device's current model on a tasks.yaml's test splits, by name."""
    from edgecl.data.tasks import load_task_source
    from edgecl.fleet.device import FleetDevice, score_by_name

    taskset = load_task_source(test_yaml)
    model, names = FleetDevice(cfg).current_model()
    paths = [p for t in taskset.tasks for p in t.test]
    return score_by_name(model, names, taskset.names, paths, cfg.learner.imgsz, cfg.fleet.seed)


def connect(cfg: Config, *, test_yaml: str | None = None, max_wait_s: float | None = None) -> None:
    """Connect to the server and serve its rounds until it ends the session.

    Args:
        cfg: the device's configuration.
        test_yaml: see :func:`make_client`.
        max_wait_s: give up connecting after this many seconds (``None``: keep trying).

    Raises:
        ConfigError: off loopback without TLS and a token.
        EdgeclError: Flower is not installed.
    """
    from edgecl.fleet.server import require_flower

    check_client_security(cfg)
    require_flower()
    from flwr.client import start_client

    from edgecl.fleet.server import GRPC_MAX_MESSAGE_BYTES

    ca = Path(cfg.fleet.ca_cert).read_bytes() if cfg.fleet.ca_cert else None
    start_client(server_address=cfg.fleet.server_address,
                 client=make_client(cfg, test_yaml).to_client(),
                 root_certificates=ca, insecure=ca is None,
                 grpc_max_message_length=GRPC_MAX_MESSAGE_BYTES, max_wait_time=max_wait_s)


def client_main(cfg: Config, test_yaml: str | None = None, once: bool = False,
                max_wait_s: float | None = None) -> None:
    """Entry point of the fleet client process.

    Args:
        cfg: the device's configuration (picklable frozen dataclass).
        test_yaml: see :func:`make_client` (simulation only).
        once: return when the server ends its session instead of reconnecting.
        max_wait_s: with ``once``, give up (raise) when no session succeeded after this many
            seconds (``None``: keep trying).

    Raises:
        ConfigError: off loopback without TLS and a token (before any connection attempt).
        EdgeclError: Flower is not installed.
    """
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s fleet {device_name(cfg)}: %(message)s")
    from edgecl.continual.finetune import apply_low_priority
    from edgecl.fleet.server import quiet_flower_logs
    from edgecl.runtime.learner import die_with_parent

    quiet_flower_logs(logging.WARNING)
    die_with_parent()
    apply_low_priority(cfg.learner)
    from edgecl.fleet.server import require_flower

    check_client_security(cfg)  # a configuration fault is not retried: it fails at once
    require_flower()
    started = time.monotonic()
    if once:
        _wait_for_server(cfg.fleet.server_address, max_wait_s or 300.0)
    failures = 0
    while True:
        try:
            connect(cfg, test_yaml=test_yaml, max_wait_s=max_wait_s)
        except Exception as exc:  # the connection's fault is contained: logged, retried
            waited = time.monotonic() - started
            if once and max_wait_s is not None and waited > max_wait_s:
                raise
            delay_s = min(cfg.fleet.retry_s * 2 ** failures, MAX_RETRY_S)
            (log.warning if failures == 0 else log.debug)(
                "fleet server %s unreachable or gone (%s); retrying in %.0f s (backing off up "
                "to %.0f s)", cfg.fleet.server_address, connection_problem(exc), delay_s,
                MAX_RETRY_S)
            failures += 1
            time.sleep(delay_s)
            continue
        failures = 0
        if once:
            return
        log.info("fleet server %s ended the session; reconnecting in %.0f s",
                 cfg.fleet.server_address, cfg.fleet.retry_s)
        time.sleep(cfg.fleet.retry_s)


def connection_problem(exc: BaseException) -> str:
    """What a failed connection to the fleet server says, in one short line: gRPC's status
    and details (``UNAVAILABLE: failed to connect to all addresses ...``) where the error
    carries them, else the exception's first line; its class name alone
    (``_MultiThreadedRendezvous``) told a user nothing.

    Args:
        exc: the exception the connection raised.

    Returns:
        E.g. ``"UNAVAILABLE: connection refused"``.
    """
    from edgecl.models.base import one_line

    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            name = getattr(code(), "name", str(code()))
            text = str(details() or "").strip().splitlines()
        except (AttributeError, TypeError, ValueError, RuntimeError):  # a half-made gRPC error
            return one_line(exc)
        first = text[0][:200] if text else ""
        return f"{name}: {first}" if first else str(name)
    return one_line(exc)


def _wait_for_server(address: str, max_wait_s: float) -> None:
    """Import the heavy modules, then wait until the server's port accepts connections (a
    simulated device started beside its server connects at the first try, without gRPC's
    connection-refused noise)."""
    import torch  # noqa: F401  (imported now, while the server starts)

    from edgecl.fleet.server import require_flower

    require_flower()
    import flwr.client  # noqa: F401

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError:
            time.sleep(0.5)


def start_fleet_client(cfg: Config) -> mp.Process:
    """Spawn the fleet client process beside the runtime (call when ``fleet.enabled``).

    The configuration is checked here first, so a device that would talk to a remote server
    without TLS and a token fails at start with one line, not later in the child.

    Args:
        cfg: the device's configuration.

    Returns:
        The started daemon process (``terminate()`` it at shutdown).

    Raises:
        ConfigError: off loopback without TLS and a token.
        EdgeclError: Flower is not installed.
    """
    from edgecl.fleet.server import require_flower

    check_client_security(cfg)
    require_flower()
    proc = mp.get_context("spawn").Process(target=client_main, args=(cfg,), name="edgecl-fleet",
                                           daemon=True)
    proc.start()
    log.info("fleet client started (pid %d) for %s as %s", proc.pid, cfg.fleet.server_address,
             device_name(cfg))
    return proc
