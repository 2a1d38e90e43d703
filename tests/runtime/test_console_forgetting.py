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
