"""Frame sources: file://, dir://, synthetic://, live reconnection with a fake capture."""

import hashlib
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.config import SourceConfig
from edgecl.errors import SourceError
from edgecl.frames import StreamState
from edgecl.runtime.sources import SCHEMES, csi_pipeline, open_source


def _write_video(path: Path, n: int = 5) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((48, 64, 3), 20 + i * 40, np.uint8))
    writer.release()


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((16, 16, 3), value, np.uint8))


# --- file:// -----------------------------------------------------------------------------

def test_file_reads_all_frames_in_order(tmp_path):
    _write_video(tmp_path / "clip.mp4")
    source = open_source(f"file://{tmp_path}/clip.mp4")
    before = time.time()
    with source:
        frames = list(source)
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4]
    assert [round(float(f.image.mean()) / 40) for f in frames] == [0, 1, 2, 3, 4]  # 20 + 40 i
    assert frames[0].image.shape == (48, 64, 3)
    assert frames[2].name == "clip_000002" and frames[2].labels is None
    assert before <= frames[0].ts_s <= frames[-1].ts_s <= time.time()
    assert source.stats.read == 5 and source.state is StreamState.CLOSED
    assert source.read() is None


def test_file_loop_restarts(tmp_path):
    _write_video(tmp_path / "clip.mp4", n=3)
    source = open_source(f"file://{tmp_path}/clip.mp4?loop=1").open()
    frames = [source.read() for _ in range(7)]
    source.close()
    assert [round(float(f.image.mean()) / 40) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.frame_id for f in frames] == list(range(7))


def test_file_missing_directory_and_corrupt(tmp_path):
    with pytest.raises(SourceError, match=f"no such file or directory: {tmp_path}/nope.mp4"):
        open_source(f"file://{tmp_path}/nope.mp4")
    with pytest.raises(SourceError, match="is a directory"):
        open_source(f"file://{tmp_path}")
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 10)
    source = open_source(f"file://{tmp_path}/bad.mp4")
    with pytest.raises(SourceError, match=f"cannot open video {tmp_path}/bad.mp4"):
        source.open()


# --- dir:// ------------------------------------------------------------------------------

def test_dir_plain_images_in_name_order_recursive(tmp_path):
    for name, value in (("b.png", 2), ("a.png", 1), ("sub/d.png", 4), ("c.bmp", 3)):
        _png(tmp_path / name, value)
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(f"dir://{tmp_path}")
    frames = list(source)
    assert [f.name for f in frames] == ["a.png", "b.png", "c.bmp", "sub/d.png"]
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3, 4]
    assert all(f.labels is None for f in frames) and not source.labelled


def test_dir_frames_of_same_stem_keep_distinct_names(tmp_path):
    """Before, ``a.jpg``, ``a.png`` and ``sub/a.jpg`` were all frame ``a`` (in ``--out`` lines,
    queue items and memory samples' ``source``): which file a sample came from was lost."""
    for name, value in (("a.png", 1), ("a.bmp", 2), ("sub/a.png", 3)):
        _png(tmp_path / name, value)
    names = {f.name: int(f.image[0, 0, 0]) for f in open_source(f"dir://{tmp_path}")}
    assert names == {"a.bmp": 2, "a.png": 1, "sub/a.png": 3}


def test_a_process_out_of_file_descriptors_reads_the_image_again(tmp_path, monkeypatch, caplog):
    """Before, every image of a looping folder was skipped while the process had no file
    descriptor left (a connection flood), and the run ended as if the folder were done."""
    import errno

    from edgecl.data.images import ImageError
    from edgecl.runtime.sources import files

    for name, value in (("a.png", 1), ("b.png", 2)):
        _png(tmp_path / name, value)
    real, failures = files.read_image, {"left": 3}

    def flooded(path):
        if failures["left"]:
            failures["left"] -= 1
            error = ImageError(f"{path}: cannot read (Too many open files)")
            error.errno = errno.EMFILE
            raise error
        return real(path)

    monkeypatch.setattr(files, "read_image", flooded)
    monkeypatch.setattr(files, "TRANSIENT_RETRY_S", 0.0)
    source = open_source(f"dir://{tmp_path}")
    assert [int(f.image[0, 0, 0]) for f in source] == [1, 2]          # none skipped
    assert source.stats.read_retries == 3 and source.stats.skipped == 0
    assert caplog.text.count("cannot read images now") == 1


@pytest.fixture
def yolo_dir(tmp_path) -> Path:
    root = tmp_path / "ds"
    for i, name in enumerate(("f1", "f2", "f3", "f4", "f6")):
        _png(root / "images" / f"{name}.png", 10 * (i + 1))
    (root / "images" / "f5.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (root / "labels").mkdir()
    (root / "labels" / "f1.txt").write_text("0 0.5 0.5 0.2 0.4\n3 0.25 0.75 0.1 0.1\n")
    (root / "labels" / "f2.txt").write_text("")
    (root / "labels" / "f3.txt").write_text("1 0.5 0.5\n")  # malformed: 3 values
    (root / "labels" / "f6.txt").write_text("2 0.1 0.2 0.5 0.2 0.3 0.6\n")  # polygon
    return root


def test_dir_yolo_dataset_labels_skips_and_counts(yolo_dir):
    source = open_source(f"dir://{yolo_dir}")
    frames = {f.name: f for f in source}
    assert list(frames) == [f"images/f{i}.png" for i in (1, 2, 3, 4, 6)]
    np.testing.assert_allclose(frames["images/f1.png"].labels, [[0, 0.5, 0.5, 0.2, 0.4], [3, 0.25, 0.75, 0.1, 0.1]])
    assert frames["images/f2.png"].labels.shape == (0, 5)          # empty file: no objects
    assert frames["images/f3.png"].labels is None                  # malformed: unlabelled, counted
    assert frames["images/f4.png"].labels is None                  # no label file: unlabelled
    np.testing.assert_allclose(frames["images/f6.png"].labels, [[2, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
    assert source.stats.skipped == 1 and source.stats.bad_labels == 1 and source.stats.read == 5
    assert source.stats.refused_labels == 1
    assert [f.frame_id for f in frames.values()] == [0, 1, 2, 3, 4]


def test_dir_images_folder_with_sibling_labels(yolo_dir):
    frames = list(open_source(f"dir://{yolo_dir}/images"))
    assert frames[0].labels.shape == (2, 5)


def test_dir_loop_and_all_corrupt_ends(tmp_path):
    _png(tmp_path / "ok" / "a.png", 1)
    source = open_source(f"dir://{tmp_path}/ok?loop=true").open()
    assert [source.read().frame_id for _ in range(3)] == [0, 1, 2]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    looping = open_source(f"dir://{tmp_path}/bad?loop=1").open()
    assert looping.read() is None and looping.stats.skipped == 1
    assert looping.state is StreamState.EXHAUSTED


def test_dir_missing_and_empty(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path}/absent"):
        open_source(f"dir://{tmp_path}/absent")
    with pytest.raises(SourceError, match="no images"):
        open_source(f"dir://{tmp_path}")


def _roboflow(root: Path, with_yaml: bool = True) -> Path:
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        for i in range(n):
            _png(root / split / "images" / f"{split}{i}.jpg", 10 + i)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.2\n")
    if with_yaml:  # what Roboflow writes: paths relative to a folder above the yaml
        (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n"
                                        "test: ../test/images\nnc: 2\nnames: ['car', 'person']\n")
    return root


def test_dir_other_formats_read_any_case_and_non_images_counted(tmp_path, caplog):
    img = np.full((16, 16, 3), 90, np.uint8)
    for name in ("a.tif", "b.TIF", "c.TIFF", "d.webp", "e.JPG"):
        ok, data = cv2.imencode("." + name.rsplit(".", 1)[1].lower(), img)
        (tmp_path / name).write_bytes(data.tobytes())
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_source(f"dir://{tmp_path}")
    assert [f.name for f in source] == ["a.tif", "b.TIF", "c.TIFF", "d.webp", "e.JPG"]
    assert source.stats.read == 5 and source.stats.ignored_files == 1 and source.stats.skipped == 0
    assert "1 files are not images" in caplog.text and ".gif: 1" in caplog.text


def test_a_link_to_nothing_in_an_image_folder_is_said_as_such(tmp_path, caplog):
    """Before: a dangling ``gone.jpg`` link read "1 files are not images ultralytics reads
    (.jpg: 1)"."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((16, 16, 3), 90, np.uint8))
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    source = open_source(f"dir://{tmp_path}")
    assert [f.name for f in source] == ["a.jpg"]
    assert "not images ultralytics reads" not in caplog.text
    assert (f"1 entries are not regular files (links to nothing, FIFOs, devices) and are not "
            f"streamed, e.g. {tmp_path.resolve() / 'gone.jpg'}") in caplog.text


def test_dir_label_rule_bom_clip_and_refused_count(tmp_path, caplog):
    for name in ("a", "b"):
        _png(tmp_path / "images" / f"{name}.png", 50)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes("\ufeff0 0.5 0.5 1.0000001 0.2\n".encode())
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 3 0.2\n1 x 0.5 0.2 0.2\n")
    source = open_source(f"dir://{tmp_path}")
    frames = {f.name: f for f in source}
    np.testing.assert_allclose(frames["images/a.png"].labels, [[0, 0.5, 0.5, 1.0, 0.2]], atol=1e-6)
    assert frames["images/b.png"].labels is None
    assert source.stats.refused_labels == 2 and source.stats.bad_labels == 1
    assert f"{tmp_path / 'labels' / 'b.txt'}:2: coordinates" in caplog.text


def test_dir_data_yaml_streams_splits_with_labels(tmp_path):
    root = _roboflow(tmp_path / "rf")
    for uri in (f"dir://{root}/data.yaml", f"dir://{root}"):
        source = open_source(uri)
        frames = list(source)
        assert [f.name.rsplit("/", 1)[1] for f in frames] == [
            "train0.jpg", "train1.jpg", "train2.jpg", "valid0.jpg", "valid1.jpg", "test0.jpg"]
        assert frames[0].name == "train/images/train0.jpg"
        assert all(f.labels is not None and f.labels.shape == (1, 5) for f in frames)
        assert source.names == {0: "car", 1: "person"} and source.labelled
    valid = list(open_source(f"dir://{root}?split=val"))
    assert [f.name for f in valid] == ["valid/images/valid0.jpg", "valid/images/valid1.jpg"]
    # Roboflow's own folder name (before: "parameter 'split' must be one of all, train, ...")
    assert [f.name for f in open_source(f"dir://{root}?split=valid")] == [f.name for f in valid]


def test_a_box_with_no_area_is_dropped_and_the_frame_keeps_its_others(tmp_path, caplog):
    """Before: one zero-size row (an accidental click) delivered the frame unlabelled, its good
    car box lost with it."""
    _png(tmp_path / "images" / "a.png", 50)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.25 0.26 0.25 0.3125\n1 0.6 0.6 0 0\n")
    source = open_source(f"dir://{tmp_path}")
    (frame,) = list(source)
    np.testing.assert_allclose(frame.labels, [[0, 0.25, 0.26, 0.25, 0.3125]], atol=1e-6)
    assert source.stats.empty_boxes == 1 and source.stats.bad_labels == 0
    assert "dropped 1 box(es) with no area" in caplog.text and "a.txt:2: box" in caplog.text


def test_a_class_id_the_dataset_does_not_name_is_a_refused_row(tmp_path):
    root = _roboflow(tmp_path / "rf")
    (root / "train" / "labels" / "train1.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    for uri in (f"dir://{root}/data.yaml",):
        source = open_source(uri)
        frames = {Path(f.name).stem: f for f in source}
        # before: delivered with its class-7 box (a tasks:// source dropped it, counting nothing)
        assert frames["train1"].labels is None and source.stats.refused_labels == 1
        assert frames["train0"].labels.shape == (1, 5)


def test_dir_data_yaml_with_path_and_list_file(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        _png(root / "images" / "train" / f"t{i}.png", i)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"t{i}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "val.txt").write_text("./images/train/t2.png\n")
    yaml_path = tmp_path / "elsewhere" / "my.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: val.txt\nnames: {{0: boat}}\n")
    source = open_source(f"dir://{yaml_path}?split=val")
    frames = list(source)
    assert [f.name for f in frames] == ["images/train/t2.png"] and frames[0].labels.shape == (1, 5)
    with pytest.raises(SourceError, match="'val' path not found"):
        yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: nowhere\nnames: [boat]\n")
        open_source(f"dir://{yaml_path}")


def test_dir_roboflow_layout_without_yaml(tmp_path):
    root = _roboflow(tmp_path / "rf", with_yaml=False)
    frames = list(open_source(f"dir://{root}"))
    assert len(frames) == 6 and all(f.labels is not None for f in frames)
    assert [f.name for f in open_source(f"dir://{root}?split=test")] == ["test/images/test0.jpg"]


def test_dir_missing_labels_warning_names_path(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    _png(tmp_path / "ds" / "images" / "a.png", 1)
    _png(tmp_path / "ds" / "images" / "b.png", 2)
    source = open_source(f"dir://{tmp_path}/ds/images")
    assert not source.labelled
    assert f"looked for {tmp_path / 'ds' / 'labels' / 'a.txt'}" in caplog.text
    (tmp_path / "ds" / "labels").mkdir()
    (tmp_path / "ds" / "labels" / "a.txt").write_text("")
    caplog.clear()
    source = open_source(f"dir://{tmp_path}/ds")
    assert source.labelled
    assert f"1 of 2 images have no label file (e.g. looked for {tmp_path / 'ds' / 'labels' / 'b.txt'})" in caplog.text


def test_dir_voc_folder_hints_import(tmp_path, caplog):
    _png(tmp_path / "JPEGImages" / "a.jpg", 1)
    (tmp_path / "Annotations").mkdir()
    open_source(f"dir://{tmp_path}")
    assert "no YOLO labels found" in caplog.text and "edgecl dataset import" in caplog.text
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_a_folder_of_plain_frames_is_a_recording_not_a_warning(tmp_path, caplog):
    """Before: every start of a field-mode device on a folder of frames warned that they stream
    unlabelled, which is what field mode is for (the runtime warns when nothing would label
    them: labels.mode ground_truth or off)."""
    caplog.set_level(logging.INFO)
    _png(tmp_path / "rec" / "a.jpg", 1)
    open_source(f"dir://{tmp_path}/rec")
    assert [(r.levelname, "no YOLO labels found" in r.getMessage()) for r in caplog.records] == [
        ("INFO", True)]


def test_tasks_accepts_data_yaml_as_one_task(tmp_path):
    root = _roboflow(tmp_path / "rf")
    source = open_source(f"tasks://{root}/data.yaml?split=val")
    frames = list(source)
    assert [f.task for f in frames] == ["stream", "stream"] and all(f.labels is not None for f in frames)
    assert source.names == {0: "car", 1: "person"}
    assert len(list(open_source(f"tasks://{root}"))) == 3  # a folder: train split by default


# --- synthetic:// ------------------------------------------------------------------------

URI = "synthetic://?tasks=2&images_per_task=5&imgsz=48&seed=4"


def test_synthetic_labels_tasks_and_determinism():
    first, second = list(open_source(URI)), list(open_source(URI))
    assert len(first) == 10
    assert [f.task for f in first] == ["t1"] * 5 + ["t2"] * 5
    assert all(f.labels is not None and f.labels.shape[1] == 5 for f in first)
    assert sum(len(f.labels) for f in first) > 0
    digest = [hashlib.sha256(f.image.tobytes()).hexdigest() for f in first]
    assert digest == [hashlib.sha256(f.image.tobytes()).hexdigest() for f in second]
    assert first[0].image.shape == (48, 48, 3) and first[0].source == URI


def test_synthetic_loop_split_and_pacing():
    waits = []
    uri = "synthetic://?tasks=2&images_per_task=14&imgsz=48&seed=4&loop=1&fps=50&split=test"
    source = open_source(uri, sleep=lambda s: (waits.append(s), time.sleep(s))).open()
    assert source.is_live
    frames = [source.read() for _ in range(5)]  # 2 test frames per task: t1, t1, t2, t2, t1...
    assert [f.name for f in frames] == ["t1_test_00000", "t1_test_00001", "t2_test_00000",
                                        "t2_test_00001", "t1_test_00000"]
    assert np.array_equal(frames[0].image, frames[4].image)
    assert len(waits) >= 3 and all(0 < w <= 0.02 + 1e-6 for w in waits)


@pytest.mark.parametrize("uri, match", [
    ("synthetic://?tasks=7", "tasks x classes_per_task"),
    ("synthetic://?fps=-1", "'fps' must be 0 \\(none\\) or a rate of 0.01 to 1000"),
    ("synthetic://?speed=3", "unknown parameter 'speed'"),
    ("synthetic://?split=dev", "'split' must be one of all, train, val, test"),
])
def test_synthetic_bad_parameters(uri, match):
    with pytest.raises(SourceError, match=match):
        open_source(uri)


# --- schemes and lifecycle -------------------------------------------------------------------

def test_unknown_scheme_lists_supported_and_missing_scheme():
    with pytest.raises(SourceError) as info:
        open_source("ftp://host/x")
    for scheme in SCHEMES:
        assert f"{scheme}://" in str(info.value)
    assert set(SCHEMES) == {"file", "dir", "v4l2", "csi", "rtsp", "synthetic", "tasks"}
    with pytest.raises(SourceError, match="has no scheme"):
        open_source("/tmp/video.mp4")


def test_read_before_open_and_after_close():
    source = open_source(URI)
    with pytest.raises(SourceError, match="before open"):
        source.read()
    source.open()
    assert source.read().frame_id == 0
    source.close()
    source.close()
    assert source.read() is None and source.state is StreamState.CLOSED


# --- live sources with a fake capture ---------------------------------------------------------

class FakeCamera:
    """Shared script for the captures a factory creates: the first ``fail_reads`` reads fail."""

    def __init__(self, fail_reads=0, fail_opens=0, fail_after=None):
        self.fail_reads, self.fail_opens, self.fail_after = fail_reads, fail_opens, fail_after
        self.reads = self.opens = self.released = 0

    def factory(self):
        self.opens += 1
        return FakeCapture(self, opened=self.opens > self.fail_opens)


class FakeCapture:
    def __init__(self, camera, opened):
        self.camera, self.opened = camera, opened

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self):
        cam = self.camera
        cam.reads += 1
        failing = cam.reads <= cam.fail_reads or (cam.fail_after is not None and cam.reads > cam.fail_after)
        return (False, None) if failing else (True, np.full((4, 4, 3), cam.reads, np.uint8))

    def release(self):
        self.camera.released += 1


CFG = SourceConfig(reconnect_initial_s=0.5, reconnect_max_s=2.0, max_consecutive_failures=10)


def test_a_live_16bit_thermal_frame_is_stretched(monkeypatch, tmp_path):
    """A Y16 thermal core (``v4l2://0?fourcc=Y16``) delivers raw counts (H, W) uint16: before,
    they reached the detector as they came (not BGR uint8); now stretched by their own range,
    7000 -> 0, 8000 -> 128, 9000 -> 255, as a 16-bit image is. The URI asks OpenCV for Y16
    without its conversion (which keeps the high byte only)."""
    import cv2

    from edgecl.runtime.sources import live

    counts = np.full((6, 9), 7000, np.uint16)
    counts[:, 3:6], counts[:, 6:] = 8000, 9000

    class Thermal(FakeCapture):
        def read(self):
            return True, counts.copy()

    seen = {}

    def fake_cv2_capture(target, api, props, params=()):
        seen.update(props)
        return lambda: Thermal(None, opened=True)

    monkeypatch.setattr(live, "_cv2_capture", fake_cv2_capture)
    monkeypatch.setattr(live, "DEV_DIR", tmp_path)
    (tmp_path / "video0").touch()
    with open_source("v4l2://0?fourcc=Y16", CFG) as source:
        frame = source.read()
    assert frame.image.dtype == np.uint8 and frame.image.shape == (6, 9, 3)
    assert [int(frame.image[0, x, 0]) for x in (0, 4, 8)] == [0, 128, 255]
    assert seen[cv2.CAP_PROP_CONVERT_RGB] == 0
    assert seen[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"Y16 ")


@pytest.mark.parametrize("uri", ["rtsp://cam.local:554/stream", "v4l2://0", "csi://0?width=640&height=480"])
def test_live_reconnects_with_exponential_backoff(uri):
    camera, waits = FakeCamera(fail_reads=4), []
    source = open_source(uri, CFG, capture_factory=camera.factory, sleep=waits.append).open()
    assert source.is_live
    frame = source.read()
    assert frame is not None and frame.frame_id == 0 and int(frame.image[0, 0, 0]) == 5
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert source.stats.reconnects == 4 and camera.opens == 5
    assert source.state is StreamState.OPEN
    source.close()
    assert camera.released == 5


def test_live_backoff_resets_after_success_and_gives_up():
    camera, waits = FakeCamera(fail_reads=2, fail_after=3), []
    cfg = SourceConfig(reconnect_initial_s=0.5, reconnect_max_s=4.0, max_consecutive_failures=4)
    source = open_source("rtsp://cam/x", cfg, capture_factory=camera.factory, sleep=waits.append).open()
    assert source.read() is not None                  # after 2 failures: waits 0.5, 1.0
    with pytest.raises(SourceError) as err:
        source.read()                                  # fails forever: 0.5, 1.0, 2.0, 4.0, gives up
    # before: max_consecutive_failures=4 gave up after 3 reconnects, "4 failed reads"
    assert str(err.value) == ("rtsp://cam/x: giving up after 4 reconnect(s) in a row that gave "
                              "no frame (source.max_consecutive_failures)")
    assert waits == [0.5, 1.0, 0.5, 1.0, 2.0, 4.0]
    assert source.stats.reconnects == 6 and source.state is StreamState.EXHAUSTED


def test_live_reconnect_survives_failed_reopen():
    camera, waits = FakeCamera(fail_reads=1, fail_opens=0), []
    source = open_source("rtsp://cam/x", CFG, capture_factory=camera.factory, sleep=waits.append).open()
    camera.fail_opens = 3  # opens 2 and 3 fail, open 4 works
    assert source.read() is not None
    assert waits == [0.5, 1.0, 2.0] and source.stats.reconnects == 3


def test_live_open_fails_fast():
    camera = FakeCamera(fail_opens=1)
    source = open_source("rtsp://cam/x", CFG, capture_factory=camera.factory, sleep=lambda s: None)
    with pytest.raises(SourceError, match="rtsp://cam/x: cannot open"):
        source.open()


def test_close_interrupts_backoff():
    camera = FakeCamera(fail_reads=10**6)
    cfg = SourceConfig(reconnect_initial_s=60.0, reconnect_max_s=60.0, max_consecutive_failures=5)
    source = open_source("rtsp://cam/x", cfg, capture_factory=camera.factory).open()
    result = []
    reader = threading.Thread(target=lambda: result.append(source.read()))
    reader.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    source.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and result == [None]
    assert time.perf_counter() - t0 < 2.0


def test_live_uri_errors():
    with pytest.raises(SourceError, match="no such camera device /dev/video97"):
        open_source("v4l2://97")
    with pytest.raises(SourceError, match="'width' must be an integer"):
        open_source("v4l2://0?width=wide", capture_factory=FakeCamera().factory)
    with pytest.raises(SourceError, match="expected csi://"):
        open_source("csi://front", capture_factory=FakeCamera().factory)
    with pytest.raises(SourceError, match="no host"):
        open_source("rtsp://")


def test_csi_pipeline_string():
    text = csi_pipeline(1, 640, 480, 15, 2)
    assert text.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=640, height=480, framerate=15/1" in text and "flip-method=2" in text
    assert text.endswith("appsink drop=true max-buffers=1 sync=false")


def test_tasks_source_keeps_only_the_classes_introduced_so_far(tmp_path):
    """A t1 frame that also shows a t2 object carries only t1's box (class-incremental)."""
    import cv2
    import numpy as np

    from edgecl.runtime.sources import open_source

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name, rows in (("a", "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n"),
                       ("b", "1 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n")):
        cv2.imwrite(str(images / f"{name}.jpg"), np.full((32, 32, 3), 128, np.uint8))
        (labels / f"{name}.txt").write_text(rows)
    (tmp_path / "t1.txt").write_text(str(images / "a.jpg") + "\n")
    (tmp_path / "t2.txt").write_text(str(images / "b.jpg") + "\n")
    (tmp_path / "tasks.yaml").write_text(
        "names: {0: car, 1: person}\ntasks:\n"
        "  - {name: t1, classes: [0], train: t1.txt, val: t1.txt, test: t1.txt}\n"
        "  - {name: t2, classes: [1], train: t2.txt, val: t2.txt, test: t2.txt}\n")
    with open_source(f"tasks://{tmp_path / 'tasks.yaml'}") as source:
        frames = list(source)
    assert [f.task for f in frames] == ["t1", "t2"]
    assert frames[0].labels[:, 0].tolist() == [0.0]
    assert sorted(frames[1].labels[:, 0].tolist()) == [0.0, 1.0]


def test_a_tasks_yaml_that_is_not_utf8_is_one_line(tmp_path):
    from edgecl.errors import SourceError
    from edgecl.runtime.sources import open_source

    (tmp_path / "tasks.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(SourceError) as err:
        open_source(f"tasks://{tmp_path / 'tasks.yaml'}")
    assert "cannot read" in str(err.value) and "\n" not in str(err.value)


def test_synthetic_source_names_its_classes():
    from edgecl.runtime.sources import open_source

    source = open_source("synthetic://?tasks=2&images_per_task=4&imgsz=64&seed=0")
    assert source.labelled and source.names == {0: "car", 1: "truck", 2: "person", 3: "bicycle"}


def test_a_dir_source_names_classes_by_the_import_rule(tmp_path):
    """Before: a folder naming its classes in a classes.txt, or the built-in scenario's folder
    (names in its tasks.yaml), streamed with no names, where 'labels import' read them."""
    from edgecl.data.scenario import make_scenario
    from edgecl.runtime.sources import open_source

    make_scenario(tmp_path / "scen", tasks=2, images_per_task=4, imgsz=64, seed=0)
    source = open_source(f"dir://{tmp_path / 'scen'}")
    assert source.labelled and source.names == {0: "car", 1: "truck", 2: "person", 3: "bicycle"}
    _png(tmp_path / "rec" / "a.jpg", 1)
    (tmp_path / "rec" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "rec" / "classes.txt").write_text("boat\n")
    assert open_source(f"dir://{tmp_path / 'rec'}").names == {0: "boat"}
    (tmp_path / "rec" / "classes.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SourceError, match="classes.txt") as err:
        open_source(f"dir://{tmp_path / 'rec'}")
    assert "\n" not in str(err.value)


def test_close_returns_while_a_read_is_blocked_in_the_driver(monkeypatch, caplog):
    from edgecl.runtime.sources import live

    monkeypatch.setattr(live, "CLOSE_WAIT_S", 0.3)
    release_driver = threading.Event()

    class StuckCapture:
        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return True

        def read(self):
            release_driver.wait(30)  # a stalled camera: the driver does not return
            return False, None

        def release(self):
            pass

    source = open_source("rtsp://cam/x", CFG, capture_factory=StuckCapture).open()
    reader = threading.Thread(target=source.read, daemon=True)
    reader.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    source.close()
    assert time.perf_counter() - t0 < 2.0  # before: waited for the driver for ever
    assert "a read is still blocked" in caplog.text
    release_driver.set()
    reader.join(5)
    assert not reader.is_alive() and "read failed" not in caplog.text  # closed: no failure


def test_a_camera_password_never_leaves_the_source():
    from edgecl.runtime.sources.base import redact_uri

    assert redact_uri("rtsp://admin:s3cret@10.0.0.5:554/live?x=1") == (
        "rtsp://admin:***@10.0.0.5:554/live?x=1")
    assert redact_uri("rtsp://admin@cam/x") == "rtsp://admin@cam/x"
    assert redact_uri("file:///data/a:b@c.mp4") == "file:///data/a:b@c.mp4"
    camera = FakeCamera()
    source = open_source("rtsp://admin:s3cret@cam/x", CFG, capture_factory=camera.factory).open()
    frame = source.read()
    source.close()
    assert frame.source == "rtsp://admin:***@cam/x" and source.uri == frame.source
    failing = FakeCamera(fail_opens=1)
    with pytest.raises(SourceError) as info:
        open_source("rtsp://admin:s3cret@cam/x", CFG, capture_factory=failing.factory).open()
    assert "s3cret" not in str(info.value) and "admin:***@cam" in str(info.value)


def _mjpg_avi_with_corrupt_frames(path: Path, n: int, corrupt: set[int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((48, 64, 3), 10 + i * 10, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == n and n - 1 not in corrupt
    for k in corrupt:  # the JPEG start marker, then zeros up to the next chunk: no JPEG data
        end = starts[k + 1] - 8  # the next frame's chunk id and size stay
        data[starts[k] + 2:end] = bytes(end - starts[k] - 2)
    path.write_bytes(bytes(data))


def test_undecodable_frames_in_a_video_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "clip.avi"
    _mjpg_avi_with_corrupt_frames(path, 12, {0, 5, 6, 7})
    with open_source(f"file://{path}") as source:
        frames = list(source)
    # before: the first frame that did not decode ended the file (here: no frame at all)
    assert [f.name for f in frames] == [f"clip_{k:06d}" for k in (1, 2, 3, 4, 8, 9, 10, 11)]
    assert [round((float(f.image.mean()) - 10) / 10) for f in frames] == [1, 2, 3, 4, 8, 9, 10, 11]
    assert source.stats.skipped == 4 and source.stats.read == 8
    assert "3 frame(s) before frame 8 do not decode; skipped" in caplog.text
    looped = open_source(f"file://{path}?loop=1").open()
    names = [looped.read().name for _ in range(10)]
    looped.close()
    assert names[7:] == ["clip_000011", "clip_000001", "clip_000002"]


def test_a_video_with_no_decodable_frame_says_so(tmp_path, caplog, monkeypatch):
    from edgecl.runtime.sources import files

    monkeypatch.setattr(files, "MAX_UNDECODABLE_IN_A_ROW", 3)  # the 4 bad frames end the file
    path = tmp_path / "dead.avi"
    _mjpg_avi_with_corrupt_frames(path, 5, {0, 1, 2, 3})
    with open_source(f"file://{path}?loop=1") as source:
        assert source.read() is None  # loop: no endless reopening of a file with no frame
    assert "no frame of dead.avi decodes" in caplog.text


def test_a_plain_path_gets_the_scheme_it_needs_suggested(tmp_path):
    _write_video(tmp_path / "clip.mp4")
    with pytest.raises(SourceError, match=f"a file: did you mean file://{tmp_path}/clip.mp4"):
        open_source(f"{tmp_path}/clip.mp4")
    with pytest.raises(SourceError, match=f"a folder: did you mean dir://{tmp_path}"):
        open_source(str(tmp_path))
    with pytest.raises(SourceError, match=r"source 'nowhere' has no scheme; supported"):
        open_source("nowhere")
    # before: no hint for a camera node or a path that names nothing yet
    with pytest.raises(SourceError, match=r"^source '/dev/video0' has no scheme \(a camera: did "
                                          r"you mean v4l2://0\?\); supported"):
        open_source("/dev/video0")
    with pytest.raises(SourceError, match=f"nothing exists at {tmp_path}/gone.mp4; a video file is "
                                          f"file://PATH, a folder of images dir://PATH"):
        open_source(f"{tmp_path}/gone.mp4")


@pytest.mark.parametrize("value", ["1e-10", "-1", "nan", "inf", "abc", "2000"])
def test_a_frame_rate_parameter_outside_its_range_is_one_line(tmp_path, value):
    """1e-10 fps was accepted and, paced, ended the run after one frame ('timestamp out of
    range for platform time_t')."""
    from edgecl.errors import SourceError
    from edgecl.runtime.sources import open_source

    for uri in (f"synthetic://?fps={value}", f"dir://{tmp_path}?fps={value}"):
        with pytest.raises(SourceError, match=r"parameter 'fps' must be 0 \(none\) or a rate of "
                                              r"0.01 to 1000 frames per second"):
            open_source(uri)


def test_a_cvat_coco_folder_streamed_unlabelled_says_how_to_convert_it(tmp_path, caplog):
    """Before: the COCO hint looked for a json on top of the folder only; CVAT keeps it in
    annotations/, and the frames streamed unlabelled with an INFO line."""
    import json
    import logging

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.full((16, 16, 3), 90, np.uint8))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_default.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "a.jpg", "width": 16, "height": 16}],
         "annotations": [], "categories": [{"id": 1, "name": "car"}]}))
    with caplog.at_level(logging.INFO):
        assert len(list(open_source(f"dir://{tmp_path}"))) == 1
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("COCO annotations? convert them with `edgecl dataset import`" in r.getMessage()
               for r in warned)
