"""The one-line form of a storage fault (a full disk, an unwritable directory) and of a file
standing where a folder belongs."""

import errno

import pytest

from edgecl.errors import StorageError, is_disk_full, storage_fault, storage_faults


def test_a_full_disk_is_one_line_naming_what_and_where():
    copy = OSError(errno.ENOSPC, "No space left on device", "/state/work/model.pt", None,
                   "/state/models/.staging-x/model.pt")
    fault = storage_fault(copy, "cannot stage a new model version")
    assert isinstance(fault, StorageError)
    # a copy names its destination second: that is where the room was missing
    assert str(fault) == ("cannot stage a new model version: No space left on device "
                          "(/state/models/.staging-x/model.pt)")
    bare = OSError(errno.ENOSPC, "No space left on device")
    assert str(storage_fault(bare, "cannot write", "/card/x")) == \
        "cannot write: No space left on device (/card/x)"
    assert "\n" not in str(fault)


def test_only_storage_errors_become_storage_faults():
    assert storage_fault(OSError(errno.EISDIR, "Is a directory"), "x") is None
    assert storage_fault(ValueError("bad"), "x") is None
    already = StorageError("metrics database cannot be written")
    assert storage_fault(already, "x") is already
    assert is_disk_full(OSError(errno.ENOSPC, "full")) and is_disk_full(OSError(errno.EDQUOT, "q"))
    assert not is_disk_full(OSError(errno.EROFS, "Read-only file system"))


def test_the_block_form_converts_storage_faults_and_lets_the_rest_through():
    with pytest.raises(StorageError, match=r"^cannot export: No space left on device \(/w\)$"):
        with storage_faults("cannot export", "/w"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(FileNotFoundError):
        with storage_faults("cannot export", "/w"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/w/a")


def test_is_storage_error_by_hand():
    import errno

    from edgecl.errors import LabelError, StorageError, is_storage_error

    assert is_storage_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_error(StorageError("metrics database cannot be written"))
    assert not is_storage_error(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_storage_error(LabelError("bad row"))


def test_a_file_where_a_folder_belongs_is_named_as_such(tmp_path):
    """Before: 'File exists: D/learner' and 'File exists (D/memory/images)' said nothing of a
    file standing where a folder belongs."""
    import errno
    import os

    from edgecl.errors import describe_os_error, misplaced_path

    (tmp_path / "learner").write_text("x")
    for call in (lambda: os.mkdir(tmp_path / "learner"),
                 lambda: open(tmp_path / "learner" / "state.json", "w")):
        try:
            call()
        except OSError as exc:
            assert describe_os_error(exc) == (f"{tmp_path / 'learner'} is a file where a folder "
                                              f"belongs (move it aside)")
    (tmp_path / "classes.json").mkdir()
    try:
        open(tmp_path / "classes.json")
    except OSError as exc:
        assert misplaced_path(exc) == (f"{tmp_path / 'classes.json'} is a folder where a file "
                                       f"belongs (move it aside)")
    missing = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "nope"))
    assert misplaced_path(missing) is None
    assert describe_os_error(missing) == f"No such file or directory: {tmp_path / 'nope'}"


def test_a_memory_whose_images_folder_is_a_file_says_so(tmp_path, capsys):
    from edgecl.cli import main
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory

    ReplayMemory(tmp_path / "memory", MemoryConfig()).close()
    (tmp_path / "memory" / "images").rmdir()
    (tmp_path / "memory" / "images").write_text("x")
    assert main(["memory", "stats", "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{tmp_path / 'memory' / 'images'} is a file where a folder belongs (move it aside)")


def test_a_device_where_a_folder_belongs_is_named_as_one():
    """Before: 'File exists: /dev/full' for '--out /dev/full/x'."""
    import errno as errno_codes

    from edgecl.errors import misplaced_path

    exc = FileExistsError(errno_codes.EEXIST, "File exists", "/dev/null")
    assert misplaced_path(exc) == "/dev/null is not a folder (a device or a pipe)"
