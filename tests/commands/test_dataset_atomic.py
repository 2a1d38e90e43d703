"""``edgecl dataset split-tasks | import`` and ``memory export`` are all or nothing: a failure
half-way leaves no partial folder or file, and what was there before stays as it was."""

import errno
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.cli import main


def _jpg(path: Path, value: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes())


def _flights(root: Path) -> Path:
    """18 images of 6 flights (each its own pixels): F1/F2 cars, F3/F5 bicycles, F4/F6 people."""
    flights = {"F1": 0, "F2": 0, "F3": 1, "F5": 1, "F4": 2, "F6": 2}
    for n, (f, cls) in enumerate((f, cls) for f, cls in flights.items() for _ in range(3)):
        k = n % 3
        _jpg(root / "images" / f"{f}_{k:03d}.jpg", 10 * n)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{f}_{k:03d}.txt").write_text(f"{cls} 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: car, 1: bicycle, 2: person}\n")
    return root


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_split_tasks_failing_on_a_later_task_writes_nothing(tmp_path, capsys):
    root = _flights(tmp_path / "ds")
    out = tmp_path / "cl" / "tasks.yaml"
    # F3 and F5 (the bicycle task) fall in one group "F": task t2 gets no test images, after t1
    # (cars: groups F1, F2) was fine; before the fix t1's lists were already on disk
    code = main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios", "0.5,0,0.5",
                 "--group-by", r"^(F(?=[35])|F\d)", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "task t2 (bicycle) gets no" in err and err.count("\n") == 1
    assert not (tmp_path / "cl").exists()  # not even the folder


def test_split_tasks_disk_failure_keeps_the_previous_split(tmp_path, capsys, monkeypatch):
    import edgecl.data.splits as splits

    root = _flights(tmp_path / "ds")
    out = tmp_path / "cl" / "tasks.yaml"
    argv = ["dataset", "split-tasks", str(root), "--ratios", "0.5,0,0.5", "--out", str(out)]
    assert main(argv + ["--tasks", "car;bicycle;person"]) == 0
    before = _tree(tmp_path / "cl")
    assert sorted(before) == ["tasks.yaml"] + [f"tasks/t{t}/{s}.txt" for t in (1, 2, 3)
                                               for s in ("test", "train", "val")]
    real = splits.atomic_write_text

    def full_disk(path, text):
        if Path(path).name == "new.yaml":  # the last file written: every list is already staged
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(splits, "atomic_write_text", full_disk)
    capsys.readouterr()
    assert main(argv + ["--tasks", "person;car"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _tree(tmp_path / "cl") == before  # old yaml and all three old tasks, nothing staged left
    assert not [p for p in (tmp_path / "cl").iterdir() if p.name.startswith(".")]


def test_split_tasks_check_failure_after_the_swap_restores_everything(tmp_path, monkeypatch):
    import edgecl.data.splits as splits
    from edgecl.errors import ConfigError

    root = _flights(tmp_path / "ds")
    out = tmp_path / "cl" / "tasks.yaml"
    splits.split_tasks(root, "car;bicycle;person", out, ratios="0.5,0,0.5")
    before = _tree(tmp_path / "cl")

    def broken(path):
        raise ConfigError(f"{path}: checked and refused")

    monkeypatch.setattr(splits, "load_tasks", broken)
    with pytest.raises(ConfigError, match="checked and refused"):
        splits.split_tasks(root, "person;car", out, ratios="0.5,0,0.5")
    assert _tree(tmp_path / "cl") == before
    monkeypatch.undo()
    (tmp_path / "fresh").mkdir()
    monkeypatch.setattr(splits, "load_tasks", broken)
    with pytest.raises(ConfigError):
        splits.split_tasks(root, "car", tmp_path / "fresh" / "t.yaml", ratios="0.5,0,0.5")
    assert list((tmp_path / "fresh").iterdir()) == []


def test_dataset_import_failing_half_way_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import edgecl.data.convert as convert

    root = _flights(tmp_path / "ds")
    out = tmp_path / "out"
    real, calls = convert.atomic_write_bytes, []

    def full_disk_on_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(convert, "atomic_write_bytes", full_disk_on_third)
    assert main(["dataset", "import", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    def full_disk_unnamed(path, data):  # write() fails without naming the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert, "atomic_write_bytes", full_disk_unnamed)
    assert main(["dataset", "import", str(root), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: cannot write {out}: No space left on device; "
                                       f"nothing was written\n")

    def full_disk_in_the_temp_folder(path, data):  # atomic writes name their file (a temp one)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(convert, "atomic_write_bytes", full_disk_in_the_temp_folder)
    assert main(["dataset", "import", str(root), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: cannot write {out}: No space left on device; "
                                       f"nothing was written\n")
    monkeypatch.undo()
    assert main(["dataset", "import", str(root), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["imported"] == 18
    assert len(list((out / "images").iterdir())) == 18 and (out / "data.yaml").is_file()


def test_dataset_import_with_nothing_to_import_leaves_no_folder(tmp_path, capsys):
    root = tmp_path / "ds"
    _jpg(root / "images" / "a.jpg")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: car}\n")
    assert main(["dataset", "import", str(root), "--out", str(tmp_path / "out")]) == 2
    assert "nothing imported" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_memory_export_failing_half_way_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import shutil

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.0), names={0: "car"}) as m:
        for i in range(4):
            m.add(Sample(np.full((24, 24, 3), i * 40, np.uint8),
                         np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="t"))
    real, calls = shutil.copyfile, []

    def full_disk_on_fifth(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", full_disk_on_fifth)
    out = tmp_path / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
    monkeypatch.undo()
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 0
    train = (out / "train.txt").read_text().split()
    assert len(train) == 4 and all(p.startswith("./images/") and (out / p).is_file()
                                   for p in train)  # relative to the export: it may be moved


def test_split_tasks_never_replaces_a_file_or_folder_it_did_not_write(tmp_path, capsys):
    root = _flights(tmp_path / "ds")
    before = _tree(root)
    argv = ["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios", "0.5,0,0.5"]
    assert main(argv + ["--out", str(root / "data.yaml")]) == 2  # the dataset's own yaml
    assert "data.yaml exists and is not a tasks.yaml" in capsys.readouterr().err
    mine = tmp_path / "cl" / "tasks" / "t2" / "notes.md"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    assert main(argv + ["--out", str(tmp_path / "cl" / "tasks.yaml")]) == 2
    err = capsys.readouterr().err
    assert "t2 holds notes.md, not only split lists" in err and err.count("\n") == 1
    assert _tree(root) == before and mine.read_text() == "mine"
    assert not (tmp_path / "cl" / "tasks.yaml").exists()
    mine.unlink()  # a split's own folders and yaml are replaced by the next split
    assert main(argv + ["--out", str(tmp_path / "cl" / "tasks.yaml")]) == 0
    assert main(argv + ["--out", str(tmp_path / "cl" / "tasks.yaml")]) == 0


@pytest.mark.parametrize("name", ["noext", ".yaml", "tasks.txt"])
def test_split_tasks_out_without_a_yaml_suffix_is_refused_up_front(tmp_path, capsys, name):
    """Before: ``--out DIR/noext`` put its lists in ``noext/`` (the folder named after the file
    is the file itself), failed with ``Not a directory: .../.split-tasks.XXXX.tmp/old.yaml`` and
    left a tasks.yaml pointing at ``noext/t1/train.txt``, which cannot exist."""
    root = _flights(tmp_path / "ds")
    out = tmp_path / "cl" / name
    code = main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios", "0.5,0,0.5",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: --out must be a .yaml (or .yml) file path, got {out}: "
                                 f"the image lists go to a folder named after it\n")
    assert not (tmp_path / "cl").exists()


def test_split_tasks_out_under_a_file_says_which_path_is_a_file(tmp_path, capsys):
    """Before: ``error: File exists: /etc/passwd`` for ``--out /etc/passwd/x.yaml`` (and
    ``/etc/passwd/x``)."""
    root = _flights(tmp_path / "ds")
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    for out in (plain / "tasks.yaml", plain / "x", plain / "a" / "b" / "tasks.yaml"):
        code = main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios",
                     "0.5,0,0.5", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err == (f"error: --out {out}: {plain} is a file, not a folder; "
                                     f"name a tasks.yaml in a folder\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "notes.txt"]
    assert plain.read_text() == "mine"


def test_split_tasks_lists_folder_that_is_a_file_is_refused(tmp_path, capsys):
    """``--out cl/tasks.yaml`` puts its lists in ``cl/tasks/``; a file of that name is refused
    in one line (before: ``File exists: .../cl/tasks``)."""
    root = _flights(tmp_path / "ds")
    (tmp_path / "cl").mkdir()
    (tmp_path / "cl" / "tasks").write_text("mine")
    code = main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios", "0.5,0,0.5",
                 "--out", str(tmp_path / "cl" / "tasks.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'cl' / 'tasks'} is a file, not a folder of split lists" in err
    assert sorted(p.name for p in (tmp_path / "cl").iterdir()) == ["tasks"]


def test_split_tasks_failing_leaves_no_folder_it_created(tmp_path, capsys, monkeypatch):
    """A write failure in a new folder removes the folders made for the output as well."""
    import edgecl.data.splits as splits

    root = _flights(tmp_path / "ds")
    out = tmp_path / "new" / "deep" / "tasks.yaml"

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(splits, "atomic_write_text", full_disk)
    assert main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios",
                 "0.5,0,0.5", "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("command", ["split-tasks", "import"])
def test_a_folder_that_refuses_new_files_is_named_as_the_output_given(tmp_path, capsys,
                                                                      monkeypatch, command):
    """Before: "No such file or directory: /proc/.split-tasks.x5ezjbl6.tmp" (and
    "/proc/.x.pid25228.boot6e31de5c._rqzt__q.tmp" for import): a temp name the user never gave."""
    import tempfile

    def refuse(prefix="", suffix="", dir=None):
        raise OSError(errno.EROFS, "Read-only file system", f"{dir}/{prefix}q1{suffix}")

    root = _flights(tmp_path / "ds")
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    if command == "split-tasks":
        out = tmp_path / "ro" / "tasks.yaml"
        argv = ["dataset", "split-tasks", root, "--tasks", "car;bicycle;person", "--group-by",
                r"^(F\d)_", "--out", out]
    else:
        out = tmp_path / "ro" / "imported"
        argv = ["dataset", "import", root, "--out", out]
    assert main([str(a) for a in argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: Read-only file system: {out}")


@pytest.mark.parametrize("kind", ["fifo", "dangling", "loop", "dangling-lists"])
def test_split_tasks_out_that_is_no_file_is_refused_without_waiting(tmp_path, capsys, kind):
    """Before: an --out naming a pipe blocked forever (its 'is this a tasks.yaml' read), and a
    link to nothing was "exists and is not a tasks.yaml"."""
    import os

    root = _flights(tmp_path / "ds")
    out = tmp_path / "tasks.yaml"
    if kind == "fifo":
        os.mkfifo(out)
        why = f"--out {out} exists and is not a regular file (a folder, a pipe or a device)"
    elif kind == "dangling":
        out.symlink_to("/mnt/edgecl-card-not-mounted.yaml")
        why = (f"--out {out} is a symbolic link to /mnt/edgecl-card-not-mounted.yaml, which "
               "does not exist (unmounted?)")
    elif kind == "loop":
        (tmp_path / "other.yaml").symlink_to(out)
        out.symlink_to(tmp_path / "other.yaml")
        why = (f"--out {out} is a symbolic link that loops (following it never ends at a file "
               "or folder)")
    else:
        (tmp_path / "tasks").symlink_to("/mnt/edgecl-card-not-mounted")
        why = (f"the image lists' folder {tmp_path / 'tasks'} is a symbolic link to "
               "/mnt/edgecl-card-not-mounted, which does not exist (unmounted?)")
    assert main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle;person",
                 "--group-by", r"^(F\d)_", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {why}") and err.count("\n") == 1, err
