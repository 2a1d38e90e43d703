"""/metrics shows the running process (frames, drops, learner, health), read at scrape time from
the runtime, and a fault there never fails a scrape; the Live page's round goes on across
restarts and its progress follows the round's real bound."""

import json
import logging
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecl.config import load_config
from edgecl.continual.round_state import LearnerState, RoundResult, RoundStatus, save_state
from edgecl.runtime import learner as learner_mod
from edgecl.runtime.app import RunOptions, Runtime
from edgecl.runtime.learner import LearnerSupervisor
from edgecl.runtime.loop import InferenceLoop
from edgecl.runtime.monitor import Monitor
from edgecl.runtime.prometheus import PrometheusExporter
from fakes import CollectSink, ListSource, SleepBackend


def samples(text: str) -> dict:
    """``{(sample name, sorted label items): value}`` of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(text: str) -> dict:
    """``{family name: type}``."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


VITALS = {
    "status": "degraded", "uptime_s": 3600.0, "stages": {"capture": "idle", "learner": "ok"},
    "frames_captured": 120, "frames_processed": 100, "frames_dropped": 15, "frames_skipped": 2,
    "reconnects": 1, "swaps": 3, "step_errors": 4, "processed_fps": 9.5, "inference_fps": 31.25,
    "sinks": {"MemorySink": {"dropped": 6, "errors": 0}, "JsonlSink": {"dropped": 0, "errors": 2}},
    "queue_items": 7, "storing_paused": True, "labelling": {"queued": 11, "not_stored": 5},
    "learner": {"enabled": True, "state": "training", "round": 300, "rounds": 2, "progress": 0.5,
                "apply_errors": 1},
}


def test_the_running_process_is_exposed_with_prometheus_conventions(tmp_path):
    text = PrometheusExporter(Monitor(tmp_path), vitals=lambda: VITALS).render().decode()
    got = samples(text)
    assert got[("edgecl_runtime_up", ())] == 1.0
    assert got[("edgecl_runtime_scrape_errors_total", ())] == 0.0
    assert got[("edgecl_uptime_seconds", ())] == 3600.0
    # one gauge per state: 1 for the current one
    assert {k[1][0][1]: v for k, v in got.items() if k[0] == "edgecl_health_status"} == {
        "ok": 0.0, "degraded": 1.0, "stuck": 0.0}
    stage = {dict(k[1])["state"]: v for k, v in got.items()
             if k[0] == "edgecl_stage_status" and dict(k[1])["stage"] == "capture"}
    assert stage == {"starting": 0.0, "ok": 0.0, "idle": 1.0, "degraded": 0.0, "stuck": 0.0,
                     "stopped": 0.0}
    # 120 captured = 100 inferred + 15 dropped by back-pressure + 5 still buffered
    assert got[("edgecl_frames_captured_total", ())] == 120.0
    assert got[("edgecl_frames_processed_total", ())] == 100.0
    assert got[("edgecl_frames_dropped_total", ())] == 15.0
    assert got[("edgecl_source_frames_skipped_total", ())] == 2.0
    assert got[("edgecl_source_reconnects_total", ())] == 1.0
    assert got[("edgecl_model_swaps_total", ())] == 3.0
    assert got[("edgecl_supervisor_step_errors_total", ())] == 4.0
    assert got[("edgecl_processed_frames_per_second", ())] == 9.5
    assert got[("edgecl_inference_frames_per_second", ())] == 31.25
    assert got[("edgecl_sink_results_dropped_total", (("sink", "MemorySink"),))] == 6.0
    assert got[("edgecl_sink_errors_total", (("sink", "JsonlSink"),))] == 2.0
    assert got[("edgecl_operator_queue_items", ())] == 7.0
    assert got[("edgecl_storing_paused", ())] == 1.0
    assert got[("edgecl_labelling_events_total", (("event", "queued"),))] == 11.0
    assert {k[1][0][1]: v for k, v in got.items() if k[0] == "edgecl_learner_state"} == {
        "idle": 0.0, "training": 1.0, "backoff": 0.0, "off": 0.0, "waiting_for_room": 0.0,
        "waiting_for_model": 0.0, "waiting_for_held_out": 0.0, "waiting_for_import": 0.0}
    assert got[("edgecl_learner_enabled", ())] == 1.0
    assert got[("edgecl_learner_round", ())] == 300.0
    assert got[("edgecl_learner_rounds_total", ())] == 2.0
    assert got[("edgecl_learner_round_progress_ratio", ())] == 0.5
    assert got[("edgecl_learner_apply_errors_total", ())] == 1.0
    kinds = families(text)
    assert all(kinds[name] == "counter" for name in (
        "edgecl_frames_captured", "edgecl_frames_processed", "edgecl_frames_dropped",
        "edgecl_sink_results_dropped", "edgecl_learner_rounds", "edgecl_runtime_scrape_errors"))
    assert kinds["edgecl_monitor_up"] == "gauge", "the monitor's metrics are still there"


def test_a_state_outside_the_known_ones_still_reads_1(tmp_path):
    vitals = {"learner": {"state": "error"}}
    got = samples(PrometheusExporter(Monitor(tmp_path), vitals=lambda: vitals).render().decode())
    states = {k[1][0][1]: v for k, v in got.items() if k[0] == "edgecl_learner_state"}
    assert states["error"] == 1.0 and sum(states.values()) == 1.0


def test_a_failing_runtime_never_fails_a_scrape(tmp_path, caplog):
    def broken():
        raise RuntimeError("loop gone")

    exporter = PrometheusExporter(Monitor(tmp_path), vitals=broken)
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.prometheus"):
        first = samples(exporter.render().decode())
        second = samples(exporter.render().decode())
    assert first[("edgecl_runtime_up", ())] == 0.0 and second[("edgecl_runtime_up", ())] == 0.0
    assert first[("edgecl_runtime_scrape_errors_total", ())] == 1.0
    assert second[("edgecl_runtime_scrape_errors_total", ())] == 2.0
    assert second[("edgecl_monitor_up", ())] == 1.0, "the monitor's metrics are served as usual"
    assert [r.getMessage().count("loop gone") for r in caplog.records] == [1], "logged once"
    # a malformed figure is contained the same way, with no half-written family
    exporter = PrometheusExporter(Monitor(tmp_path),
                                  vitals=lambda: {"uptime_s": 5.0, "frames_processed": "many"})
    got = samples(exporter.render().decode())
    assert got[("edgecl_runtime_up", ())] == 0.0 and ("edgecl_uptime_seconds", ()) not in got


def test_without_a_runtime_the_exporter_shows_the_monitor_only(tmp_path):
    kinds = families(PrometheusExporter(Monitor(tmp_path)).render().decode())
    assert "edgecl_monitor_up" in kinds and "edgecl_runtime_up" not in kinds


def bare_runtime(tmp_path, *overrides) -> Runtime:
    cfg = load_config(None, [f"state_dir={tmp_path}", *overrides])
    return Runtime(cfg, RunOptions(source_uri="list://", use_state=False))


def test_vitals_count_what_the_loop_captured_inferred_and_dropped(tmp_path):
    runtime = bare_runtime(tmp_path)
    sink = CollectSink()
    # a one-frame buffer that drops the oldest, and a model slower than the source
    runtime.loop = InferenceLoop(ListSource(20), SleepBackend(delay_s=0.02), "v0001", sinks=[sink],
                                 back_pressure="drop_oldest", watchdog=runtime.watchdog)
    report = runtime.loop.run()
    text = PrometheusExporter(Monitor(tmp_path), vitals=runtime.vitals).render().decode()
    got = samples(text)
    assert got[("edgecl_frames_captured_total", ())] == 20.0
    assert got[("edgecl_frames_processed_total", ())] == report.frames == len(sink.results)
    assert got[("edgecl_frames_dropped_total", ())] == report.dropped == 20 - report.frames > 0
    assert got[("edgecl_sink_results_dropped_total", (("sink", "CollectSink"),))] == 0.0
    assert got[("edgecl_health_status", (("status", "ok"),))] == 1.0
    assert got[("edgecl_stage_status", (("stage", "inference"), ("state", "stopped")))] == 1.0
    assert "edgecl_learner_state" not in families(text), "no state directory: no learner"


def test_a_promoted_version_that_does_not_load_is_counted_and_said(tmp_path):
    """Before: a current version the loader refused was logged once; the device went on serving
    its older model with no count on /metrics and no alert on the console."""
    from edgecl.runtime.watcher import ModelWatcher

    class Refusing:
        def current(self):
            return "v0002"

        def verify(self, version, essential_only=False):
            return [f"{version}: model.onnx fails its sha256"]

    runtime = bare_runtime(tmp_path)
    runtime.loop = InferenceLoop(ListSource(2), SleepBackend(delay_s=0.0), "v0001",
                                 watchdog=runtime.watchdog)
    runtime.watcher = ModelWatcher(Refusing(), opts=None, current_version="v0001")
    assert runtime.vitals()["model_refusals"] == 0 and runtime._alerts() == []
    runtime.watcher.pointer = "v0002"
    assert runtime.watcher.load_version("v0002") is None
    got = samples(PrometheusExporter(Monitor(tmp_path), vitals=runtime.vitals).render().decode())
    assert got[("edgecl_model_refusals_total", ())] == 1.0
    assert runtime._alerts() == ["model version v0002 is current but does not load; v0001 "
                                 "serves: v0002: model.onnx fails its sha256"]
    runtime.watcher.pointer = "v0003"  # a later version was promoted: the alert goes
    assert runtime._alerts() == []
    runtime.watcher.load_version("v0003")  # refused too; then current goes back to v0002
    runtime.watcher.pointer = "v0002"
    assert runtime._alerts() == ["model version v0002 is current but does not load; v0001 "
                                 "serves: v0002: model.onnx fails its sha256"]


class FakeRegistry:
    def __init__(self, current=None):
        self._current = current

    def current(self):
        return self._current

    def manifest(self, version):
        return {}

    def prune(self, *args, **kwargs):
        pass


class Running:
    pid, exitcode = 7, None

    def is_alive(self):
        return True


def supervisor_at(tmp_path, monkeypatch, saved_round: int, current=None, *overrides):
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.budget_s=120",
                             "learner.max_steps=60", "learner.first_round_budget_s=300",
                             "learner.first_round_max_steps=600", *overrides])
    if saved_round:
        save_state(tmp_path, LearnerState(round=saved_round, last_sample_id=10))
    sup = LearnerSupervisor(cfg, FakeRegistry(current))
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: Running())
    monkeypatch.setattr("edgecl.runtime.promote.promote_version", lambda state, version: True)
    return sup


def live_learner(tmp_path, sup) -> dict:
    runtime = bare_runtime(tmp_path)
    runtime.supervisor = sup
    return runtime.live()["learner"]


def test_the_live_round_goes_on_across_restarts(tmp_path, monkeypatch):
    """Before: a device restarted after 299 rounds showed "round 1" for its 300th."""
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=299, current="v0250")
    assert live_learner(tmp_path, sup) == {"state": "idle", "round": 299, "progress": None}
    sup.start_round("new_samples")
    learner = live_learner(tmp_path, sup)
    assert learner["state"] == "training" and learner["round"] == 300
    assert set(learner) == {"state", "round", "progress"}, "the shape live.js reads"
    sup._proc = None  # the round ended: its result is handled
    sup.handle_result(RoundResult(RoundStatus.STAGED, version="v0251", round=300))
    assert live_learner(tmp_path, sup) == {"state": "idle", "round": 300, "progress": None}
    assert sup.health()["rounds"] == 1, "rounds since this start are still counted apart"


def test_the_live_page_after_the_memory_closed_still_shows_the_learner(tmp_path, monkeypatch):
    """Found attacking the stop fix: once the loop's end closed the memory, the whole Live
    payload was a 503, hiding a finite run's last round; now only the memory figures go."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory
    from edgecl.runtime.labels import MemorySink, OperatorQueue

    sup = supervisor_at(tmp_path, monkeypatch, saved_round=4, current="v0004")
    runtime = bare_runtime(tmp_path)
    runtime.supervisor = sup
    labels = runtime.cfg.labels
    runtime.memory_sink = MemorySink(ReplayMemory(tmp_path / "memory", MemoryConfig()), labels,
                                     OperatorQueue(tmp_path / "labels", labels.max_pending))
    assert runtime.live()["memory"]["samples"] == 0 and runtime.live()["queue"] == 0
    runtime.memory_sink.close()
    live = runtime.live()
    assert "memory" not in live and "queue" not in live
    assert live["learner"] == {"state": "idle", "round": 4, "progress": None}


def test_a_round_run_by_another_process_meanwhile_is_counted(tmp_path, monkeypatch):
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=5, current="v0005")
    save_state(tmp_path, LearnerState(round=6, last_sample_id=20))  # 'edgecl learn' ran round 6
    sup.start_round("interval")
    assert live_learner(tmp_path, sup)["round"] == 7


def write_previous(tmp_path, steps, train_s, seconds):
    from edgecl.atomic import atomic_write_json

    atomic_write_json(learner_mod.learner_dir(tmp_path) / "last_round.json", RoundResult(
        RoundStatus.STAGED, round=1, version="v0001", steps=steps, train_s=train_s,
        seconds=seconds).to_json())


def progress_after(tmp_path, sup, running_s: float) -> float:
    """The Live page's progress of the running round, ``running_s`` into it."""
    sup._round_started_mono_s = time.monotonic() - running_s
    return live_learner(tmp_path, sup)["progress"]


def test_progress_follows_the_step_bound_of_a_round(tmp_path, monkeypatch):
    """Before: 20 s into a round bounded by 60 steps of 0.5 s (plus 10 s of evaluation and
    export) the bar showed 20 / 120 s = 17%; the round is half done."""
    write_previous(tmp_path, steps=60, train_s=30.0, seconds=40.0)  # 0.5 s a step, 10 s outside
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=1, current="v0001")
    sup.start_round("new_samples")
    assert progress_after(tmp_path, sup, 20.0) == pytest.approx(0.5, abs=0.01)  # 20 / (10 + 60 x 0.5)
    assert progress_after(tmp_path, sup, 80.0) == 1.0


def test_progress_follows_the_time_budget_when_it_binds_first(tmp_path, monkeypatch):
    write_previous(tmp_path, steps=10, train_s=100.0, seconds=110.0)  # 10 s a step: 600 s > 120 s
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=1, current="v0001")
    sup.start_round("new_samples")
    assert progress_after(tmp_path, sup, 65.0) == pytest.approx(0.5, abs=0.01)  # 65 / (10 + 120)


def test_a_first_round_runs_on_the_first_round_budget(tmp_path, monkeypatch):
    """Before: a first round (300 s budget) showed 100% after 120 s (learner.budget_s)."""
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=0, current=None)
    sup.start_round("new_class")
    assert progress_after(tmp_path, sup, 60.0) == pytest.approx(0.2, abs=0.01)  # 60 / 300
    assert progress_after(tmp_path, sup, 150.0) == pytest.approx(0.5, abs=0.01)


def test_expected_round_seconds():
    from edgecl.runtime.learner import expected_round_s

    cfg = load_config(None, ["learner.budget_s=120", "learner.max_steps=60",
                             "learner.first_round_budget_s=300",
                             "learner.first_round_max_steps=600"]).learner
    prev = RoundResult(RoundStatus.STAGED, steps=60, train_s=30.0, seconds=40.0)
    assert expected_round_s(cfg, first=False, previous=None) == 120.0
    assert expected_round_s(cfg, first=True, previous=None) == 300.0
    assert expected_round_s(cfg, first=False, previous=prev) == 10.0 + 60 * 0.5
    assert expected_round_s(cfg, first=True, previous=prev) == 10.0 + 300.0  # 600 x 0.5 s > 300 s
    skipped = RoundResult(RoundStatus.SKIPPED, steps=0)
    assert expected_round_s(cfg, first=False, previous=skipped) == 120.0
    junk = RoundResult(RoundStatus.STAGED, steps="x", train_s=None, seconds=1.0)
    assert expected_round_s(cfg, first=False, previous=junk) == 120.0


def test_vitals_name_the_learner_waiting_for_room(tmp_path, monkeypatch):
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=41, current="v0041")
    sup._waiting_for_room = "/state has 1.0 MiB free; a round needs about 9.0 MiB"
    runtime = bare_runtime(tmp_path)
    runtime.supervisor = sup
    vitals = runtime.vitals()
    assert vitals["status"] == "degraded"
    assert vitals["learner"] == {"enabled": True, "state": "waiting_for_room", "round": 41,
                                 "rounds": 0, "progress": None, "apply_errors": 0}
    # before: the learner's stage read 'idle, no round running' while /healthz was degraded:
    # a monitor alerting per stage saw nothing wrong with a device that had stopped learning
    monkeypatch.setattr(sup, "tick", lambda: None)
    runtime._tick_learner()
    stage = runtime.health()["stages"]["learner"]
    assert stage["state"] == "degraded" and stage["detail"] == (
        "learning waits for room: /state has 1.0 MiB free; a round needs about 9.0 MiB")
    sup._waiting_for_room = None
    sup._waiting_for_model = "v0041 serves model.onnx with no checkpoint to fine-tune"
    runtime._tick_learner()
    assert runtime.health()["stages"]["learner"] == {
        "state": "idle", "detail": "a due round waits: v0041 serves model.onnx with no "
                                   "checkpoint to fine-tune",
        **{k: v for k, v in runtime.health()["stages"]["learner"].items()
           if k not in ("state", "detail")}}


def test_vitals_name_what_a_due_round_waits_for(tmp_path, monkeypatch):
    """Before: /api/live and edgecl_learner_state said "idle" while a due round waited for a
    version it could fine-tune (or for a first held-out sample, or an import); only the alerts
    said why."""
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=41, current="v0041")
    runtime = bare_runtime(tmp_path)
    runtime.supervisor = sup
    sup._waiting_for_model = "v0041 serves model.onnx with no checkpoint to fine-tune"
    assert runtime.vitals()["learner"]["state"] == "waiting_for_model"
    assert runtime.live()["learner"]["state"] == "waiting_for_model"  # the Live page's
    sup._waiting_for_model = None
    sup._waiting_for_held_out = True
    assert runtime.vitals()["learner"]["state"] == "waiting_for_held_out"
    sup._waiting_for_held_out = False
    sup._waiting_for_import = True
    assert runtime.vitals()["learner"]["state"] == "waiting_for_import"
    sup._waiting_for_import = False
    assert runtime.vitals()["learner"]["state"] == "idle"


def test_a_learner_that_is_off_says_so(tmp_path, monkeypatch):
    """Before: with learner.enabled: false the Live page, /api/live, /healthz and /metrics said
    the learner was 'idle' ("no round running"), as if the operator's answers led to a round."""
    sup = supervisor_at(tmp_path, monkeypatch, 0, None, "learner.enabled=false")
    runtime = bare_runtime(tmp_path, "learner.enabled=false")
    runtime.supervisor = sup
    assert runtime.vitals()["learner"]["state"] == "off"
    assert runtime.live()["learner"]["state"] == "off"
    runtime._tick_learner()
    learner = runtime.watchdog.snapshot()["stages"]["learner"]
    assert learner["detail"] == "learning is off (learner.enabled: false): no round runs"
    text = PrometheusExporter(Monitor(tmp_path), vitals=runtime.vitals).render().decode()
    assert samples(text)[("edgecl_learner_state", (("state", "off"),))] == 1.0


def test_metrics_of_a_real_runtime_over_http(tmp_path):
    """A running device's /metrics: its frames, health and the round its state directory
    saved (41 rounds before this start), parsed as Prometheus reads it."""
    state = tmp_path / "state"
    save_state(state, LearnerState(round=41))
    cfg = load_config(None, [f"state_dir={state}", "model.imgsz=64", "runtime.warmup_runs=1",
                             "learner.enabled=false", "server.enabled=true", "server.port=0"])
    runtime = Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64&loop=1&fps=20",
                                      model="yolo11n.yaml", max_frames=40, quiet=True))
    seen = {}

    def probe(rt):
        if seen or rt.server is None or rt.loop.frames_done < 5:
            return
        url = f"http://127.0.0.1:{rt.server.port}"
        seen["metrics"] = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        seen["live"] = json.loads(urllib.request.urlopen(url + "/api/live", timeout=5).read())

    runtime.supervise_hook = probe
    runtime.run()
    got = samples(seen["metrics"])
    assert got[("edgecl_runtime_up", ())] == 1.0
    assert 5 <= got[("edgecl_frames_processed_total", ())] <= 40
    assert got[("edgecl_frames_captured_total", ())] >= got[("edgecl_frames_processed_total", ())]
    assert got[("edgecl_health_status", (("status", "ok"),))] == 1.0
    assert got[("edgecl_learner_state", (("state", "off"),))] == 1.0  # learner.enabled=false
    assert got[("edgecl_learner_enabled", ())] == 0.0
    assert got[("edgecl_learner_round", ())] == 41.0
    assert got[("edgecl_storing_paused", ())] == 0.0
    assert got[("edgecl_detect_only", ())] == 0.0  # said on a run in full too (before: absent)
    assert ("edgecl_operator_queue_items", ()) in got and got[("edgecl_uptime_seconds", ())] > 0
    assert seen["live"]["learner"] == {"state": "off", "round": 41, "progress": None}


def test_progress_never_goes_back_within_a_round(tmp_path, monkeypatch):
    """Before: the bar followed the time estimate until training reported, then fell to the
    training's own first figures (0.485 -> 0.035 on a device)."""
    from edgecl.atomic import atomic_write_json

    write_previous(tmp_path, steps=60, train_s=30.0, seconds=40.0)
    sup = supervisor_at(tmp_path, monkeypatch, saved_round=1, current="v0001")
    sup.start_round("new_samples")
    assert progress_after(tmp_path, sup, 20.0) == pytest.approx(0.5, abs=0.01)
    atomic_write_json(learner_mod.learner_dir(tmp_path) / learner_mod.RUNNING_FILE,
                      {"round_id": sup._round_id, "steps": 3, "total_steps": 60})
    assert progress_after(tmp_path, sup, 21.0) == pytest.approx(0.5, abs=0.01)  # not 0.04
    atomic_write_json(learner_mod.learner_dir(tmp_path) / learner_mod.RUNNING_FILE,
                      {"round_id": sup._round_id, "steps": 60, "total_steps": 60})
    assert progress_after(tmp_path, sup, 40.0) == pytest.approx(0.75, abs=0.01)  # x 30 / 40
    sup._proc = None
    sup.start_round("new_samples")  # the next round starts from 0 again
    assert progress_after(tmp_path, sup, 4.0) == pytest.approx(0.1, abs=0.01)


def test_an_unreadable_metrics_database_is_said_once_with_its_volume(tmp_path, caplog,
                                                                      monkeypatch):
    """Before: one WARNING per scrape (240 an hour at 15 s) while the card was read-only, and
    SQLite's 'unable to open database file' did not say why."""
    import types

    from edgecl.runtime.monitor import MonitorError
    from edgecl.runtime.prometheus import PrometheusExporter

    broken = {"now": True}

    def summary():
        if broken["now"]:
            raise MonitorError("metrics database m.sqlite: unable to open database file")
        return {"forgetting": {}}

    monkeypatch.setattr("edgecl.runtime.volume.volume_read_only", lambda path: True)
    exporter = PrometheusExporter(types.SimpleNamespace(summary=summary, state_dir=tmp_path))
    with caplog.at_level(logging.DEBUG, logger="edgecl.runtime.prometheus"):
        for _ in range(3):
            assert b"edgecl_monitor_up 0.0" in exporter.render()
        broken["now"] = False
        assert b"edgecl_monitor_up 1.0" in exporter.render()
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said[0] == ("WARNING", "metrics scrape: metrics database m.sqlite: unable to open "
                                  "database file (the state directory's volume is read-only) "
                                  "(edgecl_monitor_up is 0 until it can be read)")
    assert [level for level, _ in said] == ["WARNING", "DEBUG", "DEBUG", "INFO"]


def test_healthz_says_a_runtime_is_stopping_once_a_signal_asked_it(tmp_path):
    """Before: 'ok' (and the learner 'training') 1.5 s after 'received SIGTERM; shutting down
    cleanly': a monitor could not tell a stopping device from a healthy one."""
    import signal

    runtime = bare_runtime(tmp_path)
    assert runtime.health()["status"] == "ok" and "stopping" not in runtime.health()
    runtime.interrupted, runtime.stop_signal = True, signal.SIGTERM
    health = runtime.health()
    assert health["status"] == "degraded" and health["stopping"] == ("received SIGTERM: "
                                                                     "shutting down")
