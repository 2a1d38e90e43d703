"""Output sinks show classes by their current names (a rename or a class learnt since start)."""

import io
import json
import logging

import numpy as np
import pytest

from edgecl.frames import Detections, Frame
from edgecl.runtime.loop import FrameResult
from edgecl.runtime.sinks import JsonlSink, ProgressSink


def _result(cls: int) -> FrameResult:
    frame = Frame(image=np.zeros((8, 8, 3), np.uint8), frame_id=1, ts_s=0.0, source="cam")
    det = Detections(np.array([[1, 1, 4, 4]], np.float32), np.array([0.9], np.float32),
                     np.array([cls]))
    return FrameResult(frame, det, "v0002", 1.0, 1.0)


def test_sinks_read_the_names_at_each_frame(tmp_path):
    names = {0: "forklift"}
    jsonl = JsonlSink(tmp_path / "d.jsonl", lambda: names)
    stream = io.StringIO()
    progress = ProgressSink(every_s=0.0, names=lambda: names, stream=stream)
    for sink in (jsonl, progress):
        sink.write(_result(0))
    names = {0: "lift_truck", 1: "pallet"}  # renamed, and a class learnt by a round since
    for sink in (jsonl, progress):
        sink.write(_result(0))
        sink.write(_result(1))
    jsonl.close()
    shown = [json.loads(line)["detections"][0]["name"]
             for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert shown == ["forklift", "lift_truck", "pallet"]  # before: 'forklift', 'forklift', '1'
    assert "pallet" in stream.getvalue() and "lift_truck" in stream.getvalue()
    static = JsonlSink(tmp_path / "s.jsonl", {0: "car"})  # a plain mapping still works
    static.write(_result(0))
    static.close()
    assert '"name": "car"' in (tmp_path / "s.jsonl").read_text()


def test_the_progress_line_counts_a_renamed_class_once_under_its_name_now():
    names = {0: "Car", 1: "Person"}
    stream = io.StringIO()
    progress = ProgressSink(every_s=3600.0, names=lambda: names, stream=stream)
    progress.write(_result(0))
    progress.write(_result(1))
    names = {0: "Vehicle", 1: "Person"}  # renamed while the device runs
    progress.write(_result(0))
    progress.close()  # before: 'seen: Car=1, Person=1, Vehicle=1'
    assert stream.getvalue().strip().endswith("seen: Person=1, Vehicle=2")


def test_the_last_progress_line_names_the_last_model_version():
    stream = io.StringIO()
    progress = ProgressSink(every_s=3600.0, names={0: "car"}, stream=stream, timestamps=False)
    progress.write(_result(0))
    progress.close()  # before: 'model=final', not a version name
    assert stream.getvalue().strip() == "[edgecl] in all: frames=1 model=v0002 seen: car=1"


def test_the_json_lines_file_rotates_at_its_size_and_keeps_its_backups(tmp_path):
    path = tmp_path / "d.jsonl"
    probe = JsonlSink(tmp_path / "probe.jsonl", {0: "car"})
    probe.write(_result(0))
    probe.close()
    line_bytes = (tmp_path / "probe.jsonl").stat().st_size
    # 3 lines per file: rotated after the 3rd line of each; 2 backups kept
    sink = JsonlSink(path, {0: "car"}, max_bytes=3 * line_bytes, backups=2)
    for _ in range(11):
        sink.write(_result(0))
    sink.close()
    files = sorted(p.name for p in tmp_path.glob("d.jsonl*"))
    assert files == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]
    lines = {p.name: len(p.read_text().splitlines()) for p in tmp_path.glob("d.jsonl*")}
    # 11 lines: 3 + 3 rotated away (the oldest deleted), 3 in .2 ... : 9 rotated, 2 current
    assert lines == {"d.jsonl": 2, "d.jsonl.1": 3, "d.jsonl.2": 3}
    assert all(json.loads(x)["model_version"] == "v0002"
               for p in tmp_path.glob("d.jsonl*") for x in p.read_text().splitlines())
    unbounded = JsonlSink(tmp_path / "u.jsonl", {0: "car"}, max_bytes=0)
    for _ in range(20):
        unbounded.write(_result(0))
    unbounded.close()
    assert sorted(p.name for p in tmp_path.glob("u.jsonl*")) == ["u.jsonl"]


def _frame_result(image: np.ndarray, frame_id: int) -> FrameResult:
    frame = Frame(image=image, frame_id=frame_id, ts_s=0.0, source="cam")
    none = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return FrameResult(frame, none, "v0001", 1.0, 1.0)


def test_the_saved_video_keeps_the_source_rate_and_letterboxes_a_new_size(tmp_path, caplog):
    import cv2

    from edgecl.runtime.sinks import VideoSink

    sink = VideoSink(tmp_path / "out.avi", fps=lambda: 30.0, names={})
    sink.write(_frame_result(np.full((64, 96, 3), 200, np.uint8), 0))
    sink.write(_frame_result(np.full((128, 64, 3), 200, np.uint8), 1))  # portrait, taller
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == 30.0  # before: always 10
    frames = [cap.read()[1] for _ in range(2)]
    cap.release()
    assert frames[1].shape == (64, 96, 3)
    # 64x128 scaled to 32x64 with its aspect kept, centred: black bars of 32 px left and right
    assert frames[1][:, :28].mean() < 10 and frames[1][:, 36:60].mean() > 180
    assert "letterboxed" in caplog.text
    unknown = VideoSink(tmp_path / "dir.avi", fps=lambda: None, names={})
    unknown.write(_frame_result(np.zeros((48, 64, 3), np.uint8), 0))
    unknown.close()
    cap = cv2.VideoCapture(str(tmp_path / "dir.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == 10.0
    cap.release()


def test_a_full_disk_loses_only_the_refused_lines_and_the_file_keeps_whole_lines(tmp_path,
                                                                                  monkeypatch):
    import errno
    import os

    import pytest

    from edgecl.errors import StorageError
    from edgecl.runtime import sinks

    path = tmp_path / "det.jsonl"
    sink = JsonlSink(path, {0: "car"})
    sink.write(_result(0))
    real_write = os.write
    full = {"on": True}

    def card(fd, data):
        if full["on"]:  # the disk takes the first bytes of a line, then is full
            if len(data) > 7:
                return real_write(fd, bytes(data[:7]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(sinks.os, "write", card)
    for _ in range(3):
        with pytest.raises(StorageError) as err:
            sink.write(_result(0))
        assert str(err.value) == f"cannot write detections: No space left on device ({path})"
    assert path.read_text().count("\n") == 1 and path.read_text().endswith("\n")
    full["on"] = False  # room again: the next frame is written at once, nothing half-written
    sink.write(_result(0))
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["model_version"] == "v0002" for line in lines)


def test_a_rotation_the_disk_refused_to_finish_makes_the_file_again(tmp_path, monkeypatch):
    import errno
    import os

    import pytest

    from edgecl.errors import StorageError
    from edgecl.runtime import sinks

    path = tmp_path / "det.jsonl"
    sink = JsonlSink(path, {0: "car"}, max_bytes=10, backups=1)
    real_open = os.open
    full = {"on": True}

    def card(file, flags, mode=0o777):
        if full["on"] and str(file) == str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, flags, mode)

    monkeypatch.setattr(sinks.os, "open", card)
    with pytest.raises(OSError):
        sink.write(_result(0))          # written, then the rotation cannot create the new file
    assert (tmp_path / "det.jsonl.1").read_text().count("\n") == 1
    with pytest.raises(StorageError, match="cannot write detections: No space left on device"):
        sink.write(_result(0))          # the next frame says why, in one line
    full["on"] = False
    sink.write(_result(0))              # room again: the file is made again (and rotated)
    sink.close()
    assert path.exists() and (tmp_path / "det.jsonl.1").read_text().count("\n") == 1


def test_progress_lines_are_spaced_for_a_journal_and_frequent_on_a_terminal():
    """A service's stderr is a journal: at one line every 2 s, progress was 89 % of a device's
    log over an hour and pushed its warnings out."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert ProgressSink(stream=io.StringIO()).every_s == 60.0
    assert ProgressSink(stream=Terminal()).every_s == 2.0
    assert ProgressSink(every_s=5.0, stream=io.StringIO()).every_s == 5.0


def test_progress_lines_sent_to_a_file_say_when_they_were_written():
    """Before: `edgecl start ... 2> run.log` wrote '[edgecl] frames=... seen: ...' every minute
    beside time-stamped log lines, with nothing saying when each count was taken."""
    import io
    import re

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    to_file, on_terminal = io.StringIO(), Terminal()
    for stream in (to_file, on_terminal):
        progress = ProgressSink(every_s=3600.0, names={0: "car"}, stream=stream)
        progress.write(_result(0))
        progress.close()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.fullmatch(stamp + r"\[edgecl\] in all: frames=1 model=v0002 seen: car=1\n",
                        to_file.getvalue())
    assert on_terminal.getvalue() == "[edgecl] in all: frames=1 model=v0002 seen: car=1\n"


def test_save_video_never_overwrites_the_source_or_an_earlier_run(tmp_path, run_edgecl):
    """Before: --save-video naming the video being read overwrote it (40 frames became 3, and
    the warning blamed the input: 'a file cut short?'), and a restarted run replaced the last
    run's video without a word."""
    import cv2

    from edgecl.runtime.sinks import VideoSink

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(5):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    size = clip.stat().st_size
    code, out, err = run_edgecl(["run", "--source", f"file://{clip}", "--model", "yolo11n.yaml",
                                 "--save-video", clip, "--quiet", "model.imgsz=64"])
    assert code == 2 and err == (f"error: --save-video {clip} is the video this run reads: name a "
                                 f"new file (it would be overwritten)\n")
    assert clip.stat().st_size == size
    out_video = tmp_path / "out.avi"
    runs = []
    for run in range(3):  # each run's whole video
        writer = cv2.VideoWriter(str(out_video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        writer.write(np.full((48, 64, 3), 60 * run, np.uint8))
        writer.release()
        runs.append(out_video.read_bytes())
        VideoSink(out_video, backups=2)
    assert not out_video.exists(), "a new run writes it anew"
    assert [(tmp_path / f"out.{k}.avi").read_bytes() for k in (1, 2)] == [runs[2], runs[1]]


def test_save_video_where_nothing_can_be_written_is_refused_at_start(tmp_path):
    import pytest

    from edgecl.errors import ConfigError
    from edgecl.runtime.sinks import VideoSink

    with pytest.raises(ConfigError, match=r"--save-video /proc/out.mp4: cannot write in /proc"):
        VideoSink("/proc/out.mp4")


def test_save_video_onto_a_named_pipe_is_refused_and_the_pipe_left_alone(tmp_path):
    """Before: the pipe was renamed to out.1.mp4, as if it were an earlier run's video."""
    import os

    import pytest

    from edgecl.errors import ConfigError
    from edgecl.runtime.sinks import VideoSink

    os.mkfifo(tmp_path / "out.mp4")
    with pytest.raises(ConfigError, match=r"out.mp4 is a named pipe \(FIFO\), not a regular file"):
        VideoSink(tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_the_saved_video_starts_a_new_file_at_its_size_bound(tmp_path, monkeypatch):
    """Before: one file for the whole run, without bound (385 MB an hour at 160 px, 30 fps),
    and unreadable after a power cut (an MP4's index is written when it closes)."""
    import cv2

    from edgecl.runtime import sinks
    from edgecl.runtime.sinks import VideoSink

    monkeypatch.setattr(sinks, "VIDEO_SIZE_CHECK_FRAMES", 5)
    rng = np.random.default_rng(0)
    sink = VideoSink(tmp_path / "out.avi", fps=lambda: 30.0, names={}, backups=2,
                     max_bytes=400_000)  # the writer flushes in blocks of 256 KiB and more
    for i in range(150):
        sink.write(_frame_result(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), i))
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["out.1.avi", "out.2.avi", "out.avi"]
    for name in ("out.1.avi", "out.2.avi"):  # each a whole, playable video of the same size
        cap = cv2.VideoCapture(str(tmp_path / name))
        ok, frame = cap.read()
        assert ok and frame.shape == (120, 160, 3) and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 5
        cap.release()


def test_a_run_that_stops_on_a_rotation_leaves_no_empty_video_for_the_next_to_keep(
        tmp_path, monkeypatch):
    """Before: the new file was begun at the rotation itself; a run that stopped there left an
    empty, unplayable out.avi, and the next run kept it as out.1.avi, pushing a real recording
    out of the backups."""
    import cv2

    from edgecl.runtime import sinks
    from edgecl.runtime.sinks import VideoSink

    monkeypatch.setattr(sinks, "VIDEO_SIZE_CHECK_FRAMES", 5)
    rng = np.random.default_rng(0)
    path = tmp_path / "out.avi"
    sink = VideoSink(path, fps=lambda: 30.0, names={}, backups=2, max_bytes=400_000)
    written = 0
    while not (tmp_path / "out.1.avi").exists():  # up to the frame whose write rotates
        sink.write(_frame_result(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), written))
        written += 1
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.1.avi"]
    sink = VideoSink(path, fps=lambda: 30.0, names={}, backups=2, max_bytes=400_000)
    for i in range(10):
        sink.write(_frame_result(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), i))
    sink.close()
    counts = {}
    for name in ("out.1.avi", "out.avi"):
        cap = cv2.VideoCapture(str(tmp_path / name))
        counts[name] = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
    assert counts == {"out.1.avi": written, "out.avi": 10}


def test_a_video_disk_full_before_its_first_frame_says_no_video_was_begun(tmp_path, monkeypatch):
    """Before: 'video writing stops here (the file is whole ...)' named a file never made."""
    import shutil

    from edgecl.errors import StorageError
    from edgecl.runtime import sinks

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=5 * 2**20))
    sink = sinks.VideoSink(tmp_path / "out.mp4", fps=10.0, names={})
    with pytest.raises(StorageError) as raised:
        sink.write(_frame_result(np.full((64, 96, 3), 120, np.uint8), 0))
    assert str(raised.value) == (f"--save-video {tmp_path / 'out.mp4'}: the disk has 5.0 MiB "
                                 f"free, so no video is written (nothing was begun; detection and "
                                 f"learning go on)")
    assert not (tmp_path / "out.mp4").exists()


def test_a_video_a_kill_cut_short_is_kept_apart_and_pushes_no_recording_out(tmp_path, caplog):
    """Before: after a kill -9 (a power cut), the restart kept the unplayable out.mp4 (no MP4
    index) as out.1.mp4 and deleted the whole recording that was there."""
    import cv2

    from edgecl.runtime.sinks import VideoSink

    rng = np.random.default_rng(0)
    sink = VideoSink(tmp_path / "out.mp4", fps=10.0, names={}, backups=1)
    for i in range(12):
        sink.write(_frame_result(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), i))
    sink.close()
    (tmp_path / "out.mp4").rename(tmp_path / "out.1.mp4")  # a whole, rotated recording
    (tmp_path / "out.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(40))  # cut short
    with caplog.at_level(logging.WARNING):
        sink = VideoSink(tmp_path / "out.mp4", fps=10.0, names={}, backups=1)
    sink.write(_frame_result(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), 0))
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.1.mp4", "out.mp4",
                                                           "out.unfinished.mp4"]
    cap = cv2.VideoCapture(str(tmp_path / "out.1.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    assert "was cut short (a power cut or a kill) and does not play; kept as out.unfinished.mp4" \
        in caplog.text


def test_a_video_that_cannot_rotate_stops_whole(tmp_path, monkeypatch, caplog):
    """Before: where the full video could not be moved aside (a folder named as its backup),
    the next frame reopened the file and truncated it: 720 of 900 frames were lost."""
    import cv2

    from edgecl.runtime import sinks
    from edgecl.runtime.sinks import VideoSink

    monkeypatch.setattr(sinks, "VIDEO_SIZE_CHECK_FRAMES", 5)
    (tmp_path / "out.1.avi").mkdir()  # os.replace onto a folder fails
    rng = np.random.default_rng(0)
    sink = VideoSink(tmp_path / "out.avi", fps=lambda: 30.0, names={}, backups=1, max_bytes=400_000)
    for i in range(150):
        sink.write(_frame_result(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), i))
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    kept = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert kept >= 20  # the frames up to the rotation, not a new file's few
    assert "video writing stops here, the file is whole" in caplog.text


def test_a_video_on_a_disk_that_fills_up_stops_whole_and_says_so_once(tmp_path, monkeypatch):
    """Before: FFmpeg's failed writes were only OpenCV warning lines (22 of them), the sink
    counted no error, and the MP4, left without room for its index, could not be opened."""
    import shutil

    import cv2

    from edgecl.errors import StorageError
    from edgecl.runtime import sinks

    free = {"bytes": 10 * 2**30}
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: real(path)._replace(free=free["bytes"]))
    sink = sinks.VideoSink(tmp_path / "out.mp4", fps=10.0, names={})
    image = np.full((64, 96, 3), 120, np.uint8)
    for k in range(sinks.VIDEO_SIZE_CHECK_FRAMES):
        sink.write(_frame_result(image, k))
    free["bytes"] = 5 * 2**20  # the disk filled up meanwhile
    with pytest.raises(StorageError) as raised:
        sink.write(_frame_result(image, 30))
    assert sink.stopped
    assert ("the disk has 5.0 MiB free, so video writing stops here (the file is whole"
            in str(raised.value))
    for k in range(31, 40):
        sink.write(_frame_result(image, k))  # not written, not raised again
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    cap.release()


def test_a_frame_the_video_writer_refuses_is_left_out_and_the_next_one_opens_it(tmp_path,
                                                                                 caplog):
    """Before: the refused writer was kept, so a first frame 1 pixel tall (a camera's
    half-initialised frame, a thumbnail sorted first) lost the whole recording, with a
    traceback on every frame."""
    import cv2

    from edgecl.runtime.sinks import VideoSink

    sink = VideoSink(tmp_path / "out.mp4", fps=10.0, names={})
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.sinks"):
        sink.write(_frame_result(np.full((1, 64, 3), 90, np.uint8), 0))
        sink.write(_frame_result(np.full((1, 64, 3), 90, np.uint8), 1))
        for k in range(2, 5):
            sink.write(_frame_result(np.full((48, 64, 3), 200, np.uint8), k))
        sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and cap.get(4) == 48
    cap.release()
    said = [r.getMessage() for r in caplog.records]
    assert said.count(f"--save-video {tmp_path / 'out.mp4'}: OpenCV's .mp4 writer cannot open a "
                      f"64x1 video; that frame is not recorded (the next frame tries again)") == 1
    assert said[-1] == (f"--save-video {tmp_path / 'out.mp4'}: 2 frame(s) not recorded (sizes "
                        f"OpenCV's writer refused: 64x1)")
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}/same.avi", "--save-video", "{tmp}/same.avi"],
     "error: --out {tmp}/same.avi and --save-video {tmp}/same.avi name the same file: name one "
     "for the detections and another for the video\n"),
    (["--save-video", "{tmp}/m/../clip.avi"],
     "error: --save-video {tmp}/m/../clip.avi is the video this run reads: name a new file (it "
     "would be overwritten)\n"),
    (["--save-video", ""],
     "error: argument --save-video: must name a file or folder to write, got ''; see 'edgecl "
     "run --help'\n"),
])
def test_outputs_that_would_overwrite_each_other_or_the_source_are_refused(tmp_path, run_edgecl,
                                                                          argv, message):
    """Before: --out and --save-video of one path wrote the lines into a file renamed
    'same.unfinished.avi'; 'm/../clip.avi' (m not made yet) moved the source recording aside
    as an earlier video; --save-video '' (an unset variable) recorded nothing, silently."""
    import cv2

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(3):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_edgecl(["run", "--source", f"file://{clip}", "--model", "yolo11n.yaml",
                                 "--quiet", "model.imgsz=64",
                                 *(a.format(tmp=tmp_path) for a in argv)])
    assert code == 2 and err == message.format(tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_out_file_that_cannot_be_made_names_the_option(tmp_path):
    """Before: 'error: Read-only file system: PATH' without the option it came from."""
    from edgecl.errors import ConfigError
    from edgecl.runtime.sinks import JsonlSink

    with pytest.raises(ConfigError) as err:
        JsonlSink("/dev/null/det.jsonl")
    assert str(err.value) == ("--out /dev/null/det.jsonl: /dev/null is not a folder (a device "
                              "or a pipe)")
    (tmp_path / "flight").write_text("")
    with pytest.raises(ConfigError) as err:
        JsonlSink(tmp_path / "flight" / "det.jsonl")
    assert str(err.value) == (f"--out {tmp_path / 'flight' / 'det.jsonl'}: {tmp_path / 'flight'} "
                              f"is a file where a folder belongs (move it aside)")


def test_out_on_a_pipe_nobody_reads_is_refused_at_once_and_its_lock_file_goes(tmp_path):
    """Before: '--out FIFO' waited for a reader for ever (no frame, no word); and every run, a
    refused one too, left a hidden '.FILE.lock' in the user's folder."""
    import os

    from edgecl.errors import ConfigError

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError, match=r"^--out .*pipe: a named pipe \(FIFO\) nobody reads: "
                                          r"start its reader first, or name a file$"):
        JsonlSink(tmp_path / "pipe")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ConfigError, match="is not JSON lines"):
        JsonlSink(tmp_path / "notes.txt")
    sink = JsonlSink(tmp_path / "det.jsonl")
    assert (tmp_path / ".det.jsonl.lock").exists()  # held while it writes
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.jsonl", "notes.txt", "pipe"]
