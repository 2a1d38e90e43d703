"""``edgecl labels answered | correct | withdraw`` and ``edgecl memory remove``: a person takes a
wrong answer back or corrects it, through the real CLI entry point."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.continual.memory import ReplayMemory
from edgecl.frames import Detections, Frame, LabelOrigin
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import OperatorQueue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from labels_fakes import textured  # noqa: E402


@pytest.fixture()
def answered(tmp_path, capsys):
    """Three items answered with one ``car`` box each (samples 1, 2, 3)."""
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car"})
    queue = OperatorQueue(state / "labels")
    dets = Detections(np.array([[20, 10, 60, 50]], np.float32), np.array([0.5], np.float32),
                      np.array([0]))
    ids = [queue.push(Frame(textured(i), i, float(i), "cam://0"), dets, priority=0.5,
                      reasons={"uncertain": 0.9}, names={0: "car"}) for i in range(3)]
    car = tmp_path / "car.json"
    car.write_text(json.dumps([{"class": "car", "xyxy": [10, 10, 50, 40]}]))
    for item in ids:
        assert main(["labels", "answer", item, "--boxes", str(car), "--state-dir", str(state)]) == 0
    capsys.readouterr()
    return state, ids


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_answered_lists_the_latest_answers_with_their_stored_boxes(answered, capsys):
    state, ids = answered
    code, out, _ = run(capsys, "labels", "answered", "--json", "--state-dir", str(state))
    listed = last_json(out)
    assert code == 0 and [a["id"] for a in listed] == ids[::-1]
    assert [a["sample"] for a in listed] == [3, 2, 1]
    # the stored box, converted back to pixels of the 200x100 frame
    assert listed[0]["boxes"] == [{"class": "car", "xyxy": [10.0, 10.0, 50.0, 40.0]}]
    assert listed[0]["corrected"] == 0 and listed[0]["width"] == 200
    code, out, _ = run(capsys, "labels", "answered", "--limit", "1", "--state-dir", str(state))
    assert code == 0 and out.count("\n") == 1 and ids[2] in out and "car [10, 10, 50, 40]" in out


def test_correct_relabels_the_sample_under_a_new_id_and_registers_a_new_class(answered, capsys,
                                                                              tmp_path):
    state, ids = answered
    truck = tmp_path / "truck.json"
    truck.write_text(json.dumps({"boxes": [{"class": "truck", "xyxy": [12, 8, 52, 44]}]}))
    code, out, _ = run(capsys, "labels", "correct", ids[1], "--boxes", str(truck), "--json",
                       "--state-dir", str(state))
    result = last_json(out)
    assert code == 0 and result["replaced"] == 2 and result["sample"] == 4
    assert result["classes_added"] == ["truck"] and result["class_ids"] == [1]
    assert ClassRegistry(state).names() == {0: "car", 1: "truck"}
    with ReplayMemory(state / "memory") as memory:
        assert memory.ids() == [1, 3, 4]
        (stored,) = memory.get([4])
        assert stored.origin is LabelOrigin.OPERATOR and stored.source == f"operator:{ids[1]}"
        np.testing.assert_allclose(stored.labels,
                                   [[1, 32 / 200, 26 / 100, 40 / 200, 36 / 100]], atol=1e-5)
    code, out, _ = run(capsys, "labels", "answered", "--json", "--state-dir", str(state))
    first = last_json(out)[0]
    assert first["id"] == ids[1] and first["corrected"] == 1 and first["sample"] == 4
    empty = tmp_path / "empty.json"
    empty.write_text("[]")  # corrected again: nothing to label on it after all
    code, out, _ = run(capsys, "labels", "correct", ids[1], "--boxes", str(empty),
                       "--state-dir", str(state))
    assert code == 0 and "memory sample 4 -> 5" in out and "0 box(es)" in out


def test_withdraw_removes_the_sample_and_later_actions_are_one_line_conflicts(answered, capsys,
                                                                            tmp_path):
    state, ids = answered
    code, out, _ = run(capsys, "labels", "withdraw", ids[0], "--state-dir", str(state))
    assert code == 0 and f"withdrew {ids[0]}: memory sample 1 removed" in out
    with ReplayMemory(state / "memory") as memory:
        assert memory.ids() == [2, 3] and memory.verify(repair=False).ok
    car = tmp_path / "car.json"
    for argv, expected in (
            (("labels", "withdraw", ids[0]), "was withdrawn: its sample was removed"),
            (("labels", "correct", ids[0], "--boxes", str(car)), "was withdrawn"),
            (("labels", "answer", ids[0], "--boxes", str(car)), "was already withdrawn"),
            (("labels", "withdraw", "nope"), "no answered label item 'nope'"),
            (("labels", "withdraw", "../x"), "an id is 1-64 letters")):
        code, _, err = run(capsys, *argv, "--state-dir", str(state))
        assert code == 2 and expected in err and err.count("\n") == 1, (argv, err)


def test_a_pending_item_cannot_be_corrected_and_a_skip_file_is_refused(answered, capsys,
                                                                       tmp_path):
    state, ids = answered
    queue = OperatorQueue(state / "labels")
    dets = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int))
    waiting = queue.push(Frame(textured(9), 9, 9.0, "cam://0"), dets, priority=0.5)
    car = tmp_path / "car.json"
    code, _, err = run(capsys, "labels", "correct", waiting, "--boxes", str(car),
                       "--state-dir", str(state))
    assert code == 2 and "has not been answered yet" in err
    skip = tmp_path / "skip.json"
    skip.write_text('{"skip": true}')
    code, _, err = run(capsys, "labels", "correct", ids[0], "--boxes", str(skip),
                       "--state-dir", str(state))
    assert code == 2 and "labels withdraw" in err and err.count("\n") == 1


def test_an_evicted_answer_says_its_sample_is_gone(answered, capsys, tmp_path):
    state, ids = answered
    with ReplayMemory(state / "memory") as memory:
        memory.remove([2])  # as an eviction would
    code, _, err = run(capsys, "labels", "correct", ids[1], "--boxes", str(tmp_path / "car.json"),
                       "--state-dir", str(state))
    assert code == 2 and "no longer in memory" in err
    code, out, _ = run(capsys, "labels", "answered", "--json", "--state-dir", str(state))
    assert [a["sample"] for a in last_json(out)] == [3, 1]


def test_memory_remove_deletes_samples_all_or_nothing(answered, capsys):
    state, _ids = answered
    code, _, err = run(capsys, "memory", "remove", "1", "9", "--state-dir", str(state))
    assert code == 2 and "no sample id(s) [9]" in err and "nothing was removed" in err
    for bad in ("x", "0", "-1", "9223372036854775808", "9" * 30, "\uff12", " 2"):
        code, _, err = run(capsys, "memory", "remove", bad, "--state-dir", str(state))
        assert code == 2 and "a sample id is a positive integer" in err, (bad, err)
        assert err.count("\n") == 1
    code, out, _ = run(capsys, "memory", "remove", "1", "3", "--json", "--state-dir", str(state))
    assert code == 0 and last_json(out) == {"removed": [1, 3], "snapshot_copies": 0}
    code, out, _ = run(capsys, "memory", "stats", "--json", "--state-dir", str(state))
    assert last_json(out)["per_origin"]["operator"] == 1


def test_an_answer_whose_record_was_lost_is_still_listed(answered, capsys, tmp_path, caplog):
    """Before: the list came from labels/answered.json, so a correction a kill (or a full disk)
    kept out of that record vanished from it, and a damaged record hid every answer."""
    state, ids = answered
    truck = tmp_path / "truck.json"
    truck.write_text(json.dumps([{"class": "truck", "xyxy": [12, 8, 52, 44]}]))
    queue = OperatorQueue(state / "labels")
    with ReplayMemory(state / "memory") as memory:
        classes = ClassRegistry(state)
        original = queue._record
        queue._record = lambda *a, **k: (_ for _ in ()).throw(SystemExit(137))  # killed here
        with pytest.raises(SystemExit):
            queue.correct(ids[0], json.loads(truck.read_text()), memory, classes)
        queue._record = original
    for damage in ("{damaged", "{}"):  # before: an object instead of a list was dropped unsaid
        (state / "labels" / "answered.json").write_text(damage)
        caplog.clear()
        code, out, _ = run(capsys, "labels", "answered", "--json", "--state-dir", str(state))
        listed = last_json(out)
        assert code == 0 and [a["id"] for a in listed] == [ids[0], ids[2], ids[1]]
        assert [a["sample"] for a in listed] == [4, 3, 2]
        assert listed[0]["boxes"][0]["class"] == "truck"
        assert "answered-label record" in caplog.text, damage


def test_the_limit_counts_answers_still_in_memory(answered, capsys):
    state, ids = answered
    with ReplayMemory(state / "memory") as memory:
        memory.remove([3, 2])
    code, out, _ = run(capsys, "labels", "answered", "--limit", "2", "--json",
                       "--state-dir", str(state))
    assert code == 0 and [a["id"] for a in last_json(out)] == [ids[0]]


def test_answers_name_their_frame(answered, capsys):
    state, ids = answered
    code, out, _ = run(capsys, "labels", "answered", "--json", "--state-dir", str(state))
    first = last_json(out)[0]
    assert first["frame_id"] == 2 and first["source"] == "cam://0" and first["name"] is None
    code, out, _ = run(capsys, "labels", "answered", "--state-dir", str(state))
    assert f"{ids[2]}  frame 2  sample 3" in out


def test_corrections_of_one_item_teach_at_most_ten_new_classes_in_all(answered, capsys, tmp_path):
    """Before: each correction of one answered item could name ten more new classes; 30
    requests registered 300 classes (290 of them with no sample), and the next round grew the
    model's head to all of them."""
    state, ids = answered

    def correct(names):
        boxes = tmp_path / "boxes.json"
        boxes.write_text(json.dumps([{"class": n, "xyxy": [10 + k, 10, 50 + k, 40]}
                                     for k, n in enumerate(names)]))
        return run(capsys, "labels", "correct", ids[0], "--boxes", str(boxes),
                   "--state-dir", str(state))

    assert correct([f"a{k}" for k in range(6)])[0] == 0
    code, _, err = correct([f"b{k}" for k in range(5)])
    assert code == 2 and err.endswith(f"label item '{ids[0]}': its answer and corrections named 6 "
                                      f"new class(es) already; 5 more would pass the 10 an item "
                                      f"may teach (a new class is taught a few at a time)\n")
    assert err.count("\n") == 1
    assert correct(["a0", "car"] + [f"b{k}" for k in range(4)])[0] == 0, "known names are free"
    assert len(ClassRegistry(state).names()) == 1 + 6 + 4
    assert correct(["c0"])[0] == 2


def test_a_correction_with_the_stored_boxes_says_unchanged(answered, capsys, tmp_path):
    """Before: 'corrected ...: 1 box(es), memory sample 2 -> 4 (learnt by the next round)'
    for the very boxes it held."""
    state, ids = answered
    same = tmp_path / "same.json"
    same.write_text(json.dumps([{"class": "car", "xyxy": [10, 10, 50, 40]}]))
    code, out, _ = run(capsys, "labels", "correct", ids[1], "--boxes", str(same),
                       "--state-dir", str(state))
    assert code == 0 and out == (f"{ids[1]}: unchanged, memory sample 2 already holds these 1 "
                                 f"box(es)\n")
    memory = ReplayMemory(state / "memory")
    try:
        assert memory.ids() == [1, 2, 3]
    finally:
        memory.close()


def test_memory_remove_names_the_snapshots_that_keep_a_removed_image(answered, capsys, tmp_path):
    """Before: 'training snapshots of past rounds keep 1 link(s)' where no round had run: the
    snapshot was a 'memory export's."""
    state, _ = answered
    assert run(capsys, "memory", "export", "--state-dir", str(state), "--out",
               str(tmp_path / "exported"))[0] == 0
    code, out, _ = run(capsys, "memory", "remove", "1", "--state-dir", str(state))
    assert code == 0 and out == ("removed sample(s) 1; the memory's snapshots (the views rounds "
                                 "trained on and exports read) keep 1 link(s) to their images "
                                 "until newer snapshots replace them (the 2 newest are kept)\n")


def test_a_refused_memory_export_changes_nothing_in_the_state_dir(answered, capsys, tmp_path):
    """Before: an --out under a file, a symbolic link that loops, or a full disk was refused
    only after a snapshot had been taken (and an older one pruned)."""
    state, _ = answered
    before = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    code, _, err = run(capsys, "memory", "export", "--state-dir", str(state), "--out",
                       str(tmp_path / "afile" / "sub"))
    assert code == 2 and "Traceback" not in err
    code, _, err = run(capsys, "memory", "export", "--state-dir", str(state), "--out",
                       str(tmp_path / "loop1"))
    assert code == 2 and err == (f"error: --out {tmp_path / 'loop1'} is a symbolic link that "
                                 f"loops or points nowhere: name a folder\n")
    assert sorted(str(p.relative_to(state)) for p in state.rglob("*")) == before


def test_memory_remove_from_a_looping_link_is_one_line(answered, capsys, tmp_path):
    """Before: 'internal error (RuntimeError: Symlink loop from ...); please report it', exit 1."""
    state, _ = answered
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    code, _, err = run(capsys, "memory", "remove", "--imported-from", str(tmp_path / "l1"),
                       "--state-dir", str(state))
    assert code == 2 and err == (f"error: --imported-from {tmp_path / 'l1'} is a symbolic link "
                                 f"that loops (following it never ends at a file or folder)\n")
