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

import contextlib
import logging
import os
import signal
import threading
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
    gRPC's core log is kept to errors unless ``GRPC_VERBOSITY`` is set (it is read when gRPC
    is first imported, so a process that imported it earlier keeps its setting).

    Returns:
        The ``flwr`` module.

    Raises:
        EdgeclError: Flower is not installed.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    # gRPC's own INFO lines ("I1201 ... Handshake failed ...", once per connection attempt)
    # go straight to stderr; the fleet's warnings say the same in one line
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
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


FLOWER_NOISE = ("[INIT]", "[ROUND ", "[SUMMARY]", "Starting Flower server, config:",
                "Using initial global parameters provided by strategy",
                "Starting evaluation of initial global parameters",
                "Evaluation returned no results", "Run finished ", "History (",
                "Flower server terminated gracefully", "Flower ECE: gRPC server running",
                "configure_fit: ", "aggregate_fit: ", "configure_evaluate: ",
                "aggregate_evaluate: ")
"""Flower's server lines that mislead an edgecl user, dropped: its round numbers start at 1
again when a server resumes (``[ROUND 1]`` beside ``fleet round 4``, ``(2 rounds)`` beside
``rounds 10..11``), it "evaluates" a global model it has no data for, its per-round lines
("sampled 1 clients", "received 2 results and 0 failures") say in its own terms what edgecl's
lines say per device, its end-of-run summary is its internal metrics dict, and a stop by a
signal is said by ``edgecl fleet server`` itself (where the fleet stands, how to resume)."""

SUMMARY_LINE = "\t%s"
"""The format of the lines of Flower's end-of-run summary (one line of its History each)."""


class FlowerLogFilter(logging.Filter):
    """Keep Flower's log readable over days: drop its blank spacer lines, the lines of
    :data:`FLOWER_NOISE` and the deprecation banners of :data:`CHOSEN_DEPRECATED`, and pass any
    other "DEPRECATED FEATURE" warning once per kind (a device that reconnects for days would
    print the same ten-line banner at every attempt)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a line that is dropped (see the class docstring)."""
        text = str(record.msg).strip()
        if (not text and not record.args) or record.msg == SUMMARY_LINE:
            return False
        if text.startswith(FLOWER_NOISE):
            return False
        if not text.startswith("DEPRECATED FEATURE"):
            return True
        key = str(record.args)[:200]
        if key in self.seen or any(chosen in key for chosen in CHOSEN_DEPRECATED):
            return False
        self.seen.add(key)
        return True


class DisconnectFilter(logging.Filter):
    """Drop gRPC's ``Exception iterating responses`` traceback that Flower's server causes each
    time a device's connection closes while the server has nothing for it (the device was
    stopped, killed or lost its network between two rounds, and every device at the end of the
    fleet's last round): Flower's stream raises ``GrpcBridgeClosed`` instead of ending. The
    server says ``<device> disconnected`` itself (:func:`make_client_manager`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the record of a closed device connection (see the class docstring)."""
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or type(exc).__name__ != "GrpcBridgeClosed"


def quiet_flower_logs(level: int = logging.INFO) -> None:
    """Let Flower log through its own handler only (no duplicate lines through the root
    logger), filtered by :class:`FlowerLogFilter`, with its level names coloured only on a
    terminal, keep its database migrations (alembic) out of the INFO log, and drop gRPC's
    traceback for a device that disconnects (:class:`DisconnectFilter`).

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
    grpc_server = logging.getLogger("grpc._server")
    if not any(isinstance(f, DisconnectFilter) for f in grpc_server.filters):
        grpc_server.addFilter(DisconnectFilter())
    logging.getLogger("alembic").setLevel(logging.WARNING)


class ServerStopped(Exception):
    """The fleet server was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP) before its last round.

    Attributes:
        signum: the signal's number (``0`` when Flower did not say which).
        saved_round: the round of the global model kept on disk (0: none yet).
        root: where it is kept.
        last_round: the last round logged (a round without a usable update saves no model but
            counts: a restart numbers on from it).
    """

    def __init__(self, signum: int, saved_round: int, root: Path, last_round: int = 0):
        self.signum, self.saved_round, self.root = signum, saved_round, root
        self.last_round = max(last_round, saved_round)
        name = signal.Signals(signum).name if signum else "a signal"
        resume = f"a restart resumes with round {self.last_round + 1}"
        if saved_round:
            where = f"the global model of round {saved_round} is kept in {root}; {resume}"
        elif self.last_round:
            where = f"no round saved a global model yet; {resume} from the first model"
        else:
            where = "no round had finished, so a restart starts the fleet from its first round"
        super().__init__(f"fleet server stopped by {name}: {where}")


def make_client_manager(names: dict[str, str]):
    """Flower's client manager, saying when a device connects and disconnects.

    Args:
        names: connection id -> device name (filled by the strategy from the devices'
            replies; a device not heard from yet is "a device").

    Returns:
        A ``flwr.server.SimpleClientManager`` whose ``closing`` attribute, once set (the fleet's
        last round is over), turns the disconnect lines into debug lines.
    """
    from flwr.server.client_manager import SimpleClientManager

    class FleetClientManager(SimpleClientManager):
        """Logs each device's arrival and departure with the number connected."""

        closing = False

        def register(self, client) -> bool:
            """Flower's hook: a device connected (logged with the count)."""
            added = super().register(client)
            if added:
                log.info("fleet: a device connected (%d connected)", len(self))
            return added

        def unregister(self, client) -> None:
            """Flower's hook: a device disconnected."""
            known = client.cid in self.clients
            super().unregister(client)
            if known:
                (log.debug if self.closing else log.info)(
                    "fleet: %s disconnected (%d connected)", names.get(client.cid, "a device"),
                    len(self))

    return FleetClientManager()


def _note_stop_signal(stopped: list[int], on_stop=None) -> None:
    """Record which signal stops the server (SIGINT, SIGTERM) before Flower's own handler,
    installed by ``start_server``, ends the process its way (a ``SystemExit(0)`` that says
    nothing of the signal). Call from the main thread, after Flower installed its handlers.

    Args:
        stopped: receives the signal's number.
        on_stop: optional callable run first (no arguments).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        flower_handler = signal.getsignal(signum)
        if not callable(flower_handler):
            continue

        def noted(num, frame, handler=flower_handler):
            stopped.append(num)
            if on_stop is not None:
                on_stop()
            handler(num, frame)

        signal.signal(signum, noted)


@contextlib.contextmanager
def _later_stop_signals_ignored(stopped: list[int]):
    """While Flower's server runs, make a stop signal that comes while it is already stopping
    do nothing: Flower's handler puts back the handlers it found (edgecl's stop handler), so a
    second Ctrl-C or SIGTERM raised in the middle of Flower's own exit (its gRPC server's
    grace period) and replaced the line saying where the fleet stands. Flower's own deadline
    still ends a stop that hangs. Restores the handlers on leaving, unless a stop signal came:
    then the command is ending, and a later signal raised in the interpreter's shutdown (a
    traceback) or changed its exit code; only in the main thread.

    Args:
        stopped: the signals noted so far (:func:`_note_stop_signal`): non-empty once stopping.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def guard(num, frame):
        if stopped:
            log.info("received %s while stopping: already stopping", signal.Signals(num).name)
            return
        handler = before[num]
        if callable(handler):
            handler(num, frame)
        elif handler != signal.SIG_IGN:  # SIG_DFL: end as the signal would
            signal.signal(num, signal.SIG_DFL)
            os.kill(os.getpid(), num)

    for signum in before:
        if before[signum] is not None:
            signal.signal(signum, guard)
    try:
        yield
    finally:
        for signum, handler in before.items():
            if handler is not None:  # once stopping, the guard stays: the command ends now
                signal.signal(signum, guard if stopped else handler)


def make_server(strategy, client_manager, stopped: list[int]):
    """Flower's server for the fleet: notes the stop signal (:func:`_note_stop_signal`) and
    quietens the disconnect lines once the last round is over or a signal stops it.

    Args:
        strategy: the fleet strategy.
        client_manager: from :func:`make_client_manager`.
        stopped: receives the number of the signal that stops the server.

    Returns:
        A ``flwr.server.Server``.
    """
    from flwr.server import Server

    class FleetServer(Server):
        """``Server`` with the two hooks above."""

        def fit(self, num_rounds, timeout):
            """Run the rounds; a stop signal closes the client manager to new devices."""
            _note_stop_signal(stopped, on_stop=lambda: setattr(client_manager, "closing", True))
            return super().fit(num_rounds, timeout)

        def disconnect_all_clients(self, timeout) -> None:
            """Close the client manager, then disconnect every device."""
            client_manager.closing = True
            super().disconnect_all_clients(timeout)

    return FleetServer(client_manager=client_manager, strategy=strategy)


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
    from edgecl.tls import read_pem

    return tuple(read_pem(paths[k]) for k in paths)  # type: ignore[return-value]


def check_port_free(address: str) -> None:
    """Refuse a server address this machine cannot listen on, before anything starts: Flower
    said "Port in server address ... is already in use" only after the start line.

    Args:
        address: ``fleet.server_address`` (``host:port`` or ``[v6]:port``).

    Raises:
        ConfigError: the port is taken (another fleet server, another program), or the host is
            not an address of this machine.
    """
    import errno
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as gRPC binds: a port a restarted server's connections leave in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"fleet.server_address {address}: the port is already in use "
                                  f"(another fleet server, or another program): stop it, or "
                                  f"choose another port") from None
            raise ConfigError(f"fleet.server_address {address}: cannot listen there "
                              f"({exc.strerror or exc}): use an address of this machine, or "
                              f"0.0.0.0 for all of them") from None


def run_server(cfg: Config, on_round=None) -> list[dict]:
    """Run the fleet server until ``fleet.rounds`` rounds are done (resuming after a restart).

    Args:
        cfg: the server's configuration (``state_dir`` and the ``fleet`` section).
        on_round: optional callback with each finished round's record.

    Returns:
        The records of the rounds this call ran.

    Raises:
        ConfigError: off loopback without TLS and a token, incomplete TLS settings, a server
            address whose port is taken.
        EdgeclError: Flower is not installed.
        ServerStopped: a signal (Ctrl-C, SIGTERM) stopped the server before its last round.
    """
    certificates = server_certificates(cfg)
    require_flower()
    from flwr.server import ServerConfig, start_server

    from edgecl.fleet.strategy import make_strategy

    from edgecl.runtime.lock import RuntimeLock

    fc = cfg.fleet
    check_port_free(fc.server_address)  # before a new state directory is made for nothing
    store = GlobalStore(fleet_dir(cfg))
    # one server per state directory (two would overwrite each other's global model)
    with RuntimeLock(store.root, holder="another fleet server", shown=cfg.state_dir):
        problem = store.problem()  # before load(), which would log it too: one line, not two
        if problem:
            # INVARIANT: a damaged global model is never silently replaced by a fresh one (the
            # fleet's rounds would start over and its saved model be deleted at the next save)
            raise EdgeclError(f"the fleet's global model in {store.root} cannot be loaded: "
                              f"{problem}; restore it from a copy, or move {store.root} away "
                              f"to start the fleet afresh")
        loaded = store.load(with_arch=True)
        # a round with no usable update saved no model but counts as run (fleet.rounds)
        done = max(loaded[0] if loaded else 0, store.last_round())
        left = fc.rounds - done
        if left <= 0:
            log.info("fleet: all %d rounds already done (global model of round %d in %s)",
                     fc.rounds, loaded[0] if loaded else 0, store.root)
            return []
        before = len(store.rounds())
        strategy = make_strategy(fc, store, initial=loaded, on_round=on_round)
        log.info("fleet server on %s: rounds %d..%d, TLS %s, authentication %s",
                 fc.server_address, done + 1, fc.rounds, "on" if certificates else "off",
                 "on" if wire.resolve_token(fc.token) else "off (loopback)")
        stopped: list[int] = []
        server = make_server(strategy, make_client_manager(strategy.device_names), stopped)
        try:
            with _later_stop_signals_ignored(stopped):
                start_server(server_address=fc.server_address, server=server,
                             config=ServerConfig(num_rounds=left, round_timeout=fc.round_timeout_s),
                             certificates=certificates,
                             grpc_max_message_length=GRPC_MAX_MESSAGE_BYTES)
        except SystemExit as exc:
            from edgecl.stop_signals import SigtermExit

            if isinstance(exc, SigtermExit):  # a signal Flower does not handle (SIGHUP: a
                # closed SSH session): the same stop line (before: none, exit 129)
                stopped.append(int(exc.code) - 128)
            elif exc.code not in (0, None):  # Flower's only other exit: an unparsable address
                raise
            raise ServerStopped(stopped[0] if stopped else 0, strategy.saved_round, store.root,
                                store.last_round()) from None
        return store.rounds()[before:]
