"""Monitor: records, accuracy matrix, summary and Prometheus exposition."""

import sqlite3

import numpy as np
import pytest

from edgecl.calibration.dece import bins_from_flags
from edgecl.continual.evaluate import EvalResult
from edgecl.runtime.monitor import Monitor, MonitorError
from edgecl.runtime.prometheus import PrometheusExporter, version_number

TASKS = ["cars", "drone", "person"]
NAN = float("nan")


def result(map50_95, conf=(), tp=()):
    bins = bins_from_flags(np.array(conf, float), np.array(tp, bool))
    return EvalResult(map50_95=map50_95, map50=min(1.0, map50_95 + 0.1), recall=0.5, precision=0.6,
                      per_class_ap50_95={0: map50_95}, n_images=4, n_boxes=6, dece=0.0,
                      reliability=bins)


def filled(state_dir):
    """Three promoted rounds (one task each) and one rejected round in between.

    Matrix of the promoted versions (rows v0001, v0002, v0004; columns cars, drone, person):
        [[0.8, nan, nan],
         [0.6, 0.9, nan],
         [0.5, 0.7, 0.85]]
    """
    mon = Monitor(state_dir)
    mon.record_evaluation(1, "v0001", {"cars": result(0.8)}, TASKS, ts_s=1.0)
    mon.record_round(1, "v0001", "promoted", "first")
    mon.record_evaluation(2, "v0002", {"cars": result(0.6), "drone": result(0.9)}, TASKS, ts_s=2.0)
    mon.record_round(2, "v0002", "promoted")
    mon.record_evaluation(3, "v0003", {"cars": result(0.1), "drone": result(0.9),
                                       "person": result(0.2)}, TASKS, ts_s=3.0)
    mon.record_round(3, "v0003", "rejected", "forgot cars")
    # latest: bins of cars: 0.95 TP, 0.95 FP (gap 0.45, n 2); person: 0.35 TP (gap 0.65, n 1)
    mon.record_evaluation(4, "v0004", {"cars": result(0.5, [0.95, 0.95], [1, 0]),
                                       "drone": result(0.7),
                                       "person": result(0.85, [0.35], [1])}, TASKS, ts_s=4.0)
    mon.record_round(4, "v0004", "promoted", seconds=12.5)
    mon.record_runtime(fps=30.0, latency_ms_p50=11.0, memory_bytes=2048, memory_samples=17,
                       model_version="v0004", ts_s=5.0)
    return mon


def test_accuracy_matrix_of_promoted_versions(tmp_path):
    mon = filled(tmp_path)
    m = mon.accuracy_matrix()  # several tasks: auto is the per-task view
    assert m["kind"] == "tasks" and m["columns"] == TASKS
    assert m["versions"] == ["v0001", "v0002", "v0004"]
    assert m["rows"] == ["r1 v0001", "r2 v0002", "r4 v0004"]
    assert m["values"] == [[0.8, None, None], [0.6, 0.9, None], [0.5, 0.7, 0.85]]
    m_all = mon.accuracy_matrix("tasks", status=None)
    assert m_all["versions"] == ["v0001", "v0002", "v0003", "v0004"]
    assert m_all["values"][2] == pytest.approx([0.1, 0.9, 0.2])
    assert mon.accuracy_matrix("tasks", "rejected")["versions"] == ["v0003"]
    with pytest.raises(ValueError, match="status"):
        mon.accuracy_matrix("tasks", "pending")
    with pytest.raises(ValueError, match="kind"):
        mon.accuracy_matrix("rows")


def test_a_model_a_fleet_round_adopted_is_labelled_by_its_fleet_round(tmp_path):
    """Before: its row took the learner's last local round and read 'r4 v0005' beside the
    local 'r4 v0004' (on a device learning only in the fleet, every row read 'r0')."""
    from edgecl.runtime.monitor import fleet_reason, fleet_round_of

    mon = filled(tmp_path)
    mon.record_evaluation(4, "v0005", {"cars": result(0.6), "drone": result(0.7),
                                       "person": result(0.8)}, TASKS, ts_s=6.0)
    mon.record_round(4, "v0005", "promoted", fleet_reason(12, "accepted: ACC 0.70"))
    for kind in ("tasks", "classes"):
        assert mon.accuracy_matrix(kind)["rows"] == ["r1 v0001", "r2 v0002", "r4 v0004",
                                                     "fleet 12 v0005"]
    assert fleet_round_of(fleet_reason(3, "x")) == 3 and fleet_round_of("accepted") is None
    assert fleet_round_of(None) is None and fleet_round_of("a fleet round 3: x") is None
    # the summary names the fleet round beside the learner's (before: 'round 4' and no more;
    # 'round 0' on a device learning only in the fleet)
    summary = mon.summary()
    assert (summary["model_version"], summary["round"], summary["fleet_round"]) == (
        "v0005", 4, 12)


def test_the_summary_text_names_the_fleet_round_only_for_a_fleet_model(tmp_path, capsys):
    import argparse

    from edgecl.commands import monitor as monitor_cmd
    from edgecl.runtime.monitor import fleet_reason

    mon = filled(tmp_path)
    args = argparse.Namespace(state_dir=str(tmp_path), config=None, overrides=[], json=False)
    assert monitor_cmd.summary_command(args) == 0
    assert "fleet_round" not in capsys.readouterr().out
    mon.record_evaluation(4, "v0005", {"cars": result(0.6), "drone": result(0.7),
                                       "person": result(0.8)}, TASKS, ts_s=6.0)
    mon.record_round(4, "v0005", "promoted", fleet_reason(12, "accepted: ACC 0.70"))
    assert monitor_cmd.summary_command(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == ["round            4", "fleet_round      12"]


def test_the_console_window_keeps_the_newest_rows(tmp_path):
    mon = filled(tmp_path)
    m = mon.accuracy_matrix(last=2)
    assert m["rows"] == ["r2 v0002", "r4 v0004"] and m["rows_total"] == 3
    assert m["values"] == [[0.6, 0.9, None], [0.5, 0.7, 0.85]] and m["rounds"] == [2, 4]
    assert mon.accuracy_matrix(last=10)["rows"] == ["r1 v0001", "r2 v0002", "r4 v0004"]
    assert mon.accuracy_matrix(last=0)["values"] == [] and mon.accuracy_matrix()["rows_total"] == 3
    curves = mon.per_class_ap_over_rounds(last=2)
    assert curves and all(len(v) == 2 for v in curves.values())


def test_matrices_are_reused_until_any_process_records_a_round(tmp_path):
    """Matrices are cached between learning writes (a scrape must not re-read weeks of rounds);
    a write by another Monitor, as by the learner's process, is seen at the next read, and a
    runtime sample does not throw the cache away."""
    mon = filled(tmp_path)
    first = mon.matrix_view("promoted")
    assert mon.matrix_view("promoted") is first and not first.values.flags.writeable
    mon.record_runtime(30.0, 12.0, 1000, 10, "v0004")
    assert mon.matrix_view("promoted") is first
    learner = Monitor(tmp_path)
    learner.record_evaluation(5, "v0005", {"cars": result(0.4), "drone": result(0.6),
                                           "person": result(0.9)}, TASKS, ts_s=5.0)
    learner.record_round(5, "v0005", "promoted")
    again = mon.matrix_view("promoted")
    assert again is not first and again.versions[-1] == "v0005"
    assert mon.summary()["model_version"] == "v0005"
    assert mon.accuracy_matrix()["values"][-1] == [0.4, 0.6, 0.9]


def test_rounds_store_computed_metrics(tmp_path):
    mon = filled(tmp_path)
    rounds = {r["model_version"]: r for r in mon.rounds()}
    # v0004 on top of v0001, v0002: ACC (0.5+0.7+0.85)/3; BWT ((0.5-0.8)+(0.7-0.9))/2 = -0.25;
    # forgetting (0.3 + 0.2) / 2 = 0.25
    assert rounds["v0004"]["acc"] == pytest.approx(2.05 / 3)
    assert rounds["v0004"]["bwt"] == pytest.approx(-0.25)
    assert rounds["v0004"]["mean_forgetting"] == pytest.approx(0.25)
    assert rounds["v0004"]["seconds"] == 12.5
    # the rejected v0003 as a candidate after v0001, v0002: BWT ((0.1-0.8) + (0.9-0.9)) / 2 = -0.35
    assert rounds["v0003"]["status"] == "rejected" and rounds["v0003"]["reason"] == "forgot cars"
    assert rounds["v0003"]["bwt"] == pytest.approx(-0.35)
    with pytest.raises(ValueError, match="status"):
        mon.record_round(5, "v0005", "maybe")


def test_summary(tmp_path):
    s = filled(tmp_path).summary()
    assert s["model_version"] == "v0004" and s["round"] == 4 and s["fleet_round"] is None
    assert s["acc"] == pytest.approx(2.05 / 3)
    assert s["bwt"] == pytest.approx(-0.25)
    assert s["forgetting"] == {"cars": pytest.approx(0.3), "drone": pytest.approx(0.2)}
    assert s["map50_95"]["person"] == pytest.approx(0.85)
    # pooled bins of v0004: (2 * |0.5 - 0.95| + 1 * |1 - 0.35|) / 3 = (0.9 + 0.65) / 3
    assert s["dece"] == pytest.approx(1.55 / 3)
    assert (s["inference_fps"], s["memory_bytes"], s["memory_samples"]) == (30.0, 2048, 17)
    assert "fps" not in s  # the Live page's fps is what the camera delivered: another number
    assert (s["n_promoted"], s["n_rejected"]) == (3, 1)


def test_empty_summary_and_missing_database(tmp_path):
    s = Monitor(tmp_path).summary()
    assert s["acc"] is None and s["model_version"] is None and s["forgetting"] == {}
    with pytest.raises(MonitorError, match="no metrics database"):
        Monitor(tmp_path / "elsewhere", create=False)


def test_database_is_wal_and_rerecording_replaces(tmp_path):
    mon = filled(tmp_path)
    mon.record_evaluation(4, "v0004", {"cars": result(0.55)}, TASKS, ts_s=4.5)
    assert mon.accuracy_matrix("tasks")["values"][2][0] == pytest.approx(0.55)
    with sqlite3.connect(mon.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        n = conn.execute("SELECT COUNT(*) FROM class_ap WHERE model_version='v0004' AND task='cars'")
        assert n.fetchone()[0] == 1


def test_unknown_task_is_refused_and_nothing_is_written(tmp_path):
    mon = Monitor(tmp_path)
    with pytest.raises(MonitorError, match="not in the task order"):
        mon.record_evaluation(1, "v0001", {"cars": result(0.5), "boats": result(0.4)}, TASKS)
    assert mon.accuracy_matrix("tasks", None)["values"] == []
    assert mon.matrix_view(None).values.shape == (0, 0)


def test_damaged_database_is_reported(tmp_path):
    db = tmp_path / "metrics" / "metrics.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MonitorError, match="metrics database"):
        Monitor(tmp_path, create=False)  # a writer makes it afresh: test_monitor_damage.py


def samples(text):
    """{(name, sorted label items): value} of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


def test_prometheus_rendering(tmp_path):
    text = PrometheusExporter(filled(tmp_path)).render().decode()
    got = samples(text)
    assert got[("edgecl_monitor_up", ())] == 1.0
    assert got[("edgecl_acc", ())] == pytest.approx(2.05 / 3)
    assert got[("edgecl_bwt", ())] == pytest.approx(-0.25)
    assert got[("edgecl_mean_forgetting", ())] == pytest.approx(0.25)
    assert got[("edgecl_forgetting", (("task", "cars"),))] == pytest.approx(0.3)
    assert got[("edgecl_forgetting", (("task", "drone"),))] == pytest.approx(0.2)
    assert ("edgecl_forgetting", (("task", "person"),)) not in got  # last task: undefined
    assert got[("edgecl_map50_95", (("task", "person"),))] == pytest.approx(0.85)
    assert got[("edgecl_dece", ())] == pytest.approx(1.55 / 3)
    assert got[("edgecl_fps", ())] == 30.0
    assert got[("edgecl_memory_bytes", ())] == 2048.0
    assert got[("edgecl_memory_samples", ())] == 17.0
    assert got[("edgecl_model_version", ())] == 4.0
    assert got[("edgecl_model_info", (("version", "v0004"),))] == 1.0
    assert "# TYPE edgecl_acc gauge" in text.splitlines()
    assert "edgecl_fps 30.0" in text.splitlines()
    from prometheus_client import REGISTRY, generate_latest

    assert b"edgecl_" not in generate_latest(REGISTRY)  # private registry, global one untouched


def test_prometheus_reports_a_broken_database_instead_of_failing(tmp_path):
    mon = Monitor(tmp_path)
    exporter = PrometheusExporter(mon)
    mon.db_path.write_bytes(b"garbage" * 1000)
    for extra in ("-wal", "-shm"):
        mon.db_path.with_name(mon.db_path.name + extra).unlink(missing_ok=True)
    assert "edgecl_monitor_up 0.0" in exporter.render().decode().splitlines()


def test_the_latest_runtime_sample_is_the_last_written_after_the_clock_went_back(tmp_path):
    mon = Monitor(tmp_path)
    mon.record_runtime(30.0, 10.0, 100, 1, "v0600", ts_s=1_795_000_000.0)  # 2026
    mon.record_runtime(4.5, 80.0, 100, 1, "v0601", ts_s=60.0)  # rebooted into 1970
    latest = mon.latest_runtime()
    assert (latest["model_version"], latest["fps"]) == ("v0601", 4.5)


def test_runtime_samples_are_bounded(tmp_path):
    # newest 3 rows whole; before them one row per 10 s bucket, at most 2 such rows
    mon = Monitor(tmp_path, max_runtime_rows=3, runtime_downsample_s=10.0, max_downsampled_rows=2)
    for k in range(40):
        mon.record_runtime(float(k), 10.0, 100 * k, k, f"v{k:04d}", ts_s=float(k))
    with sqlite3.connect(mon.db_path) as conn:
        ts = [r[0] for r in conn.execute("SELECT ts_s FROM runtime ORDER BY ts_s")]
    # buckets before ts 37: [0,10), [10,20), [20,30), [30,37): the two newest buckets' first rows
    assert ts == [20.0, 30.0, 37.0, 38.0, 39.0]
    assert mon.latest_runtime()["model_version"] == "v0039"
    mon = Monitor(tmp_path / "plain", max_runtime_rows=3, max_downsampled_rows=0)
    for k in range(5):
        mon.record_runtime(float(k), 10.0, 100 * k, k, f"v{k:04d}", ts_s=float(k))
    with sqlite3.connect(mon.db_path) as conn:
        assert [r[0] for r in conn.execute("SELECT fps FROM runtime ORDER BY ts_s")] == [2.0, 3.0, 4.0]


def test_version_number():
    assert version_number("v0012") == 12.0
    assert np.isnan(version_number("latest"))


def test_concurrent_writers_lose_nothing(tmp_path):
    import threading

    mon = Monitor(tmp_path)

    def write(offset):
        other = Monitor(tmp_path)  # a second handle, as another thread or process would open
        for k in range(20):
            other.record_runtime(1.0, 1.0, 1, 1, "v0001", ts_s=offset + k)

    threads = [threading.Thread(target=write, args=(100 * t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sqlite3.connect(mon.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runtime").fetchone()[0] == 40


# --- no tasks: the class view ----------------------------------------------------------------

STREAM = ["stream"]
NAMES = {0: "car", 1: "drone", 2: "person"}


def stream_result(ap, recall=None, instances=None):
    """EvalResult of the single ``stream`` task with per-class AP, recall and instance counts."""
    recall = recall or {c: 0.5 for c in ap}
    instances = instances or {c: 10 for c in ap}
    return EvalResult(map50_95=float(np.mean(list(ap.values()))), map50=0.5, recall=0.5,
                      precision=0.5, per_class_ap50_95=ap, n_images=8,
                      n_boxes=sum(instances.values()), dece=0.0, per_class_recall=recall,
                      per_class_instances=instances)


def stream_filled(state_dir):
    """Class matrix of the promoted rounds (columns car, drone, person):
        r1 v0001 [0.6, 0.4, nan]
        r2 v0002 [0.5, nan, 0.3]   (no held-out drone box in round 2)
        r4 v0004 [0.55, 0.2, 0.5]
    Round 3 (v0003) was rejected: car 0.1.
    """
    mon = Monitor(state_dir)
    rows = [(1, {0: 0.6, 1: 0.4}, "promoted"), (2, {0: 0.5, 2: 0.3}, "promoted"),
            (3, {0: 0.1, 1: 0.4, 2: 0.3}, "rejected"), (4, {0: 0.55, 1: 0.2, 2: 0.5}, "promoted")]
    for k, ap, status in rows:
        mon.record_evaluation(k, f"v{k:04d}", {"stream": stream_result(ap)}, STREAM,
                              ts_s=float(k), class_names=NAMES)
        mon.record_round(k, f"v{k:04d}", status)
    return mon


def test_class_matrix_acc_bwt_forgetting_hand_computed(tmp_path):
    mon = stream_filled(tmp_path)
    m = mon.accuracy_matrix()  # only task "stream": auto is the class view
    assert m["kind"] == "classes" and m["columns"] == ["car", "drone", "person"]
    assert m["rows"] == ["r1 v0001", "r2 v0002", "r4 v0004"]
    assert m["values"] == [[0.6, 0.4, None], [0.5, None, 0.3], [0.55, 0.2, 0.5]]
    assert mon.accuracy_matrix("tasks")["columns"] == ["stream"]
    s = mon.summary()
    # ACC (0.55 + 0.2 + 0.5) / 3; BWT (-0.05 - 0.2 + 0.2) / 3; forgetting car 0.05, drone 0.2,
    # person -0.2 (mean 0.05 / 3)
    assert s["kind"] == "classes"
    assert s["acc"] == pytest.approx(1.25 / 3) and s["bwt"] == pytest.approx(-0.05 / 3)
    assert s["mean_forgetting"] == pytest.approx(0.05 / 3)
    assert s["class_forgetting"] == pytest.approx({"car": 0.05, "drone": 0.2, "person": -0.2})
    assert s["class_ap50_95"] == pytest.approx({"car": 0.55, "drone": 0.2, "person": 0.5})
    rounds = {r["model_version"]: r for r in mon.rounds()}
    assert rounds["v0004"]["acc"] == pytest.approx(1.25 / 3)
    # the rejected v0003 as a candidate after v0001, v0002 (recorded then): car forgot
    # max(0.6, 0.5) - 0.1 = 0.5, drone 0.4 - 0.4 = 0, person 0.3 - 0.3 = 0
    assert rounds["v0003"]["mean_forgetting"] == pytest.approx(0.5 / 3)
    cand = mon.candidate_metrics(4, "v0004")
    assert cand["kind"] == "classes" and cand["forgetting"]["drone"] == pytest.approx(0.2)
    assert cand["class_ap50_95"]["car"] == pytest.approx(0.55)
    assert mon.class_ap("v0003") == {"car": 0.1, "drone": 0.4, "person": 0.3}
    assert mon.class_ap("v0099") == {}
    assert mon.per_class_ap_over_rounds() == {"car": [0.6, 0.5, 0.55], "drone": [0.4, None, 0.2],
                                             "person": [None, 0.3, 0.5]}


def test_a_class_taught_later_is_not_forgetting_of_the_stream_task(tmp_path):
    # the stream task's mAP falls from 0.6 (car alone) to 0.35 (car 0.6, person 0.1 just
    # taught): no class forgot anything, so neither the summary nor /metrics may say so
    mon = Monitor(tmp_path)
    for k, ap in ((1, {0: 0.6}), (2, {0: 0.6, 2: 0.1})):
        mon.record_evaluation(k, f"v{k:04d}", {"stream": stream_result(ap)}, STREAM, ts_s=float(k),
                              class_names=NAMES)
        mon.record_round(k, f"v{k:04d}", "promoted")
    s = mon.summary()
    assert s["kind"] == "classes" and s["forgetting"] == {}
    assert s["class_forgetting"] == pytest.approx({"car": 0.0})  # person: one round, undefined
    assert s["map50_95"] == pytest.approx({"stream": 0.35})
    assert s["bwt"] == pytest.approx(0.0)
    assert 'edgecl_forgetting{task="stream"}' not in PrometheusExporter(mon).render().decode()


def test_frames_without_tasks_after_benchmark_tasks_switch_to_the_class_view(tmp_path):
    # a demo (task cars) then a camera: the task view would average a growing class set
    mon = Monitor(tmp_path)
    mon.record_evaluation(1, "v0001", {"cars": result(0.8)}, ["cars"], ts_s=1.0,
                          class_names=NAMES)
    mon.record_round(1, "v0001", "promoted")
    assert mon.resolve_kind() == "tasks"
    mon.record_evaluation(2, "v0002", {"cars": result(0.7), "stream": stream_result({2: 0.1})},
                          ["cars", "stream"], ts_s=2.0, class_names=NAMES)
    mon.record_round(2, "v0002", "promoted")
    assert mon.resolve_kind() == "classes"
    s = mon.summary()
    assert s["kind"] == "classes" and "stream" not in s["forgetting"]
    assert s["forgetting"] == pytest.approx({"cars": 0.1})


def test_class_renamed_and_classes_pooled_over_tasks(tmp_path):
    mon = Monitor(tmp_path)
    # class 0 in two tasks of one round: AP pooled by held-out boxes (0.2 * 10 + 0.8 * 30) / 40
    mon.record_evaluation(1, "v0001", {"a": stream_result({0: 0.2}, instances={0: 10}),
                                       "b": stream_result({0: 0.8}, instances={0: 30})},
                          ["a", "b"], class_names={0: "car"})
    mon.record_round(1, "v0001", "promoted")
    mon.set_class_names({0: "sedan"})
    m = mon.accuracy_matrix("classes")
    assert m["columns"] == ["sedan"] and m["values"] == [[pytest.approx(0.65)]]
    assert mon.class_names() == {0: "sedan"}


def test_names_renamed_by_an_older_release_follow_the_registry_at_start(tmp_path):
    """Before: a rename made by a release that did not tell the monitor left 'truck' in the
    summary, the report, /metrics and the Forgetting page until the next round (for ever on a
    device that does not learn), while /api/classes said 'lorry'."""
    mon = Monitor(tmp_path)
    mon.record_evaluation(1, "v0001", {"stream": stream_result({0: 0.5, 1: 0.4})}, STREAM,
                          class_names={0: "car", 1: "truck"})
    mon.record_round(1, "v0001", "promoted")
    assert mon.follow_names({0: "car", 1: "truck", 2: "person"}) is False  # nothing renamed
    assert mon.follow_names({0: "car", 1: "lorry"}) is True
    assert mon.class_names() == {0: "car", 1: "lorry"}
    assert mon.accuracy_matrix("classes")["columns"] == ["car", "lorry"]


def test_a_rename_made_while_a_round_ran_is_kept_when_the_round_records(tmp_path):
    """Before: the round recorded the names it started with, so /metrics, the summary, the
    report and the Forgetting page went back to 'Vehicle' (and called 'Automobile' never
    measured) while the registry, the queue and Live said 'Automobile'."""
    from edgecl.models.classes import ClassRegistry

    registry = ClassRegistry(tmp_path)
    registry.seed({0: "Vehicle", 1: "Person"})
    mon = Monitor(tmp_path)
    started_with = registry.names()
    registry.rename("Vehicle", "Automobile")  # during the round
    mon.set_class_names(registry.names())
    mon.record_finished_round(round_no=1, version="v0001", status="promoted", reason="",
                              seconds=1.0, columns=STREAM, class_names=started_with,
                              evaluation={"stream": stream_result({0: 0.5, 1: 0.4})})
    assert mon.class_names() == {0: "Automobile", 1: "Person"}
    assert mon.accuracy_matrix("classes")["columns"] == ["Automobile", "Person"]


def test_a_round_records_names_as_given_without_a_class_registry(tmp_path):
    mon = Monitor(tmp_path)
    mon.record_evaluation(1, "v0001", {"stream": stream_result({0: 0.5})}, STREAM,
                          class_names={0: "car"})
    assert mon.class_names() == {0: "car"}


def test_forgetting_classes(tmp_path):
    mon = Monitor(tmp_path)
    mon.record_evaluation(1, "v0001", {"stream": stream_result(
        {0: 0.6, 1: 0.5, 2: 0.4}, recall={0: 0.8, 1: 0.7, 2: 0.6}, instances={0: 10, 1: 10, 2: 2})},
        STREAM)
    mon.record_round(1, "v0001", "promoted")
    assert mon.forgetting_classes(0.05) == set()  # one version: nothing to compare
    # round 2 promoted: class 0 AP falls 0.2; class 1 AP steady but recall falls 0.3;
    # class 2 falls too but has 2 held-out boxes (< min_instances 5)
    mon.record_evaluation(2, "v0002", {"stream": stream_result(
        {0: 0.4, 1: 0.5, 2: 0.1}, recall={0: 0.8, 1: 0.4, 2: 0.1}, instances={0: 10, 1: 10, 2: 2})},
        STREAM)
    mon.record_round(2, "v0002", "promoted")
    assert mon.forgetting_classes(0.1, min_instances=5) == {0, 1}
    assert mon.forgetting_classes(0.1) == {0, 1, 2}
    assert mon.forgetting_classes(0.25) == {1, 2}
    # round 3 rejected: compared with the serving v0002; only class 1 falls (0.5 -> 0.3)
    mon.record_evaluation(3, "v0003", {"stream": stream_result(
        {0: 0.45, 1: 0.3, 2: 0.1}, recall={0: 0.8, 1: 0.4, 2: 0.1})}, STREAM)
    mon.record_round(3, "v0003", "rejected")
    assert mon.forgetting_classes(0.1) == {1}


def test_reliability_and_calibration(tmp_path):
    mon = filled(tmp_path)
    rel = mon.reliability()  # latest promoted: v0004, bins pooled over its tasks
    assert rel["version"] == "v0004" and rel["round"] == 4 and rel["calibration"] is None
    assert rel["protocol"]["iou_thr"] == 0.5 and rel["protocol"]["min_conf"] == 0.3
    assert rel["protocol"]["n_bins"] == 15 and "match_predictions" in rel["protocol"]["matching"]
    full = [b for b in rel["bins"] if b["count"]]
    assert [(b["count"], b["precision"]) for b in full] == [(1, 1.0), (2, 0.5)]
    assert set(full[0]) == {"lo", "hi", "confidence", "precision", "count"}
    assert rel["dece"] == pytest.approx(1.55 / 3)
    assert mon.reliability("v0003")["round"] == 3
    assert mon.reliability("v0099")["bins"] == [] and mon.reliability("v0099")["round"] is None
    assert Monitor(tmp_path / "empty").reliability()["protocol"]["iou_thr"] == 0.5
    report = {"dece_before": 0.3, "dece_after": np.float64(0.05), "protocol": {"iou_thr": 0.5},
              "reliability_after": [{"lo": 0.0, "hi": 1.0, "confidence": 0.5, "precision": 0.5,
                                     "count": 4}], "thresholds": {"0": 0.8},
              "target_precision": 0.9}
    mon.record_calibration(4, "v0004", report)
    cal = mon.reliability("v0004")["calibration"]
    assert cal["dece_before"] == 0.3 and cal["dece_after"] == 0.05 and cal["bins"][0]["count"] == 4
    assert cal["thresholds"] == {"0": 0.8}
    assert mon.summary()["calibration"] == {"dece_before": 0.3, "dece_after": 0.05}


@pytest.mark.parametrize("damage", ["{not json", '"str"', "[1, 2]",
                                    '{"thresholds": 5, "per_class": [1], "protocol": "x"}'])
def test_a_damaged_calibration_row_is_ignored(tmp_path, damage):
    import sqlite3

    from edgecl.bench.report import write_monitor_report

    mon = filled(tmp_path)
    mon.record_calibration(4, "v0004", {"dece_before": 0.3, "dece_after": 0.1,
                                        "per_class": {"0": {"name": "car", "n": 3}}})
    conn = sqlite3.connect(tmp_path / "metrics" / "metrics.sqlite")
    conn.execute("UPDATE calibration SET report = ?", (damage,))
    conn.commit()
    conn.close()
    cal = mon.calibration("v0004")  # before: JSONDecodeError / AttributeError in every reader
    assert cal is None or (cal["per_class"] == {} and cal.get("thresholds", {}) == {})
    mon.summary()
    assert write_monitor_report(tmp_path, tmp_path / "report").is_file()


def test_prometheus_exposes_per_class_ap_and_forgetting(tmp_path):
    got = samples(PrometheusExporter(stream_filled(tmp_path)).render().decode())
    assert got[("edgecl_class_ap50_95", (("class", "car"),))] == pytest.approx(0.55)
    assert got[("edgecl_class_ap50_95", (("class", "drone"),))] == pytest.approx(0.2)
    assert got[("edgecl_class_forgetting", (("class", "drone"),))] == pytest.approx(0.2)
    assert got[("edgecl_class_forgetting", (("class", "person"),))] == pytest.approx(-0.2)
    assert got[("edgecl_acc", ())] == pytest.approx(1.25 / 3)


def test_old_database_gains_the_new_columns(tmp_path):
    db = tmp_path / "metrics" / "metrics.sqlite"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE class_ap (round INTEGER NOT NULL, model_version TEXT NOT NULL, "
                     "task TEXT NOT NULL, cls INTEGER NOT NULL, ap50_95 REAL, "
                     "PRIMARY KEY (round, model_version, task, cls))")
        conn.execute("INSERT INTO class_ap VALUES (1, 'v0001', 'stream', 0, 0.5)")
    mon = Monitor(tmp_path)
    mon.record_evaluation(2, "v0002", {"stream": stream_result({0: 0.7})}, STREAM)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT n_instances FROM class_ap WHERE round=2").fetchone() == (10,)


def test_a_locked_database_raises_storage_error_and_keeps_nothing(tmp_path):
    from edgecl.errors import StorageError

    mon = Monitor(tmp_path, busy_timeout_s=0.05)
    holder = sqlite3.connect(mon.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match="cannot be written: database is locked"):
            mon.record_runtime(1.0, 1.0, 1, 1, "v0001")
        with pytest.raises(StorageError):
            mon.record_evaluation(1, "v0001", {"stream": stream_result({0: 0.5})}, STREAM)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert mon.latest_runtime() is None and mon.accuracy_matrix()["values"] == []


def test_a_full_disk_raises_storage_error(tmp_path, monkeypatch):
    from edgecl.errors import StorageError
    from edgecl.runtime import monitor as monitor_module

    mon = Monitor(tmp_path)
    real_connect = sqlite3.connect

    class FullDisk:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    monkeypatch.setattr(monitor_module.sqlite3, "connect",
                        lambda *a, **k: FullDisk(real_connect(*a, **k)))
    with pytest.raises(StorageError, match="disk is full"):
        mon.record_round(1, "v0001", "promoted", acc=0.5, bwt=0.0, mean_forgetting=0.0)
    monkeypatch.setattr(monitor_module.sqlite3, "connect", real_connect)
    assert mon.rounds() == []


def test_a_read_only_copy_is_read_as_it_is_and_refuses_writes(tmp_path, monkeypatch):
    """A state directory pulled from a device, or mounted read-only: summary and matrices read
    (SQLite cannot open a WAL database normally where it may not write beside it)."""
    import edgecl.runtime.monitor as monitor_module
    from edgecl.errors import StorageError

    filled(tmp_path)
    expected = Monitor(tmp_path).summary()
    monkeypatch.setattr(monitor_module.os, "access", lambda path, mode: False)
    copy = Monitor(tmp_path, create=False)
    assert copy.read_only and copy.summary() == expected
    with pytest.raises(StorageError, match="read-only"):
        copy.set_class_names({0: "car"})


def test_a_copy_pulled_after_power_loss_shows_the_rounds_still_in_its_wal(tmp_path, monkeypatch):
    """Rounds committed to the WAL but not yet checkpointed into the database file (a device
    switched off or killed) are part of the data: a read-only reader replays the WAL on a
    private copy, and the device's files stay as they were."""
    import shutil

    import edgecl.runtime.monitor as monitor_module

    device = tmp_path / "device"
    filled(device)
    db = device / "metrics" / "metrics.sqlite"
    keeper = sqlite3.connect(db)  # another open connection: closing the writer checkpoints nothing
    keeper.execute("SELECT count(*) FROM rounds").fetchone()
    Monitor(device).record_round(5, "v0005", "rejected", "after the last checkpoint")
    pulled = tmp_path / "pulled"
    shutil.copytree(device, pulled)
    keeper.close()
    wal = pulled / "metrics" / "metrics.sqlite-wal"
    assert wal.stat().st_size > 0
    files_before = {p.name: p.read_bytes() for p in (pulled / "metrics").iterdir() if p.is_file()}
    monkeypatch.setattr(monitor_module.os, "access", lambda path, mode: False)
    copy = Monitor(pulled, create=False)
    assert copy.read_only
    assert [row["model_version"] for row in copy.rounds()][-1] == "v0005"
    del copy
    assert {p.name: p.read_bytes() for p in (pulled / "metrics").iterdir() if p.is_file()} == files_before


def test_old_rounds_keep_their_numbers_and_lose_their_details(tmp_path, monkeypatch):
    """Reliability bins and full calibration reports are kept for the newest rounds and the
    newest promoted versions only (DETAIL_ROUNDS 2 and DETAIL_PROMOTED 1 here); every round
    keeps its AP and its D-ECE before/after, so the matrix and the history do not change."""
    import edgecl.runtime.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "DETAIL_ROUNDS", 2)
    monkeypatch.setattr(monitor_module, "DETAIL_PROMOTED", 1)
    mon = Monitor(tmp_path)
    statuses = {1: "promoted", 2: "promoted", 3: "rejected", 4: "rejected", 5: "rejected"}
    for r, status in statuses.items():
        mon.record_evaluation(r, f"v{r:04d}", {"cars": result(0.1 * r, conf=(0.9,), tp=(True,))},
                              TASKS, ts_s=float(r))
        mon.record_round(r, f"v{r:04d}", status)
        mon.record_calibration(r, f"v{r:04d}", {"dece_before": 0.3, "dece_after": 0.1 / r,
                                                "per_class": {"0": {"x": list(range(50))}}})
    with sqlite3.connect(tmp_path / "metrics" / "metrics.sqlite") as conn:
        with_bins = sorted(r for (r,) in conn.execute("SELECT DISTINCT round FROM reliability"))
    assert with_bins == [2, 3, 4, 5]  # round 1 < 5 - 2 and not the newest promoted (v0002)
    assert mon.calibration("v0001") == {"dece_before": 0.3, "dece_after": 0.1, "details": "thinned",
                                        "per_class": {}}
    assert mon.calibration("v0002")["per_class"] == {"0": {"x": list(range(50))}}
    assert mon.calibration("v0003")["per_class"] and mon.reliability("v0001")["bins"] == []
    assert mon.accuracy_matrix("tasks", None)["values"] == [[pytest.approx(0.1 * r)] for r in statuses]


def test_reading_commands_change_nothing_in_a_writable_state_dir(tmp_path):
    """`monitor summary` and `monitor report` on a pulled copy on writable storage added the
    newest schema's table and checkpointed the WAL away; now they read a private copy."""
    from edgecl.errors import StorageError

    filled(tmp_path)
    db = tmp_path / "metrics" / "metrics.sqlite"
    with sqlite3.connect(db) as conn:  # a database from before the learning stamp
        conn.execute("DROP TABLE learning_stamp")
    before = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()}
    reader = Monitor(tmp_path, create=False, private_copy=True)
    assert reader.summary()["model_version"] == "v0004" and not reader.read_only
    with pytest.raises(StorageError, match="opened to read only"):
        reader.set_class_names({0: "car"})
    del reader
    assert {p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()} == before


def test_a_runtime_monitor_opened_on_a_full_disk_waits_for_room(tmp_path, monkeypatch, caplog):
    """Before: a full card kept the runtime from starting ('metrics database ... cannot be
    written: disk I/O error', exit 2): its WAL index could not grow."""
    import sqlite3

    from edgecl.errors import StorageError
    from edgecl.runtime import monitor as monitor_mod

    real_connect = sqlite3.connect

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(monitor_mod.sqlite3, "connect", full)
    with pytest.raises(StorageError, match="disk I/O error"):
        Monitor(tmp_path)
    waiting = Monitor(tmp_path, wait_for_room=True)
    assert "cannot be opened for writing" in caplog.text
    with pytest.raises((StorageError, MonitorError)):  # while full, as without waiting
        waiting.record_round(1, "v0001", "staged")
    monkeypatch.setattr(monitor_mod.sqlite3, "connect", real_connect)
    waiting.record_round(1, "v0001", "staged")  # room again: the schema first, then the row
    assert Monitor(tmp_path).recorded_versions() == {"v0001"}


def test_a_version_recorded_after_the_clock_went_back_stays_the_newest(tmp_path):
    """A fleet adoption is recorded under the learner's last round number. Before, rows of one
    round were ordered by their wall-clock time: after a reboot to 1970 between the local round
    and the adoption, v0003 (serving) came before v0002, and the summary reported v0002."""
    mon = Monitor(tmp_path)
    mon.record_evaluation(1, "v0001", {"cars": result(0.5)}, TASKS, ts_s=1_800_000_000.0)
    mon.record_round(1, "v0001", "promoted")
    mon.record_evaluation(2, "v0002", {"cars": result(0.4)}, TASKS, ts_s=1_800_000_100.0)
    mon.record_round(2, "v0002", "promoted")
    mon.record_evaluation(2, "v0003", {"cars": result(0.6)}, TASKS, ts_s=100.0)  # clock at 1970
    mon.record_round(2, "v0003", "promoted", "fleet round 1: accepted")
    assert mon.accuracy_matrix()["rows"] == ["r1 v0001", "r2 v0002", "fleet 1 v0003"]
    assert mon.summary()["model_version"] == "v0003"
    assert [r["model_version"] for r in mon.rounds()] == ["v0001", "v0002", "v0003"]


def test_the_database_gives_back_the_room_its_thinning_frees(tmp_path, monkeypatch):
    """Before: a thinned calibration report shrank in place and left its page mostly empty, so
    the file grew about 4 KB a round whatever the thinning gave back; now every
    VACUUM_EVERY_ROUNDS rounds it is repacked."""
    import edgecl.runtime.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "DETAIL_ROUNDS", 2)
    monkeypatch.setattr(monitor_module, "DETAIL_PROMOTED", 1)
    sizes = {}
    for every in (20, 10**9):  # repacked at round 20; never
        monkeypatch.setattr(monitor_module, "VACUUM_EVERY_ROUNDS", every, raising=False)
        mon = Monitor(tmp_path / str(every))
        for r in range(1, 21):
            mon.record_evaluation(r, f"v{r:04d}", {"cars": result(0.1, conf=(0.9,), tp=(True,))},
                                  TASKS, ts_s=float(r))
            mon.record_calibration(r, f"v{r:04d}", {"dece_before": 0.3, "dece_after": 0.1,
                                                    "per_class": {"0": {"x": list(range(500))}}})
            mon.record_round(r, f"v{r:04d}", "rejected")
        sizes[every] = (tmp_path / str(every) / "metrics" / "metrics.sqlite").stat().st_size
        assert mon.calibration("v0020")["per_class"]["0"]["x"][-1] == 499  # nothing lost
    assert sizes[20] < 0.6 * sizes[10**9], sizes


def test_a_served_file_gives_no_numeric_model_version(tmp_path):
    """Before: serving 'run --model best.onnx' (or the demo's untrained model before its first
    promotion) exported edgecl_model_version NaN."""
    mon = Monitor(tmp_path)
    mon.record_runtime(fps=30.0, latency_ms_p50=11.0, memory_bytes=0, memory_samples=0,
                       model_version="file:best.onnx")
    text = PrometheusExporter(mon).render().decode()
    got = samples(text)
    assert ("edgecl_model_version", ()) not in got and "NaN" not in text
    assert got[("edgecl_model_info", (("version", "file:best.onnx"),))] == 1.0


def test_the_model_a_device_started_with_is_the_row_forgetting_counts_from(tmp_path):
    """Before: rows began at the first round's version, so what that round lost of a team's
    checkpoint (car 0.222 -> 0.203 in a field test) showed in no matrix, and forgetting counted
    only from there."""
    from types import SimpleNamespace

    from edgecl.continual.round import read_round_record, start_baseline, write_round_record

    ctx = SimpleNamespace(parent_version=None, base_checkpoint=tmp_path / "team.pt")
    # the start knows car and drone (not person); its scores of person are not a "learnt" AP 0
    parent = {"stream": stream_result({0: 0.222, 1: 0.3, 2: 0.0})}
    baseline = start_baseline(ctx, parent, {0: "car", 1: "drone"})
    assert baseline["version"] == "start:team.pt"
    assert baseline["evaluation"]["stream"].per_class_ap50_95 == {0: 0.222, 1: 0.3}
    path = write_round_record(tmp_path / "round_record.json", round_no=1, status="promoted",
                              reason="accepted", seconds=1.0,
                              evaluation={"stream": stream_result({0: 0.203, 1: 0.3, 2: 0.4})},
                              columns=STREAM, class_names=NAMES, calibration=None,
                              baseline=baseline)
    record = read_round_record(path)  # as a rebuilt database records it again
    mon = Monitor(tmp_path)
    mon.record_finished_round(version="v0001", **record)
    m = mon.accuracy_matrix()
    assert m["rows"] == ["r0 start:team.pt", "r1 v0001"]
    assert m["values"][0][:2] == pytest.approx([0.222, 0.3]) and m["values"][0][2] is None
    assert m["values"][1] == pytest.approx([0.203, 0.3, 0.4])
    s = mon.summary()
    # forgetting of the classes learnt before the last row: car 0.222 - 0.203, drone 0
    assert s["class_forgetting"] == pytest.approx({"car": 0.019, "drone": 0.0})
    assert s["n_promoted"] == 1  # the start is a row, not a round
    rounds = {r["model_version"]: r for r in mon.rounds()}
    assert rounds["start:team.pt"]["status"] == "promoted"
    assert rounds["v0001"]["mean_forgetting"] == pytest.approx(0.019 / 2)
    # a later round (the same start, its first round rejected) records no second row
    mon.record_finished_round(version="v0002", **dict(record, round_no=2))
    assert mon.accuracy_matrix()["rows"] == ["r0 start:team.pt", "r1 v0001", "r2 v0002"]
    # a parent that came from a round is no start
    made = SimpleNamespace(parent_version="v0001", base_checkpoint=None,
                           registry=SimpleNamespace(manifest=lambda v: {"parent": None}))
    assert start_baseline(made, parent, {0: "car"}) is None
    added = SimpleNamespace(parent_version="v0007", base_checkpoint=None,
                            registry=SimpleNamespace(manifest=lambda v: {"source": "best.onnx"}))
    assert start_baseline(added, parent, {0: "car"})["version"] == "v0007"  # 'models add'
    assert start_baseline(ctx, None, {0: "car"}) is None  # a first round from scratch


def test_the_baseline_of_a_later_round_on_the_start_replaces_a_rejected_rounds(tmp_path):
    """A team checkpoint's first round was rejected, judged on a held-out slice of car only;
    the next round on top of it measured car and drone. Before: the start's row kept the first
    baseline (drone '-'), so drone's forgetting could never be shown."""
    from types import SimpleNamespace

    from edgecl.continual.round import START_PREFIX, start_baseline

    ctx = SimpleNamespace(parent_version=None, base_checkpoint=tmp_path / "team.pt")
    names = {0: "car", 1: "drone"}
    first = start_baseline(ctx, {"stream": stream_result({0: 0.2})}, names)
    second = start_baseline(ctx, {"stream": stream_result({0: 0.25, 1: 0.5})}, names)
    mon = Monitor(tmp_path)
    common = dict(seconds=1.0, columns=STREAM, class_names=NAMES, calibration=None)
    mon.record_finished_round(round_no=1, version="v0002", status="rejected", reason="fp rose",
                              evaluation={"stream": stream_result({0: 0.0})}, baseline=first,
                              **common)
    mon.record_finished_round(round_no=2, version="v0003", status="promoted", reason="accepted",
                              evaluation={"stream": stream_result({0: 0.2, 1: 0.3})},
                              baseline=second, **common)
    m = mon.accuracy_matrix()
    start = f"{START_PREFIX}team.pt"
    assert m["rows"] == [f"r0 {start}", "r2 v0003"]
    assert m["values"][0][:2] == pytest.approx([0.25, 0.5])
    assert mon.summary()["class_forgetting"] == pytest.approx({"car": 0.05, "drone": 0.2})
    assert [r["model_version"] for r in mon.rounds()].count(start) == 1


def test_a_full_disk_is_named_when_the_metrics_database_cannot_be_written(tmp_path, monkeypatch):
    """Before: 'disk I/O error', as SQLite says it when a full disk refuses its journal."""
    import shutil

    from edgecl.errors import StorageError

    mon = Monitor(tmp_path)
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorname = "SQLITE_IOERR_WRITE"

    def refuse(*args, **kwargs):
        raise exc

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=0))
    monkeypatch.setattr(sqlite3, "connect", refuse)
    with pytest.raises(StorageError, match=r"cannot open metrics database .*: the disk is full "
                                           r"\(0 KiB free; SQLite: disk I/O error\)"):
        mon.record_round(1, "v0001", "promoted", acc=0.5, bwt=0.0, mean_forgetting=0.0)


def test_a_running_process_names_the_version_it_swapped_to_at_once(tmp_path):
    """Before: /metrics said edgecl_model_info{version="v0005"} for up to 10 s after the swap
    to v0006 (the last runtime sample's), while /healthz already said v0006."""
    mon = filled(tmp_path)
    mon.record_runtime(fps=30.0, latency_ms_p50=11.0, memory_bytes=0, memory_samples=0,
                       model_version="v0005")
    live = {"model_version": "v0006"}
    got = samples(PrometheusExporter(mon, vitals=lambda: live).render().decode())
    assert got[("edgecl_model_version", ())] == 6.0
    assert got[("edgecl_model_info", (("version", "v0006"),))] == 1.0
    assert ("edgecl_model_info", (("version", "v0005"),)) not in got


def test_the_model_gauges_name_the_version_serving_not_the_newest_measured(tmp_path, capsys):
    """Before: after 'edgecl models add best.pt --promote' while the device ran, /metrics'
    edgecl_model_version ("Numeric part of the served version") and 'monitor summary' named
    v0004, the newest version a round measured, while v0009 served."""
    import argparse

    from edgecl.commands import monitor as monitor_cmd

    mon = filled(tmp_path)
    mon.record_runtime(fps=30.0, latency_ms_p50=11.0, memory_bytes=0, memory_samples=0,
                       model_version="v0009")
    got = samples(PrometheusExporter(mon).render().decode())
    assert got[("edgecl_model_version", ())] == 9.0
    assert got[("edgecl_model_info", (("version", "v0009"),))] == 1.0
    args = argparse.Namespace(state_dir=str(tmp_path), config=None, overrides=[], json=False)
    assert monitor_cmd.summary_command(args) == 0
    assert ("serving_version  v0009 (the figures here are of v0004, the newest version a "
            "learning round measured)") in capsys.readouterr().out


def test_with_no_runtime_the_summary_names_the_registrys_current_version(tmp_path, capsys):
    """Before: after 'models rollback' (or a promotion) made while no runtime ran, 'monitor
    summary' named the version the last runtime served: "serving_version v0001" while v0002
    was current, and what a runtime serves at its next start."""
    import argparse
    import json
    import os

    from edgecl.commands import monitor as monitor_cmd
    from edgecl.runtime.lock import RuntimeLock

    mon = filled(tmp_path)
    mon.record_runtime(fps=30.0, latency_ms_p50=11.0, memory_bytes=0, memory_samples=0,
                       model_version="v0001")
    (tmp_path / "models").mkdir()
    os.symlink("v0002", tmp_path / "models" / "current")
    args = argparse.Namespace(state_dir=str(tmp_path), config=None, overrides=[], json=True)
    assert monitor_cmd.summary_command(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["serving_version"] == "v0002"
    with RuntimeLock(tmp_path).acquire():  # a runtime runs: its own sample says what it serves
        assert monitor_cmd.summary_command(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["serving_version"] == "v0001"


def test_a_merged_class_leaves_the_summary_and_metrics_but_not_the_matrix(tmp_path):
    """Before: after 'classes merge drone car' the summary and /metrics listed drone's last AP
    (0.2) and forgetting among the device's classes until the next round, and counted it in
    ACC."""
    from edgecl.models.classes import ClassRegistry

    mon = stream_filled(tmp_path)
    registry = ClassRegistry(tmp_path)
    registry.add(["car", "drone", "person"])
    registry.merge("drone", "car")
    s = mon.summary()
    assert s["class_ap50_95"] == pytest.approx({"car": 0.55, "person": 0.5})
    assert s["class_forgetting"] == pytest.approx({"car": 0.05, "person": -0.2})
    # nor does it count in ACC, BWT or mean forgetting (before: ACC 1.25 / 3, with drone's 0.2):
    # ACC (0.55 + 0.5) / 2; BWT (car 0.55 - 0.6, person 0.5 - 0.3) / 2; forgetting (0.05 - 0.2) / 2
    assert s["acc"] == pytest.approx(0.525) and s["bwt"] == pytest.approx(0.075)
    assert s["mean_forgetting"] == pytest.approx(-0.075)
    assert mon.accuracy_matrix()["columns"] == ["car", "drone", "person"]  # its history stays
    got = samples(PrometheusExporter(mon).render().decode())
    assert ("edgecl_class_ap50_95", (("class", "drone"),)) not in got
    assert got[("edgecl_class_ap50_95", (("class", "car"),))] == pytest.approx(0.55)


def test_summary_names_the_classes_no_evaluation_covers_yet(tmp_path, capsys):
    """Before: a class taught in the field with no held-out image yet (Bicycle: 6 images, 0
    held out) was missing from 'monitor summary' and /metrics without a word."""
    import argparse
    import json

    from edgecl.commands import monitor as monitor_cmd
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).seed({0: "car", 1: "person", 2: "bicycle"})
    mon = Monitor(tmp_path)
    ap = {0: 0.6, 1: 0.2}
    res = EvalResult(map50_95=0.4, map50=0.5, recall=0.5, precision=0.5, per_class_ap50_95=ap,
                     n_images=8, n_boxes=20, dece=0.0, per_class_recall={c: 0.5 for c in ap},
                     per_class_instances={c: 10 for c in ap})
    mon.record_evaluation(1, "v0001", {"stream": res}, ["stream"], ts_s=1.0,
                          class_names={0: "car", 1: "person"})
    mon.record_round(1, "v0001", "promoted", acc=0.4, bwt=0.0, mean_forgetting=0.0)
    args = argparse.Namespace(state_dir=str(tmp_path), config=None, overrides=[], json=False)
    assert monitor_cmd.summary_command(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "not_evaluated    bicycle (no promoted version measured these classes: a round measures "
        "a class once the replay memory holds a held-out image of it; one rolled back since does "
        "not count)")
    assert monitor_cmd.summary_command(argparse.Namespace(**{**vars(args), "json": True})) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["not_evaluated"] == ["bicycle"]
