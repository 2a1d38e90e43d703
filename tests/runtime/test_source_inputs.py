"""Bad and unusual inputs users point ``edgecl run`` at: 16-bit thermal images, video files cut
short or with no frame, folders of videos, missing cameras, streams that do not answer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.config import SourceConfig
from edgecl.errors import SourceError
from edgecl.runtime.sources import open_source


def _thermal(path: Path) -> None:
    """A 14-bit thermal frame: counts 7000 (left), 8000 (middle) and 9000 (right), 48 x 96."""
    counts = np.full((48, 96), 7000, np.uint16)
    counts[:, 32:64], counts[:, 64:] = 8000, 9000
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), counts)


# --- 16-bit images --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["thermal.png", "thermal.tif"])
def test_a_16bit_thermal_frame_is_stretched_by_its_own_range(tmp_path, name):
    """Before: the high byte only, 7000 >> 8 = 27, 8000 >> 8 = 31, 9000 >> 8 = 35 (all but
    black). Now 7000 -> 0, 8000 -> (1000 * 255 + 1000) // 2000 = 128, 9000 -> 255."""
    _thermal(tmp_path / name)
    with open_source(f"dir://{tmp_path}") as source:
        frame = source.read()
    assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 96, 3)
    assert [tuple(frame.image[10, x]) for x in (0, 40, 80)] == [(0, 0, 0), (128, 128, 128),
                                                               (255, 255, 255)]


def test_a_16bit_colour_frame_is_stretched_over_all_channels_together(tmp_path):
    """B, G, R = 7000, 8000, 9000 everywhere but one pixel at 6000: lo 6000, hi 9000, span 3000;
    7000 -> (1000 * 255 + 1500) // 3000 = 85, 8000 -> (2000 * 255 + 1500) // 3000 = 170."""
    image = np.empty((8, 8, 3), np.uint16)
    image[...] = (7000, 8000, 9000)
    image[0, 0] = (6000, 6000, 6000)
    assert cv2.imwrite(str(tmp_path / "c16.png"), image)
    with open_source(f"dir://{tmp_path}") as source:
        frame = source.read()
    assert tuple(frame.image[4, 4]) == (85, 170, 255) and tuple(frame.image[0, 0]) == (0, 0, 0)


def test_a_flat_16bit_frame_keeps_its_high_byte(tmp_path):
    """Nothing to stretch (a lens cap): 8000 >> 8 = 31, not a division by zero."""
    assert cv2.imwrite(str(tmp_path / "flat.png"), np.full((8, 8), 8000, np.uint16))
    with open_source(f"dir://{tmp_path}") as source:
        assert int(source.read().image.max()) == 31


def test_a_still_image_given_as_file_is_read_as_a_folder_reads_it(tmp_path, caplog):
    """Before: ``file://IMAGE`` went to FFmpeg as a one-frame video: an EXIF-6 photo shown
    160 x 120 came 120 x 160 (sideways), a truncated JPEG came grey-filled, a 16-bit PNG in
    stripes. Now it is read as ``dir://`` reads it, its YOLO labels with it."""
    from PIL import Image

    stored = np.zeros((160, 120, 3), np.uint8)  # as stored: 120 wide, 160 high
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 160 wide, 120 high
    Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=90, exif=exif.tobytes())
    (tmp_path / "photo.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    with open_source(f"file://{tmp_path / 'photo.jpg'}") as source:
        frame = source.read()
        assert source.read() is None
    assert frame.image.shape == (120, 160, 3) and frame.name == "photo.jpg"
    assert frame.labels.tolist() == [[0, 0.5, 0.5, 0.25, 0.25]]
    _thermal(tmp_path / "t.png")
    with open_source(f"file://{tmp_path / 't.png'}") as source:
        image = source.read().image
    assert [tuple(image[10, x]) for x in (0, 40, 80)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    with open_source(f"file://{tmp_path / 'cut.jpg'}") as source:
        assert source.read() is None and source.stats.skipped == 1
    assert "truncated JPEG" in caplog.text


def _thermal_video(path: Path, frames: int = 3, fourcc: str = "FFV1") -> None:
    """A 16-bit grey video (a radiometric thermal recording), counts as :func:`_thermal`: FFV1
    stores ``gray16le``, PNG frames (``png ``, in a MOV) ``gray16be``."""
    counts = np.full((48, 96), 7000, np.uint16)
    counts[:, 32:64], counts[:, 64:] = 8000, 9000
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), 10, (96, 48),
                             [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0])
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write 16-bit {fourcc.strip()} video")
    for _ in range(frames):
        writer.write(counts)
    writer.release()


@pytest.mark.parametrize("fourcc, name", [("FFV1", "thermal.mkv"), ("png ", "thermal.mov")])
def test_a_16bit_thermal_video_is_stretched_as_its_images_are(tmp_path, fourcc, name):
    """Before: FFmpeg's 8-bit conversion kept the high byte, 27, 31 and 35 (a near-black frame);
    a big-endian one (16-bit PNG frames) came out in vertical stripes (OpenCV's raw output gave
    half of each frame's bytes as pixels). Now each frame is stretched by its own range, as a
    16-bit image: 0, 128, 255."""
    _thermal_video(tmp_path / name, fourcc=fourcc)
    with open_source(f"file://{tmp_path / name}?loop=1") as source:
        frames = [source.read() for _ in range(4)]  # the 4th after a loop's reopening
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 96, 3)
        assert [tuple(frame.image[10, x]) for x in (0, 40, 80)] == [(0, 0, 0), (128, 128, 128),
                                                                   (255, 255, 255)]


@pytest.mark.parametrize("tag, deep", [
    (b"Y1\0\x10", True), (b"Y1\0\x0c", True), (b"\x10\x001Y", True), (b"Y1\0\x08", False),
    (b"I420", False), (b"BGR\x18", False)])
def test_deep_gray_pixel_formats_by_ffmpeg_tag(tag, deep):
    """FFmpeg's raw tags (libavcodec raw.c): gray16le, gray12le, gray16be; gray8, yuv420p, bgr24."""
    from edgecl.runtime.sources.files import deep_gray_format

    assert deep_gray_format(float(int.from_bytes(tag, "little"))) is deep
    assert deep_gray_format(float("nan")) is False and deep_gray_format(-1.0) is False


@pytest.mark.parametrize("tag, big_endian", [
    (b"\x10\x001Y", True), (b"\x0c\x001Y", True), (b"Y1\0\x10", False), (b"Y1\0\x08", False),
    (b"\x08\x001Y", False), (b"I420", False)])
def test_big_endian_deep_gray_pixel_formats_by_ffmpeg_tag(tag, big_endian):
    """gray16be and gray12be are read packet by packet; gray16le and 8-bit grey are not."""
    from edgecl.runtime.sources.files import big_endian_gray_format

    assert big_endian_gray_format(float(int.from_bytes(tag, "little"))) is big_endian
    assert big_endian_gray_format(float("nan")) is False


def test_a_16bit_frame_reaches_the_replay_memory_stretched(tmp_path, run_edgecl):
    """End to end: ``edgecl run`` stores the labelled thermal frame (a JPEG at quality 90) with
    its three bands near 0, 128 and 255 (before: 27, 31 and 35)."""
    _thermal(tmp_path / "data" / "images" / "t.png")
    (tmp_path / "data" / "labels").mkdir()
    (tmp_path / "data" / "labels" / "t.txt").write_text("")  # labelled: background
    state = tmp_path / "state"
    code, out, err = run_edgecl(["run", "--state-dir", state, "--source", f"dir://{tmp_path / 'data'}",
                                 "--model", "yolo11n.yaml", "--json", "--quiet", "model.imgsz=64",
                                 "learner.enabled=false"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["frames"] == 1
    [stored] = sorted((state / "memory" / "images").iterdir())
    image = cv2.imread(str(stored))
    means = [float(image[:, x0 + 8:x0 + 24].mean()) for x0 in (0, 32, 64)]
    assert abs(means[0] - 0) <= 3 and abs(means[1] - 128) <= 3 and abs(means[2] - 255) <= 3


# --- video files ------------------------------------------------------------------------------

def _mjpg_avi(path: Path, n: int) -> list[int]:
    """An MJPG AVI of ``n`` frames 64 x 48 (frame k is grey 10 + 5 k); returns where each
    frame's JPEG data starts in the file."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((48, 64, 3), 10 + 5 * k, np.uint8))
    writer.release()
    data = path.read_bytes()
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == n
    return starts


def test_a_video_cut_short_ends_with_one_warning_naming_where(tmp_path, caplog):
    """A 30-frame recording cut where frame 20's chunk starts (its header still declares 30):
    20 frames, then one warning; before, it ended silently."""
    path = tmp_path / "flight.avi"
    starts = _mjpg_avi(path, 30)
    path.write_bytes(path.read_bytes()[:starts[20] - 8])  # the chunk id and size of frame 20 go too
    with open_source(f"file://{path}?loop=1") as source:
        names = [source.read().name for _ in range(25)]
    assert names[:20] == [f"flight_{k:06d}" for k in range(20)] and names[20] == "flight_000000"
    warnings = [r.getMessage() for r in caplog.records if "header declares" in r.getMessage()]
    assert warnings == [f"file://{path}?loop=1: flight.avi ends after frame 20 of the 30 its header "
                        f"declares: the last 10 are missing or do not decode (a file cut short?)"]


def test_a_whole_video_ends_without_a_warning(tmp_path, caplog):
    path = tmp_path / "whole.avi"
    _mjpg_avi(path, 12)
    with open_source(f"file://{path}") as source:
        assert len(list(source)) == 12
    assert "header declares" not in caplog.text


def test_a_video_with_no_frame_says_its_header_declares_none(tmp_path, caplog):
    path = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.release()
    with open_source(f"file://{path}") as source:
        assert source.read() is None
    assert "no frame of zero.avi decodes (30 reads failed; its header declares 0 frames): the file " \
           "holds none, or none this OpenCV build decodes" in caplog.text


def _mp4(path: Path, n: int = 5) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((48, 64, 3), 20 + 40 * k, np.uint8))
    writer.release()
    return path.read_bytes()


def test_a_video_that_cannot_be_opened_says_why_and_what_to_do(tmp_path):
    """Before, all three read '(unsupported format or corrupt)'."""
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError) as info:
        open_source(f"file://{empty}").open()
    assert str(info.value) == f"file://{empty}: cannot open video {empty}: the file is empty (0 bytes)"
    with pytest.raises(SourceError) as info:  # before: "the file is empty (0 bytes)" too
        open_source("file:///dev/zero").open()
    assert str(info.value).endswith("a device that gives no video OpenCV can open (a camera is "
                                    "v4l2://N)")

    cut = tmp_path / "cut.mp4"
    data = _mp4(cut)
    cut.write_bytes(data[:data.index(b"moov") - 4])  # ftyp, free, mdat: the index, written last, is lost
    with pytest.raises(SourceError) as info:
        open_source(f"file://{cut}").open()
    assert str(info.value) == (
        f"file://{cut}: cannot open video {cut}: an MP4/MOV without its index (no 'moov' box): a "
        f"recording stopped before it was finalised (power loss, full card); a tool such as untrunc "
        f"rebuilds the index with a good recording of the same camera")

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError) as info:
        open_source(f"file://{junk}").open()
    assert str(info.value) == (f"file://{junk}: cannot open video {junk}: unsupported format or "
                               f"corrupt; check that it plays (ffprobe tells why)")


def test_a_broken_video_prints_edgecls_one_line_not_ffmpegs_log(tmp_path):
    """Before: FFmpeg's own line ('[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55f3...] moov atom not found')
    came before edgecl's error, which already says what and where."""
    cut = tmp_path / "cut.mp4"
    data = _mp4(cut)
    cut.write_bytes(data[:data.index(b"moov") - 4])
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    proc = subprocess.run([sys.executable, "-m", "edgecl.cli", "run", "--source", f"file://{cut}",
                           "--model", "yolo11n.yaml", "--state-dir", str(tmp_path / "state"),
                           "--frames", "1", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if " INFO " not in line
             and " WARNING " not in line]
    assert lines == [f"error: file://{cut}: cannot open video {cut}: an MP4/MOV without its index "
                     f"(no 'moov' box): a recording stopped before it was finalised (power loss, "
                     f"full card); a tool such as untrunc rebuilds the index with a good recording "
                     f"of the same camera"]


def test_damaged_mjpeg_frames_print_no_ffmpeg_line_each(tmp_path):
    """Before: FFmpeg's MJPEG decoder logged 'No JPEG data found in image' at its fatal level,
    one line per damaged frame, for as long as the stream ran."""
    path = tmp_path / "mj.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for k in range(20):
        writer.write(np.random.default_rng(k).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xd8"]
    for a, b in zip(starts[3:8], starts[4:9]):  # 5 frames' JPEG data zeroed
        data[a:b - 16] = bytes(b - 16 - a)
    path.write_bytes(bytes(data))
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    proc = subprocess.run([sys.executable, "-m", "edgecl.cli", "run", "--source", f"file://{path}",
                           "--model", "yolo11n.yaml", "--state-dir", str(tmp_path / "state"),
                           "--quiet", "--json", "model.imgsz=64", "learner.enabled=false"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr  # OpenCV's logger wrote them to stdout, before the JSON
    assert "No JPEG data" not in output and "[mjpeg" not in output
    assert json.loads(proc.stdout.strip().splitlines()[-1])["frames"] == 15


def test_a_folder_of_videos_points_to_file_uris(tmp_path):
    _mp4(tmp_path / "a.mp4")
    _mp4(tmp_path / "b.MP4")
    (tmp_path / "notes.doc").write_text("x")
    with pytest.raises(SourceError) as info:
        open_source(f"dir://{tmp_path}")
    assert str(info.value).endswith(
        f"any case) under {tmp_path}; it holds 3 other file(s) (.mp4: 2, .doc: 1); a video is read "
        f"with file://PATH, one file per run")


# --- cameras and streams ----------------------------------------------------------------------

def test_a_missing_camera_lists_the_cameras_there_are(tmp_path, monkeypatch):
    from edgecl.runtime.sources import live

    monkeypatch.setattr(live, "DEV_DIR", tmp_path)
    with pytest.raises(SourceError) as info:
        open_source("v4l2://99")
    assert str(info.value) == (f"v4l2://99: no such camera device {tmp_path}/video99 (no "
                               f"{tmp_path}/video* device here: is the camera plugged in and its "
                               f"driver loaded?)")
    for name in ("video10", "video2", "video0"):
        (tmp_path / name).write_text("")
    with pytest.raises(SourceError) as info:
        open_source("v4l2://99")
    assert str(info.value).endswith(f"(cameras here: {tmp_path}/video0, {tmp_path}/video2, "
                                    f"{tmp_path}/video10)")


class _Unopenable:
    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return False

    def read(self):
        return False, None

    def release(self):
        pass


@pytest.mark.parametrize("uri, hint", [
    ("rtsp://127.0.0.1:9/none", "it refused or did not answer within 10 s: check the host, port and "
                                "path, that the camera is on and reachable from here (ping, ffprobe), "
                                "and its user and password"),
    ("v4l2://0", "is another program using it, may this user open it (the 'video' group), and does "
                 "it capture frames (a USB camera's second node carries metadata only; v4l2-ctl "
                 "--list-devices)?"),
    ("csi://0", "is the sensor connected and nvargus-daemon running? (sudo systemctl restart "
                "nvargus-daemon)"),
])
def test_a_camera_that_cannot_be_opened_says_what_to_check(uri, hint):
    source = open_source(uri, SourceConfig(), capture_factory=_Unopenable, sleep=lambda s: None)
    with pytest.raises(SourceError) as info:
        source.open()
    assert str(info.value) == f"{uri}: cannot open the camera/stream; {hint}"


def test_a_linked_folder_of_images_is_read_and_a_link_back_ends_the_walk(tmp_path):
    """Before: a folder whose images sit behind a link (an SD card's DCIM linked into the
    dataset) gave 'no images'; a link back to a parent must still not loop."""
    from edgecl.data.yolo_dataset import find_dataset

    card = tmp_path / "sdcard" / "DCIM"
    card.mkdir(parents=True)
    frame = np.zeros((8, 8, 3), np.uint8)
    for i in range(3):
        assert cv2.imwrite(str(card / f"{i}.jpg"), frame)
    folder = tmp_path / "flight"
    folder.mkdir()
    (folder / "linked").symlink_to(card)
    (folder / "loop").symlink_to(folder)
    (folder / ".hidden").mkdir()
    assert cv2.imwrite(str(folder / ".hidden" / "h.jpg"), frame)
    assert cv2.imwrite(str(folder / "top.jpg"), frame)
    images = find_dataset(folder).images()
    assert [p.relative_to(folder).as_posix() for p in images] == [
        "linked/0.jpg", "linked/1.jpg", "linked/2.jpg", "top.jpg"]


def test_a_folder_whose_images_link_leads_nowhere_says_which_link(tmp_path):
    """Before: 'no images ... it holds 1 other file(s) ((no suffix): 1)' while the flight's
    images/ was linked to a card not mounted; now the error names the link and its target."""
    folder = tmp_path / "flight"
    folder.mkdir()
    (folder / "images").symlink_to(tmp_path / "nocard" / "DCIM")
    with pytest.raises(SourceError) as info:
        open_source(f"dir://{folder}")
    assert str(info.value).endswith(f"under {folder}: {folder / 'images'} is a symbolic link to "
                                    f"{tmp_path / 'nocard' / 'DCIM'}, which does not exist (unmounted?)")


def test_a_folder_of_which_no_frame_reads_says_so_last_and_fails(tmp_path, run_edgecl):
    """Before: one warning per file scrolled past, then a summary with frames=0 and nothing
    saying that the whole folder was unreadable; then the warning, and exit 0 (a supervisor
    read success, where a video that does not open is exit 2)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"f{i}.jpg").write_text("not an image")
    code, out, err = run_edgecl(["run", "--source", f"dir://{folder}", "--model", "yolo11n.yaml",
                                 "model.imgsz=64", "--json", "--quiet"])
    said = (f"no frame of dir://{folder} could be read: 3 file(s) skipped (why is in the "
            f"warnings above)")
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and summary["frames"] == 0 and summary["source_error"] == said
    assert err.splitlines()[-1] == f"error: {said}"


def test_a_refused_start_leaves_no_new_state_directory_behind(tmp_path, run_edgecl):
    """Before: 'edgecl run --state-dir NEW' with a bad model or source refused in one line but
    left NEW/ with lock files, which a later look took for a device's state."""
    (tmp_path / "bad.pt").write_bytes(b"x")
    for argv in (["--model", tmp_path / "bad.pt", "--source", "synthetic://"],
                 ["--model", "yolo11n.yaml", "--source", "/no/such/source"]):
        code, _, err = run_edgecl(["run", "--state-dir", tmp_path / "new", *argv, "--frames", "1"])
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
        assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, _ = run_edgecl(["run", "--state-dir", tmp_path / "mine", "--model", tmp_path / "bad.pt",
                             "--source", "synthetic://", "--frames", "1"])
    assert code == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_named_pipe_given_as_a_video_file_is_refused_not_waited_on(tmp_path):
    """Before: file:// of a FIFO with no writer blocked in the kernel's open, and neither
    Ctrl-C nor SIGTERM could stop the run (only SIGKILL)."""
    import os

    import pytest

    from edgecl.errors import SourceError
    from edgecl.runtime.sources import open_source

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SourceError) as err:
        open_source(f"file://{fifo}")
    assert str(err.value) == (f"file://{fifo}: {fifo} is a named pipe (FIFO), not a video file; a "
                              f"camera or a stream is opened by its own URI (v4l2://, rtsp://, "
                              f"csi://)")


def _looping_camera_folder(tmp_path):
    """A folder of 3 PNG frames streamed by ``dir://...?loop=1``: ``(folder, uri, opened
    source)``."""
    import cv2
    import numpy as np

    from edgecl.runtime.sources import open_source

    folder = tmp_path / "cam"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((32, 32, 3), 60 * k, np.uint8))
    uri = f"dir://{folder}?loop=1"
    source = open_source(uri)
    source.open()
    return folder, uri, source


def test_a_looping_folder_whose_files_went_away_is_a_failure_not_an_end(tmp_path, monkeypatch):
    """Before: the run ended with exit code 0 and no reason (a supervisor restarting on failure
    would not restart it), as if the folder had been read to its end."""
    import pytest

    from edgecl.errors import SourceError

    folder, uri, source = _looping_camera_folder(tmp_path)
    try:
        assert [source.read() is not None for _ in range(4)] == [True] * 4  # a second pass
        for p in folder.iterdir():
            p.unlink()
        from edgecl.runtime.sources import files

        monkeypatch.setattr(files, "FOLDER_GONE_WAIT_S", 0.5)  # gone at once: waited for first
        with pytest.raises(SourceError) as err:
            for _ in range(10):
                source.read()
        assert str(err.value) == (f"{uri}: the folder {folder} or its images are gone and did "
                                  f"not come back within 0.5 s")
    finally:
        source.close()


@pytest.mark.parametrize("uri, why", [
    ("rtsp://127.0.0.1:99999/x", "its host and port are malformed (Port out of range 0-65535)"),
    ("rtsp://user:pw@[::1:554/x", "its host and port are malformed (Invalid IPv6 URL)"),
    ("rtsp://cam:0/x", "port 0 names no stream"),
])
def test_a_malformed_stream_address_is_named_at_once(uri, why):
    """Before: FFmpeg waited its 10 s on them, and the error sent the user to check that the
    camera is on and reachable."""
    from edgecl.errors import SourceError
    from edgecl.runtime.sources import open_source

    with pytest.raises(SourceError) as err:
        open_source(uri)
    assert why in str(err.value) and "pw" not in str(err.value)


def test_a_percent_in_a_source_path_is_decoded_only_where_the_path_as_written_is_not_there(tmp_path):
    """Before: 'dir://.../flight%203' was always percent-decoded and refused a folder named
    so ("no such file or directory: .../flight 3"). A path that exists as written is taken
    as written; one that exists decoded ('with%20space' for 'with space') is decoded."""
    for folder in ("flight%203", "with space"):
        (tmp_path / folder).mkdir()
        assert cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    for written in ("flight%203", "with%20space", "with space"):
        with open_source(f"dir://{tmp_path / written}") as source:
            assert source.read().name == "a.png"


def test_a_parameter_given_twice_is_refused_and_an_empty_choice_is_named(tmp_path):
    """Before: '?loop=1&loop=0' took the last value without a word, and a bad fourcc listed
    'one of , MJPG, ...' (the empty choice shown as nothing)."""
    from edgecl.errors import SourceError

    assert cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError) as err:
        open_source(f"dir://{tmp_path}?loop=1&loop=0")
    assert str(err.value).endswith(": parameter 'loop' given more than once; give it once")
    with pytest.raises(SourceError) as err:
        open_source("v4l2://0?fourcc=XXXXX", capture_factory=lambda: None)
    assert str(err.value) == ("v4l2://0?fourcc=XXXXX: parameter 'fourcc' must be one of MJPG, "
                              "YUYV, H264, Y16, empty, got 'XXXXX'")


def test_a_question_mark_in_a_file_name_is_part_of_the_path_where_only_that_exists(tmp_path):
    """Before: 'file://.../big 4k?.mp4' read '.mp4' as a query: "unknown parameter '.mp4'"."""
    assert cv2.imwrite(str(tmp_path / "shot?.png"), np.zeros((8, 8, 3), np.uint8))
    with open_source(f"file://{tmp_path / 'shot?.png'}") as source:
        assert source.read().name == "shot?.png"
    assert cv2.imwrite(str(tmp_path / "plain.png"), np.zeros((8, 8, 3), np.uint8))
    with open_source(f"file://{tmp_path / 'plain.png'}?loop=1") as source:  # a real query
        assert source.read() is not None and source.read() is not None


def test_opencvs_own_warnings_are_not_printed_by_a_command(tmp_path):
    """Before: OpenCV's own lines ('[ WARN:1@30.027] global cap_ffmpeg_impl.hpp:435 ... Stream
    timeout triggered' for a stalled RTSP stream, '... can't be used to capture by name' here)
    reached the terminal beside edgecl's one line about the same thing."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL",
                                                            "OPENCV_FFMPEG_LOGLEVEL")}
    script = ("from edgecl.cli import _quiet_video_library\n"
              "_quiet_video_library()  # as the command line does before OpenCV is imported\n"
              "import cv2\n"
              f"cv2.VideoCapture({str(tmp_path / 'none.mp4')!r}, cv2.CAP_FFMPEG)\n"
              "print('done')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert "WARN" not in proc.stderr


def test_a_looping_folder_streams_the_images_added_since_the_last_pass(tmp_path, caplog):
    """Before: a looping dir:// streamed the files of its start for ever (frames dropped into
    the folder by another process were never seen), and once those were deleted it ended with
    'a whole pass over its 2 image(s) read none' although new ones had arrived."""
    import logging

    caplog.set_level(logging.INFO, logger="edgecl.runtime.sources.files")
    folder = tmp_path / "drop"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    with open_source(f"dir://{folder}?loop=1") as source:
        names = [source.read().name, source.read().name]
        assert cv2.imwrite(str(folder / "c.png"), np.zeros((8, 8, 3), np.uint8))
        (folder / "a.png").unlink()
        names += [source.read().name for _ in range(3)]
        for name in ("b.png", "c.png"):
            (folder / name).unlink()
        assert cv2.imwrite(str(folder / "d.png"), np.zeros((8, 8, 3), np.uint8))
        names += [source.read().name for _ in range(2)]
    assert names == ["a.png", "b.png", "b.png", "c.png", "b.png", "d.png", "d.png"]
    assert "1 image(s) added and 1 gone since the last pass; 2 streamed from now" in caplog.text


@pytest.mark.parametrize("query, value", [("?loop", ""), ("?loop=", ""), ("?loop=maybe", "maybe")])
def test_a_loop_without_a_value_is_refused_not_read_as_off(tmp_path, query, value):
    """Before: '?loop' and '?loop=' played the folder once, silently (an empty value meant
    off), and the refusal of another word named only '0 or 1' of the six accepted."""
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError) as err:
        open_source(f"dir://{tmp_path}{query}")
    assert str(err.value) == (f"dir://{tmp_path}{query}: parameter 'loop' must be 0 or 1 (or "
                              f"true/false, yes/no, on/off), got '{value}'")
    with open_source(f"dir://{tmp_path}?loop=yes") as source:
        assert source is not None


def test_a_folders_fps_without_realtime_is_said_not_dropped(tmp_path, run_edgecl, caplog):
    """Before: 'dir://DIR?fps=1' ran at 17 fps without a word in a run that keeps no state."""
    import logging

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    uri = f"dir://{tmp_path}?fps=1"
    with caplog.at_level(logging.WARNING, logger="edgecl.commands.run"):
        code, _, _ = run_edgecl(["run", "--source", uri, "--model", "yolo11n.yaml",
                                 "model.imgsz=64", "--quiet"])
    assert code == 0
    assert (f"{uri}: its fps paces the folder only with runtime.realtime=true; this run reads "
            f"it as fast as it decodes") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecl.commands.run"):
        code, _, _ = run_edgecl(["run", "--source", uri, "--model", "yolo11n.yaml",
                                 "model.imgsz=64", "--quiet", "runtime.realtime=true"])
    assert code == 0 and "paces the folder only" not in caplog.text
    caplog.clear()  # a bad value is refused, not warned of first
    with caplog.at_level(logging.WARNING, logger="edgecl.commands.run"):
        code, _, err = run_edgecl(["run", "--source", f"dir://{tmp_path}?fps=", "--model",
                                   "yolo11n.yaml", "model.imgsz=64", "--quiet"])
    assert code == 2 and "fps" in err and "paces the folder only" not in caplog.text
    caplog.clear()  # fps=0 is no pacing: nothing to warn of (before: warned as a rate)
    with caplog.at_level(logging.WARNING, logger="edgecl.commands.run"):
        code, _, _ = run_edgecl(["run", "--source", f"dir://{tmp_path}?fps=0", "--model",
                                 "yolo11n.yaml", "model.imgsz=64", "--quiet"])
    assert code == 0 and "paces the folder only" not in caplog.text


def test_a_folder_that_goes_away_for_a_moment_is_waited_for_then_given_up(tmp_path, monkeypatch,
                                                                          caplog):
    """Before: a camera folder moved away for 25 s gave one warning per image, then ended the
    run at once ('a whole pass ... read none'), though it came back."""
    import logging
    import threading

    import pytest

    from edgecl.errors import SourceError
    from edgecl.runtime.sources import files

    monkeypatch.setattr(files, "FOLDER_GONE_WAIT_S", 2.0)
    folder, uri, source = _looping_camera_folder(tmp_path)
    try:
        assert source.read() is not None
        folder.rename(tmp_path / "away")
        threading.Timer(0.5, lambda: (tmp_path / "away").rename(folder)).start()
        with caplog.at_level(logging.WARNING):
            assert source.read() is not None  # waited, then went on
        said = [m for m in caplog.messages if "the folder" in m]
        assert said == [f"{uri}: the folder {folder} or its images are gone (an unmounted card, "
                        f"files moved away?): waiting up to 2 s for them to come back",
                        f"{uri}: the folder {folder} is back: streaming it again"]
        assert not [m for m in caplog.messages if "skipping image" in m]
        # a card unmounted under its mount point: the folder stays, empty (before: a warning
        # per image and the end at once, with the folder only waited for when it went itself)
        (tmp_path / "away").mkdir()
        for image in folder.iterdir():
            image.rename(tmp_path / "away" / image.name)
        threading.Timer(0.5, lambda: [p.rename(folder / p.name)
                                      for p in (tmp_path / "away").iterdir()]).start()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert source.read() is not None
        assert not [m for m in caplog.messages if "skipping image" in m]
        assert len([m for m in caplog.messages if "the folder" in m]) == 2
        folder.rename(tmp_path / "gone")
        with pytest.raises(SourceError) as err:
            source.read()
        assert str(err.value) == (f"{uri}: the folder {folder} or its images are gone and did "
                                  f"not come back within 2 s")
    finally:
        source.close()
