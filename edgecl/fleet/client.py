"""The device's Flower client, in its own low-priority process beside the runtime.

:meth:`FleetClientStarter.start` spawns the process (multiprocessing ``spawn``, like the learner: a
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
import os
import socket
import time

from edgecl.config import Config
from edgecl.errors import ConfigError
from edgecl.fleet import wire
from edgecl.logs import basic_config
from edgecl.runtime.lock import FLEET_CLIENT_LOCK_NAME, RuntimeLock, holder_pid
from edgecl.stop_signals import force_exit_after, raise_if_stopping

log = logging.getLogger(__name__)

# A device whose server stays away retries after fleet.retry_s, doubling up to this.
MAX_RETRY_S = 600.0
# How long a connection attempt waits for the server to answer at all (TCP, TLS, HTTP/2).
PROBE_TIMEOUT_S = 20.0

FAILED_PROBE_WAIT_S = 2.0
"""How long Flower's connection keeps trying after a failed probe: short, so that its failure
comes back to the device's own loop, which says it, backs off and probes again (Flower retries
silently and for ever otherwise: a device started before its server never said it had
connected)."""

WAITING_STOP_S = 2.0
"""How long a stop may unwind while the client waits for its server (no session: nothing a
kill could damage) before the process exits at once."""


class ServerSilent(ConnectionError):
    """Nothing answered at the fleet server's address within :data:`PROBE_TIMEOUT_S`."""


def device_name(cfg: Config) -> str:
    """This device's name in the fleet (``fleet.device_name``, else the host name)."""
    return cfg.fleet.device_name or socket.gethostname()


def check_client_security(cfg: Config, refuse_dates: bool = True) -> None:
    """Refuse a device configuration that would talk to a remote server without TLS and a token.

    Args:
        cfg: the device's configuration.
        refuse_dates: refuse a CA certificate outside its validity period; the runtime passes
            False (a warning: detection never stops for the fleet, see
            :func:`edgecl.fleet.wire.check_validity`).

    Raises:
        ConfigError: one line naming what is missing.
    """
    fc = cfg.fleet
    wire.check_security(fc.server_address, certs={"fleet.ca_cert": fc.ca_cert},
                        token=wire.resolve_token(fc.token), role="device",
                        refuse_dates=refuse_dates)


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
        heard: set = set()  # the server's notices already logged (it repeats them)

        def _hear(self, config) -> None:
            """Log what the server says of this device's last update (refused, or its name
            used by two devices), once."""
            try:
                notices = wire.loads(config.get("notices"), {})
            except (ValueError, TypeError):
                return
            said = notices.get(name) if isinstance(notices, dict) else None
            if isinstance(said, str) and said not in FleetClient.heard:
                FleetClient.heard.add(said)
                log.warning("%s", said[:500])

        def get_parameters(self, config):
            """Flower's hook: the server holds the global model, the device sends none."""
            return []

        def get_properties(self, config):
            """The server's token check: sign its nonce, only for a server holding our token
            (a server that does not is told nothing it could replay)."""
            if self._token_mismatch(config):
                return {"device": name, "auth": ""}
            return self._signed(config)

        def _signed(self, config) -> dict:
            rnd = int(config.get("round", 0))
            return {"device": name, "auth": wire.sign(token, str(config.get("nonce", "")), rnd, name)}

        def _token_mismatch(self, config) -> str:
            """Why this round is not served (the tokens differ), or "" (logged once)."""
            if wire.server_is_authentic(token, config):
                return ""
            why = token_mismatch(token, config)
            if not FleetClient.token_warned:
                log.error("fleet round %s: %s; the device neither trains for nor adopts this "
                          "server's models", config.get("round"), why)
                FleetClient.token_warned = True
            return why

        def fit(self, parameters, config):
            """Flower's hook: fine-tune the global model on this device's replay memory and
            return its update (none when skipped: a token mismatch, a busy or failing device)."""
            rnd = int(config.get("round", 0))
            metrics = self._signed(config)
            mismatch = self._token_mismatch(config)
            if mismatch:
                return [], 0, {**metrics, "skipped": mismatch}
            self._hear(config)
            try:
                arrays = wire.from_wire(wire.loads(config.get("keys"), []), parameters)
                names = wire.loads(config.get("names"), [])
                log.info("fleet round %d: received the global model (%d classes, %.1f MB) to train "
                         "on", rnd, len(names), _megabytes(parameters))
                out = device.fit(arrays, names, rnd, arch=wire.loads(config.get("arch"), None))
            except Exception as exc:  # a device fault is contained, logged, counted, reported
                raise_if_stopping()  # a stop signal inside torch or OpenVINO is no fault
                FleetClient.faults += 1
                fault = _said_fault(exc, rnd, "fit failed")
                return [], 0, {**metrics, "skipped": f"failed: {fault}"[:300]}
            if out.skipped:
                log.info("fleet round %d: skipped (%s)", rnd, out.skipped)
                return [], 0, {**metrics, "skipped": out.skipped}
            keys, arrays = wire.to_wire(out.arrays, cfg.fleet.wire_dtype)
            log.info("fleet round %d: sending the update (%d training images, %.1f MB)", rnd,
                     int(out.samples), _megabytes(arrays))
            return arrays, int(out.samples), {
                **metrics, "keys": wire.dumps(keys), "names": wire.dumps(out.names),
                "held": wire.dumps(out.held), "per_class_ap": wire.dumps(out.per_class_ap),
                "forgetting": wire.dumps(out.forgetting), "steps": int(out.steps),
                "train_s": float(out.train_s)}

        def evaluate(self, parameters, config):
            """Flower's hook: gate the new global model on this device's held-out slice and
            adopt it when it passes."""
            rnd = int(config.get("round", 0))
            metrics = self._signed(config)
            mismatch = self._token_mismatch(config)
            if mismatch:
                metrics.update(status="skipped", reason=mismatch)
                return 0.0, 0, metrics
            self._hear(config)
            started = time.monotonic()
            try:
                arrays = wire.from_wire(wire.loads(config.get("keys"), []), parameters)
                out = device.adopt(arrays, wire.loads(config.get("names"), []), rnd,
                                   server=cfg.fleet.server_address,
                                   arch=wire.loads(config.get("arch"), None),
                                   averaged=wire.averages(config, name))
                _said_late(rnd, time.monotonic() - started, config.get("round_timeout_s"))
                metrics.update(status=out.status, reason=out.reason[:300], version=out.version,
                               per_class_ap=wire.dumps(out.per_class_ap))
                if out.status == "skipped":
                    log.info("fleet round %d: global model not adopted (%s)", rnd, out.reason)
                if test_yaml:
                    metrics["test_ap"] = wire.dumps(score_current(cfg, test_yaml))
            except Exception as exc:  # a device fault is contained, logged, counted, reported
                raise_if_stopping()  # a stop signal inside torch or OpenVINO is no fault
                FleetClient.faults += 1
                fault = _said_fault(exc, rnd, "adoption failed")
                metrics.update(status="failed", reason=fault[:300])
            return 0.0, 0, metrics

    return FleetClient()


def _said_fault(exc: Exception, rnd: int, what: str) -> str:
    """Log a device's fault in a fleet round and return its one-line reason for the server: a
    full disk or an unwritable state directory is one line (said every round, a traceback
    each time hid it); an EdgeclError names its cause; anything else gets its traceback.

    Args:
        exc: the fault.
        rnd: the fleet round.
        what: ``fit failed`` or ``adoption failed``.

    Returns:
        The reason as the server records it.
    """
    from edgecl.errors import EdgeclError, storage_fault

    known = storage_fault(exc, "the state directory cannot be written") or (
        exc if isinstance(exc, EdgeclError) else None)
    if known is not None:
        log.error("fleet round %d: %s: %s", rnd, what, known)
        return str(known)
    log.exception("fleet round %d: %s", rnd, what)
    return f"{type(exc).__name__}: {exc}"


def _said_late(rnd: int, took_s: float, timeout_s) -> None:
    """Warn when an adoption took longer than the server waits for its report: the server
    then records no report from this device, though it adopted (or rejected) the model."""
    if isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool) \
            and 0 < timeout_s < took_s:
        log.warning("fleet round %d: the adoption took %.0f s, longer than the server waits for "
                    "its report (fleet.round_timeout_s %g s): the server records no report from "
                    "this device; raise fleet.round_timeout_s on the server", rnd, took_s,
                    timeout_s)


def _megabytes(arrays) -> float:
    return sum(getattr(a, "nbytes", 0) for a in arrays) / 1e6


def token_mismatch(token: str, config: dict) -> str:
    """Why a round's instructions do not carry the signature this device's token expects.

    Args:
        token: the device's resolved fleet token ("" for none).
        config: the round's instructions (``server_auth``: "" when the server has no token).

    Returns:
        One line saying which side lacks a token, or that the two differ, and what to set.
    """
    if not token:
        return (f"this device has no fleet token and the server uses one (set fleet.token or "
                f"${wire.TOKEN_ENV} to the server's)")
    if not config.get("server_auth"):
        return ("this device has a fleet token and the server uses none (set the same "
                f"fleet.token or ${wire.TOKEN_ENV} on both)")
    return ("this device's fleet token does not match the server's (set the same fleet.token "
            f"or ${wire.TOKEN_ENV} on both)")


def score_current(cfg: Config, test_yaml: str) -> dict:
    """Per-class AP50-95 of the device's current model on a tasks.yaml's test splits, by name."""
    from edgecl.data.task_sources import load_task_source
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

    from edgecl.tls import read_pem

    ca = read_pem(cfg.fleet.ca_cert) if cfg.fleet.ca_cert else None
    start_client(server_address=cfg.fleet.server_address,
                 client=make_client(cfg, test_yaml).to_client(),
                 root_certificates=ca, insecure=ca is None,
                 grpc_max_message_length=GRPC_MAX_MESSAGE_BYTES, max_wait_time=max_wait_s)


def spawned_client_main(cfg: Config) -> None:
    """Entry point of the fleet client process that ``edgecl run`` spawns beside the runtime:
    :func:`client_main`, stopped by the runtime's SIGTERM as a command is by Ctrl-C, and
    leaving Ctrl-C, which reaches the whole process group, to the runtime
    (:func:`edgecl.stop_signals.unwind_once_on_stop_signals`); it ends with the runtime even
    when that is killed (``edgecl fleet join``, a command of its own, outlives its shell).

    Args:
        cfg: the device's configuration (picklable frozen dataclass).
    """
    from edgecl.runtime.learner import die_with_parent
    from edgecl.stop_signals import unwind_once_on_stop_signals

    from edgecl.runtime.lock import StateLockedError

    unwind_once_on_stop_signals(ignore_sigint=True, spawned=True)
    die_with_parent()
    try:
        client_main(cfg, refuse_dates=False)  # detection goes on: it retries until they pass
    except StateLockedError as exc:  # a fleet join started after the runtime's check: one line
        log.error("%s", exc)


def client_main(cfg: Config, test_yaml: str | None = None, once: bool = False,
                max_wait_s: float | None = None, refuse_dates: bool = True) -> None:
    """Entry point of the fleet client process.

    Args:
        cfg: the device's configuration (picklable frozen dataclass).
        test_yaml: see :func:`make_client` (simulation only).
        once: return when the server ends its session instead of reconnecting.
        max_wait_s: with ``once``, give up (raise) when no session succeeded after this many
            seconds (``None``: keep trying).
        refuse_dates: refuse a CA certificate outside its validity period (``fleet join``);
            False (the client of ``edgecl run``) warns and retries until its dates pass, as
            the runtime goes on detecting (before, that client died with a traceback and was
            restarted to die again every 30 s).

    Raises:
        ConfigError: off loopback without TLS and a token (before any connection attempt).
        EdgeclError: Flower is not installed.
        StateLockedError: another fleet client serves this state directory.
    """
    basic_config(logging.INFO, f"%(asctime)s %(levelname)s fleet {device_name(cfg)}: %(message)s")
    from edgecl.continual.finetune import apply_low_priority
    from edgecl.fleet.server import quiet_flower_logs

    quiet_flower_logs(logging.WARNING)
    apply_low_priority(cfg.learner)
    from edgecl.fleet.server import require_flower

    check_client_security(cfg, refuse_dates)  # a configuration fault is not retried
    require_flower()
    quiet_closed_channel_threads()
    with RuntimeLock(cfg.state_dir, name=FLEET_CLIENT_LOCK_NAME, holder=FLEET_CLIENT_HOLDER):
        _serve_rounds(cfg, test_yaml, once, max_wait_s)


FLEET_CLIENT_HOLDER = "another fleet client (edgecl fleet join, or edgecl run with fleet.enabled)"
"""Who holds a state directory's fleet client lock, for the message a second client gets."""


def _serve_rounds(cfg: Config, test_yaml: str | None, once: bool,
                  max_wait_s: float | None) -> None:
    """The body of :func:`client_main`: connect, serve the server's rounds, reconnect."""
    fc = cfg.fleet
    log.info("fleet device %s joining the fleet server %s (TLS %s, fleet token %s)",
             device_name(cfg), fc.server_address, "on" if fc.ca_cert else "off",
             "set" if wire.resolve_token(fc.token) else "not set")
    started = time.monotonic()
    if once:
        _wait_for_server(fc.server_address, max_wait_s or 300.0)
    failures, last_problem, ended = 0, "", False
    while True:
        connected = False
        try:
            # until a session begins, a stop is quick (nothing is held that a kill could
            # damage; a stop raised inside gRPC's failed connection hung for 20 s)
            with force_exit_after(WAITING_STOP_S):
                probe = probe_server(fc.server_address, fc.ca_cert, PROBE_TIMEOUT_S)
                if probe is None:  # a second wait in the connection would only double this one
                    raise ServerSilent(silent_server_problem(fc.server_address))
                if not probe:  # only to learn why it failed
                    connect(cfg, test_yaml=test_yaml, max_wait_s=min(
                        max_wait_s or FAILED_PROBE_WAIT_S, FAILED_PROBE_WAIT_S))
            if probe:
                log.info("connected to the fleet server %s%s; waiting for its rounds",
                         fc.server_address, f" after {failures} failed attempt(s)" if failures else "")
                # a session that fails from here on is a new fault: warned, backed off afresh
                connected, failures, last_problem, ended = True, 0, "", False
                connect(cfg, test_yaml=test_yaml, max_wait_s=max_wait_s)
        except Exception as exc:  # the connection's fault is contained: logged, retried
            raise_if_stopping()  # a stop signal inside gRPC is no connection fault
            waited = time.monotonic() - started
            if once and max_wait_s is not None and waited > max_wait_s:
                raise
            delay_s = min(fc.retry_s * 2 ** failures, MAX_RETRY_S)
            problem = connection_problem(exc, fc.server_address, tls=bool(fc.ca_cert),
                                         connected=connected)
            # the first failure warns (after a session the server ended, when it is expected, it
            # informs), a new kind of failure is said, repeats are not
            say = (log.info if ended else log.warning) if failures == 0 else (
                log.info if problem != last_problem else log.debug)
            say("cannot reach the fleet server %s: %s; retrying in %.0f s (backing off up to "
                "%.0f s)", fc.server_address, problem, delay_s, MAX_RETRY_S)
            failures, last_problem, ended = failures + 1, problem, False
            with force_exit_after(WAITING_STOP_S):
                time.sleep(delay_s)
            continue
        failures, last_problem, ended = 0, "", True
        if once:
            return
        log.info("fleet server %s ended the session; reconnecting in %.0f s",
                 fc.server_address, fc.retry_s)
        time.sleep(fc.retry_s)


def probe_server(address: str, ca_cert: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool | None:
    """Whether a gRPC channel to the server becomes ready (TCP, and the TLS handshake with
    ``ca_cert``), so that a device can say it is connected: Flower's client says nothing until
    the server's first round, which may be hours away.

    Args:
        address: the server's ``host:port``.
        ca_cert: the CA certificate file ("" for a plain channel).
        timeout_s: the longest wait.

    Returns:
        True when the channel became ready; False when it failed (the connection that follows
        says why); ``None`` when nothing answered within ``timeout_s`` (packets dropped on the
        way, or a host that accepts TCP and never speaks gRPC).
    """
    import threading

    import grpc

    from edgecl.tls import read_pem

    credentials = grpc.ssl_channel_credentials(read_pem(ca_cert)) if ca_cert else None
    channel = (grpc.secure_channel(address, credentials) if credentials is not None
               else grpc.insecure_channel(address))
    settled = threading.Event()
    states: list = []

    def watch(state) -> None:
        states.append(state)
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.SHUTDOWN):
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        if not settled.wait(timeout_s):
            return None
        return states[-1] is grpc.ChannelConnectivity.READY
    finally:
        channel.unsubscribe(watch)
        channel.close()


def quiet_closed_channel_threads() -> None:
    """Keep gRPC's connectivity-watching thread from printing a traceback when a channel it
    watches closes under it (``ValueError: Cannot monitor channel state: Channel closed!``,
    after a failed or ended connection to the server): any other thread's exception is
    shown as before."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "edgecl_closed_channel", False):
        return

    def hook(args) -> None:
        if is_closed_channel_error(args.exc_type, args.exc_value, args.exc_traceback):
            log.debug("gRPC stopped watching a closed channel")
            return
        previous(args)

    hook.edgecl_closed_channel = True
    threading.excepthook = hook


def is_closed_channel_error(exc_type, exc_value, tb) -> bool:
    """Whether a thread's exception is gRPC's watcher of a channel that was closed.

    Args:
        exc_type: the exception's type.
        exc_value: the exception.
        tb: its traceback.

    Returns:
        True for the ``ValueError`` raised inside ``grpc`` for a closed channel.
    """
    if exc_type is not ValueError or "Channel closed" not in str(exc_value):
        return False
    while tb is not None:
        if f"{os.sep}grpc{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def connection_problem(exc: BaseException, address: str = "", tls: bool | None = None,
                       connected: bool = False) -> str:
    """What a failed connection to the fleet server says, in one short line with what to
    check: the cause gRPC buries at the end of its details (``... CERTIFICATE_VERIFY_FAILED:
    certificate has expired``) in words, or gRPC's status and the last error it names; else
    the exception's first line.

    Args:
        exc: the exception the connection raised.
        address: the server's ``host:port`` (for the message).
        tls: whether the device uses TLS (``None``: unknown).
        connected: whether the connection had been established (then a closed socket is a
            lost connection, not a sign that the server wants TLS).

    Returns:
        E.g. ``"connection refused: no fleet server listens on 10.0.0.5:9092 (yet)"``.
    """
    from edgecl.errors import EdgeclError
    from edgecl.models.base import one_line

    if isinstance(exc, ServerSilent):
        return str(exc)
    if isinstance(exc, EdgeclError):  # edgecl's own line (a CA not valid yet): no class name
        return one_line(exc).split(": ", 1)[1] if str(exc).strip() else one_line(exc)
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if not (callable(code) and callable(details)):
        return one_line(exc)
    try:
        name = getattr(code(), "name", str(code()))
        text = " ".join(str(details() or "").split())
    except (AttributeError, TypeError, ValueError, RuntimeError):  # a half-made gRPC error
        return one_line(exc)
    host = address.rsplit(":", 1)[0] if ":" in address else address
    known = _known_problem(f"{name}: {text}", address, host, tls, connected)
    if known:
        return known
    last = text.split("last error: ", 1)[-1]
    last = last if len(last) <= 300 else last[:297] + "..."
    return f"{name}: {last}" if last else str(name)


def _known_problem(text: str, address: str, host: str, tls: bool | None, connected: bool) -> str:
    """The words for a connection failure gRPC describes in ``text``, or ""."""
    import re

    verify = re.search(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)", text)
    if verify and "expired" in verify.group(1):
        return ("TLS: the server's certificate has expired (renew fleet.server_cert on the "
                "server)")
    if verify:
        return (f"TLS: the server's certificate is not trusted ({verify.group(1).strip()}): "
                f"fleet.ca_cert must be the CA certificate that signed it")
    if "Hostname Verification Check failed" in text or "not in peer certificate" in text:
        return (f"TLS: the server's certificate does not name {host or 'the host connected to'} "
                f"(add it to the certificate's subjectAltName, or use an address it names)")
    if "WRONG_VERSION_NUMBER" in text:
        return ("TLS: the server does not answer TLS: a fleet server without it (set "
                "fleet.server_cert and fleet.server_key on the server), or another program on "
                "that port (check fleet.server_address)")
    if "Socket closed" in text and tls is False and not connected:
        return ("the server closed the connection at once: it stopped meanwhile, or it uses TLS "
                "(then set fleet.ca_cert)")
    if "Connection refused" in text:
        return f"connection refused: no fleet server listens on {address or 'its port'} (yet)"
    if "errors resolving" in text or "Domain name not found" in text:
        return f"the host name {host or 'of the server'} does not resolve (check fleet.server_address)"
    if any(k in text for k in ("No route to host", "Network is unreachable", "Timeout occurred",
                               "timed out")):
        return (f"{host or 'the server'} cannot be reached from this device (check "
                f"fleet.server_address and the network)")
    if "DEADLINE_EXCEEDED" in text or "Deadline Exceeded" in text:
        limit = re.search(r"Timeout of ([0-9.]+) ?sec", text)
        within = f" within {float(limit.group(1)):g} s" if limit else ""
        return (f"the server stopped waiting for this device's answer{within} (for a fit, the "
                f"server's fleet.round_timeout_s; a fit it started goes on, and the device is "
                f"busy in the next round until it is done)")
    if "Failed parsing HTTP/2" in text or "Trying to connect an http1.x server" in text:
        return (f"what listens on {address or 'that port'} is no fleet server (it does not speak "
                f"gRPC: another program's port? check fleet.server_address)")
    if "Cancelling all calls" in text:
        return "the server shut down"
    if any(k in text for k in ("Connection reset", "Stream removed", "Socket closed")):
        return "the connection was lost (the server stopped, or the network dropped)"
    return ""


def silent_server_problem(address: str, timeout_s: float = 3.0) -> str:
    """Why a server address gave no gRPC answer within :data:`PROBE_TIMEOUT_S`, in words: a
    host that takes the TCP connection runs a fleet server that cannot answer (stopped with
    SIGSTOP, overloaded) or another program on that port (before, every silent answer blamed
    a firewall); one that does not take it is a firewall dropping the packets, or no host.

    Args:
        address: the server's ``host:port``.
        timeout_s: the TCP connection's longest wait.
    """
    waited = f"no answer from {address} within {PROBE_TIMEOUT_S:.0f} s"
    if not _port_takes_connections(address, timeout_s):
        return f"{waited} (a firewall dropping its packets, or no host at that address)"
    return (f"{waited}, though its port takes connections: a fleet server that is stopped "
            f"or too busy to answer (suspended, swapping, a machine under load), or another "
            f"program listening there (check the port of fleet.server_address)")


def _port_takes_connections(address: str, timeout_s: float) -> bool:
    """Whether a TCP connection to ``host:port`` (an IPv6 host in brackets) is accepted within
    ``timeout_s``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _wait_for_server(address: str, max_wait_s: float) -> None:
    """Import the heavy modules, then wait until the server's port accepts connections (a
    simulated device started beside its server connects at the first try, without gRPC's
    connection-refused noise)."""
    import torch  # noqa: F401  (imported now, while the server starts)

    from edgecl.fleet.server import require_flower

    require_flower()
    import flwr.client  # noqa: F401

    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        if _port_takes_connections(address, 1.0):
            return
        time.sleep(0.5)


class FleetClientStarter:
    """What a device's runtime needs of the fleet client, handed to it by ``edgecl run``
    (:class:`edgecl.runtime.app.RunOptions`: the runtime does not import the fleet, which sits
    beside it and imports it)."""

    def check(self, cfg: Config) -> None:
        """Refuse, before anything loads, a device configuration the client cannot use.

        Raises:
            ConfigError: off loopback without TLS and a token, or another fleet client
                serves the state directory.
            EdgeclError: Flower is not installed.
        """
        from edgecl.fleet.server import require_flower

        check_client_security(cfg, refuse_dates=False)
        require_flower()
        holder = holder_pid(cfg.state_dir, FLEET_CLIENT_LOCK_NAME)
        if holder:  # its child would die at every start, and be restarted to die again
            raise ConfigError(f"state directory {cfg.state_dir} is served by {FLEET_CLIENT_HOLDER}"
                              f" (pid {holder}); stop it, or set fleet.enabled=false")

    def start(self, cfg: Config) -> mp.Process:
        """Spawn the client process beside the runtime. The runtime has run :meth:`check`
        before its model loaded; the child checks again (:func:`client_main`, a certificate
        outside its dates warned of, not refused: it retries until the dates pass).

        Args:
            cfg: the device's configuration.

        Returns:
            The started daemon process (``terminate()`` it at shutdown).
        """
        proc = mp.get_context("spawn").Process(target=spawned_client_main, args=(cfg,),
                                               name="edgecl-fleet", daemon=True)
        proc.start()
        log.info("fleet client started (pid %d) for %s as %s", proc.pid,
                 cfg.fleet.server_address, device_name(cfg))
        return proc
