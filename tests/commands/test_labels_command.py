"""``edgecl labels pending | show | answer | skip`` through the real CLI entry point."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.errors import StorageError
from edgecl.continual.memory import ReplayMemory
from edgecl.frames import Detections, Frame, LabelOrigin
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import OperatorQueue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from labels_fakes import textured  # noqa: E402


def _dets(score=0.5):
    return Detections(np.array([[20, 10, 60, 50]], np.float32), np.array([score], np.float32),
                      np.array([0]))


@pytest.fixture()
def state(tmp_path):
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car"})
    q = OperatorQueue(state / "labels")
    ids = [q.push(Frame(textured(i), i, float(i), "cam://0"), _dets(), priority=p,
                  reasons={"uncertain": 0.9}, names={0: "car"}) for i, p in enumerate([0.3, 0.8])]
    return state, ids


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pending_json_by_priority_and_text(state, capsys):
    root, (low, high) = state
    code, out, _ = run(capsys, "labels", "pending", "--json", "--state-dir", str(root))
    items = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and [i["id"] for i in items] == [high, low]
    assert items[0]["proposed"][0]["class"] == "car" and items[0]["reasons"] == {"uncertain": 0.9}
    code, out, _ = run(capsys, "labels", "pending", "--state-dir", str(root))
    assert code == 0 and out.index(high) < out.index(low) and "priority 0.80" in out


def test_pending_limit_lists_the_highest_priority_frames(state, capsys):
    root, (low, high) = state
    code, out, _ = run(capsys, "labels", "pending", "--json", "--limit", "1", "--state-dir",
                       str(root))
    assert code == 0 and [i["id"] for i in json.loads(out.strip().splitlines()[-1])] == [high]
    code, out, _ = run(capsys, "labels", "pending", "--limit", "1", "--state-dir", str(root))
    assert code == 0 and high in out and low not in out
    assert out.splitlines()[-1] == "... and 1 more waiting (--limit 1)"
    code, out, _ = run(capsys, "labels", "pending", "--limit", "5", "--state-dir", str(root))
    assert code == 0 and high in out and low in out and "more waiting" not in out
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "labels", "pending", "--limit", "0", "--state-dir", str(root))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--limit: expected an integer >= 1, got 0" in err
    with pytest.raises(SystemExit) as exit_:  # before: -3 was taken (and named LIMIT in --help)
        run(capsys, "labels", "answered", "--limit", "-3", "--state-dir", str(root))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--limit: expected an integer >= 1, got -3" in err


def test_reading_the_queue_of_a_folder_that_never_queued_a_frame_writes_nothing(tmp_path, capsys):
    """Before: 'labels pending' on an empty folder (a device not started yet, or a --state-dir
    typed wrong into an empty one) created labels/pending/ in it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = run(capsys, "labels", "pending", "--state-dir", str(empty))
    assert code == 0 and out.strip() == "no frames waiting for a person"
    code, out, _ = run(capsys, "labels", "pending", "--json", "--state-dir", str(empty))
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == []
    code, _, err = run(capsys, "labels", "show", "0123abcd", "--state-dir", str(empty))
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run(capsys, "labels", "skip", "0123abcd", "--state-dir", str(empty))
    assert code != 0 and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "labels", "answered", "--state-dir", str(empty))
    assert code == 0 and out.strip() == "no answer in memory yet"
    code, out, _ = run(capsys, "labels", "answered", "--json", "--state-dir", str(empty))
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == []
    assert list(empty.iterdir()) == []


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_reading_a_queue_that_was_never_locked_writes_nothing(state, capsys):
    """Before: 'labels pending' (and show, answered) on a queue folder without a lock file (a
    state directory copied from a device without it) created labels/lock; 'labels answered'
    on a device with a queue but no memory yet created memory/ with an empty index."""
    root, (low, high) = state
    (root / "labels" / "lock").unlink(missing_ok=True)
    before = _tree(root)
    for argv in (["pending"], ["pending", "--json"], ["show", high], ["answered"],
                 ["answered", "--json"]):
        code, out, err = run(capsys, "labels", *argv, "--state-dir", str(root))
        assert code == 0 and err == "", (argv, err)
    assert _tree(root) == before


def test_a_proposal_queued_before_a_rename_names_the_class_as_it_is_now(state, capsys):
    """Before: an item queued before 'classes rename car auto' still proposed 'car', and an
    answer keeping that box made 'car' a new, empty class beside 'auto'."""
    root, (low, high) = state
    assert run(capsys, "classes", "rename", "--state-dir", str(root), "car", "auto")[0] == 0
    code, out, _ = run(capsys, "labels", "pending", "--json", "--state-dir", str(root))
    assert [p["class"] for i in json.loads(out.strip().splitlines()[-1])
            for p in i["proposed"]] == ["auto", "auto"]
    code, out, _ = run(capsys, "labels", "show", high, "--state-dir", str(root))
    assert code == 0 and "proposed auto" in out and "proposed car" not in out
    ClassRegistry(root).add(["car"])  # a new class takes the freed name: the boxes stay 'auto'
    code, out, _ = run(capsys, "labels", "pending", "--json", "--state-dir", str(root))
    assert [(p["class"], p["class_id"]) for i in json.loads(out.strip().splitlines()[-1])
            for p in i["proposed"]] == [("auto", 0), ("auto", 0)]


def _pending_classes(capsys, root):
    code, out, _ = run(capsys, "labels", "pending", "--json", "--state-dir", str(root))
    assert code == 0
    return [p["class"] for i in json.loads(out.strip().splitlines()[-1]) for p in i["proposed"]]


def test_a_proposal_follows_its_class_id_through_renames_that_reuse_names(tmp_path, capsys):
    """Before: proposals were kept by name only, so once a rename's freed name was taken again
    (a swap 'car' <-> 'bus' through a third name, or a new class 'car'), a box the model saw as
    class 0 'car' was proposed, and accepted, as the other class."""
    root = tmp_path / "state"
    ClassRegistry(root).seed({0: "car", 1: "bus"})
    q = OperatorQueue(root / "labels")
    item = q.push(Frame(textured(1), 1, 1.0, "cam://0"), _dets(), priority=0.5,
                  names={0: "car", 1: "bus"})
    for old, new in (("car", "tmp"), ("bus", "car"), ("tmp", "bus")):
        assert run(capsys, "classes", "rename", "--state-dir", str(root), old, new)[0] == 0
    assert _pending_classes(capsys, root) == ["bus"]
    code, out, err = run(capsys, "labels", "accept", item, "--json", "--state-dir", str(root))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["class_ids"] == [0]
    assert ClassRegistry(root).names() == {0: "bus", 1: "car"}


def test_a_proposal_of_a_merged_class_names_the_class_it_became(tmp_path, capsys):
    root = tmp_path / "state"
    ClassRegistry(root).seed({0: "cat", 1: "dog"})
    q = OperatorQueue(root / "labels")
    q.push(Frame(textured(1), 1, 1.0, "cam://0"), _dets(), priority=0.5, names={0: "cat"})
    assert run(capsys, "classes", "merge", "--state-dir", str(root), "cat", "dog")[0] == 0
    assert _pending_classes(capsys, root) == ["dog"]


def test_an_item_queued_without_class_ids_is_read_by_name(state, capsys):
    """Items queued before the queue recorded class ids still follow a rename by name."""
    root, (low, high) = state
    for path in (root / "labels" / "pending").glob("*.json"):
        meta = json.loads(path.read_text())
        meta["proposed"] = [{k: v for k, v in p.items() if k != "class_id"}
                            for p in meta["proposed"]]
        path.write_text(json.dumps(meta))
    assert run(capsys, "classes", "rename", "--state-dir", str(root), "car", "auto")[0] == 0
    assert _pending_classes(capsys, root) == ["auto", "auto"]


def test_show_prints_item_and_image_path(state, capsys):
    root, (low, _) = state
    code, out, _ = run(capsys, "labels", "show", low, "--state-dir", str(root))
    image = out.strip().splitlines()[-1].removeprefix("image: ")
    assert code == 0 and Path(image).is_file() and "proposed car" in out


def test_answer_skip_and_one_line_errors(state, capsys, tmp_path):
    root, (low, high) = state
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxes": [{"class": "drone", "xyxy": [10, 10, 90, 60]}]}))
    code, out, _ = run(capsys, "labels", "answer", high, "--boxes", str(boxes), "--json",
                       "--state-dir", str(root))
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["boxes"] == 1 and result["classes_added"] == ["drone"]
    assert ClassRegistry(root).names() == {0: "car", 1: "drone"}
    with ReplayMemory(root / "memory") as mem:
        (rec,) = mem.records()
        assert rec.origin is LabelOrigin.OPERATOR or rec.origin == "operator"
    code, _, err = run(capsys, "labels", "answer", high, "--boxes", str(boxes),
                       "--state-dir", str(root))
    assert code == 2 and err.count("\n") == 1 and "already answered" in err
    code, out, _ = run(capsys, "labels", "skip", low, "--state-dir", str(root))
    assert code == 0 and f"skipped {low}" in out
    code, _, err = run(capsys, "labels", "skip", "nope", "--state-dir", str(root))
    assert code == 2 and "no label item 'nope'" in err and err.count("\n") == 1


def test_an_answer_or_correction_under_a_renamed_classs_old_name_says_it_makes_a_new_class(
        state, capsys, tmp_path):
    """Before: after 'classes rename car auto', an operator answering 'car' (the name the crew
    still says) made a second class for the same objects, and nothing said why."""
    root, (low, high) = state
    assert run(capsys, "classes", "rename", "--state-dir", str(root), "car", "auto")[0] == 0
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"class": "CAR", "xyxy": [10, 10, 90, 60]}]))
    code, out, err = run(capsys, "labels", "answer", high, "--boxes", str(boxes),
                         "--state-dir", str(root))
    assert code == 0 and "new classes: CAR" in out
    assert err == ("note: 'CAR' named class 'auto' before a classes rename: its boxes made a new "
                   f"class 'CAR' (edgecl classes merge --state-dir={root} -- CAR auto makes them "
                   f"one)\n")
    boxes.write_text(json.dumps([{"class": "auto", "xyxy": [10, 10, 90, 60]}]))
    code, out, err = run(capsys, "labels", "answer", low, "--boxes", str(boxes), "--json",
                         "--state-dir", str(root))
    assert code == 0 and err == "" and json.loads(out.strip().splitlines()[-1])["former_names"] == {}
    assert run(capsys, "classes", "rename", "--state-dir", str(root), "auto", "Auto")[0] == 0
    boxes.write_text(json.dumps([{"class": "car", "xyxy": [10, 10, 90, 60]},
                                 {"class": "truck", "xyxy": [5, 5, 30, 30]}]))
    code, out, err = run(capsys, "labels", "correct", low, "--boxes", str(boxes), "--json",
                         "--state-dir", str(root))
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["classes_added"] == ["truck"] and result["former_names"] == {}
    assert err == ""  # 'car' is the class made above; 'auto' -> 'Auto' frees no name


def test_an_answer_naming_a_class_one_slip_from_a_known_one_says_so(state, capsys, tmp_path):
    """Before: answering 'cars' beside the device's 'car' made a second class, unsaid."""
    root, (low, high) = state
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"class": "cars", "xyxy": [10, 10, 90, 60]}]))
    code, out, _ = run(capsys, "labels", "answer", high, "--boxes", str(boxes),
                       "--state-dir", str(root))
    assert code == 0 and out.rstrip().endswith(
        f"; new classes: cars (close to car; if cars is the typo: edgecl classes merge "
        f"--state-dir={root} -- cars car; if car is: edgecl classes merge --state-dir={root} -- "
        f"car cars)"), out
    boxes.write_text(json.dumps([{"class": "drone", "xyxy": [10, 10, 90, 60]}]))
    code, out, _ = run(capsys, "labels", "answer", low, "--boxes", str(boxes), "--json",
                       "--state-dir", str(root))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["classes_added"] == ["drone"] and result["similar_classes"] == {}


@pytest.mark.parametrize("content, match", [
    (None, "boxes file not found"),
    ("{oops", "is not JSON"),
    (json.dumps([{"class": "car", "xyxy": [0, 0, 999, 10]}]), "outside the 200x100 frame"),
    (json.dumps({"nope": []}), "expected a list"),
    ('[{"class": "car", "xyxy": [1, 2, 3, ' + "9" * 400 + "]}]", "xyxy must be 4 finite"),
    ('[{"class": "car", "xyxy": [1, 2, 3, ' + "9" * 5000 + "]}]", "is not usable JSON"),
    ("[" * 100_000 + "]" * 100_000, "is not usable JSON"),
    (json.dumps([{"class": "bad\ud800", "xyxy": [1, 2, 30, 30]}]), "lone surrogate"),
    ("[" + " " * (3 * 2**20) + "]", ": 3.0 MiB, more than a boxes file can be (1.0 MiB) "
                                    "(1,000 boxes take ~60 KB)\n"),  # before: read whole
    ("[" + " " * 1_100_000 + "]", ": 1,100,002 bytes, more than a boxes file can be (1,048,576 "
                                  "bytes) "),  # before: '1.0 MiB, more than ... (1.0 MiB)'
])
def test_bad_boxes_file_is_one_line(state, capsys, tmp_path, content, match):
    root, (low, _) = state
    boxes = tmp_path / "b.json"
    if content is not None:
        boxes.write_text(content)
    code, _, err = run(capsys, "labels", "answer", low, "--boxes", str(boxes), "--state-dir",
                       str(root))
    assert code == 2 and match in err and err.count("\n") == 1 and "Traceback" not in err


def test_path_escape_ids_touch_nothing(state, capsys, tmp_path):
    root, _ = state
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.json").write_text("{}")
    (outside / "x.jpg").write_bytes(b"x")
    for action in ("skip", "reject", "show", "accept"):
        code, _, err = run(capsys, "labels", action, "../../../outside/x", "--state-dir", str(root))
        assert code == 2 and err.startswith("error: no label item")
    code, _, err = run(capsys, "labels", "skip", "x" * 5000, "--state-dir", str(root))
    assert code == 2 and len(err) < 300
    assert (outside / "x.json").exists() and (outside / "x.jpg").exists()


def test_malformed_item_gives_one_line_not_keyerror(state, capsys):
    root, (low, high) = state
    (root / "labels" / "pending" / "bad.json").write_text(json.dumps({"id": "bad"}))
    code, out, err = run(capsys, "labels", "pending", "--json", "--state-dir", str(root))
    assert code == 0 and len(json.loads(out.strip().splitlines()[-1])) == 2
    assert "KeyError" not in err
    code, out, err = run(capsys, "labels", "show", "bad", "--state-dir", str(root))
    assert code == 2 and "skipping it sets its files aside" in err
    code, out, err = run(capsys, "labels", "skip", "bad", "--state-dir", str(root))
    assert code == 0 and out.startswith("skipped bad (malformed: its files were set aside in ")
    assert (root / "labels" / "malformed" / "bad.json").exists()
    code, out, err = run(capsys, "labels", "pending", "--state-dir", str(root))
    assert code == 0 and "malformed" not in err


@pytest.mark.parametrize("cmd", [["pending"], ["show", "x"], ["skip", "x"]])
def test_a_missing_state_dir_is_one_line_and_not_created(tmp_path, capsys, cmd):
    from edgecl.cli import main

    missing = tmp_path / "typo"
    assert main(["labels", *cmd, "--state-dir", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such state directory" in err
    assert not missing.exists()


@pytest.mark.parametrize("where", ["labels", "labels/pending"])
@pytest.mark.parametrize("target", ["nowhere", "loop"])
def test_a_queue_folder_linked_to_nothing_is_named_not_read_as_empty(state, capsys, where, target):
    """Before: with STATE/labels a link to an unmounted card (or a link that loops), 'labels
    pending' said "no frames waiting for a person", 'labels answered' "no answer in memory
    yet", and the runtime stopped on "Too many levels of symbolic links: .../labels/lock"."""
    root, _ = state
    link = root / where
    if link.is_dir():
        import shutil
        shutil.rmtree(link)
    link.symlink_to(link.name if target == "loop" else "/mnt/edgecl-card-not-mounted/labels")
    why = ("is a symbolic link that loops" if target == "loop" else
           "is a symbolic link to /mnt/edgecl-card-not-mounted/labels, which does not exist "
           "(unmounted?)")
    for argv in (["pending"], ["answered"], ["show", "0123abcd"]):
        code, out, err = run(capsys, "labels", *argv, "--state-dir", str(root))
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, err)
        assert err.startswith(f"error: operator queue: {root}/labels/pending") and why in err
    with pytest.raises(StorageError, match=why.split(",")[0]):
        OperatorQueue(root / "labels")  # the runtime's queue


def test_answered_names_a_lost_index_instead_of_saying_no_answer(tmp_path, capsys):
    """Before: with memory/index.sqlite deleted, 'labels answered' printed "no answer in memory
    yet" over the samples whose index was lost."""
    import numpy as np

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.0), names={0: "car"}) as m:
        m.add(Sample(np.full((24, 24, 3), 90, np.uint8),
                     np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream"))
    for index in (state / "memory").glob("index.sqlite*"):
        index.unlink()
    code = main(["labels", "answered", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 2 and "no answer" not in out
    assert "holds 1 samples on disk but its index" in err and err.count("\n") == 1
