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
    R, names, versions = mon.accuracy_matrix()
    assert names == TASKS
    assert versions == ["v0001", "v0002", "v0004"]
    np.testing.assert_allclose(R, [[0.8, NAN, NAN], [0.6, 0.9, NAN], [0.5, 0.7, 0.85]])
    R_all, _, all_versions = mon.accuracy_matrix(status=None)
    assert all_versions == ["v0001", "v0002", "v0003", "v0004"]
    assert R_all[2].tolist() == pytest.approx([0.1, 0.9, 0.2])
    assert mon.accuracy_matrix("rejected")[2] == ["v0003"]
    with pytest.raises(ValueError, match="status"):
        mon.accuracy_matrix("pending")


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
    assert s["model_version"] == "v0004" and s["round"] == 4
    assert s["acc"] == pytest.approx(2.05 / 3)
    assert s["bwt"] == pytest.approx(-0.25)
    assert s["forgetting"] == {"cars": pytest.approx(0.3), "drone": pytest.approx(0.2)}
    assert s["map50_95"]["person"] == pytest.approx(0.85)
    # pooled bins of v0004: (2 * |0.5 - 0.95| + 1 * |1 - 0.35|) / 3 = (0.9 + 0.65) / 3
    assert s["dece"] == pytest.approx(1.55 / 3)
    assert (s["fps"], s["memory_bytes"], s["memory_samples"]) == (30.0, 2048, 17)
    assert (s["n_promoted"], s["n_rejected"]) == (3, 1)


def test_empty_summary_and_missing_database(tmp_path):
    s = Monitor(tmp_path).summary()
    assert s["acc"] is None and s["model_version"] is None and s["forgetting"] == {}
    with pytest.raises(MonitorError, match="no metrics database"):
        Monitor(tmp_path / "elsewhere", create=False)


def test_database_is_wal_and_rerecording_replaces(tmp_path):
    mon = filled(tmp_path)
    mon.record_evaluation(4, "v0004", {"cars": result(0.55)}, TASKS, ts_s=4.5)
    assert mon.accuracy_matrix()[0][2, 0] == pytest.approx(0.55)
    with sqlite3.connect(mon.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        n = conn.execute("SELECT COUNT(*) FROM class_ap WHERE model_version='v0004' AND task='cars'")
        assert n.fetchone()[0] == 1


def test_unknown_task_is_refused_and_nothing_is_written(tmp_path):
    mon = Monitor(tmp_path)
    with pytest.raises(MonitorError, match="not in the task order"):
        mon.record_evaluation(1, "v0001", {"cars": result(0.5), "boats": result(0.4)}, TASKS)
    assert mon.accuracy_matrix(None)[0].shape == (0, 0)


def test_damaged_database_is_reported(tmp_path):
    db = tmp_path / "metrics" / "metrics.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MonitorError, match="metrics database"):
        Monitor(tmp_path)


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


def test_runtime_samples_are_bounded(tmp_path):
    mon = Monitor(tmp_path, max_runtime_rows=3)
    for k in range(5):
        mon.record_runtime(float(k), 10.0, 100 * k, k, f"v{k:04d}", ts_s=float(k))
    with sqlite3.connect(mon.db_path) as conn:
        assert [r[0] for r in conn.execute("SELECT fps FROM runtime ORDER BY ts_s")] == [2.0, 3.0, 4.0]
    assert mon.latest_runtime()["model_version"] == "v0004"


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
