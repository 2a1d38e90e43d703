"""``edgecl run --out FILE`` restarted on the same file: frame ids go on after the file's last
line (every id once in the file), each line names the run that wrote it, a line cut off by a
kill is removed instead of spoiling the next line, and only the file's tail is read."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from edgecl.errors import ConfigError

from edgecl.frames import Detections, Frame
from edgecl.runtime import sinks
from edgecl.runtime.loop import FrameResult
from edgecl.runtime.sinks import JsonlSink


def result(frame_id: int, boxes: int = 1) -> FrameResult:
    frame = Frame(image=np.zeros((8, 8, 3), np.uint8), frame_id=frame_id, ts_s=0.0, source="cam")
    det = Detections(np.tile(np.array([[1, 1, 4, 4]], np.float32), (boxes, 1)),
                     np.full(boxes, 0.9, np.float32), np.zeros(boxes, np.int64))
    return FrameResult(frame, det, "v0002", 1.0, 1.0)


def run(path, frames: int, **kwargs) -> None:
    """One runtime's life: a sink on ``path`` gets frames 0..frames-1 (ids start at 0 again,
    as a restarted source numbers them), then closes."""
    sink = JsonlSink(path, {0: "car"}, **kwargs)
    for frame_id in range(frames):
        sink.write(result(frame_id))
    sink.close()


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_restart_numbers_on_and_names_its_run(tmp_path):
    """Before: the second run wrote frame ids 0, 1 again, and nothing told its lines apart."""
    path = tmp_path / "det.jsonl"
    run(path, 3)
    run(path, 2)
    run(path, 1)
    got = lines(path)
    assert [line["frame_id"] for line in got] == [0, 1, 2, 3, 4, 5]
    runs = [line.get("run_id") for line in got]
    assert None not in runs and len({runs[0], runs[3], runs[5]}) == 3, runs
    assert runs[:3] == [runs[0]] * 3 and runs[3:5] == [runs[3]] * 2


def test_a_line_cut_off_by_a_kill_does_not_break_the_restart(tmp_path, caplog):
    path = tmp_path / "det.jsonl"
    run(path, 2)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"frame_id": 2, "ts_s": 0.0, "sou')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.sinks"):
        run(path, 2)
    got = lines(path)  # every line is JSON: the cut line was removed, not glued to the next
    assert [line["frame_id"] for line in got] == [0, 1, 2, 3]
    assert path.read_bytes().startswith(whole)
    assert "partial last line" in caplog.text and str(path) in caplog.text


def test_a_file_holding_only_a_cut_line_starts_at_zero(tmp_path):
    path = tmp_path / "det.jsonl"
    path.write_bytes(b'{"frame_id": 41, "ts')
    run(path, 2)
    assert [line["frame_id"] for line in lines(path)] == [0, 1]


def test_a_last_line_longer_than_the_tail_read_at_once_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "TAIL_CHUNK_BYTES", 64)
    path = tmp_path / "det.jsonl"
    sink = JsonlSink(path, {0: "car"})
    sink.write(result(0))
    sink.write(result(1, boxes=20))  # a line of about 1.5 KB, many chunks
    sink.close()
    run(path, 1)
    assert [line["frame_id"] for line in lines(path)] == [0, 1, 2]


def test_only_the_tail_of_a_long_file_is_read(tmp_path, monkeypatch):
    path = tmp_path / "det.jsonl"
    run(path, 20_000)  # about 4 MB
    read = []
    real_pread = sinks.os.pread

    def counted(fd, size, offset):
        read.append(size)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(sinks.os, "pread", counted)
    run(path, 1)
    assert lines(path)[-1]["frame_id"] == 20_000
    assert sum(read) <= sinks.TAIL_CHUNK_BYTES < path.stat().st_size // 10


def test_a_restart_right_after_a_rotation_numbers_on_from_the_rotated_file(tmp_path):
    path = tmp_path / "det.jsonl"
    probe = tmp_path / "probe.jsonl"
    run(probe, 1)
    line_bytes = probe.stat().st_size
    run(path, 3, max_bytes=3 * line_bytes, backups=2)  # rotated after its 3rd line: FILE empty
    assert path.stat().st_size == 0
    run(path, 2, max_bytes=3 * line_bytes, backups=2)
    assert [line["frame_id"] for line in lines(path)] == [3, 4]


@pytest.mark.parametrize("content", [
    b'not json\n{"note": "a line of another tool"}\n',
    b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}\n',
    b'{"images": [], "annotations": []}',  # minified COCO as exported, no line end
])
def test_a_json_file_edgecl_did_not_write_is_refused_and_left_as_it_was(tmp_path, content):
    """Before: a warning ('no frame_id in its last lines'), then detections appended: a
    one-line COCO file named by mistake was no longer JSON."""
    from edgecl.errors import ConfigError

    path = tmp_path / "instances.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        run(path, 1)
    assert str(err.value) == (f"--out {path}: the file exists and holds no line 'edgecl run "
                              f"--out' wrote (no frame_id in its last lines); name a new file, "
                              f"or a file 'edgecl run --out' wrote")
    assert path.read_bytes() == content


@pytest.mark.parametrize("content", [
    bytes(range(256)) * 40 + b"\n" + bytes(range(200)),  # a model or a video named by mistake
    b"not json\n[1, 2]\n",
    b"x" * 3000,  # no line end at all
])
def test_a_file_that_is_not_json_lines_is_refused_and_left_as_it_was(tmp_path, content):
    """Before: a mistyped --out (a checkpoint's name) lost its last bytes as 'a partial last
    line' and had detections appended."""
    from edgecl.errors import ConfigError

    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is not JSON lines"):
        JsonlSink(path, {0: "car"})
    assert path.read_bytes() == content


def test_a_whole_last_line_without_its_line_end_is_kept(tmp_path):
    path = tmp_path / "det.jsonl"
    path.write_bytes(b'{"frame_id": 6, "detections": []}\n{"frame_id": 7, "detections": []}')
    run(path, 1)
    assert [line["frame_id"] for line in lines(path)] == [6, 7, 8]


@pytest.mark.parametrize("frames", [1, 3])
def test_ids_stay_in_step_with_the_run_within_one_run(tmp_path, frames):
    """A frame the loop dropped (back-pressure) leaves its gap in the ids, as before."""
    path = tmp_path / "det.jsonl"
    run(path, 2)
    sink = JsonlSink(path, {0: "car"})
    for frame_id in (0, 2, 5)[:frames]:
        sink.write(result(frame_id))
    sink.close()
    assert [line["frame_id"] for line in lines(path)][2:] == [2, 4, 7][:frames]


def test_a_sink_on_a_device_file_writes_and_closes_without_an_error(tmp_path):
    """Before: --out /dev/stdout or /dev/null logged an ERROR with a traceback at close (fsync
    of a character device: EINVAL), and read back the device for its last line."""
    sink = JsonlSink("/dev/null", {0: "car"})
    sink.write(result(0))
    sink.close()
    assert sink.first_frame_id == 0


def test_a_second_run_on_the_same_file_is_refused_until_the_first_closes(tmp_path):
    """Before: both appended, each numbering from the same last line (every frame id twice)
    and each rotating the file under the other."""

    path = tmp_path / "det.jsonl"
    first = JsonlSink(path, {0: "car"})
    first.write(result(0))
    with pytest.raises(ConfigError) as refused:
        JsonlSink(path, {0: "car"})
    assert str(refused.value) == (f"--out {path}: another edgecl run (pid {os.getpid()}) "
                                  f"appends to this file; give each run its own --out file")
    first.close()
    run(path, 1)  # free again once closed
    assert [line["frame_id"] for line in lines(path)] == [0, 1]
    # a holder killed with -9 leaves the lock file, and the kernel its lock: a restart appends
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from edgecl.runtime.sinks import JsonlSink; "
        f"JsonlSink({str(path)!r}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            JsonlSink(path, {0: "car"})
    finally:
        holder.kill()
        holder.wait()
    run(path, 1)
    assert [line["frame_id"] for line in lines(path)] == [0, 1, 2]


def test_a_device_file_takes_no_lock():
    sink = JsonlSink(os.devnull, {0: "car"})
    second = JsonlSink(os.devnull, {0: "car"})
    sink.write(result(0))
    second.close()
    sink.close()
    assert not os.path.exists("/dev/.null.lock")
