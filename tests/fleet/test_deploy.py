"""What a team deploying a fleet sees: the server's and the devices' lines when devices come and
go or a side is stopped, connection failures in words, certificates checked at start."""

import datetime
import logging
import os
import signal
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters  # noqa: E402

from edgecl.config import FleetConfig  # noqa: E402
from edgecl.errors import ConfigError  # noqa: E402
from edgecl.fleet import wire  # noqa: E402
from edgecl.fleet.store import GlobalStore  # noqa: E402
from edgecl.fleet.strategy import make_strategy  # noqa: E402

SHARED = "model.0.conv.weight"
ROWS = "model.23.cv3.0.2.bias"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture()
def flower_filters():
    """Undo the filters and level that ``quiet_flower_logs`` sets (process-wide loggers)."""
    loggers = [logging.getLogger(n) for n in ("flwr", "grpc._server")]
    saved = [(lg, list(lg.filters), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, filters, level, propagate in saved:
        lg.filters[:] = filters
        lg.setLevel(level)
        lg.propagate = propagate


def test_a_device_that_disconnects_leaves_no_grpc_traceback_on_the_server(flower_filters):
    """Before: each device stopped, killed or cut off between two rounds (and every device at the
    end of the last round) printed a 12-line 'Exception iterating responses' traceback
    ending in GrpcBridgeClosed."""
    from flwr.server.superlink.fleet.grpc_bidi.grpc_bridge import GrpcBridgeClosed

    from edgecl.fleet.server import quiet_flower_logs

    quiet_flower_logs()
    grpc_log = logging.getLogger("grpc._server")
    seen = Collect()
    grpc_log.addHandler(seen)
    try:
        for exc in (GrpcBridgeClosed(), RuntimeError("a real fault")):
            try:
                raise exc
            except Exception:
                grpc_log.exception("Exception iterating responses: %s", exc)
    finally:
        grpc_log.removeHandler(seen)
    assert [r.exc_info[0].__name__ for r in seen.records] == ["RuntimeError"]


def test_flowers_misleading_server_lines_are_dropped(flower_filters):
    """Before: '[ROUND 1]' beside 'fleet round 4' on a resumed server, an 'evaluation' of a
    model it has no data for, its metrics dict as a summary, and 'Flower server terminated
    gracefully.' for a Ctrl-C."""
    from flwr.common.logger import log

    from edgecl.fleet.server import quiet_flower_logs

    quiet_flower_logs()
    flower = logging.getLogger("flwr")
    seen = Collect()
    flower.addHandler(seen)
    try:
        log(logging.INFO, "[ROUND %s]", 1)
        log(logging.INFO, "Starting evaluation of initial global parameters")
        log(logging.INFO, "Evaluation returned no results (`None`)")
        log(logging.INFO, "[SUMMARY]")
        log(logging.INFO, "Run finished %s round(s) in %.2fs", 2, 3.0)
        log(logging.INFO, "\t%s", "History (metrics, distributed, fit):")
        log(logging.INFO, "\t%s", "{'devices': [(1, 2)]}")
        log(logging.INFO, "Flower server terminated gracefully.")
        # edgecl's own lines say these per device ("fleet server on ...: rounds 10..11, TLS
        # on"; "update drone1 kept"): before, "(2 rounds)" stood beside "rounds 10..11"
        log(logging.INFO, "Flower ECE: gRPC server running (%s rounds), SSL is %s", 2, "enabled")
        log(logging.INFO, "aggregate_fit: received %s results and %s failures", 2, 0)
        log(logging.INFO, "configure_fit: strategy sampled %s clients (out of %s)", 1, 1)
        log(logging.WARNING, "a warning of Flower's own")
    finally:
        flower.removeHandler(seen)
    assert [r.getMessage() for r in seen.records] == ["a warning of Flower's own"]


class Manager:
    """Flower's client manager with a fixed set of connections (``c0``, ``c1``, ...)."""

    def __init__(self, n):
        self.clients = {f"c{i}": SimpleNamespace(cid=f"c{i}") for i in range(n)}

    def num_available(self):
        return len(self.clients)

    def wait_for(self, num_clients, timeout=86400):
        return True

    def sample(self, num_clients, min_num_clients=None, criterion=None):
        chosen = [c for c in self.clients.values() if criterion is None or criterion.select(c)]
        return chosen[:num_clients]

    def all(self):
        return dict(self.clients)


def _reply(config, cid, device, samples=10):
    keys, arrays = wire.to_wire({SHARED: np.ones(2), ROWS: np.array([1.0])}, "float16")
    metrics = {"device": device, "auth": "", "keys": wire.dumps(keys),
               "names": wire.dumps(["car"]), "forgetting": "{}", "per_class_ap": "{}"}
    return SimpleNamespace(cid=cid), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays),
                                            samples, metrics)


def test_a_new_fleet_class_one_slip_from_a_known_one_is_named(caplog):
    """Before: 'Persons' taught by one robot became a second fleet class beside 'Person', said
    only as 'classes new to the fleet'."""
    from edgecl.fleet.strategy import _note_close_names

    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.strategy"):
        _note_close_names(3, ["Persons", "people", "Bicycle"], ["Person", "Car"],
                          {"Persons": ["robotC"], "people": ["robotC"], "Bicycle": ["robotC"]})
    assert caplog.messages == [
        "fleet round 3: the new fleet class 'Persons' is close to 'Person' (taught by robotC): "
        "if they mean one class, run 'edgecl classes merge Persons Person' on robotC: its "
        "samples of it then teach 'Person'",
        "fleet round 3: the new fleet class 'people' is close to 'Person' (taught by robotC): "
        "if they mean one class, run 'edgecl classes merge people Person' on robotC: its "
        "samples of it then teach 'Person'"]  # a plural the letters alone did not match


def test_an_update_that_outweighs_the_fleet_is_named(tmp_path, caplog, monkeypatch):
    """Before: a device reporting 1,000,000 samples (15 stored) took all the weight: 'update
    robotA kept ... (weight 0.00)', 'update mallory kept ... (weight 1.00)', nothing more."""
    from edgecl.commands.fleet import round_summary

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    initial = (0, {SHARED: np.zeros(2, np.float32), ROWS: np.zeros(0, np.float32)}, [])
    strategy = make_strategy(FleetConfig(min_devices=1), GlobalStore(tmp_path), initial=initial)
    manager = Manager(2)
    (_, ins), _ = strategy.configure_fit(1, None, manager)
    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.strategy"):
        strategy.aggregate_fit(1, [_reply(ins.config, "c0", "robotA", 15),
                                   _reply(ins.config, "c1", "mallory", 1_000_000)], [])
    assert ("fleet round 1: mallory's update holds 100 % of the average (FedAvg weighs by the "
            "samples each device reports: mallory reports 1000000, robotA 15)") in caplog.text
    assert strategy.record["dominant"]["device"] == "mallory"
    assert round_summary(strategy.record).endswith("; mallory holds 100 % of the average's weight")
    caplog.clear()
    (_, ins), _ = strategy.configure_fit(2, None, manager)
    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.strategy"):  # 15 and 100: 87 %
        strategy.aggregate_fit(2, [_reply(ins.config, "c0", "robotA", 15),
                                   _reply(ins.config, "c1", "mallory", 100)], [])
    assert "of the average" not in caplog.text and "dominant" not in strategy.record


def test_a_device_that_drops_out_of_a_round_is_named_with_why(tmp_path, caplog, monkeypatch):
    """Before: 'a device dropped out of the round (GrpcBridgeClosed: )': neither which device
    nor why in words."""
    from flwr.server.superlink.fleet.grpc_bidi.grpc_bridge import GrpcBridgeClosed

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    initial = (0, {SHARED: np.zeros(2, np.float32), ROWS: np.zeros(0, np.float32)}, [])
    strategy = make_strategy(FleetConfig(min_devices=1), GlobalStore(tmp_path), initial=initial)
    manager = Manager(2)
    (_, ins), _ = strategy.configure_fit(1, None, manager)
    strategy.aggregate_fit(1, [_reply(ins.config, "c0", "drone1"),
                               _reply(ins.config, "c1", "drone2")], [])
    assert strategy.device_names == {"c0": "drone1", "c1": "drone2"}
    (_, ins), _ = strategy.configure_fit(2, None, manager)
    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.strategy"):
        strategy.aggregate_fit(2, [_reply(ins.config, "c0", "drone1")], [GrpcBridgeClosed()])
    assert ("fleet round 2: drone2 dropped out of the round (its connection closed: it stopped, "
            "crashed or lost its network)") in caplog.text
    assert strategy.record["devices"]["drone2"]["update"] == "dropped out"
    strategy.asked_s -= 3600  # a reply missing past fleet.round_timeout_s ends the same way
    assert strategy._dropped_out([], [GrpcBridgeClosed()])[0][1] == (
        "no reply within fleet.round_timeout_s (1800 s)")


def test_an_adoption_report_past_the_round_timeout_is_no_report_and_the_device_says_so(
        tmp_path, caplog, monkeypatch):
    """Before: a device whose adoption (an export, an INT8 build) outlasted
    fleet.round_timeout_s was recorded as 'dropped out' though it adopted the model, and the
    device said only that it could not reach the server."""
    from flwr.server.superlink.fleet.grpc_bidi.grpc_bridge import GrpcBridgeClosed

    from edgecl.fleet import client

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    initial = (1, {SHARED: np.zeros(2, np.float32), ROWS: np.zeros(1, np.float32)}, ["car"])
    store = GlobalStore(tmp_path)
    strategy = make_strategy(FleetConfig(min_devices=1, round_timeout_s=60), store,
                             initial=initial)
    manager = Manager(1)
    (_, ins), = strategy.configure_fit(2, None, manager)
    strategy.aggregate_fit(2, [_reply(ins.config, "c0", "drone1")], [])
    (_, ask), = strategy.configure_evaluate(2, None, manager)
    assert ask.config["round_timeout_s"] == 60.0
    strategy.asked_s -= 61
    with caplog.at_level(logging.WARNING):
        strategy.aggregate_evaluate(2, [], [GrpcBridgeClosed()])
        client._said_late(2, 75.0, ask.config["round_timeout_s"])
        client._said_late(2, 30.0, ask.config["round_timeout_s"])  # in time: nothing said
    assert store.rounds()[-1]["adoption"]["drone1"] == {
        "status": "no report", "reason": "no reply within fleet.round_timeout_s (60 s); it may "
                                         "have adopted the model after that (a longer "
                                         "fleet.round_timeout_s waits for its report)"}
    assert caplog.messages[-1] == (
        "fleet round 2: the adoption took 75 s, longer than the server waits for its report "
        "(fleet.round_timeout_s 60 s): the server records no report from this device; raise "
        "fleet.round_timeout_s on the server")
    assert sum("the adoption took" in m for m in caplog.messages) == 1


def test_the_server_says_when_a_device_connects_and_disconnects(caplog):
    from edgecl.fleet.server import make_client_manager

    manager = make_client_manager({"c1": "drone1"})
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.server"):
        manager.register(SimpleNamespace(cid="c1"))
        manager.register(SimpleNamespace(cid="c2"))
        manager.unregister(SimpleNamespace(cid="c1"))
        manager.closing = True  # the last round is over: every device leaves, said at debug
        manager.unregister(SimpleNamespace(cid="c2"))
    assert caplog.messages == ["fleet: a device connected (1 connected)",
                               "fleet: a device connected (2 connected)",
                               "fleet: drone1 disconnected (1 connected)"]


def _serve_until_stopped(run_edgecl, state, install_handlers=None) -> tuple[int, str]:
    """Run ``edgecl fleet server`` on a free port (Flower's ``start_server`` replaced by the
    test), restoring the signal handlers after; ``install_handlers``: called first (the
    command line's own). Returns the exit code and stderr."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        if install_handlers is not None:
            install_handlers()
        with socket.socket() as probe:  # a free port (the server checks it before anything)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        code, _, err = run_edgecl(["fleet", "server", "--state-dir", state, "fleet.rounds=5",
                                   f"fleet.server_address=127.0.0.1:{port}"])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    return code, err


def test_a_sighup_to_the_server_says_where_the_fleet_stands(tmp_path, monkeypatch, run_edgecl):
    """A closed SSH session: Flower handles no SIGHUP, edgecl's stop raised past the server's
    stop line (before: exit 129 and no word of which round a restart resumes from)."""
    import flwr.server

    from edgecl import stop_signals
    from edgecl.stop_signals import unwind_once_on_stop_signals

    monkeypatch.setattr(stop_signals, "FORCE_EXIT_AFTER_S", 1e6)  # never ends the test run
    # the stop this test makes is undone after it: later tests of this process see none
    monkeypatch.setattr(stop_signals, "_stop_signum", None)

    def flowers_start_server(*, server=None, **_):
        monkeypatch.setattr(flwr.server.Server, "fit",
                            lambda self, n, t: os.kill(os.getpid(), signal.SIGHUP))
        server.fit(2, None)

    monkeypatch.setattr(flwr.server, "start_server", flowers_start_server)
    code, err = _serve_until_stopped(run_edgecl, tmp_path / "server", unwind_once_on_stop_signals)
    assert code == 129
    assert err.strip().splitlines()[-1] == ("fleet server stopped by SIGHUP: no round had "
                                            "finished, so a restart starts the fleet from its "
                                            "first round")


def test_ctrl_c_on_the_server_says_where_the_fleet_stands(tmp_path, monkeypatch, run_edgecl):
    """Before: Flower's own handler ended the server with 'Flower server terminated
    gracefully.' and exit code 0, saying nothing of the rounds kept or how to resume."""
    import flwr.server

    from edgecl.fleet.server import fleet_dir
    from edgecl.config import load_config

    state = tmp_path / "server"
    cfg = load_config(None, [f"state_dir={state}"])
    GlobalStore(fleet_dir(cfg)).save(3, {SHARED: np.zeros(2, np.float32)}, ["car"])

    def flowers_start_server(*, server=None, strategy=None, **_):
        from flwr.server.client_manager import SimpleClientManager

        def graceful(signum, frame):  # what Flower's handler does: log, then exit 0
            raise SystemExit(0)

        if server is None:
            server = flwr.server.Server(client_manager=SimpleClientManager(), strategy=strategy)

        signal.signal(signal.SIGINT, graceful)
        monkeypatch.setattr(flwr.server.Server, "fit",
                            lambda self, n, t: os.kill(os.getpid(), signal.SIGINT))
        server.fit(2, None)

    monkeypatch.setattr(flwr.server, "start_server", flowers_start_server)
    code, err = _serve_until_stopped(run_edgecl, state)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        f"fleet server stopped by SIGINT: the global model of round 3 is kept in "
        f"{state / 'fleet'}; a restart resumes with round 4")


def test_a_second_sigterm_while_the_server_stops_is_ignored(tmp_path, monkeypatch, run_edgecl):
    """Before: Flower's handler put edgecl's stop handler back, and a second SIGTERM during
    Flower's own exit (its gRPC grace period) raised there: the server ended without the line
    saying where the fleet stands."""
    import flwr.server

    from edgecl import stop_signals
    from edgecl.stop_signals import unwind_once_on_stop_signals

    monkeypatch.setattr(stop_signals, "FORCE_EXIT_AFTER_S", 1e6)  # never ends the test run
    monkeypatch.setattr(stop_signals, "_stop_signum", None)  # undone after the test
    state = tmp_path / "server"

    def flowers_start_server(*, server=None, strategy=None, **_):
        found = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def graceful(signum, frame):  # Flower's handler: put back what it found, stop, exit 0
            for sig, handler in found.items():
                signal.signal(sig, handler)
            os.kill(os.getpid(), signal.SIGTERM)  # the second SIGTERM, during the grace period
            raise SystemExit(0)

        for sig in found:
            signal.signal(sig, graceful)
        monkeypatch.setattr(flwr.server.Server, "fit",
                            lambda self, n, t: os.kill(os.getpid(), signal.SIGTERM))
        server.fit(2, None)

    monkeypatch.setattr(flwr.server, "start_server", flowers_start_server)
    code, err = _serve_until_stopped(run_edgecl, state, unwind_once_on_stop_signals)
    assert code == 143
    assert err.strip().splitlines()[-1] == ("fleet server stopped by SIGTERM: no round had "
                                            "finished, so a restart starts the fleet from its "
                                            "first round")


def _certificate(path, days_from_now: tuple[int, int]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now + datetime.timedelta(days=days_from_now[0]))
            .not_valid_after(now + datetime.timedelta(days=days_from_now[1]))
            .sign(key, hashes.SHA256()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(path.with_suffix(".pem")), str(path.with_suffix(".key"))


def test_a_certificate_outside_its_dates_is_refused_at_start(tmp_path, caplog):
    """Before: a server started with an expired certificate, and every device failed its
    handshake with a warning cut off at 'CERTIFICATE_VERIF'."""
    pytest.importorskip("cryptography")

    def server(cert_key):
        cert, key = cert_key
        return {"fleet.ca_cert": cert, "fleet.server_cert": cert, "fleet.server_key": key}

    expired = server(_certificate(tmp_path / "old", (-10, -1)))
    with pytest.raises(ConfigError, match=r"'fleet.server_cert': .*old.pem expired on 20"):
        wire.check_security("10.0.0.5:9092", certs=expired, token="t", role="server")
    future = server(_certificate(tmp_path / "new", (2, 30)))
    with pytest.raises(ConfigError, match=r"is not valid before .* \(check this machine's clock"):
        wire.check_security("10.0.0.5:9092", certs=future, token="t", role="server")
    with pytest.raises(ConfigError, match=r"'fleet.ca_cert': .*old.pem expired on"):
        wire.check_security("10.0.0.5:9092", certs={"fleet.ca_cert": expired["fleet.ca_cert"]},
                            token="t", role="device")
    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.wire"):
        wire.check_security("10.0.0.5:9092", certs=server(_certificate(tmp_path / "soon", (-1, 3))),
                            token="t", role="server")
    assert "soon.pem expires on" in caplog.text


def test_a_device_runtime_keeps_detecting_with_a_certificate_outside_its_dates(tmp_path, caplog):
    """A CA certificate that expired during a deployment, or a board that booted with its clock
    years back: `edgecl run` warns and starts (the fleet client retries), `fleet join` refuses."""
    pytest.importorskip("cryptography")
    from edgecl.config import load_config
    from edgecl.fleet.client import check_client_security

    for name, days in (("old", (-10, -1)), ("new", (2, 30))):
        ca, _ = _certificate(tmp_path / name, days)
        cfg = load_config(None, ["fleet.enabled=true", "fleet.server_address=10.0.0.5:9092",
                                 f"fleet.ca_cert={ca}", "fleet.token=" + "t" * 20])
        with pytest.raises(ConfigError, match=f"'fleet.ca_cert': .*{name}.pem"):
            check_client_security(cfg)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgecl.fleet.wire"):
            check_client_security(cfg, refuse_dates=False)
        assert f"{name}.pem" in caplog.text
        assert "detection goes on, and the fleet client retries until the dates pass" in caplog.text


def test_the_client_of_a_device_runtime_retries_with_a_ca_certificate_outside_its_dates(
        tmp_path, monkeypatch, caplog):
    """Before: the fleet client that ``edgecl run`` spawns refused an expired CA certificate,
    died with a traceback, and was restarted to die again every 30 s; it now warns and
    retries (each attempt's TLS failure said in words), as the README promises."""
    pytest.importorskip("cryptography")
    from edgecl.config import load_config
    from edgecl.fleet import client

    ca, _ = _certificate(tmp_path / "old", (-10, -1))
    cfg = load_config(None, [f"state_dir={tmp_path}", "fleet.enabled=true",
                             "fleet.server_address=10.0.0.5:9092", f"fleet.ca_cert={ca}",
                             "fleet.token=" + "t" * 20, "fleet.device_name=drone1"])
    attempts = []

    class Stop(BaseException):
        pass

    def probe(*_a, **_k):
        attempts.append(1)
        if len(attempts) == 3:
            raise Stop
        raise OSError("certificate has expired")

    monkeypatch.setattr(client, "probe_server", probe)
    monkeypatch.setattr(client.time, "sleep", lambda s: None)
    monkeypatch.setattr("edgecl.runtime.learner.die_with_parent", lambda: None)
    monkeypatch.setattr("edgecl.continual.finetune.apply_low_priority", lambda lc: None)
    monkeypatch.setattr("edgecl.stop_signals.unwind_once_on_stop_signals", lambda **k: None)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        client.spawned_client_main(cfg)
    assert len(attempts) == 3  # it went on trying
    assert "old.pem expired on" in caplog.text and "retries until the dates pass" in caplog.text
    with pytest.raises(ConfigError, match=r"'fleet.ca_cert': .*old.pem expired on"):
        client.client_main(cfg)  # fleet join still refuses it at once


def test_one_fleet_client_per_state_directory(tmp_path, monkeypatch, capsys):
    """Before: two `fleet join` on one state directory both served the rounds, the second
    skipping each with 'busy: a learning round is running'; and `edgecl run` with a fleet
    beside a `fleet join` did the same."""
    from edgecl.cli import main
    from edgecl.config import load_config
    from edgecl.fleet import client
    from edgecl.runtime.lock import FLEET_CLIENT_LOCK_NAME, RuntimeLock

    monkeypatch.setattr(client, "_serve_rounds", lambda *a: pytest.fail("a second client served"))
    state = tmp_path / "state"
    (state / "memory").mkdir(parents=True)  # a device's state
    cfg = load_config(None, [f"state_dir={state}", "fleet.enabled=true",
                             "fleet.server_address=127.0.0.1:9"])
    with RuntimeLock(state, name=FLEET_CLIENT_LOCK_NAME):  # a fleet join serves it
        assert main(["fleet", "join", "--state-dir", str(state),
                     "fleet.server_address=127.0.0.1:9"]) == 2
        held = (f"state directory {state} is in use by another fleet client (edgecl fleet join, "
                f"or edgecl run with fleet.enabled) (pid {os.getpid()}); stop it or use another "
                f"--state-dir")
        assert capsys.readouterr().err == f"error: {held}\n"
        with pytest.raises(ConfigError) as caught:
            client.FleetClientStarter().check(cfg)  # what edgecl run asks before its model loads
        assert str(caught.value) == (
            f"state directory {state} is served by another fleet client (edgecl fleet join, or "
            f"edgecl run with fleet.enabled) (pid {os.getpid()}); stop it, or set "
            f"fleet.enabled=false")
    client.FleetClientStarter().check(cfg)  # free again


def test_a_server_folder_and_a_device_folder_are_not_taken_for_each_other(tmp_path, monkeypatch,
                                                                           capsys):
    """Before: 'fleet join' on the server's folder joined with no memory, and 'fleet server' on
    a device's folder began a fleet inside it, both without a word."""
    from edgecl.cli import main
    from edgecl.fleet import client, server

    monkeypatch.setattr(client, "_serve_rounds", lambda *a: pytest.fail("joined"))
    served = tmp_path / "server"
    (served / "fleet").mkdir(parents=True)
    (served / "fleet" / "global.json").write_text("{}")
    assert main(["fleet", "join", "--state-dir", str(served),
                 "fleet.server_address=127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == (
        f"error: {served} holds a fleet server's state (fleet/global.json) and no device's (no "
        f"memory/, models/ or classes.json): give the device's state directory (--state-dir)\n")
    device = tmp_path / "device"
    (device / "memory").mkdir(parents=True)
    (device / "classes.json").write_text("")
    monkeypatch.setattr(server, "run_server", lambda cfg, on_round: [])
    assert main(["fleet", "server", "--state-dir", str(device)]) == 0
    assert capsys.readouterr().err == (
        f"warning: {device} holds a device's state (memory/, classes.json): the fleet server keeps "
        f"its global model in {device / 'fleet'} beside it; give the server a folder of its own "
        f"(--state-dir) unless that is meant\n")


@pytest.mark.parametrize("newkey, kind", [("ed25519", "an Ed25519 key"),
                                          ("ec -pkeyopt ec_paramgen_curve:P-521",
                                           "an EC secp521r1 key")])
def test_a_server_key_grpc_cannot_take_is_refused_at_start(tmp_path, newkey, kind):
    """Before: an Ed25519 or P-521 server certificate passed every check; the server then
    failed to bind with a traceback, or the devices retried for ever ('the connection was
    lost')."""
    import shutil
    import subprocess

    pytest.importorskip("cryptography")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", *newkey.split(), "-nodes", "-days", "30",
                    "-subj", "/CN=fleet", "-addext", "subjectAltName=IP:10.0.0.5", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    with pytest.raises(ConfigError) as caught:
        wire.check_security("10.0.0.5:9092", certs={"fleet.ca_cert": str(cert),
                                                     "fleet.server_cert": str(cert),
                                                     "fleet.server_key": str(key)},
                            token="t" * 20, role="server")
    assert str(caught.value) == (f"config key 'fleet.server_cert': {cert} holds {kind}, which "
                                 f"the fleet's TLS (gRPC) does not take: make it with an RSA "
                                 f"key (openssl req -newkey rsa:2048 ...) or an EC P-256 or "
                                 f"P-384 key")


def test_the_environment_variable_is_offered_for_the_token_only():
    """Before: 'set fleet.ca_cert (or $EDGECL_FLEET_TOKEN)', as if the token stood for TLS."""
    with pytest.raises(ConfigError) as missing_ca:
        wire.check_security("10.0.0.5:9092", certs={"fleet.ca_cert": ""}, token="t", role="device")
    assert str(missing_ca.value).endswith("needs TLS and a token: set fleet.ca_cert")
    with pytest.raises(ConfigError, match=r"set fleet.ca_cert, fleet.token \(or \$EDGECL_FLEET"):
        wire.check_security("10.0.0.5:9092", certs={"fleet.ca_cert": ""}, token="", role="device")


def test_grpc_core_logs_errors_only_unless_told_otherwise(monkeypatch):
    """Before: gRPC printed 'I1201 ... Handshake failed ...' to stderr at every connection
    attempt of a device, and on the server for every device that failed its handshake."""
    from edgecl.fleet.server import require_flower

    monkeypatch.setenv("GRPC_VERBOSITY", "x")
    monkeypatch.delenv("GRPC_VERBOSITY")
    require_flower()
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    require_flower()
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"


def _raise_in_grpc(message):
    namespace: dict = {}
    exec(compile(f"def watch():\n    raise ValueError({message!r})\n",
                 os.path.join(os.sep, "site-packages", "grpc", "_channel.py"), "exec"), namespace)
    return namespace["watch"]


def test_grpcs_watcher_of_a_closed_channel_prints_no_traceback(monkeypatch):
    """Before: 'Exception in thread ... ValueError: Cannot monitor channel state: Channel
    closed!' (15 lines) on a device after a failed or ended connection."""
    from edgecl.fleet.client import quiet_closed_channel_threads

    shown = []
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(str(args.exc_value)))
    quiet_closed_channel_threads()
    quiet_closed_channel_threads()  # twice: one hook
    for target in (_raise_in_grpc("Cannot monitor channel state: Channel closed!"),
                   _raise_in_grpc("something else"),
                   lambda: (_ for _ in ()).throw(ValueError("Channel closed in my code"))):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert shown == ["something else", "Channel closed in my code"]


def test_a_blank_fleet_token_is_no_token_and_a_short_one_is_warned(tmp_path, monkeypatch,
                                                                   caplog):
    """Before: EDGECL_FLEET_TOKEN=' ' (or token: '   ') passed for a token off loopback, a
    trailing blank on one side failed every signature, and a 1-character token drew no word
    (the console's does)."""
    pytest.importorskip("cryptography")
    monkeypatch.setenv(wire.TOKEN_ENV, " ")
    assert wire.resolve_token("   ") == ""
    assert wire.resolve_token(" cfg-token ") == "cfg-token"
    monkeypatch.setenv(wire.TOKEN_ENV, " env-token\n")
    assert wire.resolve_token("cfg") == "env-token"
    cert, key = _certificate(tmp_path / "c", (-1, 30))
    certs = {"fleet.ca_cert": cert, "fleet.server_cert": cert, "fleet.server_key": key}
    monkeypatch.setenv(wire.TOKEN_ENV, " ")
    with pytest.raises(ConfigError, match=r"needs TLS and a token: set fleet.token \(or "):
        wire.check_security("10.0.0.5:9092", certs=certs, token=wire.resolve_token("  "),
                            role="server")
    wire._warn_short_token.cache_clear()
    with caplog.at_level(logging.WARNING, logger="edgecl.fleet.wire"):
        wire.check_security("10.0.0.5:9092", certs=certs, token="x", role="server")
        wire.check_security("10.0.0.5:9092", certs=certs, token="y", role="server")
    # once a process (before: again at every reconnection of a device)
    assert caplog.text.count("the fleet token has 1 characters: use 16 or more") == 1


def test_a_device_says_which_side_lacks_the_fleet_token():
    """Before: 'does not match the server's' also when the device had no token at all."""
    from edgecl.fleet.client import token_mismatch

    assert token_mismatch("", {"server_auth": "abc"}).startswith(
        "this device has no fleet token and the server uses one")
    assert token_mismatch("t", {"server_auth": ""}).startswith(
        "this device has a fleet token and the server uses none")
    assert "does not match" in token_mismatch("t", {"server_auth": "abc"})


def test_a_device_without_held_out_samples_skips_adoption_and_stages_nothing(tmp_path):
    """Before: an empty memory staged (and kept) a rejected version every round: 'candidate
    could not be evaluated (no held-out samples)'."""
    from edgecl.config import load_config
    from edgecl.fleet.device import FleetDevice
    from edgecl.fleet.weights import build_model, model_arrays
    from edgecl.models.registry import Registry

    cfg = load_config(None, [f"state_dir={tmp_path}", "model.imgsz=64", "learner.imgsz=64"])
    out = FleetDevice(cfg).adopt(model_arrays(build_model({}, [], {0: "car"})), ["car"], 1)
    assert out.status == "skipped" and out.version == ""
    assert out.reason.startswith("no held-out sample yet: the gate cannot judge the global model")
    assert Registry(tmp_path / "models").versions() == []


def test_probe_tells_a_listening_server_from_a_closed_port():
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from edgecl.fleet.client import probe_server

    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert probe_server(f"127.0.0.1:{port}", "", timeout_s=10)
    finally:
        server.stop(None).wait()
    assert probe_server(f"127.0.0.1:{port}", "", timeout_s=10) is False


def test_probe_tells_a_silent_address_from_a_refusing_one():
    """A port that accepts TCP and never speaks (as a firewall that drops packets leaves a
    connection waiting) is no answer, told apart from a refusal."""
    import socket

    from edgecl.fleet.client import probe_server

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        assert probe_server(f"127.0.0.1:{silent.getsockname()[1]}", "", timeout_s=1.0) is None
        assert time.monotonic() - started < 5.0


def _join_once(tmp_path, monkeypatch, caplog):
    """Run a device's client loop once against 127.0.0.1:9, with no waits, no priority change
    and no token, its log caught (``connect`` and ``probe_server`` are the caller's fakes)."""
    from edgecl.config import load_config
    from edgecl.fleet import client

    monkeypatch.setattr(client, "_wait_for_server", lambda *a: None)
    monkeypatch.setattr(client.time, "sleep", lambda s: None)
    monkeypatch.setattr("edgecl.runtime.learner.die_with_parent", lambda: None)
    monkeypatch.setattr("edgecl.continual.finetune.apply_low_priority", lambda lc: None)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    cfg = load_config(None, [f"state_dir={tmp_path}", "fleet.server_address=127.0.0.1:9",
                             "fleet.device_name=drone1"])
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.client"):
        client.client_main(cfg, once=True, max_wait_s=60)


def test_a_silent_server_costs_one_wait_per_attempt_not_two(tmp_path, monkeypatch, caplog,
                                                            flower_filters):
    """Before: an attempt against a blackholed address waited 20 s in the probe, then as long
    again in Flower's connection, which could only fail the same way."""
    from edgecl.fleet import client

    probes, connects = iter([None, True]), []
    monkeypatch.setattr(client, "connect", lambda cfg, **_: connects.append(1))
    monkeypatch.setattr(client, "probe_server", lambda *a, **k: next(probes))
    _join_once(tmp_path, monkeypatch, caplog)
    assert connects == [1]  # only the attempt whose probe was answered connected
    assert caplog.messages[1].startswith(
        "cannot reach the fleet server 127.0.0.1:9: no answer from 127.0.0.1:9 within 20 s "
        "(a firewall dropping its packets, or no host at that address); retrying in 30 s")
    assert caplog.messages[2].startswith("connected to the fleet server 127.0.0.1:9 after 1 "
                                         "failed attempt(s)")


def test_a_silent_answer_from_a_port_that_takes_connections_is_not_blamed_on_a_firewall():
    """Before: a program that accepts TCP on the server's port and never speaks gRPC read 'a
    firewall dropping its packets, or no host at that address'."""
    import socket

    from edgecl.fleet.client import silent_server_problem

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        assert silent_server_problem(address) == (
            f"no answer from {address} within 20 s, though its port takes connections: a fleet "
            f"server that is stopped or too busy to answer (suspended, swapping, a machine under "
            f"load), or another program listening there (check the port of "
            f"fleet.server_address)")
    assert silent_server_problem(address, timeout_s=1.0).endswith(  # the port is closed now
        "within 20 s (a firewall dropping its packets, or no host at that address)")


def test_a_device_says_it_connected_after_the_server_came_up(tmp_path, monkeypatch, caplog,
                                                             flower_filters):
    """Before: after 'unreachable or gone' a device said nothing more until the server's first
    round, which may be hours away: no line said it had connected."""
    from edgecl.fleet import client

    refused = Rendezvous("failed to connect to all addresses; last error: UNKNOWN: "
                         "ipv4:127.0.0.1:9: Failed to connect to remote host: Connection refused")
    attempts, waits = iter([refused, None]), []

    def connect(cfg, max_wait_s=None, **_):
        waits.append(max_wait_s)
        outcome = next(attempts)
        if outcome is not None:
            raise outcome

    probes = iter([False, True])
    monkeypatch.setattr(client, "connect", connect)
    monkeypatch.setattr(client, "probe_server", lambda *a, **k: next(probes))
    _join_once(tmp_path, monkeypatch, caplog)
    assert caplog.messages[0] == ("fleet device drone1 joining the fleet server 127.0.0.1:9 (TLS "
                                  "off, fleet token not set)")
    assert caplog.messages[1].startswith(
        "cannot reach the fleet server 127.0.0.1:9: connection refused: no fleet server listens "
        "on 127.0.0.1:9 (yet); retrying in 30 s")
    assert caplog.messages[2] == ("connected to the fleet server 127.0.0.1:9 after 1 failed "
                                  "attempt(s); waiting for its rounds")
    # after a failed probe Flower tries briefly, then the failure comes back to be said (before,
    # it retried silently for ever: a device started before its server never said it connected)
    assert waits == [client.FAILED_PROBE_WAIT_S, 60]


class Rendezvous(Exception):
    """A failed gRPC call as Flower's client raises it: a status code and gRPC's details."""

    def __init__(self, details, code="UNAVAILABLE"):
        super().__init__()
        self._details, self._code = details, code

    def code(self):
        return SimpleNamespace(name=self._code)

    def details(self):
        return self._details


ADDR = "192.0.2.2:9093"
LAST = f"failed to connect to all addresses; last error: UNKNOWN: ipv4:{ADDR}: "
HANDSHAKE = LAST + "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:"


@pytest.mark.parametrize("details, tls, said", [
    (HANDSHAKE + "SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate has "
                 "expired: OK", True,
     "TLS: the server's certificate has expired (renew fleet.server_cert on the server)"),
    (HANDSHAKE + "SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed "
                 "certificate: OK", True,
     "TLS: the server's certificate is not trusted (self signed certificate): fleet.ca_cert "
     "must be the CA certificate that signed it"),
    (LAST + "Custom verification check failed with error: UNAUTHENTICATED: Hostname "
            "Verification Check failed.", True,
     "TLS: the server's certificate does not name 192.0.2.2 (add it to the certificate's "
     "subjectAltName, or use an address it names)"),
    (HANDSHAKE + "SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate "
                 "verification context: OK", True,
     "TLS: the server does not answer TLS: a fleet server without it (set fleet.server_cert and "
     "fleet.server_key on the server), or another program on that port (check "
     "fleet.server_address)"),
    (f"failed to connect to all addresses; last error: UNAVAILABLE: ipv4:{ADDR}: Socket closed",
     False, "the server closed the connection at once: it stopped meanwhile, or it uses TLS "
            "(then set fleet.ca_cert)"),
    (("Timeout of 8.0sec was exceeded.", "DEADLINE_EXCEEDED"), False,
     "the server stopped waiting for this device's answer within 8 s (for a fit, the server's "
     "fleet.round_timeout_s; a fit it started goes on, and the device is busy in the next round "
     "until it is done)"),
    (LAST + "Failed to connect to remote host: getsockopt(SO_ERROR): No route to host", True,
     "192.0.2.2 cannot be reached from this device (check fleet.server_address and the network)"),
    (f"errors resolving {ADDR}: [field:hostname lookup error:address lookup failed for {ADDR}: "
     "Domain name not found]", True,
     "the host name 192.0.2.2 does not resolve (check fleet.server_address)"),
    ("Stream removed (recvmsg:Connection reset by peer (104))", True,
     "the connection was lost (the server stopped, or the network dropped)"),
    ("Cancelling all calls", True, "the server shut down"),
])
def test_a_failed_connection_says_its_cause_and_what_to_check(details, tls, said):
    """Before: gRPC's details cut at 200 characters, before the cause ('...CERTIFICATE_VERIF')."""
    from edgecl.fleet.client import connection_problem

    error = Rendezvous(*details) if isinstance(details, tuple) else Rendezvous(details)
    assert connection_problem(error, ADDR, tls=tls) == said


def test_a_connection_lost_mid_session_is_not_taken_for_a_tls_mismatch():
    """A server killed mid-session closes the socket too: 'it may use TLS' was wrong there."""
    from edgecl.fleet.client import connection_problem

    closed = Rendezvous(f"failed to connect to all addresses; last error: UNAVAILABLE: ipv4:{ADDR}: "
                        "Socket closed")
    assert connection_problem(closed, ADDR, tls=False, connected=True) == (
        "the connection was lost (the server stopped, or the network dropped)")


def test_a_simulated_server_stopped_by_the_simulation_says_one_line(tmp_path, monkeypatch, caplog,
                                                                     flower_filters):
    """``fleet simulate`` stops its server process with SIGTERM when a device dies, and Ctrl-C
    reaches it too: the stop is one line there, not a traceback from the spawned process."""
    from edgecl.config import load_config
    from edgecl.fleet import server, simulate

    def stopped(cfg):
        raise server.ServerStopped(signal.SIGTERM, 2, tmp_path)

    monkeypatch.setattr(server, "run_server", stopped)
    monkeypatch.setattr("edgecl.runtime.learner.die_with_parent", lambda: None)
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.simulate"):
        simulate._server_main(load_config(None, [f"state_dir={tmp_path}"]))
    # not 'a restart resumes with round 3': a simulation run again into its --out is refused
    assert caplog.messages == ["fleet server stopped by SIGTERM after 2 finished round(s); a "
                               "simulation does not resume: run it again with a new --out"]
