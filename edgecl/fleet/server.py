"""The fleet server: Flower's server with the fleet strategy (``edgecl fleet server``).

Uses Flower's ``flwr.server.start_server`` (gRPC, bidirectional streaming). Flower 1.13+ marks
it deprecated in favour of the SuperLink/SuperNode deployment with ``flwr run``; it is kept
here because it runs the whole server in one process we control (no app bundle to build and
submit, no extra daemons), and the network side is confined to this module and
:mod:`edgecl.fleet.client`, so moving to ServerApp/ClientApp touches these two files only.

The global model lives in ``STATE/fleet`` (:class:`~edgecl.fleet.store.GlobalStore`): a
restarted server resumes after its last finished round and runs the rounds left of
``fleet.rounds``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgecl.config import Config
from edgecl.errors import ConfigError, EdgeclError
from edgecl.fleet import wire
from edgecl.fleet.store import GlobalStore

log = logging.getLogger(__name__)

GRPC_MAX_MESSAGE_BYTES = 512 * 1024 * 1024


def require_flower():
    """Import Flower or fail with one line saying how to install it.

    Flower's usage telemetry (an HTTPS call to telemetry.flower.ai at every start and stop,
    which also stalls shutdown by minutes on a device without internet) is switched off unless
    ``FLWR_TELEMETRY_ENABLED`` is set explicitly; it is read when Flower is first imported.

    Returns:
        The ``flwr`` module.

    Raises:
        EdgeclError: Flower is not installed.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        import flwr
    except ImportError:
        raise EdgeclError("fleet learning needs Flower: pip install 'edgecl[fleet]'") from None
    return flwr


CHOSEN_DEPRECATED = ("flwr.server.start_server() is deprecated",
                     "flwr.client.start_client() is deprecated")
"""Flower's deprecation banners for the API edgecl uses by choice (see the module docstring):
their advice (run ``flower-superlink`` / ``flower-supernode``) does not apply to an edgecl user,
so they are not shown."""


class FlowerLogFilter(logging.Filter):
    """Keep Flower's log readable over days: drop its blank spacer lines and the deprecation
    banners of :data:`CHOSEN_DEPRECATED`, and pass any other "DEPRECATED FEATURE" warning once
    per kind (a device that reconnects for days would print the same ten-line banner at every
    attempt)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a line that is dropped (see the class docstring)."""
        text = str(record.msg).strip()
        if not text and not record.args:
            return False
        if not text.startswith("DEPRECATED FEATURE"):
            return True
        key = str(record.args)[:200]
        if key in self.seen or any(chosen in key for chosen in CHOSEN_DEPRECATED):
            return False
        self.seen.add(key)
        return True


def quiet_flower_logs(level: int = logging.INFO) -> None:
    """Let Flower log through its own handler only (no duplicate lines through the root
    logger), filtered by :class:`FlowerLogFilter`, with its level names coloured only on a
    terminal, and keep its database migrations (alembic) out of the INFO log.

    Args:
        level: the lowest level of Flower's own lines that is shown (a device passes
            ``logging.WARNING``: its message-by-message INFO lines say nothing its own log
            does not).
    """
    import sys

    try:
        require_flower()  # first: importing Flower sets its logger's level
    except EdgeclError:
        return  # nothing to quieten; the command that needs Flower says how to install it
    from flwr.common.logger import update_console_handler

    flower = logging.getLogger("flwr")
    flower.propagate = False
    flower.setLevel(level)
    update_console_handler(colored=sys.stderr.isatty())
    if not any(isinstance(f, FlowerLogFilter) for f in flower.filters):
        flower.addFilter(FlowerLogFilter())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def fleet_dir(cfg: Config) -> Path:
    """Where the server keeps its global model and round log (``STATE/fleet``)."""
    return Path(cfg.state_dir) / "fleet"


def server_certificates(cfg: Config) -> tuple[bytes, bytes, bytes] | None:
    """The server's TLS material (CA, certificate, key), or ``None`` when none is configured.

    Raises:
        ConfigError: only some of the three paths are set, or a file is missing.
    """
    fc = cfg.fleet
    paths = {"fleet.ca_cert": fc.ca_cert, "fleet.server_cert": fc.server_cert,
             "fleet.server_key": fc.server_key}
    given = [k for k, v in paths.items() if v]
    if given and len(given) != len(paths):
        missing = sorted(set(paths) - set(given))
        raise ConfigError(f"fleet TLS needs all of fleet.ca_cert, fleet.server_cert, "
                          f"fleet.server_key; missing {', '.join(missing)}")
    wire.check_security(fc.server_address, certs=paths, token=wire.resolve_token(fc.token),
                        role="server")
    if not given:
        return None
    return tuple(Path(paths[k]).read_bytes() for k in paths)  # type: ignore[return-value]


def run_server(cfg: Config, on_round=None) -> list[dict]:
    """Run the fleet server until ``fleet.rounds`` rounds are done (resuming after a restart).

    Args:
        cfg: the server's configuration (``state_dir`` and the ``fleet`` section).
        on_round: optional callback with each finished round's record.

    Returns:
        The records of the rounds this call ran.

    Raises:
        ConfigError: off loopback without TLS and a token, incomplete TLS settings.
        EdgeclError: Flower is not installed.
    """
    certificates = server_certificates(cfg)
    require_flower()
    from flwr.server import ServerConfig, start_server

    from edgecl.fleet.strategy import make_strategy

    from edgecl.runtime.lock import RuntimeLock

    fc = cfg.fleet
    store = GlobalStore(fleet_dir(cfg))
    # one server per state directory (two would overwrite each other's global model)
    with RuntimeLock(store.root):
        loaded = store.load(with_arch=True)
        problem = store.problem() if loaded is None else None
        if problem:
            # INVARIANT: a damaged global model is never silently replaced by a fresh one (the
            # fleet's rounds would start over and its saved model be deleted at the next save)
            raise EdgeclError(f"the fleet's global model in {store.root} cannot be loaded: "
                              f"{problem}; restore it, or move {store.root} away to start the "
                              f"fleet afresh")
        done = loaded[0] if loaded else 0
        left = fc.rounds - done
        if left <= 0:
            log.info("fleet: all %d rounds already done (global model of round %d in %s)",
                     fc.rounds, done, store.root)
            return []
        before = len(store.rounds())
        strategy = make_strategy(fc, store, initial=loaded, on_round=on_round)
        log.info("fleet server on %s: rounds %d..%d, TLS %s, authentication %s",
                 fc.server_address, done + 1, fc.rounds, "on" if certificates else "off",
                 "on" if wire.resolve_token(fc.token) else "off (loopback)")
        start_server(server_address=fc.server_address,
                     config=ServerConfig(num_rounds=left, round_timeout=fc.round_timeout_s),
                     strategy=strategy, certificates=certificates,
                     grpc_max_message_length=GRPC_MAX_MESSAGE_BYTES)
        return store.rounds()[before:]
