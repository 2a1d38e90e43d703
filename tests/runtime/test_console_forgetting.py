"""The Forgetting page's data (:func:`edgecl.runtime.console.bounded_forgetting`): the most
forgotten columns only, as ``edgecl monitor report`` shows them."""


def test_the_forgetting_page_shows_the_most_forgotten_columns_only():
    """Before: every column went to the page (300 classes: a heatmap 10 px tall). Forgetting
    of column j: max over earlier rows minus the last row (Chaudhry et al.)."""
    from edgecl.runtime.console import bounded_forgetting

    cols = ["a", "b", "c", "d", "e"]
    values = [[0.9, 0.5, 0.7, None, 0.4],
              [0.6, 0.5, 0.6, 0.8, 0.1]]  # forgetting a 0.3, b 0.0, c 0.1, d unknown, e 0.3
    matrix = {"rows": ["r1", "r2"], "columns": cols, "values": values, "rows_total": 2}
    per_class = {c: [row[j] for row in values] for j, c in enumerate(cols)}
    shown, curves = bounded_forgetting(matrix, per_class, limit=3)
    assert shown["columns"] == ["a", "c", "e"]  # in their own order; a and e tie, c next
    assert shown["values"] == [[0.9, 0.7, 0.4], [0.6, 0.6, 0.1]]
    assert (shown["columns_total"], shown["per_class_total"]) == (5, 5)
    assert list(curves) == ["a", "c", "e"]
    whole, _ = bounded_forgetting(matrix, per_class, limit=5)
    assert whole["columns"] == cols and whole["values"] == values


def test_classes_no_round_measured_are_named():
    """Before: a class taught on the device but shown by no held-out frame was simply absent
    from the Forgetting page. Compared case aside; a merged class is measured as its target."""
    from edgecl.runtime.console import unmeasured_classes

    known = [{"id": 0, "name": "car"}, {"id": 1, "name": "Person"}, {"id": 2, "name": "bicycle"},
             {"id": 3, "name": "persn", "merged_into": "Person"}, {"id": 4, "name": "boat"}]
    assert unmeasured_classes(known, ["car", "person"]) == ["bicycle", "boat"]
    assert unmeasured_classes(known, []) == ["car", "Person", "bicycle", "boat"]
    assert unmeasured_classes([], ["car"]) == []


def test_the_forgetting_page_gets_the_summarys_acc_bwt_and_forgetting(tmp_path):
    """Before: the learner's log said 'ACC 0.020 ... as the Forgetting page shows it', and the
    page showed no ACC, BWT or forgetting figure at all. Matrix (classes car, drone, person):
    r1 [0.6, 0.4, -], r2 [0.5, -, 0.3] -> ACC (0.5 + 0.3) / 2 = 0.4 (drone not measured in r2,
    left out), BWT car -0.1 (0.5 - 0.6) over 2 classes with a diagonal before the last row."""
    from types import SimpleNamespace

    import pytest

    from edgecl.continual.evaluate import EvalResult
    from edgecl.models.classes import ClassRegistry
    from edgecl.runtime.console import build_console_hooks
    from edgecl.runtime.monitor import Monitor

    mon = Monitor(tmp_path)
    names = {0: "car", 1: "drone", 2: "person"}
    for k, ap in ((1, {0: 0.6, 1: 0.4}), (2, {0: 0.5, 2: 0.3})):
        result = EvalResult(map50_95=sum(ap.values()) / len(ap), map50=0.5, recall=0.5,
                            precision=0.5, per_class_ap50_95=ap, n_images=5, n_boxes=5 * len(ap),
                            dece=0.0, per_class_instances={c: 5 for c in ap})
        mon.record_evaluation(k, f"v{k:04d}", {"stream": result}, ["stream"], ts_s=float(k),
                              class_names=names)
        mon.record_round(k, f"v{k:04d}", "promoted")
    ClassRegistry(tmp_path).add(["car", "drone", "person"])
    runtime = SimpleNamespace(
        monitor=mon, vitals=None,
        memory_sink=SimpleNamespace(queue=SimpleNamespace(image_path=str), answers=list,
                                    answered_image=str),
        cfg=SimpleNamespace(state_dir=tmp_path), classes=ClassRegistry(tmp_path),
        registry=SimpleNamespace(current=lambda: "v0002"), health=dict, live=dict,
        live_view=None)
    got = build_console_hooks(runtime).forgetting()["summary"]
    expected = mon.summary()
    assert got == {k: expected[k] for k in got}
    assert got["model_version"] == "v0002" and got["kind"] == "classes"
    assert got["acc"] == pytest.approx(0.4)
