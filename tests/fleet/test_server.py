"""The fleet server module's Flower log settings and server checks."""

import os

import pytest

pytest.importorskip("flwr")


def test_flower_log_drops_blank_lines_and_the_chosen_apis_banners_and_repeats_of_others():
    import logging

    from flwr.supercore.logger import warn_deprecated_feature

    from edgecl.fleet.server import FlowerLogFilter, quiet_flower_logs

    flower = logging.getLogger("flwr")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    flower.addHandler(handler)
    try:
        quiet_flower_logs(logging.WARNING)
        quiet_flower_logs()  # twice: still one filter
        assert sum(isinstance(f, FlowerLogFilter) for f in flower.filters) == 1
        assert flower.level == logging.INFO
        for name in ("flwr.client.start_client() is deprecated.\n\tInstead, use ...",
                     "something else", "something else",
                     "flwr.server.start_server() is deprecated.\n\tInstead, ..."):
            warn_deprecated_feature(name=name)
        flower.info("")
        flower.info("Received: train message 1")
        flower.warning("connection lost")
        flower.warning("connection lost")
    finally:
        flower.removeHandler(handler)
        for f in [f for f in flower.filters if isinstance(f, FlowerLogFilter)]:
            flower.removeFilter(f)
    assert not any("start_client()" in m or "start_server()" in m for m in seen)
    assert sum("something else" in m for m in seen) == 1
    assert seen.count("connection lost") == 2  # other warnings all pass
    assert "" not in seen and "Received: train message 1" in seen


def test_a_device_shows_only_flowers_warnings():
    import logging

    from edgecl.fleet.server import FlowerLogFilter, quiet_flower_logs

    flower = logging.getLogger("flwr")
    before = flower.level
    try:
        quiet_flower_logs(logging.WARNING)
        assert not flower.isEnabledFor(logging.INFO) and flower.isEnabledFor(logging.WARNING)
    finally:
        flower.setLevel(before)
        for f in [f for f in flower.filters if isinstance(f, FlowerLogFilter)]:
            flower.removeFilter(f)


def _server_cfg(state, *extra):
    import socket

    from edgecl.config import load_config

    with socket.socket() as probe:  # a port free now (the server checks it before anything)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return load_config(None, [f"state_dir={state}", f"fleet.server_address=127.0.0.1:{port}",
                              "fleet.rounds=5", *extra])


def test_a_damaged_global_model_stops_the_server_instead_of_starting_afresh(tmp_path, caplog):
    """Before: a corrupt global.json or npz made the server start over at round 1 and delete
    the saved model at its next save."""
    import numpy as np

    from edgecl.errors import EdgeclError
    from edgecl.fleet.server import fleet_dir, run_server
    from edgecl.fleet.store import GlobalStore

    cfg = _server_cfg(tmp_path)
    store = GlobalStore(fleet_dir(cfg))
    store.save(3, {"w": np.zeros(4, np.float32)}, ["car"])
    saved = next(store.root.glob("global-*.npz"))
    saved.write_bytes(saved.read_bytes()[:-2] + b"zz")
    with pytest.raises(EdgeclError, match="fails its checksum; restore it from a copy, or move"):
        run_server(cfg)
    assert saved.is_file()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], "said once, as the error"
    (store.root / "global.json").write_text('{"round": 3, "names": [')
    assert "unreadable" in store.problem()
    with pytest.raises(EdgeclError, match="cannot be loaded"):
        run_server(cfg)


def test_one_server_per_state_directory(tmp_path):
    from edgecl.errors import EdgeclError
    from edgecl.fleet.server import fleet_dir, run_server
    from edgecl.runtime.lock import RuntimeLock

    cfg = _server_cfg(tmp_path)
    with RuntimeLock(fleet_dir(cfg)):  # another server holds it
        with pytest.raises(EdgeclError) as caught:
            run_server(cfg)
    # before: 'state directory STATE/fleet is in use by another edgecl runtime', a folder the
    # user never named, and no runtime
    assert str(caught.value) == (f"state directory {cfg.state_dir} is in use by another fleet "
                                 f"server (pid {os.getpid()}); stop it or use another --state-dir")


@pytest.mark.parametrize("pair", [("srv.pem", "other.key"), ("junk.pem", "junk.key")])
def test_a_certificate_and_a_key_that_do_not_belong_together_are_one_line(tmp_path, pair):
    """gRPC said only 'Failed to bind to address' (with a traceback)."""
    import shutil
    import subprocess

    from edgecl.errors import ConfigError
    from edgecl.fleet.wire import check_security

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (it makes the test certificates)")

    def make(name, cn):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", f"/CN={cn}", "-keyout", str(tmp_path / f"{name}.key"),
                        "-out", str(tmp_path / f"{name}.pem")], check=True, capture_output=True)

    make("srv", "localhost")
    make("other", "other")
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    (tmp_path / "junk.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    certs = {"fleet.ca_cert": str(tmp_path / "srv.pem"),
             "fleet.server_cert": str(tmp_path / pair[0]),
             "fleet.server_key": str(tmp_path / pair[1])}
    with pytest.raises(ConfigError, match="not a certificate and its own unencrypted private key"):
        check_security("127.0.0.1:9092", certs=certs, token="t", role="server")
    good = dict(certs, **{"fleet.server_cert": str(tmp_path / "srv.pem"),
                          "fleet.server_key": str(tmp_path / "srv.key")})
    check_security("127.0.0.1:9092", certs=good, token="t", role="server")


def test_a_port_already_in_use_is_one_line_before_the_server_says_it_started(tmp_path, caplog):
    """Before: 'fleet server on 127.0.0.1:P: rounds 1..10' was logged, then Flower's own
    'Port in server address ... is already in use', exit 1."""
    import socket

    from edgecl.errors import ConfigError
    from edgecl.fleet.server import check_port_free, run_server

    pytest.importorskip("flwr")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _server_cfg(tmp_path, f"fleet.server_address=127.0.0.1:{port}")
        with caplog.at_level("INFO"), pytest.raises(ConfigError) as info:
            run_server(cfg)
    assert str(info.value) == (f"fleet.server_address 127.0.0.1:{port}: the port is already in "
                               f"use (another fleet server, or another program): stop it, or "
                               f"choose another port")
    assert "fleet server on" not in caplog.text
    assert not (tmp_path / "fleet").exists(), "a refused start makes no fleet folder"
    with pytest.raises(ConfigError, match=r"fleet.server_address 192.0.2.99:9092: cannot listen "
                                          r"there \(.*\): use an address of this machine"):
        check_port_free("192.0.2.99:9092")
    check_port_free(f"127.0.0.1:{port}")  # free again once its listener closed


def test_a_round_without_a_new_model_is_not_printed_as_zero_classes(capsys):
    """Before: "round 2: 5.3 MB, 0 classes; d1: skipped" for a fleet of 4 classes (a round
    that saved no global model records no class list)."""
    from edgecl.commands.fleet import _print_record

    _print_record({"round": 2, "bytes": 5_300_000, "devices": {"d1": {"update": "skipped"}}})
    _print_record({"round": 3, "bytes": 5_300_000, "names": ["car", "person"],
                   "devices": {"d1": {"update": "kept"}}})
    _print_record({"round": 4, "bytes": 5_300_000, "names": ["car"],
                   "devices": {"d1": {"update": "kept"}, "d2": {"update": "kept"}},
                   "adoption": {"d1": {"status": "promoted"}, "d2": {"status": "dropped out"}}})
    assert capsys.readouterr().out.splitlines() == [
        "round 2: 5.3 MB, no new global model; d1: skipped",
        "round 3: 5.3 MB, 2 classes; d1: kept",
        # before: "d2: kept" for a device that left during the adoption
        "round 4: 5.3 MB, 1 classes; d1: kept (the new model: promoted), d2: kept (the new "
        "model: dropped out)"]



def test_a_device_that_adopted_without_being_sampled_is_listed(capsys):
    """Before: "round 7: 21.1 MB, 4 classes; robotA: kept (the new model: promoted)" of a
    round robotC adopted too (it joined after the training sample was drawn): it read as a
    device that never got the model."""
    from edgecl.commands.fleet import _print_record

    _print_record({"round": 7, "bytes": 21_100_000, "names": ["a", "b", "c", "d"],
                   "devices": {"robotA": {"update": "kept"}},
                   "adoption": {"robotA": {"status": "promoted"},
                                "robotC": {"status": "promoted"}}})
    assert capsys.readouterr().out.splitlines() == [
        "round 7: 21.1 MB, 4 classes; robotA: kept (the new model: promoted), robotC: not "
        "sampled (the new model: promoted)"]


def test_a_stop_signal_once_stopping_is_ignored_to_the_end(caplog):
    """Before: the handlers were put back when Flower's server returned, and a second SIGTERM
    raised in the interpreter's shutdown (a traceback), or a Ctrl-C turned the exit code of a
    SIGTERM stop into 130."""
    import logging
    import os
    import signal

    from edgecl.fleet.server import _later_stop_signals_ignored

    calls = []
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in before:
            signal.signal(s, lambda num, _frame: calls.append(num))
        with _later_stop_signals_ignored([]):
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # no stop came: the handlers are back
        assert calls == [signal.SIGTERM]
        stopped = []
        with _later_stop_signals_ignored(stopped):
            stopped.append(signal.SIGTERM)  # Flower's handler noted the first stop
        with caplog.at_level(logging.INFO):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        assert calls == [signal.SIGTERM]
        assert "received SIGINT while stopping: already stopping" in caplog.text
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
