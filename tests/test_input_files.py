"""Bounded reads of users' files (edgecl.input_files): pipes, devices, sparse giants."""

from __future__ import annotations

import os
import threading

import pytest

from edgecl.input_files import (InputFileError, read_input_bytes, regular_file_problem,
                                size_text)


def test_a_regular_file_within_its_bound_is_read_whole(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"0 0.5 0.5 0.1 0.1\n")
    assert read_input_bytes(path, 18, "a label file") == b"0 0.5 0.5 0.1 0.1\n"
    assert regular_file_problem(path) is None and regular_file_problem(tmp_path / "none") is None


def test_a_named_pipe_with_no_writer_is_refused_at_once(tmp_path):
    """Before: reading it blocked for ever (labels import hung on a FIFO label file)."""
    fifo = tmp_path / "label.txt"
    os.mkfifo(fifo)
    done = []

    def read():
        try:
            read_input_bytes(fifo, 1024, "a label file")
        except InputFileError as exc:
            done.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert done and done[0].strerror == ("a named pipe (FIFO), not a regular file (a label "
                                         "file must be one)")
    assert done[0].filename == str(fifo)
    assert regular_file_problem(fifo) == "a named pipe (FIFO), not a regular file"


def test_a_device_is_refused_without_reading_it(tmp_path):
    """Before: a label linked to /dev/zero was read until the kernel killed the process (24 GB)."""
    link = tmp_path / "label.txt"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputFileError, match="a device, not a regular file"):
        read_input_bytes(link, 1024, "a label file")


def test_a_file_over_its_bound_is_refused_before_it_is_read(tmp_path):
    """Before: a 2 GiB sparse label took 21 GB of memory and 103 s to be skipped."""
    big = tmp_path / "label.txt"
    with open(big, "wb") as fh:
        fh.truncate(2 * 1024 ** 3)  # sparse: nothing written
    with pytest.raises(InputFileError) as caught:
        read_input_bytes(big, 16 * 1024 * 1024, "a label file")
    assert caught.value.strerror == "2.0 GiB, more than a label file can be (16.0 MiB)"


def test_a_missing_file_is_the_systems_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_input_bytes(tmp_path / "none.txt", 10, "a label file")


@pytest.mark.parametrize("n, text", [(300, "300 bytes"), (2048, "2.0 KiB"),
                                     (6 * 1024 ** 3, "6.0 GiB"), (5 * 1024 ** 4, "5120.0 GiB")])
def test_size_text(n, text):
    assert size_text(n) == text


def test_a_link_that_loops_or_leads_nowhere_is_said_by_the_one_link_rule(tmp_path):
    """missing_file_why follows edgecl.errors.link_problem's rule (before, its own: a link that
    loops read "a symbolic link to ..., which does not exist")."""
    from edgecl.input_files import missing_file_why

    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    assert missing_file_why(loop) == ("a symbolic link that loops (following it never ends at "
                                      "a file or folder)")
    gone = tmp_path / "gone.txt"
    gone.symlink_to(tmp_path / "nowhere.txt")
    assert missing_file_why(gone) == (f"a symbolic link to {tmp_path / 'nowhere.txt'}, which "
                                      f"does not exist (unmounted?)")
    assert missing_file_why(tmp_path / "absent.txt") == "not found"
