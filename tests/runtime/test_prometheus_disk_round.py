"""``edgecl_learner_round`` shows the newest round the state directory records, whichever
process ran it: a round ``edgecl learn`` ran beside the runtime moves the gauge at the next
scrape, and a scrape looks at the learner's small state file without reading it unless it
changed."""

from edgecl.continual.round_state import LearnerState, save_state
from edgecl.runtime import prometheus
from edgecl.runtime.monitor import Monitor
from edgecl.runtime.prometheus import PrometheusExporter
from test_prometheus_live import bare_runtime, samples, supervisor_at

ROUND = ("edgecl_learner_round", ())


def learner(round_no, state="idle"):
    return {"learner": {"enabled": True, "state": state, "round": round_no, "rounds": 0,
                        "progress": None, "apply_errors": 0}}


def test_a_round_another_process_ran_moves_the_gauge(tmp_path, monkeypatch):
    """Before: the runtime's supervisor read the round at its start and at its own rounds only,
    so after 'edgecl learn' ran round 6 the gauge said 5 until the runtime's next round."""
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=5, current="v0005")
    runtime = bare_runtime(tmp_path)
    runtime.supervisor = sup
    exporter = PrometheusExporter(Monitor(tmp_path), vitals=runtime.vitals)
    assert samples(exporter.render().decode())[ROUND] == 5.0
    save_state(tmp_path, LearnerState(round=6, last_sample_id=20))  # 'edgecl learn' ran round 6
    got = samples(exporter.render().decode())
    assert got[ROUND] == 6.0
    assert got[("edgecl_runtime_up", ())] == 1.0
    assert runtime.live()["learner"]["round"] == 6  # the Live page says the same
    sup.start_round("interval")  # the runtime's own next round runs as round 7
    assert samples(exporter.render().decode())[ROUND] == 7.0


def test_the_running_round_and_a_newer_count_of_the_process_stand(tmp_path):
    save_state(tmp_path, LearnerState(round=8))
    figures = {"now": learner(9, "training")}
    exporter = PrometheusExporter(Monitor(tmp_path), vitals=lambda: figures["now"])
    assert samples(exporter.render().decode())[ROUND] == 9.0  # training round 9: not 8
    figures["now"] = learner(9)  # finished, its progress not written yet (a full disk)
    assert samples(exporter.render().decode())[ROUND] == 9.0


def test_the_state_file_is_read_only_when_it_changes(tmp_path, monkeypatch):
    save_state(tmp_path, LearnerState(round=3))
    clock = {"now_s": 0.0}
    exporter = PrometheusExporter(Monitor(tmp_path), vitals=lambda: learner(1))
    exporter.disk_round.clock = lambda: clock["now_s"]
    for _ in range(50):
        assert samples(exporter.render().decode())[ROUND] == 3.0
    assert exporter.disk_round.reads == 1
    save_state(tmp_path, LearnerState(round=4))
    assert samples(exporter.render().decode())[ROUND] == 4.0
    assert exporter.disk_round.reads == 2
    clock["now_s"] = prometheus.ROUND_REREAD_S  # a file system with coarse times: read again
    exporter.render()
    assert exporter.disk_round.reads == 3


def test_a_missing_or_damaged_state_file_leaves_the_process_count(tmp_path):
    exporter = PrometheusExporter(Monitor(tmp_path), vitals=lambda: learner(12))
    assert samples(exporter.render().decode())[ROUND] == 12.0  # no state file yet
    state = tmp_path / "learner" / "state.json"
    state.parent.mkdir()
    for damaged in (b"\x00" * 64, b'{"round": "7"}', b"[1]", b'{"round": -1}', b""):
        state.write_bytes(damaged)
        got = samples(exporter.render().decode())
        assert got[ROUND] == 12.0 and got[("edgecl_runtime_up", ())] == 1.0, damaged


def test_disk_round_reads_the_learner_state(tmp_path):
    newest = prometheus.DiskRound(tmp_path)
    assert newest() is None
    save_state(tmp_path, LearnerState(round=300, last_sample_id=9))
    assert newest() == 300
