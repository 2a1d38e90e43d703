"""The fleet strategy on hand-made Flower replies: gating and its log, refused and failed devices,
the global model kept on disk and a restarted server resuming from it; wire and security rules."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

from edgecl.config import FleetConfig  # noqa: E402
from edgecl.errors import ConfigError  # noqa: E402
from edgecl.fleet import wire  # noqa: E402
from edgecl.fleet.store import GlobalStore  # noqa: E402
from edgecl.fleet.strategy import make_strategy  # noqa: E402

ROWS = "model.23.cv3.0.2.bias"
SHARED = "model.0.conv.weight"
OK = Status(Code.OK, "")


class FakeProxy:
    """A connected device as the server sees it: answers the token check with ``token``."""

    def __init__(self, cid, token="", name=None):
        self.cid, self.token, self.name, self.hellos = cid, token, name or cid, 0

    def get_properties(self, ins, timeout, group_id):
        self.hellos += 1
        config = ins.config
        if not wire.server_is_authentic(self.token, config):
            return SimpleNamespace(properties={"device": self.name, "auth": ""})
        return SimpleNamespace(properties={
            "device": self.name,
            "auth": wire.sign(self.token, config["nonce"], int(config["round"]), self.name)})


class FakeManager:
    """Stands in for Flower's ClientManager with a fixed set of connected clients."""

    def __init__(self, n, token=""):
        self.clients = {f"c{i}": FakeProxy(f"c{i}", token) for i in range(n)}

    def num_available(self):
        return len(self.clients)

    def wait_for(self, num_clients, timeout=86400):
        return len(self.clients) >= num_clients

    def sample(self, num_clients, min_num_clients=None, criterion=None):
        chosen = [c for c in self.clients.values() if criterion is None or criterion.select(c)]
        return chosen[:num_clients]

    def all(self):
        return dict(self.clients)


def reply(config, device, arrays, names, samples, forgetting=None, token="", skipped=""):
    rnd = int(config["round"])
    metrics = {"device": device, "auth": wire.sign(token, config["nonce"], rnd, device)}
    if skipped:
        return SimpleNamespace(cid=device), FitRes(OK, ndarrays_to_parameters([]), 0,
                                                   {**metrics, "skipped": skipped})
    keys, arrs = wire.to_wire(arrays, "float16")
    metrics.update(keys=wire.dumps(keys), names=wire.dumps(names),
                   forgetting=wire.dumps(forgetting or {}), per_class_ap=wire.dumps({}))
    return SimpleNamespace(cid=device), FitRes(OK, ndarrays_to_parameters(arrs), samples, metrics)


def start(tmp_path, token="", **kw):
    cfg = FleetConfig(**{"min_devices": 1, "token": token, **kw})
    store = GlobalStore(tmp_path / "fleet")
    initial = (0, {SHARED: np.zeros(2, np.float32), ROWS: np.zeros(0, np.float32)}, [])
    strategy = make_strategy(cfg, store, initial=initial)
    return strategy, store


def test_a_round_gates_refuses_and_drops_with_reasons_in_the_log(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path, token="s3cret")
    (_, ins), *_ = strategy.configure_fit(1, None, FakeManager(4, token="s3cret"))
    cfg = ins.config
    assert cfg["round"] == 1 and wire.loads(cfg["names"]) == [] and len(cfg["nonce"]) == 32
    results = [
        reply(cfg, "a", {SHARED: np.ones(2), ROWS: np.array([1.0, 2.0])}, ["car", "dog"], 10, token="s3cret"),
        reply(cfg, "b", {SHARED: np.full(2, 9.0), ROWS: np.array([9.0])}, ["cat"], 10,
              forgetting={"cat": 0.5}, token="s3cret"),
        reply(cfg, "intruder", {SHARED: np.full(2, 50.0), ROWS: np.array([5.0])}, ["cow"], 99, token="guess"),
        reply(cfg, "busy", {}, [], 0, token="s3cret", skipped="busy: a learning round is running"),
    ]
    failures = [ConnectionResetError("device went away mid-round")]
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.strategy"):
        params, metrics = strategy.aggregate_fit(1, results, failures)
    text = caplog.text
    assert "update b dropped: class cat forgot 0.500 AP50-95 (bound 0.15)" in text
    assert "update from intruder refused" in text and "busy skipped the round" in text
    assert "dropped out of the round (ConnectionResetError" in text
    assert strategy.names == ["car", "dog"] and metrics == {"devices": 2}
    np.testing.assert_allclose(strategy.arrays[SHARED], 1.0)
    assert len(parameters_to_ndarrays(params)) == 2
    saved = store.load()
    assert saved[0] == 1 and saved[2] == ["car", "dog"]
    np.testing.assert_allclose(saved[1][ROWS], [1.0, 2.0])
    # the adoption request names the devices whose update the model averages (b was dropped)
    (_, ask), *_ = strategy.configure_evaluate(1, None, FakeManager(4, token="s3cret"))
    assert wire.loads(ask.config["averaged"]) == ["a"]
    assert wire.averages(ask.config, "a") and not wire.averages(ask.config, "b")
    assert not wire.averages({}, "a") and not wire.averages({"averaged": "{not json"}, "a")
    # a restarted server resumes: round numbers continue, the model is the saved one
    again = make_strategy(FleetConfig(min_devices=1), store)
    assert again.fleet_round(1) == 2 and again.names == ["car", "dog"]


def test_without_a_usable_update_the_global_model_stays(tmp_path, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    assert strategy.aggregate_fit(1, [], [TimeoutError("round timeout")]) == (None, {})
    assert strategy.configure_evaluate(1, None, FakeManager(1)) == []  # nothing new to adopt
    assert store.load() is None and store.rounds()[0]["failures"]


def test_a_restarted_server_numbers_on_after_a_round_without_a_usable_update(tmp_path, monkeypatch):
    """Before: round 2 saved no model (no usable update), so a restarted server resumed "after
    round 1", ran round 2 again and its record replaced the first round 2's in the log; without
    a restart the same round counted toward ``fleet.rounds``. Now rounds go on after the last
    one logged, with or without a restart."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    strategy.aggregate_fit(1, [reply(ins.config, "d0", {SHARED: np.ones(2, np.float32)}, [], 5)], [])
    strategy.configure_evaluate(1, None, FakeManager(0))
    strategy.configure_fit(2, None, FakeManager(1))
    assert strategy.aggregate_fit(2, [], [TimeoutError("round timeout")]) == (None, {})
    strategy.configure_evaluate(2, None, FakeManager(1))
    assert [r["round"] for r in store.rounds()] == [1, 2] and store.load()[0] == 1
    assert store.last_round() == 2
    again = make_strategy(FleetConfig(min_devices=1), store)
    assert again.fleet_round(1) == 3 and again.saved_round == 1
    np.testing.assert_allclose(again.arrays[SHARED], 1.0, atol=1e-3)


def test_store_refuses_a_damaged_model(tmp_path):
    store = GlobalStore(tmp_path)
    store.save(3, {"w": np.arange(4, dtype=np.float32)}, ["car"])
    rnd, arrays, names = store.load()
    assert rnd == 3 and names == ["car"] and arrays["w"].tolist() == [0, 1, 2, 3]
    npz = next(tmp_path.glob("global-*.npz"))
    npz.write_bytes(npz.read_bytes()[:-3] + b"xyz")
    assert store.load() is None


def test_wire_signature_and_loopback_rules(monkeypatch, tmp_path):
    sig = wire.sign("tok", "n1", 3, "dev")
    assert wire.verify("tok", "n1", 3, "dev", sig)
    assert not wire.verify("tok", "n1", 4, "dev", sig) and not wire.verify("tok", "n2", 3, "dev", sig)
    assert wire.verify("", "n1", 3, "dev", "")  # no token configured: loopback only
    assert wire.is_loopback("127.0.0.1:9092") and wire.is_loopback("[::1]:1") and wire.is_loopback("localhost:1")
    assert not wire.is_loopback("10.0.0.5:9092") and not wire.is_loopback("0.0.0.0:9092")
    wire.check_security("127.0.0.1:9092", certs={"fleet.ca_cert": ""}, token="", role="device")
    with pytest.raises(ConfigError, match="not loopback.*fleet.ca_cert, fleet.token"):
        wire.check_security("10.0.0.5:9092", certs={"fleet.ca_cert": ""}, token="", role="device")
    with pytest.raises(ConfigError, match="certificate file not found"):
        wire.check_security("10.0.0.5:9092", certs={"fleet.ca_cert": str(tmp_path / "no.pem")},
                            token="t", role="device")
    bad, key = tmp_path / "bad.pem", tmp_path / "key.pem"
    bad.write_text("notpem")
    key.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="bad.pem is not a PEM file holding a certificate"):
        wire.check_security("127.0.0.1:9092", certs={"fleet.ca_cert": str(bad)}, token="",
                            role="device")  # before: gRPC retried for ever without saying why
    with pytest.raises(ConfigError, match="'fleet.server_key'.*holding a private key"):
        wire.check_security("127.0.0.1:9092", certs={"fleet.server_key": str(key)}, token="",
                            role="server")
    monkeypatch.setenv(wire.TOKEN_ENV, "from-env")
    assert wire.resolve_token("from-config") == "from-env"
    keys, arrays = wire.to_wire({"a": np.ones((2, 2)), "b": np.zeros(3)}, "float16")
    assert keys == ["a", "b"] and arrays[0].dtype == np.float16
    assert wire.from_wire(keys, arrays)["a"].dtype == np.float32


def test_server_refuses_off_loopback_without_tls_and_incomplete_tls(tmp_path, monkeypatch):
    from edgecl.config import load_config
    from edgecl.fleet.server import server_certificates

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    cfg = load_config(None, [f"state_dir={tmp_path}", "fleet.server_address=0.0.0.0:9092"])
    with pytest.raises(ConfigError, match="needs TLS and a token"):
        server_certificates(cfg)
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    cfg = load_config(None, [f"state_dir={tmp_path}", f"fleet.ca_cert={pem}"])
    with pytest.raises(ConfigError, match="missing fleet.server_cert, fleet.server_key"):
        server_certificates(cfg)
    assert server_certificates(load_config(None, [f"state_dir={tmp_path}"])) is None


def test_every_device_signs_its_adoption_report_with_the_round_nonce(tmp_path, caplog, monkeypatch):
    from flwr.common import EvaluateRes

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path, token="t")
    strategy.names, strategy.changed, strategy.record = ["car"], True, {"round": 1}
    instructions = strategy.configure_evaluate(1, None, FakeManager(3, token="t"))
    replies = []
    for i, (proxy, ins) in enumerate(instructions):
        device = f"device{i}"
        signed = wire.sign("t" if i < 2 else "wrong", ins.config["nonce"], ins.config["round"], device)
        replies.append((proxy, EvaluateRes(OK, 0.0, 0, {"device": device, "auth": signed,
                                                       "status": "promoted", "reason": "accepted"})))
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.strategy"):
        strategy.aggregate_evaluate(1, replies, [])
    adoption = store.rounds()[-1]["adoption"]
    assert set(adoption) == {"device0", "device1"}
    assert "adoption report from device2 refused" in caplog.text


def raw_reply(config, device, tensor_keys, arrays, samples, **metrics):
    """A fit reply with the metrics exactly as given (JSON text or not)."""
    base = {"device": device, "auth": "", "keys": wire.dumps(tensor_keys), "names": wire.dumps(["car"]),
            "forgetting": "{}", "per_class_ap": "{}"}
    base.update(metrics)
    return SimpleNamespace(cid=device), FitRes(OK, ndarrays_to_parameters(arrays), samples, base)


def test_each_malformed_reply_is_refused_alone_and_the_round_goes_on(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    cfg = ins.config
    keys, good = [SHARED, ROWS], [np.full(2, 3.0, np.float32), np.array([7.0], np.float32)]
    nan = [np.full(2, np.nan, np.float32), np.array([7.0], np.float32)]
    inf = [np.ones(2, np.float32), np.array([np.inf], np.float32)]
    results = [
        reply(cfg, "honest", {SHARED: np.ones(2), ROWS: np.array([1.0])}, ["car"], 10),
        raw_reply(cfg, "badjson", keys, good, 10, keys="{not json"),
        raw_reply(cfg, "keyslen", keys + ["model.1.conv.weight"], good, 10),
        raw_reply(cfg, "forgetlist", keys, good, 10, forgetting="[1, 2]"),
        raw_reply(cfg, "apstring", keys, good, 10, per_class_ap='{"car": "high"}'),
        raw_reply(cfg, "namestr", keys, good, 10, names='"car"'),
        raw_reply(cfg, "negative", keys, good, -5),
        raw_reply(cfg, "nan", keys, nan, 10),
        raw_reply(cfg, "inf", keys, inf, 10),
        raw_reply(cfg, "badname", keys, good, 10, names=wire.dumps(["bad\nname"])),
        raw_reply(cfg, "twins", keys, [good[0], np.zeros(2, np.float32)], 10,
                  names=wire.dumps(["car", "Car"])),
        raw_reply(cfg, "rows", keys, good, 10, names=wire.dumps(["car", "dog"])),
        raw_reply(cfg, "steps", keys, good, 10, steps="many"),
    ]
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.strategy"):
        params, metrics = strategy.aggregate_fit(1, results, [])
    devices = strategy.record["devices"]
    refused = {d: v["why"] for d, v in devices.items() if v.get("update") == "refused"}
    assert set(refused) == {r[0].cid for r in results} - {"honest"}
    assert devices["honest"]["update"] == "kept" and devices["honest"]["weight"] == 1.0
    assert "not valid JSON" in refused["badjson"] and "3 tensor keys for 2 arrays" in refused["keyslen"]
    assert "forgetting is not a dict" in refused["forgetlist"]
    assert "per_class_ap of class 'car' is not a finite number" in refused["apstring"]
    assert "class names are not a list of strings" in refused["namestr"]
    assert "num_examples -5" in refused["negative"]
    assert refused["nan"].startswith("non-finite weights") and refused["inf"].startswith("non-finite weights")
    assert "control characters" in refused["badname"] and "one class" in refused["twins"]
    assert "1 class rows for 2 class names" in refused["rows"] and "steps" in refused["steps"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for device in refused:  # one warning naming the device and why
        assert sum(f"update from {device} refused: " in w for w in warnings) == 1
    assert strategy.faults == len(refused) and strategy.record["malformed"] == len(refused)
    assert metrics == {"devices": 1} and strategy.names == ["car"]
    np.testing.assert_allclose(strategy.arrays[SHARED], 1.0)
    assert np.isfinite(parameters_to_ndarrays(params)[0]).all()
    strategy.aggregate_evaluate(1, [], [])
    assert store.rounds()[-1]["devices"]["badjson"]["update"] == "refused"


def test_case_variants_are_one_class_spelt_as_first_seen(tmp_path, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    strategy.names, strategy.arrays = ["car"], {SHARED: np.zeros(2, np.float32),
                                                ROWS: np.array([0.0], np.float32)}
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    cfg = ins.config
    results = [
        reply(cfg, "a", {SHARED: np.ones(2), ROWS: np.array([2.0, 4.0])}, ["CAR", "Truck"], 10),
        reply(cfg, "b", {SHARED: np.ones(2), ROWS: np.array([6.0, 8.0])}, ["truck", "car"], 10),
    ]
    strategy.aggregate_fit(1, results, [])
    assert strategy.names == ["car", "Truck"]
    np.testing.assert_allclose(strategy.arrays[ROWS], [(2.0 + 8.0) / 2, (4.0 + 6.0) / 2])


def test_a_new_classs_spelling_does_not_hang_on_the_order_replies_came_in(tmp_path, monkeypatch):
    """Before: the fleet spelt a new class as the first reply did: 'person' in one run, 'Person'
    in the next. Now the first device by name decides."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    spelt = []
    for order in ((0, 1), (1, 0)):
        strategy, _ = start(tmp_path / f"o{order[0]}")
        strategy.names, strategy.arrays = [], {SHARED: np.zeros(2, np.float32),
                                               ROWS: np.zeros(0, np.float32)}
        (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
        cfg = ins.config
        replies = [reply(cfg, "devB", {SHARED: np.ones(2), ROWS: np.array([2.0])}, ["Person"], 10),
                   reply(cfg, "devA", {SHARED: np.ones(2), ROWS: np.array([4.0])}, ["person"], 10)]
        strategy.aggregate_fit(1, [replies[i] for i in order], [])
        spelt.append(strategy.names)
    assert spelt == [["person"], ["person"]]


def test_a_non_finite_average_is_never_stored(tmp_path, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    before = {SHARED: np.zeros(2, np.float32), ROWS: np.zeros(0, np.float32),
              "model.9.conv.weight": np.full(3, np.nan, np.float32)}  # kept by nobody's update
    strategy.arrays = dict(before)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    honest = reply(ins.config, "a", {SHARED: np.ones(2), ROWS: np.array([1.0])}, ["car"], 10)
    params, _ = strategy.aggregate_fit(1, [honest], [])
    assert params is None and strategy.arrays is not None and strategy.names == []
    assert store.load() is None and "non-finite" in strategy.record["global"]
    assert strategy.configure_evaluate(1, None, FakeManager(1)) == []  # nothing to adopt


def test_a_round_whose_model_cannot_be_saved_keeps_the_global_model_and_the_server(
        tmp_path, monkeypatch, caplog):
    """A full disk at the save: the round's model is not kept, nothing is sent to adopt, and
    the server goes on (before: the error escaped aggregation and left the process hanging)."""
    import errno

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "save", full)
    honest = reply(ins.config, "a", {SHARED: np.ones(2), ROWS: np.array([1.0])}, ["car"], 10)
    with caplog.at_level("ERROR"):
        params, _ = strategy.aggregate_fit(1, [honest], [])
    assert params is None and strategy.names == [] and not strategy.changed
    assert "cannot be saved" in caplog.text and "No space left" in strategy.record["global"]
    assert strategy.configure_evaluate(1, None, FakeManager(1)) == []


def test_a_server_refuses_to_start_from_a_poisoned_global_model(tmp_path):
    from edgecl.errors import EdgeclError

    store = GlobalStore(tmp_path / "fleet")
    with pytest.raises(EdgeclError, match="non-finite weights"):
        make_strategy(FleetConfig(), store, initial=(3, {SHARED: np.full(2, np.nan, np.float32)}, ["car"]))
    with pytest.raises(EdgeclError, match="invalid class list.*control characters"):
        make_strategy(FleetConfig(), store, initial=(3, {SHARED: np.zeros(2, np.float32)}, ["bad\nname"]))


def test_a_malformed_adoption_report_is_refused_alone(tmp_path, caplog, monkeypatch):
    from flwr.common import EvaluateRes

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    strategy.names, strategy.changed, strategy.record = ["car"], True, {"round": 1}
    instructions = strategy.configure_evaluate(1, None, FakeManager(3, token="t"))
    bad = [{"per_class_ap": "{oops"}, {"test_ap": "[1]"}, {}]
    replies = [(proxy, EvaluateRes(OK, 0.0, 0, {"device": f"d{i}", "auth": "", "status": "promoted",
                                                **bad[i]}))
               for i, (proxy, _) in enumerate(instructions)]
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.strategy"):
        strategy.aggregate_evaluate(1, replies, [])
    adoption = store.rounds()[-1]["adoption"]
    assert adoption["d0"]["status"] == "refused"
    assert "per_class_ap is not valid JSON" in adoption["d0"]["reason"]
    assert adoption["d1"]["status"] == "refused" and "test_ap is not a dict" in adoption["d1"]["reason"]
    assert adoption["d2"]["status"] == "promoted" and strategy.faults == 2
    assert "adoption report from d0 refused" in caplog.text


BAD_REPLIES = {  # what a hostile or broken device may send -> why it is refused
    "keys not JSON": (dict(keys="{not json"), "keys is not valid JSON"),
    "more keys than arrays": (dict(keys=wire.dumps([SHARED, ROWS, "model.1.conv.weight"])),
                              "3 tensor keys for 2 arrays"),
    "forgetting a list": (dict(forgetting="[1, 2]"), "forgetting is not a dict"),
    "names a string": (dict(names='"car"'), "class names are not a list of strings"),
    "NaN weights": (dict(arrays=[np.full(2, np.nan, np.float32), np.ones(1, np.float32)]),
                    "non-finite weights (tensor 'model.0.conv.weight')"),
    "control character": (dict(names=wire.dumps(["bad\nname"])), "control characters"),
    "case twins": (dict(names=wire.dumps(["car", "Car"])), "are one class"),
    "no sample": (dict(samples=0), "num_examples 0 is not a positive whole number"),
    "a claim to outweigh the fleet": (dict(samples=10**15), "more than a replay memory holds"),
}


@pytest.mark.parametrize("kind", sorted(BAD_REPLIES))
def test_one_bad_reply_is_refused_and_the_others_are_averaged(tmp_path, monkeypatch, kind):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    change, why = BAD_REPLIES[kind]
    change = dict(change)
    rows = np.ones(2 if "twins" in kind else 1, np.float32)
    arrays = change.pop("arrays", [np.full(2, 3.0, np.float32), rows])
    samples = change.pop("samples", 10)
    results = [reply(ins.config, "honest", {SHARED: np.ones(2), ROWS: np.array([1.0])}, ["car"], 10),
               raw_reply(ins.config, "bad", [SHARED, ROWS], arrays, samples, **change)]
    params, metrics = strategy.aggregate_fit(1, results, [])
    bad = strategy.record["devices"]["bad"]
    assert bad["update"] == "refused" and why in bad["why"]
    assert metrics == {"devices": 1} and strategy.names == ["car"]
    saved = store.load()
    assert saved[2] == ["car"] and np.isfinite(saved[1][SHARED]).all()
    np.testing.assert_allclose(saved[1][SHARED], 1.0)


def test_a_round_waiting_for_devices_says_so(tmp_path, caplog):
    """Flower waits up to a day for fleet.min_devices without a word; the server logs it."""
    strategy, _ = start(tmp_path, min_devices=2)

    class Arriving(FakeManager):
        def __init__(self):
            super().__init__(1)
            self.waits = 0

        def wait_for(self, num_clients, timeout=86400):
            self.waits += 1
            if self.waits == 2:
                self.clients["c1"] = FakeProxy("c1")
            return super().wait_for(num_clients, timeout)

    with caplog.at_level("INFO"):
        sent = strategy.configure_fit(1, None, Arriving())
    assert len(sent) == 2
    assert "fleet round 1: waiting for 2 devices (fleet.min_devices); 1 connected" in caplog.text
    # said at once, not after the first minute of waiting (a server seemed stuck at [ROUND 1])
    caplog.clear()

    class Late(FakeManager):
        def wait_for(self, num_clients, timeout=86400):
            assert "waiting for 2 devices" in caplog.text, "not said before the first wait"
            self.clients["c1"] = FakeProxy("c1")
            return super().wait_for(num_clients, timeout)

    with caplog.at_level("INFO"):
        assert len(strategy.configure_fit(2, None, Late(1))) == 2


def test_a_device_knows_when_its_token_differs_from_the_servers(tmp_path):
    """Before: the server refused every update of a device with another token, and the device
    went on training and adopting without a word."""
    strategy, _ = start(tmp_path, token="right")
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1, token="right"))
    assert wire.server_is_authentic("right", ins.config)
    assert not wire.server_is_authentic("wrong", ins.config)
    assert not wire.server_is_authentic("", ins.config)  # a device without the fleet's token
    open_strategy, _ = start(tmp_path / "open")
    (_, open_ins), = open_strategy.configure_fit(1, None, FakeManager(1))
    assert wire.server_is_authentic("", open_ins.config)
    assert not wire.server_is_authentic("t", open_ins.config)  # an impostor holds no token


def test_a_round_is_recorded_when_its_model_is_saved_and_again_when_complete(tmp_path):
    store = GlobalStore(tmp_path)
    store.append_round({"round": 1, "devices": {}, "partial": "the adoptions were not recorded yet"})
    assert store.rounds() == [{"round": 1, "devices": {},
                               "partial": "the adoptions were not recorded yet"}]
    store.append_round({"round": 1, "devices": {}, "adoption": {"d0": {"status": "promoted"}}})
    store.append_round({"round": 2, "partial": "x"})
    rounds = store.rounds()
    assert [r["round"] for r in rounds] == [1, 2] and "partial" not in rounds[0]
    assert rounds[0]["adoption"] == {"d0": {"status": "promoted"}}


def test_a_second_reply_with_a_device_name_already_heard_is_refused(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    manager = FakeManager(2)
    for proxy in manager.clients.values():  # two devices, one name (a copied config)
        proxy.name = "jetson"
    (_, ins), _ = strategy.configure_fit(1, None, manager)
    results = [reply(ins.config, "jetson", {SHARED: np.ones(2), ROWS: np.array([1.0])}, ["car"], 10),
               reply(ins.config, "jetson", {SHARED: np.full(2, 5.0), ROWS: np.array([1.0])},
                     ["car"], 10)]
    results = [(manager.clients["c0"], results[0][1]), (manager.clients["c1"], results[1][1])]
    with caplog.at_level("WARNING"):
        strategy.aggregate_fit(1, results, [])
    assert "a second reply named 'jetson' refused (connection 'c1'; the first came from 'c0')" in caplog.text
    assert strategy.record["duplicate_names"] == ["jetson"]
    np.testing.assert_allclose(store.load()[1][SHARED], 1.0)  # the first one only
    # each device hears with the next request which of the two it is (before: both heard
    # "kept the first and refused the second", and both counted their samples as learnt)
    asks = {c.cid: ins.config for c, ins in strategy.configure_evaluate(1, None, manager)}
    said = "fleet round 1: two devices sent an update as jetson; the server kept "
    advice = ": give each device its own fleet.device_name"
    assert wire.loads(asks["c0"]["notices"]) == {
        "jetson": f"{said}this device's update and refused the other's{advice}"}
    assert wire.loads(asks["c1"]["notices"]) == {
        "jetson": f"{said}the other's update and refused this device's (its samples are not "
                  f"learnt by the fleet: each round keeps one update per name, and the same one "
                  f"may win every round){advice}"}
    assert wire.averages(asks["c0"], "jetson") and not wire.averages(asks["c1"], "jetson")


def test_two_adoption_reports_of_one_device_name_are_both_kept(tmp_path, monkeypatch):
    """Before: the second device's report replaced the first's in the round's record."""
    from flwr.common import EvaluateRes

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    strategy.names, strategy.changed, strategy.record = ["car"], True, {"round": 1}
    replies = [(proxy, EvaluateRes(OK, 0.0, 0, {"device": "jetson", "status": status,
                                                 "reason": status}))
               for (proxy, _), status in zip(strategy.configure_evaluate(1, None, FakeManager(3)),
                                             ("promoted", "rejected", "skipped"))]
    strategy.aggregate_evaluate(1, replies, [])
    adoption = store.rounds()[-1]["adoption"]
    assert {k: v["status"] for k, v in adoption.items()} == {
        "jetson": "promoted", "jetson (2)": "rejected", "jetson (3)": "skipped"}


def test_a_tensor_beyond_float16s_range_travels_as_float32():
    keys, arrays = wire.to_wire({"bn.running_var": np.array([1.0, 70000.0], np.float32),
                                 "conv.weight": np.array([0.5, -2.0], np.float32)}, "float16")
    assert [a.dtype for a in arrays] == [np.float32, np.float16]
    back = wire.from_wire(keys, arrays)
    assert back["bn.running_var"].tolist() == [1.0, 70000.0] and np.isfinite(back["conv.weight"]).all()


def test_a_connection_without_the_fleets_token_gets_no_model(tmp_path, caplog, monkeypatch):
    """Before: the server sent the global model to every sampled connection and only refused
    the reply of one without the token: anyone who could connect received the fleet's model."""
    monkeypatch.setattr("edgecl.fleet.strategy.HELLO_POLL_S", 0.0)
    strategy, _ = start(tmp_path, token="right", min_devices=1, fraction_fit=1.0)
    manager = FakeManager(0)
    manager.clients = {"ok": FakeProxy("ok", "right", "drone-1"),
                       "bad": FakeProxy("bad", "wrong", "intruder"),
                       "none": FakeProxy("none", "", "no-token")}
    sent = strategy.configure_fit(1, None, manager)
    assert [c.cid for c, _ in sent] == ["ok"]
    assert sorted(strategy.refused) == ["bad", "none"]
    assert "connection bad (intruder) refused: bad or missing authentication" in caplog.text
    assert strategy.device_names["ok"] == "drone-1"   # named before its first reply
    strategy.changed = True                           # a new global model to adopt
    assert [c.cid for c, _ in strategy.configure_evaluate(1, None, manager)] == ["ok"]
    assert [manager.clients[c].hellos for c in ("ok", "bad", "none")] == [1, 1, 1]  # asked once
    caplog.clear()
    strategy.configure_fit(2, None, manager)
    assert "refused" not in caplog.text and manager.clients["bad"].hellos == 1   # said once


def test_a_fleet_waits_for_enough_connections_holding_its_token(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("edgecl.fleet.strategy.HELLO_POLL_S", 0.0)
    monkeypatch.setattr("edgecl.fleet.strategy.WAIT_LOG_S", 0.0)
    strategy, _ = start(tmp_path, token="right", min_devices=2)
    manager = FakeManager(0)
    manager.clients = {"a": FakeProxy("a", "right"), "b": FakeProxy("b", "wrong")}
    polls = []
    real_admitted = strategy._admitted

    def admitted(clients, rnd):
        polls.append(len(clients))
        if len(polls) == 3:                           # a second device with the token arrives
            manager.clients["c"] = FakeProxy("c", "right")
        return real_admitted(list(manager.clients.values()), rnd)

    strategy._admitted = admitted
    with caplog.at_level("INFO"):
        sent = strategy.configure_fit(1, None, manager)
    assert sorted(c.cid for c, _ in sent) == ["a", "c"]
    assert "waiting for 2 devices holding the fleet's token; 2 connected, 1 refused" in caplog.text


def test_without_a_token_every_connection_is_admitted_and_asked_its_name_once(tmp_path, caplog,
                                                                              monkeypatch):
    """Before: without a token no connection was asked anything, so a device that dropped out
    of its first round (after a server restart, say) was 'a device' in the log."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, _ = start(tmp_path, min_devices=2)
    manager = FakeManager(0)
    manager.clients = {"a": FakeProxy("a", name="drone-1"), "b": FakeProxy("b", name="drone-2")}
    sent = strategy.configure_fit(1, None, manager)
    assert len(sent) == 2 and [c.hellos for c in manager.clients.values()] == [1, 1]
    results = [reply(sent[0][1].config, "drone-1", {SHARED: np.ones(2), ROWS: np.array([1.0])},
                     ["car"], 10)]
    results[0] = (manager.clients["a"], results[0][1])
    with caplog.at_level("WARNING"):
        strategy.aggregate_fit(1, results, [type("GrpcBridgeClosed", (Exception,), {})()])
    assert "fleet round 1: drone-2 dropped out of the round (its connection closed" in caplog.text
    strategy.configure_fit(2, None, manager)
    assert [c.hellos for c in manager.clients.values()] == [1, 1], "asked once per connection"


def test_two_connected_devices_with_one_name_are_said_at_once(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, _ = start(tmp_path, min_devices=2)
    manager = FakeManager(0)
    manager.clients = {"a": FakeProxy("a", name="jetson"), "b": FakeProxy("b", name="jetson")}
    with caplog.at_level("WARNING"):
        strategy.configure_fit(1, None, manager)
    assert ("fleet: 2 connected devices are named 'jetson': give each device its own "
            "fleet.device_name (a round uses one reply per name)") in caplog.text



def test_with_a_token_two_devices_with_one_name_are_said_at_once_too(tmp_path, caplog):
    """Before: with a token (required off loopback) the name check at connection was skipped;
    only a round's "second reply named 'jetson' refused" said it, a round later."""
    strategy, _ = start(tmp_path, token="right", min_devices=2)
    manager = FakeManager(0)
    manager.clients = {"a": FakeProxy("a", "right", name="jetson"),
                       "b": FakeProxy("b", "right", name="jetson"),
                       "c": FakeProxy("c", "wrong", name="jetson")}
    with caplog.at_level("WARNING"):
        strategy.configure_fit(1, None, manager)
    assert ("fleet: 2 connected devices are named 'jetson': give each device its own "
            "fleet.device_name (a round uses one reply per name)") in caplog.text


def test_a_reply_with_an_update_is_used_over_a_skip_under_the_same_name(tmp_path, caplog,
                                                                       monkeypatch):
    """Before: a device with an empty memory, named like another, replied 'skipped' first,
    and the real update that followed was refused as a second reply of that name."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, store = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    results = [reply(ins.config, "devA", {}, [], 0, skipped="no training sample in the memory"),
               reply(ins.config, "devA", {SHARED: np.full(2, 3.0), ROWS: np.array([1.0])},
                     ["car"], 13)]
    with caplog.at_level("WARNING"):
        strategy.aggregate_fit(1, results, [])
    assert "two replies named 'devA' (the first sent no update; the second is used)" in caplog.text
    np.testing.assert_allclose(store.load()[1][SHARED], 3.0)


def test_a_resumed_fleet_says_its_initial_model_is_not_read(tmp_path, caplog, monkeypatch):
    """Before: a fleet.initial_model given to a server resuming after round 6 was silently
    ignored."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    store = GlobalStore(tmp_path / "fleet")
    store.save(6, {SHARED: np.zeros(2, np.float32)}, ["car"])
    cfg = FleetConfig(min_devices=1, initial_model=str(tmp_path / "yours.pt"))
    with caplog.at_level("INFO"):
        make_strategy(cfg, store)
    assert (f"fleet: resuming after round 6 with the global model of round 6, 1 classes "
            f"(yolo11n.yaml); fleet.initial_model "
            f"{tmp_path / 'yours.pt'} is not read: it only starts a fleet that has no global "
            f"model yet") in caplog.text


def test_a_folder_as_the_initial_model_is_named_a_folder(tmp_path):
    from edgecl.errors import ModelLoadError
    from edgecl.fleet.weights import global_from_checkpoint

    with pytest.raises(ModelLoadError, match=f"^fleet.initial_model: {tmp_path} is a folder, "
                                             f"not a model file$"):
        global_from_checkpoint(str(tmp_path))


def test_a_missing_initial_model_is_named_by_its_key(tmp_path):
    """Before: 'checkpoint not found: /nonexistent.pt', the one bad value not named by key."""
    from edgecl.errors import ModelLoadError
    from edgecl.fleet.weights import global_from_checkpoint

    with pytest.raises(ModelLoadError, match=f"^fleet.initial_model: checkpoint not found: "
                                             f"{tmp_path / 'yours.pt'}$"):
        global_from_checkpoint(str(tmp_path / "yours.pt"))


def test_an_initial_model_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path):
    """Before: /dev/zero, or a .txt, was called 'an exported engine'."""
    from edgecl.errors import ModelLoadError
    from edgecl.fleet.weights import global_from_checkpoint

    for path, what in (("/dev/zero", "zero is no model file name"),
                       (str(tmp_path / "notes.txt"), "notes.txt is no model file name"),
                       (str(tmp_path / "m.onnx"), "an exported engine holds no trainable weights")):
        with pytest.raises(ModelLoadError, match=f"^fleet.initial_model={path}: a fleet starts "
                                                 f"from an ultralytics .pt checkpoint \\({what}\\)$"):
            global_from_checkpoint(path)


def test_a_missing_global_json_beside_its_model_is_a_problem_not_a_new_fleet(tmp_path):
    """Before: with global.json deleted (a card fault, a hand's rm) the server started the fleet
    from a fresh model, unsaid, and its next save deleted the fleet's model."""
    store = GlobalStore(tmp_path / "fleet")
    store.save(3, {SHARED: np.ones(2, np.float32)}, ["car"])
    (store.root / "global.json").unlink()
    assert store.problem() == "global.json is missing beside global-000003.npz"
    assert store.load() is None


def test_garbage_in_the_rounds_log_is_skipped(tmp_path):
    """Before: a card fault's bytes in rounds.jsonl stopped the server with an internal error
    (UnicodeDecodeError)."""
    store = GlobalStore(tmp_path / "fleet")
    store.append_round({"round": 1, "devices": {}})
    with open(store.root / "rounds.jsonl", "ab") as fh:
        fh.write(bytes(range(128, 256)) + b"\n")
    store.append_round({"round": 2, "devices": {}})
    assert [r["round"] for r in store.rounds()] == [1, 2] and store.last_round() == 2


def test_a_save_removes_what_a_save_killed_half_way_left(tmp_path):
    """Before: a server killed while it saved left a 10 MB temporary file that no later save
    or start removed."""
    store = GlobalStore(tmp_path / "fleet")
    store.save(4, {SHARED: np.ones(2, np.float32)}, ["car"])
    (store.root / ".global-000005.npz.k3j9.tmp").write_bytes(b"half a model")
    (store.root / ".global.json.x1.tmp").write_bytes(b"{")
    store.save(5, {SHARED: np.ones(2, np.float32)}, ["car"])
    assert sorted(p.name for p in store.root.iterdir()) == ["global-000005.npz", "global.json"]


def test_a_torn_last_line_does_not_take_the_next_record_with_it(tmp_path):
    """Before: a crash mid-append left a line without its end; the next round's record was
    appended onto it and lost with it (round 3 disappeared from the log)."""
    store = GlobalStore(tmp_path / "fleet")
    store.append_round({"round": 1, "devices": {}})
    with open(store.root / "rounds.jsonl", "ab") as fh:
        fh.write(b'{"round": 2, "dev')
    store.append_round({"round": 3, "devices": {}})
    assert [r["round"] for r in store.rounds()] == [1, 3] and store.last_round() == 3


def test_the_stop_message_resumes_after_the_last_round_logged(tmp_path):
    """Before: a stop after round 3 (no usable update; model of round 2) said the restart
    resumes with round 3, and with no model at all that the fleet starts over."""
    from edgecl.fleet.server import ServerStopped

    assert str(ServerStopped(15, 2, tmp_path, 3)).endswith(
        f"the global model of round 2 is kept in {tmp_path}; a restart resumes with round 4")
    assert str(ServerStopped(15, 0, tmp_path, 2)).endswith(
        "no round saved a global model yet; a restart resumes with round 3 from the first model")
    assert str(ServerStopped(15, 0, tmp_path)).endswith("starts the fleet from its first round")


def test_a_device_name_cannot_forge_lines_of_the_servers_log(tmp_path, caplog, monkeypatch):
    """Before: a device named "dev0\\n<date> INFO ... update FAKE kept" printed that forged line
    whole in the server's log, and a name of 5,000 characters was printed whole."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, _ = start(tmp_path)
    (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    forged = "dev0\n2026-12-05 23:59:59,000 INFO edgecl.fleet.strategy: update FAKE kept"
    results = [reply(ins.config, forged, {SHARED: np.ones(2), ROWS: np.array([1.0])}, ["car"], 5),
               reply(ins.config, "x" * 5000, {SHARED: np.ones(2), ROWS: np.array([1.0])},
                     ["car"], 5)]
    with caplog.at_level(logging.INFO, logger="edgecl.fleet.strategy"):
        strategy.aggregate_fit(1, results, [])
    assert caplog.records and all("\n" not in r.getMessage() for r in caplog.records)
    assert "dev0\\n2026-12-05" in caplog.text and "x" * 101 not in caplog.text


def test_a_device_name_is_checked_at_load(tmp_path):
    from edgecl.config import load_config

    path = tmp_path / "device.yaml"
    path.write_text('fleet: {device_name: "dev0\\n2026-12-05 INFO update FAKE kept"}\n')
    for args in ((path, []), (None, ["fleet.device_name=" + "a" * 65]),
                 (None, ["fleet.device_name=tab\there"])):
        with pytest.raises(ConfigError, match="'fleet.device_name'.* is not a name of at most 64 "
                                              "characters with no newline or other control"):
            load_config(*args)
    assert load_config(None, ["fleet.device_name=drone-7 ü"]).fleet.device_name == "drone-7 ü"


def test_the_server_and_a_device_log_the_same_size_of_the_global_model(tmp_path, caplog,
                                                                         monkeypatch):
    """Before: the server counted Flower's serialised tensors (a header each) and the device
    the arrays it received: '5.3 MB' sent, '5.2 MB' received, of one model."""
    import re

    from edgecl.fleet.client import _megabytes

    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    strategy, _ = start(tmp_path)
    strategy.arrays = {f"model.{i}.conv.weight": np.zeros(4000, np.float32) for i in range(600)}
    with caplog.at_level("INFO"):
        (_, ins), = strategy.configure_fit(1, None, FakeManager(1))
    said = re.search(r"sent the global model \(\d+ classes, ([\d.]+) MB\)", caplog.text)
    received = _megabytes(parameters_to_ndarrays(ins.parameters))
    assert said.group(1) == f"{received:.1f}" == "4.8"


def test_a_class_spelt_two_ways_in_one_round_is_one_fleet_class():
    """Before: 'OtherVehicle' from one device and 'other_vehicle' from another (a renamed class)
    made two fleet classes in one round, and every device gained an empty duplicate."""
    from edgecl.fleet.strategy import fleet_spelling

    known = ["car"]
    assert fleet_spelling(["Car", "OtherVehicle"], known) == ["car", "OtherVehicle"]
    assert fleet_spelling(["other vehicle", "CAR"], known) == ["OtherVehicle", "car"]
    assert known == ["car", "OtherVehicle"]
    # a device holding both spellings as two classes keeps them two (no class is merged away
    # inside one update), the exact name first whatever the order
    assert fleet_spelling(["other_vehicle", "OtherVehicle"], known) == [
        "other_vehicle", "OtherVehicle"]
    assert known == ["car", "OtherVehicle", "other_vehicle"]
    # names with nothing but punctuation match only themselves
    assert fleet_spelling(["__", "--"], known) == ["__", "--"]
    assert fleet_spelling(["行人", "汽车"], []) == ["行人", "汽车"]
