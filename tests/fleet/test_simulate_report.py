"""fleet simulate's round report: each round printed as soon as the fleet (the server's round
log) and the baselines (their round files) have both finished it, in order, never from a
record written before the adoptions. Before: every round's table came after the last round."""

import json

from edgecl.fleet.simulate import BASELINE_ROUND, _RoundReport
from edgecl.fleet.store import GlobalStore


def _fleet_record(rnd, partial=False):
    record = {"round": rnd, "bytes": 2_000_000 * rnd,
              "devices": {"device0": {"update": "kept"}, "device1": {"update": "dropped"}}}
    if partial:
        return {**record, "partial": "the adoptions were not recorded yet"}
    return {**record, "adoption": {"device0": {"status": "promoted", "test_ap": {"car": 0.5}},
                                   "device1": {"status": "rejected", "test_ap": {"car": 0.25}}}}


def _baselines(results, rnd):
    scores = [{"car": 0.1 * rnd}, {"car": 0.0}, {"car": 0.4}]  # alone x 2, then joint
    (results / BASELINE_ROUND.format(rnd)).write_text(json.dumps({"round": rnd, "scores": scores}))


def test_a_round_is_reported_once_both_sides_finished_it(tmp_path):
    store, results = GlobalStore(tmp_path / "fleet"), tmp_path / "baselines"
    results.mkdir()
    lines = []
    report = _RoundReport(tmp_path / "fleet", results, ["device0", "device1"], 2, lines.append)
    report.poll()
    assert lines == [] and report.printed == 0
    store.append_round(_fleet_record(1, partial=True))
    _baselines(results, 1)
    report.poll()
    assert lines == []  # the model was saved, the devices have not adopted it yet
    store.append_round(_fleet_record(1))
    _baselines(results, 2)  # the baselines ahead of the fleet: round 2 waits for it
    report.poll()
    assert report.printed == 1 and lines[0].startswith("round 1: 2.0 MB on the wire")
    width = len("device1 (update dropped, model rejected)")  # the columns line up
    assert lines[1] == "  " + " " * width + "        car       "
    assert lines[2] == "  " + "device0 (update kept, model promoted)".ljust(width) + "    0.500/0.100   "
    assert lines[3] == "  device1 (update dropped, model rejected)" + "    0.250/0.000   "
    assert lines[4] == "  " + "joint".ljust(width) + "       0.400      "
    report.poll()
    assert report.printed == 1
    store.append_round(_fleet_record(2, partial=True))
    report.poll()
    assert report.printed == 1
    report.poll(fleet_done=True)  # the server exited: its last record is all there is
    assert report.printed == 2 and report.baseline_rounds() == 2
    row = report.detail[1]
    assert row["round"] == 2 and row["bytes"] == 4_000_000 and row["joint"] == {"car": 0.4}
    assert [d["status"] for d in row["devices"]] == ["absent", "absent"]
    assert [d["alone_per_class_ap"] for d in row["devices"]] == [{"car": 0.2}, {"car": 0.0}]
    assert sum(line.startswith("round ") for line in lines) == 2


def test_the_target_line_tells_an_unmeasured_class_from_a_weak_one(tmp_path, monkeypatch,
                                                                    run_edgecl):
    """Before: 'joint AP too low to compare on: bicycle, car, person, truck' although bicycle
    and truck had no joint AP at all (shown as '-' in the round tables)."""
    from edgecl.fleet import simulate

    summary = {"devices": 2, "rounds": 1, "bytes_per_round": 10, "per_device": [],
               "joint_per_class_ap": {"bicycle": None, "car": 0.01, "person": 0.0, "truck": None,
                                      "boat": 0.3},
               "target": {"ratio": 0.8, "min_ratio": 0.5, "met": False,
                          "unmeasurable": ["bicycle", "car", "person", "truck"]}}
    monkeypatch.setattr(simulate, "simulate", lambda *a, **k: summary)
    code, out, err = run_edgecl(["fleet", "simulate", "--out", tmp_path / "sim"])
    assert code == 0, err
    assert out.splitlines()[-1] == (
        "target (every device, every class >= 0.8 x joint): not met (lowest ratio 0.50; classes "
        "left out: joint AP not measured: bicycle, truck; joint AP below 0.05: car, person)")

