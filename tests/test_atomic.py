"""Atomic writes on a full disk: the old file stays, no temp file is left, the error names
the file; what they write gets the mode a plain write would (the umask's)."""

import errno
import os
import stat
import time

import pytest

from edgecl import atomic
from edgecl.atomic import atomic_write_bytes, atomic_write_with


def _full(fh):
    fh.write(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")  # as a buffered flush raises it


def test_a_write_the_full_disk_refused_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "manifest.json"
    atomic_write_bytes(path, b"old")
    with pytest.raises(OSError) as err:
        atomic_write_with(path, _full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_an_error_that_names_its_file_keeps_it(tmp_path):
    def named(fh):
        raise OSError(errno.ENOSPC, "No space left on device", "/elsewhere")

    with pytest.raises(OSError) as err:
        atomic_write_with(tmp_path / "a", named)
    assert err.value.filename == "/elsewhere"
    with pytest.raises(OSError) as plain:  # an OSError without errno keeps its message
        atomic_write_with(tmp_path / "a", lambda fh: (_ for _ in ()).throw(OSError("no writer")))
    assert str(plain.value) == "no writer"


@pytest.mark.parametrize("maker", ["mkstemp", "mkdtemp"])
def test_a_folder_that_refuses_the_temp_file_is_named_by_the_destination(tmp_path, monkeypatch,
                                                                         maker):
    """Before: 'dataset import --out /proc/x' said "No such file or directory:
    /proc/.x.pid25228.boot6e31de5c._rqzt__q.tmp", a name the user never gave."""
    def refuse(prefix="", suffix="", dir=None):
        raise OSError(errno.EROFS, "Read-only file system",
                      os.path.join(dir, prefix + "q1" + suffix))

    monkeypatch.setattr(atomic.tempfile, maker, refuse)
    with pytest.raises(OSError) as err:
        if maker == "mkstemp":
            atomic_write_bytes(tmp_path / "model.json", b"x")
        else:
            with atomic.atomic_dir(tmp_path / "out"):
                pass
    target = tmp_path / ("model.json" if maker == "mkstemp" else "out")
    assert str(err.value) == f"[Errno 30] Read-only file system: '{target}'"



@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path, umask_022):
    """Before: every atomic write was 0600 and every atomic folder 0700 (tempfile's), so a
    written dataset, split or model could not be read by another user or a container."""
    atomic.atomic_write_text(tmp_path / "a.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as d:
        (d / "f.txt").write_text("y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    os.umask(0o077)
    atomic.atomic_write_text(tmp_path / "b.txt", "x")  # a stricter umask is honoured
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_a_written_dataset_and_split_are_readable_by_others(tmp_path, umask_022):
    import cv2
    import numpy as np

    from edgecl.cli import main

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for k in range(6):
        cv2.imwrite(str(src / "images" / f"f{k}.jpg"), np.full((32, 32, 3), 20 * k, np.uint8))
        (src / "labels" / f"f{k}.txt").write_text(f"{k % 2} 0.5 0.5 0.3 0.3\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: [car, person]\n")
    out = tmp_path / "ds"
    assert main(["dataset", "import", str(src), "--out", str(out)]) == 0
    assert main(["dataset", "split-tasks", str(out), "--tasks", "car;person", "--ratios",
                 "0.5,0.25,0.25", "--out", str(tmp_path / "cl" / "tasks.yaml")]) == 0
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [out, out / "data.yaml", *(out / "labels").iterdir(),
                       tmp_path / "cl" / "tasks.yaml", *(tmp_path / "cl" / "tasks").rglob("*")]}
    assert {m for m in modes.values()} <= {0o644, 0o755}, modes


def test_a_folder_a_killed_process_left_is_removed_by_the_next_build(tmp_path):
    """Before: a dataset import killed half-way left its hidden temp folder (hundreds of MB)
    beside the output, and no later run removed or named it."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now
    old = time.time() - atomic.ORPHAN_QUIET_S - 5

    def made(name, mtime=old):
        folder = tmp_path / name
        (folder / "images").mkdir(parents=True)
        for p in (folder / "images", folder):
            os.utime(p, (mtime, mtime))
        return folder

    made(f".out.pid{dead.pid}.abc123.tmp")                     # orphaned: removed
    made(f".other.pid{dead.pid}.x.tmp")                        # another output's orphan too
    made(f".out.4000.pid{dead.pid}.x.tmp")                     # (before: kept for good)
    keep = [made(f".out.pid{os.getpid()}.def456.tmp"),          # its process runs
            made(f".out.pid{dead.pid}.new.tmp", time.time()),   # changed lately (another
                                                                # container's, say)
            made(f".other.pid{os.getpid()}.x.tmp"),             # another output's, running
            made(f".notes.pid{dead.pid}.tmp")]                  # no temp folder's name
    with atomic.atomic_dir(tmp_path / "out") as d:
        (d / "f.txt").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in keep] + ["out"])


def test_a_folder_of_an_earlier_boot_is_removed_though_its_pid_runs(tmp_path):
    """Before: after a reboot, the pid of a killed export was likely taken by another process,
    and its temp folder (a full copy) stayed for good. Its name now holds the boot that made
    it; one of this boot with a live pid is kept, whatever the wall clock did meanwhile."""
    from edgecl.boot import boot_tag

    if not boot_tag():
        pytest.skip("no boot id on this system (/proc/sys/kernel/random/boot_id)")
    old = time.time() - atomic.ORPHAN_QUIET_S - 5
    other = "0" * 8 if boot_tag() != "0" * 8 else "1" * 8
    for name in (f".out.pid{os.getpid()}.boot{other}.abc123.tmp",   # an earlier boot's: removed
                 f".out.pid{os.getpid()}.boot{boot_tag()}.def456.tmp"):  # this boot's, alive
        (tmp_path / name / "images").mkdir(parents=True)
        for p in (tmp_path / name / "images", tmp_path / name):
            os.utime(p, (old, old))
    with atomic.atomic_dir(tmp_path / "out") as d:
        assert d.name.startswith(f".out.pid{os.getpid()}.boot{boot_tag()}.")
        (d / "f.txt").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".out.pid{os.getpid()}.boot{boot_tag()}.def456.tmp", "out"]


def test_an_output_filled_meanwhile_is_named_not_its_temp_folder(tmp_path):
    """Before: the second of two imports to one --out failed with 'Directory not empty:
    .ds.9055.kduv6hu8.tmp', naming a hidden folder the user never made."""
    out = tmp_path / "ds"
    with pytest.raises(OSError) as err:
        with atomic.atomic_dir(out) as d:
            (d / "mine.txt").write_text("x")
            out.mkdir()
            (out / "theirs.txt").write_text("y")  # another process finished first
    assert str(err.value).endswith(f"{out} was filled meanwhile (another process wrote it?); "
                                   f"nothing of this run was kept there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_link_to_an_empty_folder_is_filled_and_stays_a_link(tmp_path):
    """Before: 'dataset import SRC --out LINK' (a link to an empty folder on a memory card)
    failed with '[Errno 20] Not a directory' once the whole dataset was written."""
    card = tmp_path / "card" / "datasets"
    card.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(card)
    with atomic.atomic_dir(link) as d:
        assert d.parent == card.parent  # built beside the folder it replaces: one file system
        (d / "f.txt").write_text("y")
    assert link.is_symlink() and (card / "f.txt").read_text() == "y"
    assert sorted(p.name for p in card.parent.iterdir()) == ["datasets"]


def test_a_second_damaged_copy_in_the_same_second_gets_its_own_name(tmp_path):
    """Before: classes.json and learner/state.json were kept as NAME.corrupt-STAMP only: a
    second repair within the same second (a board booting at the same date every time)
    overwrote the first damaged copy."""
    from edgecl.atomic import damaged_copy_path

    path = tmp_path / "classes.json"
    first = damaged_copy_path(path, "20240101T000000Z")
    assert first.name == "classes.json.corrupt-20240101T000000Z"
    first.write_text("one")
    second = damaged_copy_path(path, "20240101T000000Z")
    assert second.name == "classes.json.corrupt-20240101T000000Z.2"
    second.write_text("two")
    (tmp_path / "classes.json.corrupt-20240101T000000Z.3-wal").write_text("")
    third = damaged_copy_path(path, "20240101T000000Z", ("", "-wal"))
    assert third.name == "classes.json.corrupt-20240101T000000Z.4"


def test_json_safe_maps_what_json_cannot_hold_to_null():
    from edgecl.atomic import json_safe

    value = {"a": float("nan"), 2: [1.0, float("inf"), (float("-inf"), "x")], "b": {"c": None}}
    assert json_safe(value) == {"a": None, "2": [1.0, None, [None, "x"]], "b": {"c": None}}


def test_a_command_json_line_is_strict_json(capsys):
    """Before: a score that could not be computed reached stdout as a bare NaN, which jq
    refuses ("Invalid numeric literal")."""
    import json

    from edgecl.arguments import print_json_line

    print_json_line({"acc": float("nan"), "per_class": {"car": float("inf")}, "n": 3})
    out = capsys.readouterr().out
    assert out == '{"acc": null, "n": 3, "per_class": {"car": null}}\n'
    json.loads(out, parse_constant=lambda c: pytest.fail(c))


def test_a_rename_refused_at_the_end_is_named_by_the_destination(tmp_path, monkeypatch):
    """Before: an --out folder with a file named like the report in it said "Is a directory:
    DIR/.report.md.0pn96iji.tmp", and an --out that is a dangling link "Not a directory:
    .dang.pid30601...tmp"."""
    (tmp_path / "report.md").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        atomic_write_bytes(tmp_path / "report.md", b"x")
    assert str(err.value) == f"[Errno 21] Is a directory: '{tmp_path / 'report.md'}'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]

    def refuse(src, dst):
        raise OSError(errno.ENOTDIR, "Not a directory", str(src), str(dst))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(NotADirectoryError) as err:
        with atomic.atomic_dir(tmp_path / "out") as d:
            (d / "a.txt").write_text("a")
    assert str(err.value) == f"[Errno 20] Not a directory: '{tmp_path / 'out'}'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
