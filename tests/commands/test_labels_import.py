"""``edgecl labels import``: an image already in memory (same file content) is skipped and
counted under "already in memory"; a folder without class names takes the registry's name for
an id it knows and says which classes stay ``class_<id>``."""

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import DuplicateSampleError, ReplayMemory, Sample
from edgecl.models.classes import ClassRegistry
from edgecl.models.registry import Registry


def _jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((48, 64, 3), value, np.uint8)
    image[10:20, 10:30] = 255 - value
    path.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())


def _one_image_yolo(root: Path, rows: str, names: str, value: int = 60) -> Path:
    """A YOLO folder of one image ``images/a.jpg`` with label rows ``rows`` and a data.yaml
    naming ``names`` (YAML text: ``[car, person]``)."""
    _jpg(root / "images" / "a.jpg", value)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text(rows)
    (root / "data.yaml").write_text(f"train: images\nval: images\nnames: {names}\n",
                                    encoding="utf-8")
    return root


def _voc(root: Path, n: int, name: str = "boat") -> Path:
    (root / "Annotations").mkdir(parents=True)
    for k in range(n):
        _jpg(root / "JPEGImages" / f"{k:03d}.jpg", (20 + 30 * k) % 236)
        (root / "Annotations" / f"{k:03d}.xml").write_text(
            f"<annotation><filename>{k:03d}.jpg</filename><object><name>{name}</name><bndbox><xmin>2</xmin>"
            f"<ymin>2</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")
    (root / "Annotations" / "zz.xml").write_text("<annotation>")  # 1 bad annotation each run
    return root


def _import(capsys, state, src, *extra, code=0):
    got = main(["labels", "import", "--state-dir", str(state), str(src), *extra])
    out, err = capsys.readouterr()
    assert got == code, err
    return json.loads(out.strip().splitlines()[-1]) if "--json" in extra else out.strip().splitlines()[-1]


def _samples(state) -> int:
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        return len(memory)


def test_import_twice_skips_what_is_already_in_memory(tmp_path, capsys):
    src = _voc(tmp_path / "voc", 4)
    state = tmp_path / "state"
    first = _import(capsys, state, src, "--json")
    assert (first["imported"], first["skipped"], first["reasons"]) == (4, 1, {"bad annotation": 1})
    second = _import(capsys, state, src, "--json")
    assert second["imported"] == 0 and second["skipped"] == 5
    assert second["reasons"] == {"bad annotation": 1, "already in memory": 4}
    assert second["classes_added"] == [] and second["boxes"] == {}
    assert _samples(state) == 4 and ClassRegistry(state).names() == {0: "boat"}
    # one new image in the folder: only it is imported; the text line says why the rest were skipped
    _jpg(src / "JPEGImages" / "004.jpg", 200)
    shutil.copy(src / "Annotations" / "000.xml", src / "Annotations" / "004.xml")
    (src / "Annotations" / "004.xml").write_text(
        (src / "Annotations" / "000.xml").read_text().replace("000.jpg", "004.jpg"))
    line = _import(capsys, state, src)
    assert line.startswith(f"imported 1 sample(s) from {src}; held out for evaluation: none yet "
                           f"(about 1 image in 10 is; a later import goes on from here); skipped 5 (")
    assert "already in memory 4" in line and "bad annotation 1" in line
    assert _samples(state) == 5


def test_the_same_image_twice_in_one_folder_is_stored_once(tmp_path, capsys):
    src = _voc(tmp_path / "voc", 2)
    shutil.copy(src / "JPEGImages" / "000.jpg", src / "JPEGImages" / "copy.jpg")  # same bytes
    (src / "Annotations" / "copy.xml").write_text(
        (src / "Annotations" / "000.xml").read_text().replace("000.jpg", "copy.jpg"))
    result = _import(capsys, tmp_path / "state", src, "--json")
    assert result["imported"] == 2 and result["reasons"] == {
        "bad annotation": 1, "same image earlier in this import": 1}
    assert _samples(tmp_path / "state") == 2


def test_memory_refuses_a_second_sample_with_the_same_content_hash(tmp_path):
    labels = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    with ReplayMemory(tmp_path / "m", MemoryConfig(holdout_fraction=0.0), names={0: "car"}) as memory:
        first = memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), labels, task="t",
                                  content_hash="ab" * 16))
        with pytest.raises(DuplicateSampleError, match=f"already in memory as sample {first}") as info:
            memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), labels, task="t", content_hash="ab" * 16))
        assert info.value.sample_id == first and len(memory) == 1
        assert memory.find_content("ab" * 16) == first and memory.find_content("cd" * 16) is None
        assert memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), labels, task="t")) is not None
        with pytest.raises(Exception, match="content hash must be 8-64 lower-case hex digits"):
            memory.add(Sample(np.zeros((16, 16, 3), np.uint8), labels, task="t", content_hash="yes"))
        assert len(memory) == 2


def test_an_index_written_before_content_hashes_is_migrated(tmp_path):
    labels = np.zeros((0, 5), np.float32)
    with ReplayMemory(tmp_path / "m", MemoryConfig(holdout_fraction=0.0)) as memory:
        memory.add(Sample(np.full((16, 16, 3), 1, np.uint8), labels, task="t"))
    conn = sqlite3.connect(tmp_path / "m" / "index.sqlite")
    conn.execute("DROP INDEX samples_by_content")
    conn.execute("ALTER TABLE samples DROP COLUMN content_hash")
    conn.commit()
    conn.close()
    with ReplayMemory(tmp_path / "m", MemoryConfig(holdout_fraction=0.0)) as memory:
        assert memory.last_verify.ok and len(memory) == 1
        new = memory.add(Sample(np.full((16, 16, 3), 2, np.uint8), labels, task="t", content_hash="0f" * 16))
        assert memory.find_content("0f" * 16) == new


def _unnamed_yolo(root: Path, labels=("0 0.5 0.5 0.2 0.2\n", "3 0.5 0.5 0.2 0.2\n0 0.2 0.2 0.1 0.1\n")) -> Path:
    """A YOLO folder without data.yaml or classes.txt: ids 0 and 3, no names."""
    for k, rows in enumerate(labels):
        _jpg(root / "images" / f"{k}.jpg", 40 + 80 * k)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{k}.txt").write_text(rows)
    return root


def test_unnamed_classes_take_the_registry_name_of_their_id(tmp_path, capsys):
    src = _unnamed_yolo(tmp_path / "yolo")
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car", 1: "person"})
    result = _import(capsys, state, src, "--json")
    assert result["imported"] == 2
    assert result["named_from_registry"] == {"class_0": "car"}
    assert result["unnamed_classes"] == ["class_3"] and result["classes_added"] == ["class_3"]
    assert result["boxes"] == {"car": 2, "class_3": 1}
    assert ClassRegistry(state).names() == {0: "car", 1: "person", 2: "class_3"}
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        ids = sorted(int(c) for s in memory.get(memory.ids()) for c in s.labels[:, 0])
    assert ids == [0, 0, 2]


def test_an_unnamed_id_the_device_calls_dontcare_is_an_ignore_region(tmp_path, capsys):
    """A device that has a DontCare class (a dataset listed it) and a label folder without
    names: before, the id's boxes were stored as DontCare, a class to learn."""
    src = _unnamed_yolo(tmp_path / "yolo", labels=("0 0.5 0.5 0.2 0.2\n", "3 0.5 0.5 0.2 0.2\n"
                                                   "0 0.2 0.2 0.1 0.1\n", "3 0.4 0.4 0.2 0.2\n"))
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "DontCare", 1: "person", 2: "car", 3: "truck"})
    result = _import(capsys, state, src, "--json")
    assert result["imported"] == 2 and result["ignored_regions"] == 1
    assert result["reasons"] == {"only ignored objects": 1}
    assert result["boxes"] == {"truck": 2}
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        ids = sorted(int(c) for s in memory.get(memory.ids()) for c in s.labels[:, 0])
    assert ids == [3, 3]


def test_unnamed_classes_without_a_registry_entry_are_reported(tmp_path, capsys):
    src = _unnamed_yolo(tmp_path / "yolo")
    line = _import(capsys, tmp_path / "state", src)
    assert line.endswith("new classes: class_0, class_1, class_2, class_3; unnamed classes kept as "
                         "class_0, class_3 (the dataset names no classes: add a data.yaml with names, "
                         "or 'edgecl classes rename')")
    # a device with no class yet keeps the dataset's ids, as it does a named dataset's
    assert ClassRegistry(tmp_path / "state").names() == {k: f"class_{k}" for k in range(4)}
    # a second run: nothing new, and nothing named anew
    result = _import(capsys, tmp_path / "state", src, "--json")
    assert result["imported"] == 0 and result["reasons"] == {"already in memory": 2}
    assert result["unnamed_classes"] == [] and result["named_from_registry"] == {}


def test_a_named_folder_reports_no_unnamed_classes(tmp_path, capsys):
    src = _unnamed_yolo(tmp_path / "yolo")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: {0: car, 1: a, 2: b, 3: truck}\n")
    result = _import(capsys, tmp_path / "state", src, "--json")
    assert result["unnamed_classes"] == [] and result["named_from_registry"] == {}
    assert result["boxes"] == {"car": 2, "truck": 1}


def test_a_device_with_no_class_keeps_an_unnamed_dataset_s_ids(tmp_path, capsys):
    """Before: ids went in the order the classes first appeared: class_3, met first, became the
    device's id 0 (still named class_3), and its stored labels said 0."""
    src = _unnamed_yolo(tmp_path / "yolo", ("3 0.5 0.5 0.2 0.2\n", "0 0.5 0.5 0.2 0.2\n"))
    state = tmp_path / "state"
    result = _import(capsys, state, src, "--json")
    assert result["boxes"] == {"class_3": 1, "class_0": 1} and result["named_from_registry"] == {}
    assert result["unnamed_classes"] == ["class_0", "class_3"]
    assert ClassRegistry(state).names() == {0: "class_0", 1: "class_1", 2: "class_2", 3: "class_3"}
    assert result["unnamed_ids"] == "kept"
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        stored = {Path(s.source).stem: int(s.labels[0, 0]) for s in memory.get(memory.ids())}
    assert stored == {"0": 3, "1": 0}
    # a yaml giving only nc counts up to it, beyond the ids the labels use
    other = _unnamed_yolo(tmp_path / "nc", ("1 0.5 0.5 0.2 0.2\n",))
    (other / "data.yaml").write_text("train: images\nval: images\nnc: 3\n")
    _import(capsys, tmp_path / "state2", other, "--json")
    assert ClassRegistry(tmp_path / "state2").names() == {0: "class_0", 1: "class_1", 2: "class_2"}


def test_a_stray_class_id_in_an_unnamed_dataset_makes_no_empty_classes(tmp_path, capsys):
    """Keeping an unnamed dataset's ids must not turn one stray id (900, a typo) into 899 empty
    classes and a head of 901 outputs: the ids then go in the order they appear, said so."""
    src = _unnamed_yolo(tmp_path / "yolo", ("900 0.5 0.5 0.2 0.2\n", "0 0.5 0.5 0.2 0.2\n"))
    state = tmp_path / "state"
    main(["labels", "import", "--state-dir", str(state), str(src), "--json"])
    captured = capsys.readouterr()
    first = json.loads(captured.out.strip().splitlines()[-1])
    assert first["imported"] == 2 and first["unnamed_ids"] == "renumbered"
    assert ClassRegistry(state).names() == {0: "class_900", 1: "class_0"}
    assert ("note: the labels use 2 class id(s) up to 900: keeping those ids would make 899 "
            "classes with no box, so the device numbers the classes in the order they appear"
            in captured.err)
    # a later import of such labels finds class_900 by its name; its id 1 is not class_0's
    later = tmp_path / "later"
    _jpg(later / "images" / "x.jpg", 200)
    (later / "labels").mkdir()
    (later / "labels" / "x.txt").write_text("900 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    result = _import(capsys, state, later, "--json")
    assert result["boxes"] == {"class_900": 1, "class_1": 1} and result["named_from_registry"] == {}
    assert "unnamed_ids" not in result  # the device had classes: nothing to keep or renumber
    assert ClassRegistry(state).names() == {0: "class_900", 1: "class_0", 2: "class_1"}


def test_a_file_name_that_is_not_utf8_is_imported_with_its_bytes_escaped(tmp_path, capsys):
    # a Windows zip unpacked on Linux: b"caf\xe9.jpg" (Latin-1), beside a plain name
    import os

    root = tmp_path / "yolo"
    for name in (b"caf\xe9", b"ok"):
        image = root / "images" / os.fsdecode(name + b".jpg")
        _jpg(image, 90 if name == b"ok" else 150)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / os.fsdecode(name + b".txt")).write_text("0 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: car}\n")
    state = tmp_path / "state"
    summary = _import(capsys, state, root, "--json")
    assert (summary["imported"], summary["skipped"]) == (2, 0)
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        sources = sorted(Path(r.source).name for r in memory.records())
    assert sources == ["caf\\xe9.jpg", "ok.jpg"]


def test_the_text_summary_names_classes_matched_by_case(tmp_path, capsys):
    root = _voc(tmp_path / "voc", 2, name="Boat")
    state = tmp_path / "state"
    ClassRegistry(state).add(["boat"])
    line = _import(capsys, state, root)
    assert line.endswith("new classes: none; names matched to the device's classes: Boat -> boat")


def test_a_new_class_one_slip_from_a_known_one_is_pointed_out(tmp_path, capsys):
    """Before: an import naming 'boats' beside the device's 'boat' made a new class, unsaid."""
    root = _voc(tmp_path / "voc", 2, name="boats")
    state = tmp_path / "state"
    ClassRegistry(state).add(["boat", "class_1"])
    line = _import(capsys, state, root)
    assert (f"; new classes: boats (close to boat; if boats is the typo: edgecl classes merge "
            f"--state-dir={state} -- boats boat; if boat is: edgecl classes merge "
            f"--state-dir={state} -- boat boats)") in line
    summary = _import(capsys, tmp_path / "other", root, "--json")  # nothing known: no hint
    assert summary["classes_added"] == ["boats"] and summary["similar_classes"] == {}


def test_the_suggested_merge_runs_as_printed_for_names_a_shell_would_mangle(tmp_path, capsys,
                                                                            monkeypatch):
    """Before: "'edgecl classes merge -persn person'" lacked --state-dir, its '-persn' read as an
    option, and a name with a quote came out in nested quotes; a state directory given as
    '-my state' (relative, starting with -) read as an option too."""
    import shlex

    root = _voc(tmp_path / "voc", 2, name="-boatsz")
    monkeypatch.chdir(tmp_path)
    ClassRegistry("-my state").add(["boat's"])
    assert main(["labels", "import", "--state-dir=-my state", str(root)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    command = line.split("is the typo: ", 1)[1].split("; if ", 1)[0]
    argv = shlex.split(command)
    assert argv == ["edgecl", "classes", "merge", "--state-dir=-my state", "--", "-boatsz",
                    "boat's"]
    assert main(argv[1:]) == 0
    assert ClassRegistry("-my state").label_ids()["-boatsz"] == 0


def test_typo_hints_by_what_the_device_knew_before(tmp_path, capsys):
    """Before: 'traffic light' beside 'traffic_light' was not pointed out; a name the registry
    matched by case was listed as a new class once per image; a dataset's own 'bus' and 'bust'
    were flagged; a hint named a class merged away."""
    from edgecl.continual.ingest import ingest
    from edgecl.data.importers import ImportItem

    state = tmp_path / "state"
    classes = ClassRegistry(state)
    classes.add(["traffic_light", "Persn", "-persn", "trucks", "truck"])
    classes.merge("trucks", "truck")
    box = np.array([[1, 1, 20, 20]], np.float32)
    items = [ImportItem(np.full((32, 32, 3), 10 * k, np.uint8), names, np.repeat(box, len(names), 0),
                        Path(f"/d/{k}.jpg"))
             for k, names in enumerate([["traffic light"], ["persn"], ["persn"], ["bus", "bust"],
                                        ["trucksz"]])]  # traffic light: the import's own match
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        report = ingest(items, memory, classes)
    assert report.classes_added == ["bus", "bust", "trucksz"]
    assert report.similar_classes == {"trucksz": "truck"}
    assert report.classes_matched == {"traffic light": "traffic_light", "persn": "Persn"}


def test_close_class_names_by_hand():
    from edgecl.data.class_names import close_class_names

    known = ["Person", "car", "Bicycle", "class_0", "cam1", "OtherVehicle"]
    new = ["Persn", "cat", "Bicyle", "class_3", "cam2", "other vehicles", "tank", "ca"]
    # ratios of the loose forms: persn/person 10/11 = 0.91, bicyle/bicycle 12/13 = 0.92,
    # othervehicles/othervehicle 24/25 = 0.96; cat/car 4/6 = 0.67 < 0.8; digits-only
    # differences and names under 3 letters are never pointed out
    assert close_class_names(new, known) == {"Persn": "Person", "Bicyle": "Bicycle",
                                             "other vehicles": "OtherVehicle"}
    # VisDrone's tricycle beside COCO's bicycle: 2 * 6 / 15 = 0.80, a distinction, not a slip
    assert close_class_names(["tricycle", "cars"], ["bicycle", "car"]) == {"cars": "car"}
    # an answer takes a name spelt otherwise as a new class: the same loose form is the closest
    assert close_class_names(["traffic light", "TrafficLight", "CA"], ["traffic_light", "ca"]) == {
        "traffic light": "traffic_light", "TrafficLight": "traffic_light", "CA": "ca"}


def test_a_plural_or_singular_of_a_known_class_name_is_pointed_out():
    """Before, ``people`` beside hit-uav-dev's ``Person`` (a word apart: ratio 0.33) and
    ``buses`` beside ``bus`` (0.75) made new classes with no hint."""
    from edgecl.data.class_names import close_class_names, singular_key

    assert [singular_key(k) for k in ("people", "buses", "boxes", "ladies", "cars", "bus", "glass",
                                      "trafficlights", "workmen", "sheep")] == [
        "person", "bus", "box", "lady", "car", "bus", "glass", "trafficlight", "workman", "sheep"]
    known = ["Person", "bus", "box", "traffic_light", "glass"]
    new = ["people", "Buses", "boxes", "traffic lights", "glasses", "gas", "persons"]
    assert close_class_names(new, known) == {
        "people": "Person", "Buses": "bus", "boxes": "box", "traffic lights": "traffic_light",
        "glasses": "glass", "persons": "Person"}
    # the other way round: a singular beside a known plural
    assert close_class_names(["person", "bus"], ["people", "buses"]) == {"person": "people",
                                                                        "bus": "buses"}


def test_a_zero_size_box_is_dropped_and_its_frame_imported(tmp_path, capsys):
    """Before: ``imported 0 sample(s) ... skipped 1 (refused label 1)``: the frame's car box was
    lost for the zero-size box beside it."""
    src = _one_image_yolo(tmp_path / "ds", "0 0.250000 0.260417 0.250000 0.312500\n1 0.6 0.6 0 0\n",
                          "[car, person]")
    state = tmp_path / "state"
    report = _import(capsys, state, src, "--json")
    assert report["imported"] == 1 and report["skipped"] == 0 and report["empty_boxes"] == 1
    assert report["boxes"] == {"car": 1}
    line = _import(capsys, tmp_path / "state2", src)
    assert "boxes with no area dropped 1" in line


def test_an_image_too_small_to_train_on_is_skipped_with_its_reason(tmp_path, capsys):
    """Before: 48x8 frames were imported ("imported 8 sample(s)"), then every round failed with
    "No valid images found in .../labels.cache": ultralytics trains no image with a side
    under 10 pixels. ``dataset import`` wrote them the same way."""
    src = tmp_path / "ds"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for name, (h, w) in (("tiny", (8, 48)), ("ok", (10, 48))):
        cv2.imwrite(str(src / "images" / f"{name}.png"), np.full((h, w, 3), 90, np.uint8))
        (src / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.5 0.9\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    report = _import(capsys, tmp_path / "state", src, "--json")
    assert (report["imported"], report["reasons"]) == (1, {"image too small": 1})
    code = main(["dataset", "import", str(src), "--out", str(tmp_path / "out"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["reasons"] == {"image too small": 1}
    assert "tiny.png: 48x8 pixels: a side is under 10 pixels, which ultralytics does not train on" in err


def test_look_alike_class_names_are_pointed_out():
    """Before, a Cyrillic ``с`` typed for a Latin ``c`` (``сar``), full-width letters (``ｃａｒ``)
    and a Greek capital Beta (``ΒUS``) made new classes with no hint: each looks like the
    known name on screen and differs from it in every loose comparison."""
    from edgecl.data.class_names import close_class_names

    known = ["car", "bus", "person"]
    new = ["\u0441ar", "\uff43\uff41\uff52", "\u0392US", "\u0440erson", "\u0441\u043e\u043a", "\u6c7d\u8f66"]
    assert close_class_names(new, known) == {"\u0441ar": "car", "\uff43\uff41\uff52": "car",
                                             "\u0392US": "bus", "\u0440erson": "person"}
    # the other way round: a Latin name beside a known Cyrillic one
    assert close_class_names(["cok"], ["\u0441\u043e\u043a"]) == {"cok": "\u0441\u043e\u043a"}


def test_a_look_alike_name_in_an_import_is_named_in_its_report(tmp_path, capsys):
    """End to end: ``labels import --json`` reports ``similar_classes`` for a Cyrillic ``с``."""
    state = tmp_path / "state"
    for k, name in enumerate(("car", "\u0441ar")):
        src = _one_image_yolo(tmp_path / f"ds{k}", "0 0.3 0.3 0.2 0.2\n", f"['{name}']",
                              value=40 + 100 * k)
        report = _import(capsys, state, src, "--json")
    assert report["classes_added"] == ["\u0441ar"] and report["similar_classes"] == {"\u0441ar": "car"}


def test_images_stored_by_an_older_release_without_a_hash_are_not_imported_twice(tmp_path,
                                                                                  capsys):
    """A release before content hashes stored its samples with none: importing the same folder
    again after an upgrade stored every image a second time (a held-out image's copy trained
    on). Such samples are matched by file name and thumbnail instead."""
    src = _voc(tmp_path / "voc", 4)
    state = tmp_path / "state"
    assert _import(capsys, state, src, "--json")["imported"] == 4
    db = sqlite3.connect(state / "memory" / "index.sqlite")     # as an older release left them
    db.execute("UPDATE samples SET content_hash = NULL")
    db.execute("UPDATE samples SET embedding = NULL WHERE id = 1")  # no thumbnail stored either
    db.execute("UPDATE samples SET source = '002' WHERE id = 3")    # a dir:// stream's name
    db.commit()
    db.close()
    again = _import(capsys, state, src, "--json")
    assert again["imported"] == 0 and again["reasons"]["already in memory"] == 4
    assert _samples(state) == 4
    # the same name with another picture (the folder's image was replaced) is a new image
    _jpg(src / "JPEGImages" / "001.jpg", 200)
    assert _import(capsys, state, src, "--json")["imported"] == 1
    assert _samples(state) == 5


def test_a_tool_without_the_device_config_keeps_the_memory_settings_of_its_runtime(
        tmp_path, capsys, caplog):
    """Before, a tool opened the memory with its own settings: a smaller capacity (the default
    2,000 against a device's 5,000) evicted the device's samples on open."""
    import logging

    from edgecl.continual.memory.store import recorded_memory_config

    state = tmp_path / "state"
    device = MemoryConfig(capacity=30, holdout_fraction=0.1, seed=7, policy="reservoir")
    box = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    rng = np.random.default_rng(0)
    with ReplayMemory(state / "memory", device, names={0: "boat"},
                      record_settings=True) as memory:                          # the runtime's
        for i in range(25):
            memory.add(Sample(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), box,
                              task="stream", source=f"f{i}", ts_s=float(i)))
    assert recorded_memory_config(state / "memory") == device
    caplog.set_level(logging.INFO)
    result = _import(capsys, state, _voc(tmp_path / "voc", 3), "--json")
    assert result["imported"] == 3
    assert recorded_memory_config(state / "memory") == device
    assert _samples(state) == 28
    assert "settings of the device's runtime used (capacity=30, policy=reservoir, seed=7)" in caplog.text
    caplog.clear()  # settings given on purpose are used, even one equal to the default
    _import(capsys, state, _voc(tmp_path / "voc2", 1), "--json", "memory.capacity=2000",
            "memory.policy=reservoir", "memory.seed=7")  # (its one image is already stored)
    assert _samples(state) == 28 and "settings of the device" not in caplog.text
    # but bounds below the device's would evict its samples for good: refused, nothing lost
    # (before: 28 -> 10 samples while the device's runtime kept its capacity of 30)
    code = main(["labels", "import", "--state-dir", str(state), str(_voc(tmp_path / "voc3", 3)),
                 "memory.capacity=10"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: memory.capacity=10 is below the 30 this device's runtime keeps")
    assert _samples(state) == 28
    # so would a larger held-out fraction: fewer training slots (before: 28 -> 27 samples, and
    # a runtime given it said "evicted at start to fit memory.capacity 30")
    code = main(["labels", "import", "--state-dir", str(state), str(_voc(tmp_path / "voc4", 3)),
                 "memory.capacity=30", "memory.holdout_fraction=0.9"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: memory.holdout_fraction=0.9 leaves 3 training slots instead "
                          "of 27 (the device's runtime keeps memory.holdout_fraction=0.1): this "
                          "command would evict the device's samples for good"), err
    assert _samples(state) == 28


def test_a_memory_from_an_older_release_is_not_evicted_by_a_tool_given_smaller_bounds(
        tmp_path, capsys):
    """A memory written before its runtime's settings were recorded: a tool given smaller
    bounds (or the defaults, against a device's larger capacity) evicted samples and trimmed
    the held-out slice for good, and 'memory verify' did so on any memory (430 -> 104 held out
    on a device upgraded in place)."""
    state = tmp_path / "state"
    box = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    rng = np.random.default_rng(0)
    with ReplayMemory(state / "memory", MemoryConfig(capacity=30), names={0: "boat"}) as memory:
        for i in range(20):                                    # no settings recorded
            memory.add(Sample(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), box,
                              task="stream", source=f"f{i}", ts_s=float(i)))
    for argv in (["labels", "import", "--state-dir", str(state), str(_voc(tmp_path / "v", 1)),
                  "memory.capacity=10"],
                 ["memory", "verify", "--state-dir", str(state), "memory.capacity=10"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "holds more than this command's memory settings allow" in err
        assert "records no settings of its device's runtime" in err and "--config" in err
        assert _samples(state) == 20
    assert main(["memory", "verify", "--no-repair", "--state-dir", str(state),
                 "memory.capacity=10"]) == 1                       # a check alone changes nothing
    capsys.readouterr()
    assert _samples(state) == 20
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
    assert ("the capacity and size bounds shown are this command's defaults, as no device has "
            "run on this memory yet") in capsys.readouterr().out
    _import(capsys, state, _voc(tmp_path / "v2", 1), "--json", "memory.capacity=30")  # fits
    assert _samples(state) == 21


def test_recorded_memory_settings_that_are_not_valid_are_ignored(tmp_path, caplog):
    from edgecl.continual.memory.store import MEMORY_CONFIG_KEY, recorded_memory_config

    root = tmp_path / "memory"
    assert recorded_memory_config(root) is None                 # no memory
    ReplayMemory(root, MemoryConfig(capacity=40), record_settings=True).close()
    assert recorded_memory_config(root).capacity == 40
    ReplayMemory(root, MemoryConfig(capacity=99)).close()        # a tool's open records nothing
    assert recorded_memory_config(root).capacity == 40
    db = sqlite3.connect(root / "index.sqlite")
    for bad in ('{"capacity": "many"}', '{"capacity": 0}', '[1, 2]', 'not json'):
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (bad, MEMORY_CONFIG_KEY))
        db.commit()
        caplog.clear()
        assert recorded_memory_config(root) is None, bad
        # before: a list and text that is no JSON were dropped unsaid
        assert "recorded settings are not valid" in caplog.text, bad
    db.close()


def test_an_import_onto_a_memory_without_its_registry_keeps_the_memory_class_names(
        tmp_path, capsys, caplog):
    """Before, the registry numbered the import's classes afresh and their names were stored
    over the memory's: 700 truck samples became 'pedestrian', boat lost its name."""
    state = tmp_path / "state"
    box = np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32)
    with ReplayMemory(state / "memory", MemoryConfig(),
                      names={0: "car", 1: "truck", 2: "boat"}) as memory:
        memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), box, task="stream", source="a"))
    result = _import(capsys, state, _voc(tmp_path / "voc", 2), "--json")
    assert result["imported"] == 2
    names = ClassRegistry(state).names()
    assert names == {0: "car", 1: "truck", 2: "boat"} and result["classes_added"] == []
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        assert memory.class_names() == {0: "car", 1: "truck", 2: "boat"}
    assert "takes them with their ids: 0 car, 1 truck, 2 boat" in caplog.text


def test_a_registry_that_lost_its_last_ids_gets_them_back_before_a_new_class_takes_one(
        tmp_path, capsys, caplog):
    """classes.json restored from an older copy lacked the last class (boat, id 2) that the
    memory names: the import's next new class took id 2 and the memory's boat samples became
    that class, unsaid. The lost ids come back first; one taken meanwhile is warned of."""
    from edgecl.runtime.labels.pipeline import MemorySink
    from edgecl.config import load_config

    state = tmp_path / "state"
    box = np.array([[2, 0.5, 0.5, 0.2, 0.2]], np.float32)
    with ReplayMemory(state / "memory", MemoryConfig(),
                      names={0: "car", 1: "truck", 2: "boat"}) as memory:
        memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), box, task="stream", source="a"))
    ClassRegistry(state).seed({0: "car", 1: "truck"})
    src = _voc(tmp_path / "voc", 2)
    for xml in (src / "Annotations").glob("0*.xml"):
        xml.write_text(xml.read_text().replace("<name>boat</name>", "<name>dog</name>"))
    result = _import(capsys, state, src, "--json")
    assert ClassRegistry(state).names() == {0: "car", 1: "truck", 2: "boat", 3: "dog"}
    assert result["classes_added"] == ["dog"]
    assert "lacked class id(s) the replay memory names (2 boat): added back" in caplog.text
    # the runtime's labelling sink gives them back too, as it opens the memory
    ClassRegistry(state).path.write_text('{"format": 1, "classes": [{"id": 0, "name": "car"}]}')
    caplog.clear()
    cfg = load_config(None, [f"state_dir={state}"])
    MemorySink.from_config(cfg, classes=ClassRegistry(state)).memory.close()
    assert ClassRegistry(state).names() == {0: "car", 1: "truck", 2: "boat", 3: "dog"}
    # an id whose name the registry holds under another id cannot come back: the ids before it
    # do, and then nothing is imported (a new class would take the id and relabel its samples)
    ClassRegistry(state).path.write_text('{"format": 1, "classes": [{"id": 0, "name": "car"}, '
                                         '{"id": 1, "name": "dog"}]}')
    code = main(["labels", "import", "--state-dir", str(state), str(src)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert (f"error: the class registry {state / 'classes.json'} lacks class id 3, which the "
            f"replay memory names 'dog' (1 id(s) in all), and cannot take it back, so no new "
            f"class is made (it would take the id and relabel those samples); the registry gives "
            f"'dog' to class 1: if that is another class, rename it (edgecl classes rename), and "
            f"id 3 comes back by itself") in err
    assert ClassRegistry(state).names() == {0: "car", 1: "dog", 2: "boat"}
    # a command that only reads (or removes) is not refused: it warns
    caplog.clear()
    assert main(["labels", "answered", "--state-dir", str(state), "--json"]) == 0
    assert "lacks class id 3" in caplog.text and capsys.readouterr().out.strip() == "[]"
    # the advice works: class 1 was truck, renamed 'dog' by mistake
    assert main(["classes", "rename", "--state-dir", str(state), "dog", "truck"]) == 0
    assert main(["labels", "import", "--state-dir", str(state), str(src), "--json"]) == 0
    capsys.readouterr()
    assert ClassRegistry(state).names() == {0: "car", 1: "truck", 2: "boat", 3: "dog"}


@pytest.mark.parametrize("damage", [b"\x00" * 120, b'{"format": 1, "classes": [{"id": 0, "na',
                                    b"\xff\xd8garbage", b""])
def test_a_damaged_registry_is_rebuilt_from_the_memory_names_and_kept_aside(
        tmp_path, capsys, caplog, damage):
    """An SD-card fault in classes.json: every command refused ('restore it from a backup',
    which no device has) while the memory held every id -> name."""
    state = tmp_path / "state"
    box = np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32)
    with ReplayMemory(state / "memory", MemoryConfig(),
                      names={0: "car", 1: "truck", 2: "boat"}) as memory:
        memory.add(Sample(np.full((16, 16, 3), 9, np.uint8), box, task="stream", source="a"))
    (state / "classes.json").write_bytes(damage)
    result = _import(capsys, state, _voc(tmp_path / "voc", 2), "--json")
    assert result["imported"] == 2 and result["classes_added"] == []
    assert ClassRegistry(state).names() == {0: "car", 1: "truck", 2: "boat"}
    (kept,) = state.glob("classes.json.corrupt-*")
    assert kept.read_bytes() == damage
    assert "rebuilt from the replay memory's 3 class name(s) with their ids (0 car, 1 truck, " \
           "2 boat), without its backup: merges and renames are not known to the memory" \
           in caplog.text and "the damaged file is kept as classes.json.corrupt-" in caplog.text
    # with no names in the memory either, the one-line refusal stays
    empty = tmp_path / "empty"
    (empty / "memory").mkdir(parents=True)
    (empty / "classes.json").write_bytes(b"\x00" * 8)
    code = main(["labels", "import", "--state-dir", str(empty), str(tmp_path / "voc")])
    assert code == 2 and "corrupt class registry" in capsys.readouterr().err


def test_an_image_folder_without_labels_says_nothing_was_imported_and_what_to_give(tmp_path, capsys):
    """A user pointed at a VOC dataset's JPEGImages/ folder: the import exited 0 with 'imported
    0' and each image was reported twice (a log warning and a 'skipped:' line); now it exits 2,
    as dataset import does."""
    src = _voc(tmp_path / "voc", 3)
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(src / "JPEGImages")]) == 2
    out, err = capsys.readouterr()
    assert sum("000.jpg" in line for line in (out + err).splitlines()) == 1
    assert err.strip().splitlines()[-1] == (
        f"error: nothing imported from {src / 'JPEGImages'}: every image was skipped (no label "
        f"file 3); {src / 'JPEGImages'} looks like the image folder of a Pascal VOC dataset: give "
        f"the folder holding Annotations/ and JPEGImages/ ({src})")
    # a plain folder of images gets the general hint; --json keeps the JSON the last stdout line
    plain = tmp_path / "frames"
    for k in range(2):
        _jpg(plain / f"{k}.jpg", 40 * k)
    assert main(["labels", "import", "--state-dir", str(state), str(plain), "--json"]) == 2
    out, err = capsys.readouterr()
    last = json.loads(out.strip().splitlines()[-1])
    assert last["reasons"] == {"no label file": 2}
    assert "an image folder holds no labels: give the dataset itself" in err
    # before: the JSON of a failed import had no "error", which every other command's has
    assert last["error"] == err.strip().splitlines()[-1].removeprefix("error: ")
    # the same import run again warns no more than the first did (nothing is new)
    assert main(["labels", "import", "--state-dir", str(state), str(src)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["labels", "import", "--state-dir", str(state), str(src)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_skip_messages_past_the_first_20_are_said_to_be_left_out(tmp_path, capsys):
    """Before: the 'skipped:' lines stopped at 20 of 23 without a word."""
    plain = tmp_path / "frames"
    for k in range(23):
        _jpg(plain / f"{k:02d}.jpg", 10 * k)
    (plain / "00.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(plain)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("skipped: /") for line in out) == 20
    assert out[20] == "skipped: ... and 2 more, not listed (counted by reason in the summary)"
    assert main(["dataset", "import", str(plain), "--out", str(tmp_path / "out")]) == 0
    assert "skipped: ... and 2 more, not listed (counted by reason in the summary)" in \
        capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("content, why", [
    ("", "it is empty"), ('{"annotations": [{"id": 1', "not JSON, or cut short"),
    ('{"annotations": []}', "no 'images' list in it"), ("[]", "not a JSON object"),
])
def test_an_image_folder_beside_a_broken_coco_export_names_the_json(tmp_path, capsys, content, why):
    """A COCO export cut short left an empty ann.json beside the images: the import read the
    folder as YOLO and advised giving 'its .json file', the very file that was there."""
    folder = tmp_path / "export"
    _jpg(folder / "x.jpg", 60)
    (folder / "ann.json").write_text(content)
    (folder / "notes.json").write_text('{"categories": []}')  # Label Studio's: never the hint
    assert main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"{folder / 'ann.json'} is there but is not a COCO file ({why}): export "
                        "the COCO annotations again, or give the dataset itself"), err


def test_folders_named_like_label_or_image_files_are_said_not_passed_over(tmp_path, capsys):
    """A label 'file' that is a folder was reported as missing although its path exists; and a
    folder named like an image hid the label file of that name from the 'label without image'
    count (imported + skipped did not cover every file the dataset gives)."""
    root = _one_image_yolo(tmp_path / "ds", "0 0.5 0.5 0.2 0.2\n", "[car]")
    _jpg(root / "images" / "b.jpg", 90)
    (root / "labels" / "b.txt").mkdir()                  # a folder where b's labels should be
    (root / "images" / "c.jpg").mkdir()                  # a folder named like an image
    (root / "labels" / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(root), "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["imported"] == 1
    assert summary["reasons"] == {"no label file": 1, "label without image": 1}
    assert (f"{root / 'images' / 'b.jpg'}: no label file (looked for {root / 'labels' / 'b.txt'}: "
            "a folder, not a file)") in err
    assert f"{root / 'labels' / 'c.txt'}: a label file no image takes" in err


def test_frames_waiting_in_the_queue_that_an_import_stores_are_taken_off_it(tmp_path, capsys):
    """Before: a queued frame that an import then stored stayed offered; a person labelled it
    and the answer was refused ('already in memory')."""
    from edgecl.data.images import read_image
    from edgecl.frames import Detections, Frame
    from edgecl.runtime.labels import OperatorQueue

    src = _voc(tmp_path / "voc", 3)
    state = tmp_path / "state"
    queue = OperatorQueue(state / "labels")
    none = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int))
    waiting = [queue.push(Frame(read_image(src / "JPEGImages" / f"{k:03d}.jpg"), k, float(k),
                                "cam://0"), none, priority=0.5) for k in (1, 2)]
    other = queue.push(Frame(np.full((48, 64, 3), 99, np.uint8), 9, 9.0, "cam://0"), none,
                       priority=0.5)
    (src / "Annotations" / "002.xml").unlink()  # frame 2 stays unlabelled: it stays queued
    result = _import(capsys, state, src, "--json")
    assert result["imported"] == 2 and result["queue_items_dropped"] == 1
    assert {item["id"] for item in queue.pending()} == {waiting[1], other}
    with pytest.raises(Exception, match="already in memory as sample 2"):
        queue.item(waiting[0])


@pytest.mark.parametrize("damage", ["zeros", "deleted"])
def test_a_damaged_registry_comes_back_from_its_backup_with_merges_and_renames(tmp_path, capsys,
                                                                             caplog, damage):
    """Before: rebuilt from the memory's names alone, a merged class came back as a class of its
    own (then trained again) and a renamed one under its old name (an answer naming the new one
    made a third class)."""
    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(),
                      names={0: "car", 1: "truck", 2: "boat"}) as memory:
        memory.add(Sample(np.full((16, 16, 3), 9, np.uint8),
                          np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream"))
    classes = ClassRegistry(state)
    classes.seed({0: "car", 1: "truck", 2: "boat"})
    classes.merge("truck", "car")
    classes.rename("car", "automobile")
    if damage == "zeros":
        (state / "classes.json").write_bytes(b"\x00" * 40)
    else:  # before: read as a new device's registry, rebuilt from the memory: merge, rename lost
        (state / "classes.json").unlink()
    assert main(["classes", "list", "--state-dir", str(state), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(c["id"], c["name"], c.get("merged_into")) for c in listed] == [
        (0, "automobile", None), (1, "truck", "automobile"), (2, "boat", None)]
    assert "restored from its backup classes.backup.json (merges and renames kept)" in caplog.text


def test_a_device_with_no_class_takes_the_datasets_ids(tmp_path, capsys):
    """Before: ids followed the order boxes came in: a data.yaml with person 2 and bicycle 3
    gave the device bicycle 2 and person 3, so a checkpoint trained on that data.yaml was
    refused by 'models add'. A device that already has classes keeps its own ids."""
    src = tmp_path / "ds"
    for k, row in enumerate(("3 0.5 0.5 0.3 0.3", "2 0.4 0.4 0.2 0.2")):
        _jpg(src / "images" / f"{k}.jpg", 40 + 60 * k)
        (src / "labels").mkdir(exist_ok=True)
        (src / "labels" / f"{k}.txt").write_text(row + "\n")
    (src / "data.yaml").write_text("train: images\nval: images\n"
                                   "names: [car, truck, person, bicycle]\n")
    state = tmp_path / "state"
    report = _import(capsys, state, src, "--json")
    assert ClassRegistry(state).names() == {0: "car", 1: "truck", 2: "person", 3: "bicycle"}
    assert report["classes_added"] == ["car", "truck", "person", "bicycle"]
    other = tmp_path / "other"
    ClassRegistry(other).add(["bicycle"])
    _import(capsys, other, src, "--json")
    assert ClassRegistry(other).names() == {0: "bicycle", 1: "person"}
    # an import that stores nothing (every image too small) leaves a new device without class
    tiny = tmp_path / "tiny"
    (tiny / "images").mkdir(parents=True)
    (tiny / "labels").mkdir()
    cv2.imwrite(str(tiny / "images" / "a.png"), np.full((8, 8, 3), 90, np.uint8))
    (tiny / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tiny / "data.yaml").write_text("train: images\nval: images\nnames: [boat, plane]\n")
    assert _import(capsys, tmp_path / "empty", tiny, "--json", code=2)["imported"] == 0
    assert ClassRegistry(tmp_path / "empty").names() == {}
    # a KITTI-style ignore class keeps its id (a checkpoint trained on the data.yaml has it)
    (src / "data.yaml").write_text("train: images\nval: images\n"
                                   "names: [car, DontCare, person, bicycle]\n")
    _import(capsys, tmp_path / "kitti", src, "--json")
    assert ClassRegistry(tmp_path / "kitti").names() == {0: "car", 1: "DontCare", 2: "person",
                                                         3: "bicycle"}
    # a COCO file's ignore category is no class (VisDrone as COCO): the ids dataset import writes
    coco = tmp_path / "coco"
    _jpg(coco / "a.jpg", 50)
    (coco / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 0, "name": "ignored regions"}, {"id": 1, "name": "pedestrian"},
                       {"id": 2, "name": "people"}, {"id": 11, "name": "others"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [5, 5, 20, 20]}]}))
    _import(capsys, tmp_path / "vis", coco / "ann.json", "--json")
    assert ClassRegistry(tmp_path / "vis").names() == {0: "pedestrian", 1: "people", 2: "others"}
    # a device that stored only negatives takes the ids when --relabel gives them their boxes
    negatives = tmp_path / "neg"
    shutil.copytree(src / "images", negatives / "images")
    (negatives / "labels").mkdir()
    for k in range(2):
        (negatives / "labels" / f"{k}.txt").write_text("")
    (src / "data.yaml").write_text("train: images\nval: images\n"
                                   "names: [car, truck, person, bicycle]\n")
    _import(capsys, tmp_path / "relabelled", negatives, "--json")
    assert ClassRegistry(tmp_path / "relabelled").names() == {}
    _import(capsys, tmp_path / "relabelled", src, "--json", "--relabel")
    assert ClassRegistry(tmp_path / "relabelled").names() == {
        0: "car", 1: "truck", 2: "person", 3: "bicycle"}


def test_a_reimport_after_a_rename_does_not_advise_relabel_blindly(tmp_path, capsys):
    """Before: after 'classes rename car auto', importing the same export again advised
    '--relabel', which moved every box to a new class 'car' and left 'auto' with none."""
    src = _one_image_yolo(tmp_path / "ds", "0 0.3 0.3 0.2 0.2\n", "[car]")
    state = tmp_path / "state"
    _import(capsys, state, src, "--json")
    assert main(["classes", "rename", "--state-dir", str(state), "car", "auto"]) == 0
    capsys.readouterr()
    assert main(["labels", "import", "--state-dir", str(state), str(src), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["former_names"] == {"car": "auto"}
    assert "names 'car' (now 'auto') as before a classes rename" in err
    assert "run it again with --relabel" not in err


def test_an_import_before_the_first_start_keeps_model_paths_class_ids(tmp_path, capsys, caplog):
    """Before: an import run before the first 'edgecl run' numbered the classes from the
    dataset (person 0, forklift 1, car 2), and every round then refused model.path's
    checkpoint (car 0, person 1); only a new state directory got the device out."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car", 1: "person"}
    pt = save_checkpoint(build_detection_model(2, names=names), tmp_path / "yours.pt",
                         meta={"names": names, "imgsz": 64})
    src = _one_image_yolo(tmp_path / "src", "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n",
                          "[person, forklift, car]")
    state = tmp_path / "state"
    code = main(["labels", "import", "--state-dir", str(state), str(src), f"model.path={pt}"])
    _, err = capsys.readouterr()
    assert code == 0
    assert f"class registry: 2 class(es) from model.path {pt} (car, person)" in err
    assert ClassRegistry(state).names() == {0: "car", 1: "person", 2: "forklift"}
    assert ClassRegistry(state).seeding_checkpoint() == str(pt.absolute())
    # a learning round without model.path would train a YOLO11n from scratch and the gate,
    # with nothing to compare, promote it over the team's checkpoint: refused, naming it
    assert main(["labels", "import", "--state-dir", str(state), str(_voc(tmp_path / "more", 12, "car")),
                 "memory.holdout_fraction=0.5"]) == 0
    capsys.readouterr()
    code = main(["learn", "--state-dir", str(state), "learner.imgsz=64"])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err, out + err
    said = (f"no round trains from scratch here: this device's classes came from the checkpoint "
            f"{pt.absolute()}, and the registry has no version to learn on")
    assert any(said in line for line in [err, *caplog.messages])
    assert Registry(state / "models").versions() == []


def test_an_exported_model_path_gives_its_class_ids_and_a_missing_one_is_refused(tmp_path,
                                                                                capsys):
    """Before: with model.path an exported engine (or a typo), an import before the first
    start numbered the classes its own way (Car 0, Person 1), and the device then refused the
    very model it was meant to serve ("class id 0 is 'person', but ... 'Car' there")."""
    from edgecl.models.export import export_onnx
    from edgecl.ultra import build_detection_model

    names = {0: "person", 1: "car"}
    onnx = export_onnx(build_detection_model(2, names=names), tmp_path / "coco2.onnx", imgsz=64,
                       names=names)
    src = _one_image_yolo(tmp_path / "src", "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n",
                          "[Car, Person]")
    state = tmp_path / "state"
    code = main(["labels", "import", "--state-dir", str(state), str(src), f"model.path={onnx}"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert f"class registry: 2 class(es) from model.path {onnx} (person, car)" in err
    assert ClassRegistry(state).names() == {0: "person", 1: "car"}
    import os

    typo, fifo = tmp_path / "bst.pt", tmp_path / "fifo.pt"
    os.mkfifo(fifo)  # before: read as "no checkpoint", and the dataset's ids taken
    other = tmp_path / "other"
    for path, said in (
            (typo, f"model.path {typo}: no such file; an import gives a new device's classes the "
                   f"ids of the model it will serve: correct model.path, or import without it"),
            (fifo, f"model.path {fifo}: not a regular file (a FIFO, a device or a socket); set "
                   f"it to the ultralytics .pt checkpoint file itself")):
        assert main(["labels", "import", "--state-dir", str(other), str(src),
                     f"model.path={path}"]) == 2
        assert capsys.readouterr().err == f"error: {said}\n"
        assert not other.exists()


@pytest.mark.parametrize("header, why", [
    ({"names": {"a": "person"}}, "its header's class names are neither a list nor a map of "
                                 "class id -> name"),
    ({"names": "person"}, "its header's class names are neither a list nor a map of class id "
                          "-> name"),
    ({"names": ["car", None]}, "its header's class names are neither a list nor a map of "
                               "class id -> name"),
    ({"names": {"0": "car", "1": True}}, "its header's class names are neither a list nor a "
                                         "map of class id -> name"),
    (None, "records no class names, so an import cannot give its classes the ids this model "
           "detects them by")])
def test_an_engine_model_path_without_usable_names_is_refused_in_one_line(tmp_path, capsys,
                                                                        header, why):
    """Before: a hand-made engine header was an internal error (ValueError, AttributeError),
    and a bare TensorRT plan let the import number the classes its own way without a word."""
    from edgecl.models.engine_file import encode_engine_file

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan bytes" if header is None else encode_engine_file(header, b"plan"))
    src = _one_image_yolo(tmp_path / "src", "0 0.5 0.5 0.2 0.2\n", "[car]")
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(src),
                 f"model.path={engine}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and why in err and err.count("\n") == 1
    assert not state.exists()


def test_an_unreadable_model_path_leaves_a_new_state_directory_unmade(tmp_path, capsys):
    """Before: the refusal came after the import had opened the memory: a new device's state
    directory was left with an empty memory and an import lock."""
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    src = _one_image_yolo(tmp_path / "src", "0 0.5 0.5 0.2 0.2\n", "[car]")
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(src),
                 f"model.path={bad}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and err.count("\n") == 1
    assert not state.exists()


def test_a_state_dir_that_is_a_file_gets_one_line(tmp_path, capsys, caplog):
    """Before: a warning that the import could not be announced in 'FILE/import.lock' came
    first, then the error: two lines for one mistake, the first about a lock file."""
    src = _one_image_yolo(tmp_path / "src", "0 0.5 0.5 0.2 0.2\n", "[car]")
    state = tmp_path / "state"
    state.write_text("not a folder")
    assert main(["labels", "import", "--state-dir", str(state), str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "import.lock" not in err
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert err == f"error: cannot open the replay memory {state}/memory: {state} is a file where " \
                  "a folder belongs (move it aside)\n"
    assert state.read_text() == "not a folder"


def test_a_checkpoint_named_by_number_is_refused_before_the_labels_make_classes(tmp_path,
                                                                                capsys):
    """Before: on a new device with model.path naming a checkpoint trained without names
    ('0', '1'), the import seeded those and made 'car' and 'person' new, untrained classes
    beside them (ids 2 and 3); the advice it printed then failed. Now nothing is imported and
    the line says how to name them first; the same names ('0', '1') in the labels are fine."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(2), tmp_path / "numbers.pt",
                         meta={"names": {0: "0", 1: "1"}, "imgsz": 64})
    src = _one_image_yolo(tmp_path / "named", "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
                          "[car, person]")
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(src),
                 f"model.path={pt}"]) == 2
    assert capsys.readouterr().err == (
        f"error: model.path {pt} names its classes by number only ('0', '1'): the labels' "
        f"names would become new, untrained classes beside them; name them first ('edgecl "
        f"models add --promote {pt} --state-dir {state}', then 'edgecl classes rename "
        f"--state-dir {state} 0 NAME' for each), then import\n")
    assert not state.exists()  # before: an empty memory and a lock file were left there
    numbered = _one_image_yolo(tmp_path / "numbered", "0 0.5 0.5 0.2 0.2\n", "['0', '1']", 90)
    assert _import(capsys, tmp_path / "other", numbered, f"model.path={pt}", "--json")[
        "imported"] == 1
    assert ClassRegistry(tmp_path / "other").names() == {0: "0", 1: "1"}


def _numbered_frames(src: Path, names: list[str]) -> Path:
    """A YOLO folder of one car box per image, each image of other pixels, named ``names``."""
    (src / "labels").mkdir(parents=True)
    for k, name in enumerate(names):
        _jpg(src / "images" / f"{name}.jpg", k * 2 % 250)
        (src / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    return src


def test_numbered_frames_are_held_out_in_blocks_not_one_by_one(tmp_path, capsys):
    """Before: an imported folder of consecutive flight frames was drawn image by image: frame
    4 held out while frames 3 and 5, nearly the same picture, were trained on, so the held-out
    score measured memorisation."""
    src = _numbered_frames(tmp_path / "flights", [f"flight{flight:02d}_frame_{frame * 3:04d}"
                                                  for flight in range(3) for frame in range(40)])
    state = tmp_path / "state"
    result = _import(capsys, state, src, "--json")
    assert result["imported"] == 120 and result["frame_sequences"] == 3
    assert result["frames_per_block"] == 10
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        records = memory.records()
    held = {Path(r.source).stem for r in records if r.held_out}
    assert held  # the slice the gate judges on is not empty
    for flight in range(3):
        names = [f"flight{flight:02d}_frame_{frame * 3:04d}" for frame in range(40)]
        for start in range(0, 40, 10):  # each block of 10 frames is held out or trained whole
            assert len({name in held for name in names[start:start + 10]}) == 1


def test_the_frames_of_one_flight_are_held_out_in_blocks(tmp_path, capsys):
    """Before: one sequence (a single flight's frames, as CVAT exports a video's) was not
    taken for a sequence, and its frames were drawn for the held-out slice one by one."""
    src = _numbered_frames(tmp_path / "flight", [f"frame_{frame:06d}" for frame in range(50)])
    state = tmp_path / "state"
    result = _import(capsys, state, src, "--json")
    assert result["imported"] == 50 and result["frame_sequences"] == 1
    assert result["frames_per_block"] == 5  # before, the text said blocks of 10 all the same
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        held = sorted(int(Path(r.source).stem[6:]) for r in memory.records() if r.held_out)
    assert held and len(held) % 5 == 0  # blocks of 50 // 10 = 5 consecutive frames
    assert all(held[i + 4] - held[i] == 4 for i in range(0, len(held), 5))


def test_an_image_twice_in_one_import_is_named(tmp_path, capsys):
    """Before: counted under "same image earlier in this import" without naming the file."""
    src = tmp_path / "twice"
    (src / "labels").mkdir(parents=True)
    for name in ("a", "b"):
        _jpg(src / "images" / f"{name}.jpg", 90)
        (src / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(src)])
    out = capsys.readouterr().out
    assert f"skipped: {src / 'images' / 'b.jpg'}: same image earlier in this import" in out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_small_import_of_sequences_still_holds_some_out(tmp_path, capsys, seed):
    """Before: 2 sequences of 15 frames were cut into 4 blocks of 10, and the held-out draw
    (one block in every 10) held none out for 2 seeds in 4: the learner then waited for a
    held-out sample for ever."""
    src = tmp_path / "seqs"
    (src / "labels").mkdir(parents=True)
    for s in range(2):
        for k in range(15):
            _jpg(src / "images" / f"seq{s}_{k:05d}.jpg", 8 * (15 * s + k) % 250)
            (src / "labels" / f"seq{s}_{k:05d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    config = tmp_path / "device.yaml"
    config.write_text(f"memory:\n  seed: {seed}\n")
    state = tmp_path / "state"
    result = _import(capsys, state, src, "--config", str(config), "--json")
    assert result["imported"] == 30 and result["frame_sequences"] == 2
    with ReplayMemory(state / "memory", MemoryConfig(seed=seed)) as memory:
        held = [r for r in memory.records() if r.held_out]
    assert len(held) == 3  # one block of 3 frames: 10 % of 30


def test_a_folder_per_sequence_is_held_out_in_blocks(tmp_path, capsys):
    """Before: frames in one folder per sequence (images/uav0001/0000001.jpg, VisDrone's and
    MOT's layout) were not seen as sequences and were drawn one by one."""
    src = tmp_path / "vid"
    for s in (1, 2):
        for k in range(1, 16):
            _jpg(src / "images" / f"uav000{s}" / f"{k:07d}.jpg", (16 * s + 7 * k) % 250)
            label = src / "labels" / f"uav000{s}" / f"{k:07d}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    result = _import(capsys, tmp_path / "state", src, "--json")
    assert result["imported"] == 30 and result["frame_sequences"] == 2


def test_an_import_a_full_memory_declines_is_no_error():
    """Found attacking the exit-status change: a full memory's policy declining every image of
    a small import (sampling, no fault) printed 'error: nothing imported' and exited 2."""
    from edgecl.commands.labels_import import nothing_imported

    assert nothing_imported("voc3", {"imported": 0, "skipped": 2,
                                     "reasons": {"declined by memory policy": 2}}) == ""
    assert nothing_imported("voc3", {"imported": 0, "skipped": 2,
                                     "reasons": {"no label file": 2}}).startswith(
        "error: nothing imported from voc3: every image was skipped (no label file 2)")
    assert nothing_imported("voc3", {"imported": 0, "skipped": 100, "reasons": {
        "no label file": 99, "declined by memory policy": 1}}).startswith("error: ")


def test_the_merge_hint_also_names_the_way_back_when_the_known_class_is_the_typo(tmp_path,
                                                                                  capsys):
    """Before: an operator's 'Persn' then an import naming 'Person' printed only 'merge --
    Person Persn', which run as printed folded the dataset's right name into the typo."""
    import shlex

    root = _voc(tmp_path / "voc", 2, name="Person")
    state = tmp_path / "state"
    ClassRegistry(state).add(["Persn"])
    line = _import(capsys, state, root)
    command = line.split("if Persn is: ", 1)[1].rsplit(")", 1)[0]
    argv = shlex.split(command)
    assert argv == ["edgecl", "classes", "merge", f"--state-dir={state}", "--", "Persn", "Person"]
    assert main(argv[1:]) == 0
    assert ClassRegistry(state).label_ids()["Persn"] == ClassRegistry(state).label_ids()["Person"]


def test_held_out_blocks_are_named_only_when_frames_go_together(tmp_path, capsys):
    """Before: a 2-image import said 'held out in blocks of 1 consecutive frames, not frame by
    frame' (blocks of 1 are frame by frame), and a failed import said it of nothing stored."""
    small = _import(capsys, tmp_path / "a", _voc(tmp_path / "voc6", 6))
    assert "held out in blocks" not in small
    large = _import(capsys, tmp_path / "b", _voc(tmp_path / "voc40", 40))
    assert "held out in blocks of" in large and "blocks of 1 " not in large


def test_memory_verify_names_the_devices_memory_settings_once(tmp_path, caplog):
    """Before: 'memory verify' printed the line naming the runtime's memory settings twice."""
    import logging

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(capacity=30), names={0: "boat"},
                      record_settings=True) as memory:  # as the runtime opens it
        memory.add(Sample(np.full((16, 16, 3), 7, np.uint8),
                          np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream",
                          source="f0", ts_s=0.0))
    caplog.set_level(logging.INFO)
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    assert caplog.text.count("settings of the device's runtime used (capacity=30)") == 1
    # a command that only reads says nothing of it (before: on every 'classes list')
    caplog.clear()
    for argv in (["classes", "list"], ["memory", "stats"], ["labels", "answered"]):
        assert main([*argv, "--state-dir", str(state)]) == 0
    assert "settings of the device's runtime used" not in caplog.text


def test_labelimgs_classes_file_beside_the_labels_names_the_boxes(tmp_path, capsys):
    """Before: labelImg saving to labels/ writes its classes.txt there; it was not read, so
    the boxes of 'car' (id 0) took the device's class 0, 'person', with exit 0."""
    first = _one_image_yolo(tmp_path / "first", "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n",
                            "[person, car]")
    state = tmp_path / "state"
    _import(capsys, state, first, "--json")
    src = tmp_path / "labelimg"
    _jpg(src / "images" / "a.jpg", 120)
    (src / "labels").mkdir()
    (src / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "labels" / "classes.txt").write_text("car\nperson\n")
    result = _import(capsys, state, src, "--json")
    assert (result["imported"], result["skipped"], result["boxes"]) == (1, 0, {"car": 1})
    assert result["named_from_registry"] == {} and result["unnamed_classes"] == []


def test_a_state_dir_among_the_datasets_images_is_refused(tmp_path, capsys):
    """Before: 'labels import --state-dir rf/train/images/st rf' stored the memory among the
    images, and the next import of rf read every image twice (the stored copies too)."""
    src = _one_image_yolo(tmp_path / "rf", "0 0.5 0.5 0.2 0.2\n", "[car]")
    for inside in (src / "images" / "st", src / "images"):
        got = main(["labels", "import", "--state-dir", str(inside), str(src)])
        err = capsys.readouterr().err.strip()
        assert got == 2 and err == (
            f"error: --state-dir {inside} is inside {src / 'images'}, which holds the dataset's "
            f"images: the device's memory would be read as images of the dataset by its next "
            f"import; keep the state directory elsewhere")
    assert sorted(p.name for p in (src / "images").iterdir()) == ["a.jpg"]
    assert _import(capsys, src / "state", src, "--json")["imported"] == 1  # beside: fine
    voc = _voc(tmp_path / "voc", 2)  # VOC reads the images its annotations name
    assert _import(capsys, voc / "state", voc, "--json")["imported"] == 2
    assert main(["labels", "import", "--state-dir", str(voc / "JPEGImages" / "s"), str(voc)]) == 2
    assert "which holds the dataset's images" in capsys.readouterr().err


def _voc_frames(root: Path, classes_of: list[list[str]], first: int = 0) -> Path:
    """A VOC folder of numbered frames ``flight_0000.jpg``..., frame k showing ``classes_of[k]``
    (one box each); numbers start at ``first``."""
    (root / "Annotations").mkdir(parents=True)
    for k, names in enumerate(classes_of, start=first):
        _jpg(root / "JPEGImages" / f"flight_{k:04d}.jpg", (7 * k) % 250)
        objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{2 + 12 * j}</xmin><ymin>2"
                          f"</ymin><xmax>{10 + 12 * j}</xmax><ymax>20</ymax></bndbox></object>"
                          for j, name in enumerate(names))
        (root / "Annotations" / f"flight_{k:04d}.xml").write_text(
            f"<annotation><filename>flight_{k:04d}.jpg</filename>{objects}</annotation>")
    return root


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_an_import_holds_out_a_class_that_lies_in_two_blocks(tmp_path, capsys, seed):
    """Before: blocks of consecutive frames were drawn for the held-out slice blind to class: a
    class in two of a flight's blocks was held out in neither for most seeds, so no round
    measured it and the gate could not guard it (23 in 50 windows of 174 hit-uav-dev frames
    had such a class). Now it is held out in one block and trained on in the other; a class
    in a single block trains, and the import says that it cannot be measured yet."""
    frames = [["boat"] for _ in range(110)]
    for k in (*range(30, 35), *range(100, 105)):
        frames[k] = ["boat", "bicycle"]
    for k in range(50, 60):
        frames[k] = ["kayak"]
    src = _voc_frames(tmp_path / "voc", frames)
    config = tmp_path / "device.yaml"
    config.write_text(f"memory:\n  seed: {seed}\n")
    state = tmp_path / "state"
    main(["labels", "import", "--state-dir", str(state), str(src), "--config", str(config)])
    out, err = capsys.readouterr()
    with ReplayMemory(state / "memory", MemoryConfig(seed=seed)) as memory:
        records = memory.records()
    names = ClassRegistry(state).names()
    bicycle = [r.held_out for r in records if any(names[c] == "bicycle" for c in r.classes)]
    kayak = [r.held_out for r in records if any(names[c] == "kayak" for c in r.classes)]
    assert sorted(bicycle) == [False] * 5 + [True] * 5
    assert kayak == [False] * 10
    held = sum(r.held_out for r in records)
    assert f"; held out for evaluation: {held} (images showing bicycle 5, boat {held});" in out
    assert err.strip().splitlines()[-1] == (
        "warning: no image of kayak (10, all one run of consecutive frames, kept for training) "
        "is held out for evaluation, so learning rounds cannot yet measure how well the device "
        "detects it: import images of it from another flight or recording, or answer frames "
        "showing it on the device")
    result = _import(capsys, tmp_path / "again", src, "--config", str(config), "--json")
    assert result["held_out"] == held and result["unmeasured_classes"] == ["kayak"]
    assert list(result["held_out_per_class"].items()) == [("bicycle", 5), ("boat", held),
                                                          ("kayak", 0)]  # by name, every run


def test_imports_of_a_few_frames_each_go_on_where_the_last_one_stopped(tmp_path, capsys):
    """Before: each import drew its blocks of consecutive frames from position 0: twelve
    imports of 5 frames of a flight each held out none (a round then waited for a held-out
    sample for ever), and said nothing of it."""
    src = _voc_frames(tmp_path / "voc", [["boat"] for _ in range(60)])
    state = tmp_path / "state"
    held, lines = 0, []
    for k in range(12):
        part = tmp_path / f"part{k}"
        (part / "Annotations").mkdir(parents=True)
        (part / "JPEGImages").mkdir()
        for j in range(5 * k, 5 * k + 5):
            for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
                (part / sub / f"flight_{j:04d}.{ext}").write_bytes(
                    (src / sub / f"flight_{j:04d}.{ext}").read_bytes())
        assert main(["labels", "import", "--state-dir", str(state), str(part)]) == 0
        lines.append(capsys.readouterr().out)
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        held = sum(r.held_out for r in memory.records())
    assert held == 6  # about 1 in 10 (memory.holdout_fraction 0.1); before: 0
    assert sum("; held out for evaluation: 1 (images showing boat 1)" in line
               for line in lines) == 6
    assert sum("; held out for evaluation: none yet (about 1 image in 10 is; a later import "
               "goes on from here); skipped" in line for line in lines) == 6


def test_held_out_frames_that_show_nothing_are_said_as_such(tmp_path, capsys):
    """Before: 'held out for evaluation: 2 (images showing )', and 'images showing Person 0'
    for a held-out empty frame of an import that held no Person out."""
    src = _voc_frames(tmp_path / "voc", [[] for _ in range(28)] + [["boat"], ["boat"]])
    assert main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(src)]) == 0
    with ReplayMemory(tmp_path / "state" / "memory", MemoryConfig()) as memory:
        records = memory.records()
    empty = sum(r.held_out and not r.classes for r in records)
    boat = sum(r.held_out and bool(r.classes) for r in records)
    assert empty > 0
    shown = "; ".join(part for part in (f"images showing boat {boat}" if boat else "",
                                        f"{empty} showing no object") if part)
    assert f"; held out for evaluation: {empty + boat} ({shown}); skipped" in capsys.readouterr().out


def test_new_data_under_a_renamed_classs_old_name_is_said_to_make_a_new_class(tmp_path, capsys):
    """Before: after 'classes rename Person pedestrian', importing more images labelled Person
    printed only 'new classes: Person' (the --json 'former_names' alone said why), and a
    case-only rename (Car -> car) listed the class's own name as a former one."""
    state = tmp_path / "state"
    _import(capsys, state, _one_image_yolo(tmp_path / "a", "0 0.3 0.3 0.2 0.2\n1 0.6 0.6 0.2 0.2\n",
                                           "[Car, Person]"), "--json")
    for old, new in (("Person", "pedestrian"), ("Car", "car")):
        assert main(["classes", "rename", "--state-dir", str(state), old, new]) == 0
    capsys.readouterr()
    more = _one_image_yolo(tmp_path / "b", "0 0.3 0.3 0.2 0.2\n1 0.6 0.6 0.2 0.2\n", "[Car, Person]",
                           value=120)
    assert main(["labels", "import", "--state-dir", str(state), str(more)]) == 0
    out, err = capsys.readouterr()
    assert ("note: 'Person' named class 'pedestrian' before a classes rename: its boxes made a new "
            f"class 'Person' (edgecl classes merge --state-dir={state} -- Person pedestrian makes "
            f"them one)") in err
    assert "'Car' named" not in err
    assert main(["labels", "import", "--state-dir", str(state), str(more), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["former_names"] == {"Person": "pedestrian"}


@pytest.mark.parametrize("stored_before", [0, 2])
def test_an_import_a_full_disk_stopped_draws_the_same_held_out_slice_when_run_again(
        tmp_path, monkeypatch, capsys, stored_before):
    """Before: the frame the disk refused counted as offered, and the run again reserved new
    draw positions: on real footage 3 held-out images instead of the 8 the same import drew
    uninterrupted."""
    import errno
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
    from synthetic_yolo import draw_dataset

    folder = tmp_path / "ds"
    draw_dataset(folder, 40, classes=(0, 1, 2))
    (folder / "data.yaml").write_text("names: {0: car, 1: person, 2: bike}\n")

    def held(state):
        with ReplayMemory(state / "memory") as memory:
            return (sorted(Path(r.source).name for r in memory.records(held_out=True)),
                    memory.stats()["seen"])

    assert main(["labels", "import", "--state-dir", str(tmp_path / "a"), str(folder)]) == 0
    real, calls = os.fsync, []

    def full_after(fd):  # each stored sample fsyncs its image and label files (and more)
        calls.append(fd)
        if len(calls) > 6 * stored_before:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", full_after)
    assert main(["labels", "import", "--state-dir", str(tmp_path / "b"), str(folder)]) != 0
    monkeypatch.setattr(os, "fsync", real)
    assert main(["labels", "import", "--state-dir", str(tmp_path / "b"), str(folder)]) == 0
    want = held(tmp_path / "a")
    assert want[0] and held(tmp_path / "b") == want
    capsys.readouterr()


def test_the_recorded_settings_are_read_where_no_wal_index_can_be_made(tmp_path, monkeypatch):
    """A read-only medium or a full disk: SQLite cannot make the index's -shm file to read the
    index in place. Before: 'memory stats' showed its own defaults as the device's bounds
    ("as no device has run on this memory yet"); now they are read from a private copy."""
    import sqlite3

    from edgecl import sqlite_room
    from edgecl.continual.memory import store

    device = MemoryConfig(capacity=500, holdout_fraction=0.1, seed=7, policy="reservoir")
    root = tmp_path / "state" / "memory"
    with ReplayMemory(root, device, names={0: "boat"}, record_settings=True) as memory:
        memory.add(Sample(np.full((16, 16, 3), 9, np.uint8),
                          np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream"))
    real = sqlite_room.connect

    def no_shm_here(database, file_path=None, **kwargs):
        if "mode=ro" in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, file_path, **kwargs)

    monkeypatch.setattr(sqlite_room, "connect", no_shm_here)
    assert store.recorded_memory_config(root) == device


def test_the_summary_counts_pseudo_labelled_copies_the_import_replaced(tmp_path, capsys):
    """Before: an import whose images the device held with pseudo-labels replaced them (pseudo
    8 -> 0 in 'memory stats') without a word in its summary or its JSON."""
    from edgecl.data.images import pixels_hash
    from edgecl.frames import LabelOrigin

    src = _voc(tmp_path / "voc", 3)
    state = tmp_path / "state"
    box = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    with ReplayMemory(state / "memory", MemoryConfig(), names={0: "boat"}) as memory:
        for k in (0, 1):  # the device pseudo-labelled two of the images
            image = cv2.imread(str(src / "JPEGImages" / f"{k:03d}.jpg"))
            memory.add(Sample(image, box, task="stream", origin=LabelOrigin.PSEUDO,
                              content_hash=pixels_hash(image)))
    ClassRegistry(state).seed({0: "boat"})
    result = _import(capsys, state, src, "--json")
    assert result["imported"] == 3 and result["pseudo_replaced"] == 2
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        assert memory.stats()["per_origin"]["pseudo"] == 0 and len(memory) == 3
    line = _import(capsys, state, _voc(tmp_path / "voc2", 1))  # the same first image again
    assert "pseudo-labelled" not in line


def _coco_with_unlabelled_frames(root: Path) -> Path:
    """A COCO export listing 4 frames, 1 of them annotated (CVAT lists every frame of a task)."""
    for k in range(4):
        _jpg(root / "images" / f"f{k}.jpg", 30 + 40 * k)
    (root / "annotations.json").write_text(json.dumps({
        "images": [{"id": k + 1, "file_name": f"f{k}.jpg"} for k in range(4)],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 10]}]}))
    return root


def test_frames_a_coco_export_lists_unannotated_are_counted_and_can_be_taken_back(tmp_path,
                                                                                  capsys):
    """Before: 3 of 4 frames of a COCO export, listed with no annotation, were stored as
    background with nothing said, and no command took them out again."""
    src = _coco_with_unlabelled_frames(tmp_path / "coco")
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(src)]) == 0
    out, err = capsys.readouterr()
    assert f"imported 4 sample(s) (3 showing no object, learnt as background) from {src};" in out
    assert (f"note: 3 of the imported images have no annotation in the COCO file and are learnt "
            f"as showing no object; if nobody labelled them yet, take them out: edgecl memory "
            f"remove --imported-from {src} --no-object --state-dir {state} (a later import: "
            f"--skip-background)") in err
    assert main(["memory", "remove", "--imported-from", str(src), "--no-object",
                 "--state-dir", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["removed"] == [1, 3, 4]
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        assert [Path(r.source).name for r in memory.records()] == ["f1.jpg"]
    assert main(["memory", "remove", "--imported-from", str(src), "--no-object",
                 "--state-dir", str(state)]) == 0
    assert f"no sample with no box imported from {src} in the memory: nothing removed" in (
        capsys.readouterr().err)
    again = tmp_path / "again"
    result = _import(capsys, again, src, "--skip-background", "--json")
    assert (result["imported"], result["background"], result["reasons"]) == (1, 0, {"no object": 3})
    assert main(["memory", "remove", "--imported-from", str(src / "images" / "f1.jpg"),
                 "--state-dir", str(again)]) == 0
    assert _samples(again) == 0


def test_the_note_of_a_coco_json_given_itself_takes_its_images_back(tmp_path, capsys):
    """CVAT's layout: annotations/instances_default.json listing ../images. Before: the note
    named the json, and 'memory remove --imported-from' it found nothing under a file."""
    src = _coco_with_unlabelled_frames(tmp_path / "coco")
    (src / "annotations").mkdir()
    coco = src / "annotations" / "instances_default.json"
    (src / "annotations.json").rename(coco)
    data = json.loads(coco.read_text())
    for image in data["images"]:
        image["file_name"] = f"../images/{image['file_name']}"
    coco.write_text(json.dumps(data))
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(coco)]) == 0
    assert f"remove --imported-from {coco} --no-object" in capsys.readouterr().err
    assert main(["memory", "remove", "--imported-from", str(coco), "--no-object",
                 "--state-dir", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["removed"] == [1, 3, 4]
    assert main(["memory", "remove", "--imported-from", str(coco), "--state-dir",
                 str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["removed"] == [2]


@pytest.mark.parametrize("argv, message", [
    ([], "memory remove: give sample ids or --imported-from PATH (one of them)"),
    (["1", "--imported-from", "x"], "memory remove: give sample ids or --imported-from PATH"),
    (["1", "--no-object"], "memory remove: --no-object goes with --imported-from PATH")])
def test_memory_remove_takes_ids_or_a_path(tmp_path, capsys, argv, message):
    src = _coco_with_unlabelled_frames(tmp_path / "coco")
    _import(capsys, tmp_path / "state", src)
    assert main(["memory", "remove", *argv, "--state-dir", str(tmp_path / "state")]) == 2
    assert message in capsys.readouterr().err
    assert _samples(tmp_path / "state") == 4
