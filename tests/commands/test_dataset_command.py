"""A YOLO ``data.yaml`` that gives one class name to two ids, or an ``nc`` that is not the
number of its names, is refused by every command that reads it: one line, exit 2, nothing
written (before, ``labels import`` merged the ids silently and ``dataset import`` wrote a
``data.yaml`` without id 0 that ultralytics refuses)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest


def _dataset(root: Path, names: str) -> Path:
    """8 images, two of each class id 0..3, under ``names``."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(8):
        image = np.full((32, 32, 3), 30 * k, np.uint8)
        (root / "images" / f"{k}.jpg").write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
        (root / "labels" / f"{k}.txt").write_text(f"{k % 4} 0.5 0.5 0.3 0.3\n")
    (root / "data.yaml").write_text(f"train: images\nval: images\nnames: {names}\n")
    return root


def _commands(tmp_path: Path, src: Path) -> list[list]:
    return [["labels", "import", "--state-dir", tmp_path / "state", src],
            ["dataset", "import", src, "--out", tmp_path / "out"],
            ["dataset", "split-tasks", src, "--tasks", "Car;Bicycle",
             "--out", tmp_path / "cl" / "tasks.yaml"]]


@pytest.mark.parametrize("command", [0, 1, 2])
@pytest.mark.parametrize("names, message", [
    ("[Car, Car, car, Bicycle]", "class name 'Car' is given to ids 0 and 1; each class needs its own name"),
    ("[Car, Truck, car, Bicycle]", "class names 'Car' (id 0) and 'car' (id 2) differ only in case "
                                   "or separators"),
])
def test_a_class_name_under_two_ids_is_refused(tmp_path, run_edgecl, command, names, message):
    src = _dataset(tmp_path / "ds", names)
    code, out, err = run_edgecl(_commands(tmp_path, src)[command])
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {src / 'data.yaml'}: {message}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no state, no output


@pytest.mark.parametrize("command", [0, 1, 2])
def test_nc_that_disagrees_with_the_names_is_refused(tmp_path, run_edgecl, command):
    src = _dataset(tmp_path / "ds", "[Car, Truck, Person, Bicycle]\nnc: 2")
    code, out, err = run_edgecl(_commands(tmp_path, src)[command])
    assert (code, out) == (2, "")
    assert err == (f"error: {src / 'data.yaml'}: 'nc' is 2 but 'names' lists 4 classes; make them "
                   f"agree (or leave 'nc' out)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_distinct_names_import_to_a_dataset_ultralytics_reads(tmp_path, run_edgecl):
    from ultralytics.data.utils import check_det_dataset

    src = _dataset(tmp_path / "ds", "[Car, Truck, Person, Bicycle]\nnc: 4")
    code, out, err = run_edgecl(["dataset", "import", src, "--out", tmp_path / "out", "--json"])
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["names"] == {"0": "Car", "1": "Truck", "2": "Person",
                                                         "3": "Bicycle"}
    data = check_det_dataset(str(tmp_path / "out" / "data.yaml"), autodownload=False)
    assert data["names"] == {0: "Car", 1: "Truck", 2: "Person", 3: "Bicycle"}


def test_json_keeps_the_skip_reasons_on_stderr(tmp_path, run_edgecl):
    """Before: with --json, dataset import printed no skip reason at all (labels import prints
    them on stderr, stdout's last line being the JSON)."""
    src = _dataset(tmp_path / "ds", "[Car, Truck, Person, Bicycle]")
    (src / "labels" / "3.txt").write_text("7 0.5 0.5 0.3 0.3\n")
    code, out, err = run_edgecl(["dataset", "import", src, "--out", tmp_path / "out", "--json"])
    assert code == 0 and json.loads(out)["skipped"] == 1
    assert err.startswith(f"skipped: {src / 'labels' / '3.txt'}") and err.count("\n") == 1


def test_an_image_whose_content_ultralytics_does_not_read_is_written_as_png(tmp_path, run_edgecl):
    """Before: a GIF named ``g.jpg`` was copied as it was; ultralytics then dropped it
    ("Invalid image format GIF") although the import counted it. A PNG named ``.jpg`` is read
    by ultralytics and stays as it is."""
    from PIL import Image
    from ultralytics.data.utils import verify_image_label

    src = _dataset(tmp_path / "ds", "[Car, Truck, Person, Bicycle]")
    Image.fromarray(np.full((32, 32, 3), 70, np.uint8)).save(src / "images" / "0.jpg", "GIF")
    Image.fromarray(np.full((32, 32, 3), 95, np.uint8)).save(src / "images" / "1.jpg", "PNG")
    code, out, err = run_edgecl(["dataset", "import", src, "--out", tmp_path / "out", "--json"])
    assert code == 0 and json.loads(out)["imported"] == 8, err
    images = tmp_path / "out" / "images"
    assert (images / "0.png").is_file() and not (images / "0.jpg").exists()
    assert (images / "1.jpg").read_bytes() == (src / "images" / "1.jpg").read_bytes()
    for name in ("0.png", "1.jpg"):
        label = tmp_path / "out" / "labels" / f"{Path(name).stem}.txt"
        *_, msg = verify_image_label((str(images / name), str(label), "", False, 4, 0, 0, False))
        assert "ignoring corrupt" not in msg


@pytest.mark.parametrize("odd, written", [("new\nline", "new_line"), ("new\u2028line", "new_line"),
                                         ("new\x85line", "new_line")])
def test_a_line_break_in_a_file_name_never_reaches_a_task_list(tmp_path, run_edgecl, caplog, odd,
                                                                written):
    """Before: ``dataset import`` kept a newline (or U+2028, U+0085) in an output name, and
    ``split-tasks`` wrote it into a list, then failed on a file of its own ("image not found:
    .../images/new"); a list reads its lines stripped, and ``#`` starts a comment."""
    src = _dataset(tmp_path / "ds", "[Car, Truck, Person, Bicycle]")
    (src / "images" / "0.jpg").rename(src / "images" / f"{odd}.jpg")
    (src / "labels" / "0.txt").rename(src / "labels" / f"{odd}.txt")
    code, out, err = run_edgecl(["dataset", "import", src, "--out", tmp_path / "out", "--json"])
    assert code == 0 and json.loads(out)["imported"] == 8, err
    assert (tmp_path / "out" / "images" / f"{written}.jpg").is_file()
    code, out, err = run_edgecl(["dataset", "split-tasks", src, "--tasks", "Car,Truck;Person,Bicycle",
                                 "--ratios", "0.5,0,0.5", "--out", tmp_path / "cl" / "tasks.yaml",
                                 "--json"])
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["bad_labels"] == 1
    assert "which a task list (one path per line) cannot hold" in caplog.text
    listed = "".join(p.read_text() for p in (tmp_path / "cl" / "tasks").rglob("*.txt"))
    assert "new" not in listed and listed.count("\n") == 7


def test_names_a_list_file_would_read_otherwise_are_written_clear():
    """A list file's lines are stripped and ``#`` starts a comment: an output name never starts
    or ends with white space, nor starts with ``#``; a path inside a folder may hold them."""
    from edgecl.data.convert import output_stem
    from edgecl.data.tasks import unlistable

    root = Path("/data")
    assert output_stem(root / "images" / " a b .jpg", root) == "_a b_"
    assert output_stem(root / "images" / "#x.jpg", root) == "_x"
    assert output_stem(root / "images" / "f1" / "#x.jpg", root) == "f1_#x"
    assert unlistable("images/ a .jpg") is None and unlistable("images/#x.jpg") is None
    assert unlistable(" a.jpg") == "it starts or ends with white space"
    assert unlistable("#a.jpg") == "it starts with #"
    assert unlistable("a\u2029b.jpg") == "it holds a line break"


@pytest.mark.parametrize("bad", ['"Tr\\u200buck"', '"Tr\\nuck"', "T" * 101])
def test_a_declared_name_no_device_takes_skips_its_images_as_labels_import_does(tmp_path,
                                                                                 run_edgecl, bad):
    """Before: one such name in data.yaml refused the whole dataset in 'dataset import' (exit 2)
    while 'labels import' skipped the images that use it."""
    src = _dataset(tmp_path / "ds", f"[Car, {bad}, Person, Bicycle]")
    code, out, err = run_edgecl(["dataset", "import", src, "--out", tmp_path / "out", "--json"])
    assert code == 0, err
    got = json.loads(out.splitlines()[-1])
    assert got["imported"] == 6 and got["reasons"] == {"bad class name": 2}
    assert got["names"] == {"0": "Car", "1": "Person", "2": "Bicycle"}  # no hole, as DontCare
    code, out, err = run_edgecl(["labels", "import", "--state-dir", tmp_path / "state", src,
                                 "--json"])
    assert code == 0, err
    got = json.loads(out.splitlines()[-1])
    assert got["imported"] == 6 and got["reasons"] == {"bad class name": 2}


def test_split_tasks_names_each_image_it_leaves_out_and_why(tmp_path, run_edgecl):
    """Before: '2 left out (missing, refused or shared label files, or a name a list cannot
    hold)', and in --json '"bad_labels": 2' alone, where 'dataset import' names file, line and
    why; a task with no val image was not warned of either."""
    src = _dataset(tmp_path / "ds", "[Car, Truck, Person, Bicycle]")
    (src / "labels" / "2.txt").write_text("2 0.5 0.5 0.3 0.3\n7 0.5 0.5 0.3 0.3\n")
    (src / "labels" / "6.txt").unlink()
    code, out, err = run_edgecl(["dataset", "split-tasks", src, "--tasks", "Car;Truck",
                                 "--out", tmp_path / "cl" / "tasks.yaml", "--json"])
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bad_labels"] == 2
    assert result["left_out"] == [
        {"image": str(src / "images" / "2.jpg"),
         "why": f"{src / 'labels' / '2.txt'}:2: class 7 exceeds the class count 4 (valid: 0..3)"},
        {"image": str(src / "images" / "6.jpg"), "why": f"no label file {src / 'labels' / '6.txt'}"}]
    assert (f"warning: {src / 'images' / '2.jpg'} left out: {src / 'labels' / '2.txt'}:2: class 7 "
            f"exceeds the class count 4") in err
    assert "warning: task t1 gets no val images" in err  # 2 Car images: train and test only
