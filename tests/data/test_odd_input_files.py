"""Pipes, devices and sparse giants where a dataset's files should be (bounded reads).

Before, each of these was read whole (a /dev/zero label file until the kernel killed the
process at 24 GB; a 6 GB .jpg into 6.4 GB of memory, then an OpenCV assertion aborted the
import half-way; a 50 GB COCO file or data.yaml: ``internal error (MemoryError)``), or blocked
for ever (a FIFO label file in ``labels import``'s held-out plan).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.cli import main
from edgecl.data.images import ImageError, read_image
from edgecl.data.labels import read_yolo_labels
from edgecl.errors import LabelError

GIB = 1024 ** 3


def _sparse(path: Path, n_bytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(n_bytes)
    return path


def _jpg(path: Path, value: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes())


def _yolo(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _jpg(root / "images" / f"f{i}.jpg", 40 + 30 * i)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"f{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: {0: car}\n")
    return root


def test_a_label_file_that_is_a_device_or_a_sparse_giant_is_refused_quickly(tmp_path):
    link = tmp_path / "zero.txt"
    link.symlink_to("/dev/zero")
    with pytest.raises(LabelError, match=r"zero.txt: a device, not a regular file"):
        read_yolo_labels(link)
    big = _sparse(tmp_path / "big.txt", 2 * GIB)
    with pytest.raises(LabelError, match=r"2.0 GiB, more than a label file can be \(16.0 MiB\)"):
        read_yolo_labels(big)


def test_an_image_file_over_any_image_size_is_refused_before_it_is_read(tmp_path):
    big = _sparse(tmp_path / "frame.jpg", 6 * GIB)
    with pytest.raises(ImageError, match=r"6.0 GiB, more than an image file can be \(512.0 MiB\)"):
        read_image(big)


def test_labels_import_skips_a_giant_image_and_imports_the_rest(tmp_path, capsys):
    data = _yolo(tmp_path / "ds")
    _sparse(data / "images" / "f1.jpg", 6 * GIB)
    assert main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(data),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["imported"] == 2 and out["skipped"] == 1


@pytest.mark.parametrize("what", ["fifo", "device"])
def test_labels_import_skips_a_label_file_that_is_a_pipe_or_a_device(tmp_path, what):
    """Before: the held-out plan read the FIFO for ever (the import loop itself skipped it)."""
    data = _yolo(tmp_path / "ds")
    label = data / "labels" / "f0.txt"
    label.unlink()
    if what == "fifo":
        os.mkfifo(label)
    else:
        label.symlink_to("/dev/zero")
    code = ("import sys; from edgecl.cli import main; sys.exit(main(['labels', 'import', "
            f"'--state-dir', {str(tmp_path / 'state')!r}, {str(data)!r}, '--json']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["imported"] == 2 and out["skipped"] == 1
    kind = "a named pipe (FIFO)" if what == "fifo" else "a device"
    assert f"{kind}, not a regular file" in done.stderr


@pytest.mark.parametrize("name", ["data.yaml", "annotations.json"])
def test_a_sparse_giant_dataset_file_is_a_one_line_error(tmp_path, capsys, name):
    data = _yolo(tmp_path / "ds") if name == "data.yaml" else tmp_path / "coco"
    if name == "annotations.json":
        _jpg(data / "a.jpg")
    _sparse(data / name, 50 * GIB)
    argv = ["labels", "import", "--state-dir", str(tmp_path / "state"), str(data / name)]
    assert main(argv + (["--format", "coco"] if name.endswith(".json") else [])) == 2
    err = capsys.readouterr().err.strip()
    assert "50.0 GiB, more than" in err and "\n" not in err and "MemoryError" not in err


def test_a_tasks_list_that_is_a_pipe_is_called_so_not_missing(tmp_path, capsys):
    _jpg(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    os.mkfifo(tmp_path / "train.txt")
    (tmp_path / "test.txt").write_text("a.jpg\n")
    (tmp_path / "tasks.yaml").write_text("names: {0: car}\ntasks:\n  - name: t1\n    classes: [0]\n"
                                         "    train: train.txt\n    test: test.txt\n")
    from edgecl.data.tasks import load_tasks
    from edgecl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train list .*train.txt is a named pipe \(FIFO\), not "
                                          r"a regular file"):
        load_tasks(tmp_path / "tasks.yaml")


def test_a_model_yaml_that_is_a_pipe_is_called_so_not_missing(tmp_path):
    from edgecl.errors import ModelLoadError
    from edgecl.models.backends import load_backend

    fifo = tmp_path / "mine.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ModelLoadError, match=r"model yaml .*mine.yaml is a named pipe \(FIFO\), "
                                             r"not a regular file"):
        load_backend(fifo)


def test_a_pem_file_over_its_bound_is_refused(tmp_path):
    from edgecl.errors import ConfigError
    from edgecl.tls import check_pem

    big = _sparse(tmp_path / "ca.pem", 50 * GIB)
    with pytest.raises(ConfigError, match=r"cannot read .*ca.pem: 50.0 GiB, more than a "
                                          r"certificate file can be \(1.0 MiB\)"):
        check_pem("fleet.ca_cert", big)


def test_a_state_directory_whose_name_is_not_utf8_is_refused_in_one_line(tmp_path, capsys):
    """Before: labels import worked, then learn, memory stats and classes list crashed with
    'UnicodeEncodeError: surrogates not allowed' (its paths go into UTF-8 files)."""
    state = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"st\xffu8"))
    assert main(["memory", "stats", "--state-dir", state]) == 2
    err = capsys.readouterr().err
    assert "whose folder names are UTF-8" in err and "Traceback" not in err


def test_a_sparse_giant_config_is_refused_without_reading_it(tmp_path, capsys):
    """Before: a 3 GB --config took 6.3 GB of memory before 'unacceptable character'; a 50 GB
    one said 'nested too deeply or too large'."""
    config = _sparse(tmp_path / "c.yaml", 50 * GIB)
    assert main(["classes", "list", "--state-dir", str(tmp_path / "s"), "--config",
                 str(config)]) == 2
    err = capsys.readouterr().err
    assert "50.0 GiB, more than a config file can be (16.0 MiB)" in err and "nested" not in err


def test_a_class_names_file_or_data_yaml_that_is_a_pipe_is_said_not_passed_over(tmp_path,
                                                                                  capsys):
    """Before: a classes.txt or data.yaml that was a FIFO or a link to /dev/zero was passed
    over without a word, and the import named the classes class_0, class_1..."""
    data = _yolo(tmp_path / "ds")
    (data / "data.yaml").unlink()
    (data / "classes.txt").symlink_to("/dev/zero")
    assert main(["dataset", "import", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "classes.txt is a device, not a regular file" in capsys.readouterr().err
    (data / "classes.txt").unlink()
    os.mkfifo(data / "data.yaml")
    assert main(["dataset", "import", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "data.yaml is a named pipe (FIFO), not a regular file" in capsys.readouterr().err


def test_hashing_a_benchmarks_data_reads_no_label_whole(tmp_path):
    """Before: bench cl hashed every label file whole: a 50 GB sparse one was MemoryError."""
    from edgecl.input_files import label_bytes_for_hash

    big = _sparse(tmp_path / "big.txt", 50 * GIB)
    assert label_bytes_for_hash(big) == (b"<unreadable: 50.0 GiB, more than a label file can be "
                                         b"(16.0 MiB)>")
    assert label_bytes_for_hash(tmp_path / "none.txt") == b"<none>"
    (tmp_path / "a.txt").write_bytes(b"0 0.5 0.5 0.1 0.1\n")
    assert label_bytes_for_hash(tmp_path / "a.txt") == b"0 0.5 0.5 0.1 0.1\n"


def test_a_sparse_giant_engine_is_a_one_line_error(tmp_path):
    """Before: labels import with model.path=X.engine read the engine whole (a 50 GB one was
    MemoryError, exit 1)."""
    from edgecl.errors import ModelLoadError
    from edgecl.models.engine_file import read_engine_header

    engine = _sparse(tmp_path / "m.engine", 50 * GIB)
    with pytest.raises(ModelLoadError, match=r"50.0 GiB, more than a model file can be"):
        read_engine_header(engine)


def test_things_that_stand_where_a_file_belongs_are_named_not_called_missing(tmp_path, caplog):
    """Before: a pipe where a dataset's file belongs read as missing: a label under ``dir://``
    was "no label file", a VOC ``.xml`` left its image "no annotation file names it", an image
    a task's list names was "not found", and a ``tasks.yaml`` in ``bench cl --data DIR`` was
    "no tasks.yaml" (in ``fleet simulate --data DIR``: "no class names")."""
    import logging

    from edgecl.data.importers import iter_labelled
    from edgecl.data.task_sources import load_task_source
    from edgecl.data.tasks import load_tasks
    from edgecl.errors import ConfigError
    from edgecl.runtime.sources.files import warn_about_labels

    data = _yolo(tmp_path / "ds")
    label = data / "labels" / "f1.txt"
    label.unlink()
    os.mkfifo(label)
    images = sorted((data / "images").glob("*.jpg"))
    with caplog.at_level(logging.WARNING):
        assert warn_about_labels("dir://ds", data, images) == 2
    assert f"1 label file(s) cannot be read and their frames stream unlabelled (e.g. " \
           f"{label} is a named pipe (FIFO), not a regular file)" in caplog.text
    assert "have no label file" not in caplog.text  # before: the pipe counted there too
    (data / "labels" / "f2.txt").unlink()
    (data / "labels" / "f2.txt").symlink_to(tmp_path / "gone.txt")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert warn_about_labels("dir://ds", data, images) == 1
    assert "2 label file(s) cannot be read" in caplog.text and "have no label file" not in caplog.text
    assert all(f"cannot read label file {p}" in m for p, m in zip(
        [data / "labels" / "f1.txt", data / "labels" / "f2.txt"],
        [s.message for s in iter_labelled(str(data), "yolo") if hasattr(s, "reason")]))

    voc = tmp_path / "voc"
    _jpg(voc / "JPEGImages" / "a.jpg")
    (voc / "Annotations").mkdir()
    os.mkfifo(voc / "Annotations" / "a.xml")
    skips = [item for item in iter_labelled(str(voc), "voc")]
    assert len(skips) == 1 and skips[0].reason == "bad annotation"
    assert "a named pipe (FIFO), not a regular file" in skips[0].message

    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / "b.jpg")
    _jpg(tmp_path / "t" / "a.jpg")
    (tmp_path / "t" / "list.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "t" / "tasks.yaml").write_text(
        "names: {0: car}\ntasks:\n  - name: t1\n    classes: [0]\n    train: list.txt\n"
        "    test: list.txt\n")
    with pytest.raises(ConfigError, match=r"list.txt:2: image .*b.jpg is a named pipe \(FIFO\), "
                                          r"not a regular file"):
        load_tasks(tmp_path / "t" / "tasks.yaml")

    folder = tmp_path / "piped"
    folder.mkdir()
    os.mkfifo(folder / "tasks.yaml")
    with pytest.raises(ConfigError, match=r"tasks.yaml is a named pipe \(FIFO\), not a regular"):
        load_task_source(folder)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "tasks.yaml").symlink_to("/nope/tasks.yaml")
    with pytest.raises(ConfigError, match=r"tasks file .*dangling/tasks.yaml is a symbolic link "
                                          r"to /nope/tasks.yaml, which does not exist"):
        load_task_source(dangling)
    (voc / "Annotations" / "a.xml").unlink()
    (voc / "Annotations" / "a.xml").symlink_to(tmp_path / "gone.xml")
    (skip,) = list(iter_labelled(str(voc), "voc"))
    assert skip.message.endswith(f"a.xml: a symbolic link to {tmp_path / 'gone.xml'}, which does "
                                 f"not exist (unmounted?)")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from edgecl.cli import main; sys.exit(main(["
         f"'bench', 'cl', '--data', {str(folder)!r}, '--out', {str(tmp_path / 'o')!r}]))"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 2
    assert "tasks.yaml is a named pipe (FIFO), not a regular file" in done.stderr
    assert "Traceback" not in done.stderr
