"""A tiny two-device fleet end to end: server and devices as processes on loopback, one round,
adoption through the gate and the registry (origin recorded), the --json summary line.

Marked slow: about 30 s of CPU, 50 s of wall time on the 2-core machine when lightly loaded and
up to 220 s under load (three spawned processes each import torch, ultralytics and Flower;
each device exports ONNX once; alone and joint baselines run in a fourth)."""

import json
import sqlite3

import pytest

pytest.importorskip("flwr")

from edgecl.cli import main  # noqa: E402
from edgecl.models.classes import ClassRegistry  # noqa: E402
from edgecl.models.registry import Registry  # noqa: E402


@pytest.mark.slow
def test_two_devices_learn_together_and_adopt_the_global_model(tmp_path, capsys):
    from edgecl.fleet.simulate import free_port

    out = tmp_path / "sim"
    port = free_port()  # chosen (before: always a random one, on a shared or firewalled machine)
    code = main(["fleet", "simulate", "--devices", "2", "--rounds", "1", "--out", str(out),
                 "--images-per-task", "16", "--steps", "2", "--batch", "4", "--json",
                 "--port", str(port)])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert set(summary) == {"devices", "rounds", "joint_per_class_ap", "per_device", "bytes_per_round"}
    # with --json the report goes to stderr (it was dropped), stdout keeps the JSON alone
    assert f"fleet: server and 2 devices on 127.0.0.1:{port}" in captured.err
    assert "round 1" in captured.err and len(captured.out.strip().splitlines()) == 1
    assert summary["devices"] == 2 and summary["rounds"] == 1 and summary["bytes_per_round"] > 1e6
    classes = set(summary["joint_per_class_ap"])
    assert len(classes) == 4
    assert [d["device"] for d in summary["per_device"]] == [0, 1]
    for i, dev in enumerate(summary["per_device"]):
        assert set(dev["per_class_ap"]) == set(dev["alone_per_class_ap"]) == classes
        state = out / f"device{i}"
        assert set(ClassRegistry(state).names().values()) == classes  # merged by name
        registry = Registry(state / "models")
        manifest = registry.manifest(registry.current())
        assert manifest["origin"] == "fleet round 1" and "model.onnx" in manifest["files"]
        assert registry.verify(registry.current()) == []
        with sqlite3.connect(state / "metrics" / "metrics.sqlite") as db:  # the monitor shows it
            rows = db.execute("SELECT status, reason FROM rounds WHERE model_version=?",
                              (registry.current(),)).fetchall()
            per_class = db.execute("SELECT COUNT(*) FROM class_ap WHERE model_version=?",
                                   (registry.current(),)).fetchone()[0]
        assert len(rows) == 1 and rows[0][0] == "promoted"
        assert rows[0][1].startswith("fleet round 1: ") and per_class > 0
        assert "acc" in manifest["metrics"]
    rounds = json.loads((out / "summary.json").read_text())["server_rounds"]
    assert rounds[0]["round"] == 1 and set(rounds[0]["devices"]) == {"device0", "device1"}
    assert all(d["update"] == "kept" for d in rounds[0]["devices"].values())


@pytest.mark.parametrize("extra", [["--images-per-task", "1"], ["--data", "TASKS"]])
def test_a_setup_that_fails_leaves_no_output_folder(tmp_path, capsys, extra):
    from edgecl.data.scenario import make_scenario

    tasks = make_scenario(tmp_path / "one", tasks=1, images_per_task=8, imgsz=64, seed=1)
    extra = [str(tasks) if e == "TASKS" else e for e in extra]  # 1 task for 2 devices
    out = tmp_path / "sim"
    argv = ["fleet", "simulate", "--devices", "2", "--rounds", "1", "--out", str(out)]
    if "--data" not in extra:
        argv += ["--data", "scenario"]
    assert main(argv + extra) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not out.exists()  # before: a partial folder was left behind
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    assert main(argv + extra) == 2
    assert (out / "mine.txt").read_text() == "kept"  # a folder it did not create stays


@pytest.mark.parametrize("settings, expected", [
    (["fleet.ca_cert=MISSING"],
     "error: fleet TLS needs all of fleet.ca_cert, fleet.server_cert, fleet.server_key; missing "
     "fleet.server_cert, fleet.server_key\n"),
    (["fleet.ca_cert=MISSING", "fleet.server_cert=MISSING", "fleet.server_key=MISSING"],
     "error: config key 'fleet.ca_cert': certificate file not found: MISSING\n"),
])
def test_tls_settings_a_fleet_cannot_use_are_one_line_before_any_process(tmp_path, capsys,
                                                                         settings, expected):
    """Before: each spawned server and device process printed its own traceback, and the
    --out folder, with a generated scenario, was left behind."""
    missing = str(tmp_path / "nowhere.pem")
    out = tmp_path / "sim"
    argv = ["fleet", "simulate", "--devices", "2", "--rounds", "1", "--out", str(out),
            *(s.replace("MISSING", missing) for s in settings)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected.replace("MISSING", missing)) and err.count("\n") == 1, err
    assert not out.exists()


def test_more_devices_than_the_scenario_has_classes_for_names_devices(tmp_path, capsys):
    """Before: 'scenario: tasks x classes_per_task must be 1..12, got 1000 x 2'."""
    out = tmp_path / "sim"
    assert main(["fleet", "simulate", "--devices", "7", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "error: --devices 7: the built-in scenario gives each device 2 of its 12 classes, so at "
        "most 6 devices (give --data a tasks.yaml with a task per device)\n")
    assert not out.exists()


def test_the_users_settings_reach_the_devices_and_the_simulations_own_keys_are_refused(
        tmp_path, capsys):
    from edgecl.fleet.simulate import SimSize, device_config

    cfg = device_config((None, ("learner.lr=0.05", "replay.strategy=er", "gate.max_forgetting=0.3")),
                        tmp_path / "d0", SimSize(imgsz=64, steps=7), "127.0.0.1:1", "d0", 2, 3)
    assert (cfg.learner.lr, cfg.replay.strategy, cfg.gate.max_forgetting) == (0.05, "er", 0.3)
    assert (cfg.learner.max_steps, cfg.learner.imgsz, cfg.fleet.rounds) == (7, 64, 3)
    assert cfg.state_dir == str(tmp_path / "d0") and cfg.learner.device == "cpu"
    for setting, option in (("learner.max_steps=5", "--steps"), ("fleet.rounds=10", "--rounds"),
                            ("fleet.server_address=127.0.0.1:18202", "--port")):
        assert main(["fleet", "simulate", "--out", str(tmp_path / "o"), setting]) == 2
        err = capsys.readouterr().err
        assert option in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_an_earlier_simulation_in_the_out_folder_is_not_replaced(tmp_path, capsys):
    """A second run into the same --out replaced the first one's device and server states
    without a word (dataset import refuses a non-empty folder, bench cl resumes)."""
    out = tmp_path / "sim"
    (out / "device0").mkdir(parents=True)
    (out / "summary.json").write_text('{"devices": 2}')
    code = main(["fleet", "simulate", "--devices", "2", "--rounds", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --out {out} holds an earlier fleet simulation "
                                        f"(summary.json); give another --out")
    assert (out / "summary.json").read_text() == '{"devices": 2}' and (out / "device0").is_dir()


def _self_signed(path, ip: str | None):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30)))
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    path.with_suffix(".pem").write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(path.with_suffix(".pem")), str(path.with_suffix(".key"))


def test_tls_files_the_loopback_fleet_cannot_use_are_one_line_not_a_hang(tmp_path, capsys):
    """Before: a server certificate naming another address (or a CA that did not sign it)
    left the simulated devices retrying for ever, and the server waiting for them."""
    pytest.importorskip("cryptography")
    from edgecl.fleet.simulate import loopback_handshake_problem

    good = _self_signed(tmp_path / "good", "127.0.0.1")
    other = _self_signed(tmp_path / "other", "10.9.9.9")
    assert loopback_handshake_problem(good[0], *good) == ""
    assert "mismatch" in loopback_handshake_problem(other[0], *other).lower()
    assert loopback_handshake_problem(other[0], *good)  # a CA that did not sign it
    out = tmp_path / "sim"
    assert main(["fleet", "simulate", "--devices", "2", "--rounds", "1", "--out", str(out),
                 f"fleet.ca_cert={other[0]}", f"fleet.server_cert={other[0]}",
                 f"fleet.server_key={other[1]}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: fleet simulate connects its devices to 127.0.0.1 with these "
                          "TLS settings, and the handshake fails: ") and err.count("\n") == 1, err
    assert not out.exists()
