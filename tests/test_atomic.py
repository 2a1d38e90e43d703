"""Atomic writes on a full disk: the old file stays, no temp file is left, the error names
the file."""

import errno

import pytest

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

