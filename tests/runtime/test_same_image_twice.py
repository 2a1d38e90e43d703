"""One image, one sample: a frame the device stores itself (streamed from a ``dir://`` folder, or
answered by an operator) and the same image imported later with ``edgecl labels import`` are
one sample, not two (two let one copy serve the held-out slice while the other is trained on).

Before: device samples carried no content hash, so the import stored every such image again;
an answer for a frame imported meanwhile stored a second copy; a looping folder's next pass
stored every frame again."""

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from labels_fakes import dets, textured

from edgecl.cli import main
from edgecl.config import Config, LabelsConfig, MemoryConfig, SelectionConfig
from edgecl.continual.ingest import ALREADY_IN_MEMORY, ingest
from edgecl.data.images import pixels_hash, read_image
from edgecl.data.importers import ImportItem, iter_labelled
from edgecl.errors import ConflictError
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import MemorySink
from edgecl.runtime.sources.files import ImageDirSource
from edgecl.web import ConsoleHooks, create_app

CAR_ROW = "0 0.5 0.5 0.25 0.25\n"
NO_SELECTION = SelectionConfig(uncertain=0, novel=0, disagreement=0, forgetting=0, random=0)


def dataset(root: Path, suffix: str = ".jpg", image: np.ndarray | None = None) -> Path:
    """A YOLO folder of one image ``a`` (a JPEG of quality 90 by default) with one box."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    image = textured(0, (96, 128, 3)) if image is None else image
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if suffix == ".jpg" else []
    assert cv2.imwrite(str(root / "images" / f"a{suffix}"), image, params)
    (root / "labels" / "a.txt").write_text(CAR_ROW)
    return root


def streamed(root: Path, n: int = 1) -> list:
    """The first ``n`` frames of ``dir://root?loop=1``."""
    source = ImageDirSource(f"dir://{root}?loop=1", str(root), loop=True)
    with source:
        return [source.read() for _ in range(n)]


def sink_for(state: Path, mode: str, selection: SelectionConfig = NO_SELECTION) -> MemorySink:
    ClassRegistry(state).seed({0: "car"})
    cfg = Config(state_dir=str(state), memory=MemoryConfig(capacity=50, holdout_fraction=0.0),
                 labels=LabelsConfig(mode=mode, max_per_minute=0, selection=selection))
    return MemorySink.from_config(cfg, classes=ClassRegistry(state))


def write(sink: MemorySink, frame, scores=()) -> None:
    sink.write(SimpleNamespace(frame=frame, detections=dets(list(scores)), labelling=None))


def imported(root: Path, sink: MemorySink) -> dict:
    return ingest(iter_labelled(root), sink.memory, ClassRegistry(sink.queue.root.parent)).to_dict()


def test_a_frame_streamed_from_a_folder_is_not_imported_again(tmp_path):
    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "ground_truth")
    try:
        (frame,) = streamed(root)
        write(sink, frame)
        assert sink.stats()["counts"]["stored_ground_truth"] == 1
        report = imported(root, sink)
        assert (report["imported"], report["skipped"], report["reasons"]) == (0, 1, {ALREADY_IN_MEMORY: 1})
        assert len(sink.memory.ids()) == 1
    finally:
        sink.close()


def test_an_answered_frame_is_not_imported_again(tmp_path):
    """The queue keeps a JPEG of quality 95 of the frame: its pixels are not the original's, so
    the item remembers the original's hash."""
    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "field")
    try:
        (frame,) = streamed(root)
        item_id = sink.queue.push(frame, dets([0.5]), names={0: "car"})
        kept = read_image(sink.queue.image_path(item_id))
        assert pixels_hash(kept) != pixels_hash(frame.image)
        out = sink.answer(item_id, [{"class": "car", "xyxy": [40, 30, 80, 60]}])
        assert sink.memory.find_content(pixels_hash(frame.image)) == out["sample"] == 1
        report = imported(root, sink)
        # the folder labels it otherwise: said so, and the person's answer is kept
        assert (report["imported"], report["reasons"]) == (
            0, {"already in memory, answered by an operator": 1})
        assert [r.origin.value for r in sink.memory.records()] == ["operator"]
    finally:
        sink.close()


def test_the_same_frame_streamed_twice_is_stored_once_and_counted(tmp_path, caplog):
    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "ground_truth")
    try:
        frames = streamed(root, 3)  # a looping folder of one image: the same pixels 3 times
        with caplog.at_level(logging.DEBUG, logger="edgecl"):
            for frame in frames:
                write(sink, frame)
        counts = sink.stats()["counts"]
        assert (counts["stored_ground_truth"], counts["duplicate_frame"]) == (1, 2)
        assert "refused_label" not in counts and len(sink.memory.ids()) == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum("already in memory as sample 1" in r.getMessage() for r in caplog.records) == 2
    finally:
        sink.close()


def test_a_duplicate_only_the_memory_sees_is_contained_in_the_sink(tmp_path, monkeypatch, caplog):
    """Another process stored the image between the sink's look-up and its write: the memory's
    DuplicateSampleError is counted, not warned about (it was ``refused_label`` + a warning)."""
    import edgecl.runtime.labels.pipeline as pipeline

    monkeypatch.setattr(pipeline, "held_copy", lambda memory, digest, origin: None)
    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "ground_truth")
    try:
        with caplog.at_level(logging.WARNING):
            for frame in streamed(root, 2):
                write(sink, frame)
        counts = sink.stats()["counts"]
        assert (counts["stored_ground_truth"], counts["duplicate_frame"]) == (1, 1)
        assert "refused_label" not in counts and not caplog.records
        assert len(sink.memory.ids()) == 1
    finally:
        sink.close()


def test_an_imported_image_is_neither_stored_nor_queued_when_streamed(tmp_path):
    root = dataset(tmp_path / "ds")
    field = sink_for(tmp_path / "state", "field", SelectionConfig())
    try:
        assert imported(root, field)["imported"] == 1
        (frame,) = streamed(root)
        write(field, dataclasses.replace(frame, labels=None), [0.45])  # uncertain: would queue
        write(field, frame)  # its ground truth: would be stored
        assert field.queue.pending() == [] and len(field.memory.ids()) == 1
        assert field.stats()["counts"]["duplicate_frame"] == 2
    finally:
        field.close()


def test_a_queue_item_without_the_hash_still_answers(tmp_path):
    """Items queued before the hash was recorded are answered as before (no hash stored; this
    one passed before too: it guards the older items)."""
    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "field")
    try:
        (frame,) = streamed(root)
        item_id = sink.queue.push(frame, dets([0.5]), names={0: "car"})
        meta_path = sink.queue.dir / f"{item_id}.json"
        meta = json.loads(meta_path.read_text())
        meta.pop("pixels_hash", None)
        meta_path.write_text(json.dumps(meta))
        assert sink.queue.accept(item_id, sink.memory)["sample"] == 1
        assert sink.memory.find_content(pixels_hash(frame.image)) is None
    finally:
        sink.close()


def test_an_answer_for_an_image_imported_meanwhile_is_a_conflict_and_the_item_goes(tmp_path):
    root = dataset(tmp_path / "ds")
    state = tmp_path / "state"
    sink = sink_for(state, "field")
    try:
        (frame,) = streamed(root)
        item_id = sink.queue.push(frame, dets([0.5]), names={0: "car"})
        assert imported(root, sink)["imported"] == 1
        with pytest.raises(ConflictError, match=rf"^label item '{item_id}' not stored: its image is "
                           r"already in memory as sample 1 \(origin import\); the item was taken "
                           r"off the queue$"):
            sink.answer(item_id, [{"class": "truck", "xyxy": [0, 0, 50, 50]}])
        assert sink.queue.pending() == [] and len(sink.memory.ids()) == 1
        assert ClassRegistry(state).names() == {0: "car"}  # no class for a sample not stored
        assert sink.stats()["counts"].get("stored_operator") is None
        with pytest.raises(ConflictError, match=r"was taken off the queue: its image was already "
                                                r"in memory as sample 1$"):
            sink.answer(item_id, [])
        # before: the answered-image route (and correct, withdraw) said 'was skipped: no sample
        # was stored for it' of the same item
        with pytest.raises(ConflictError, match=r"was taken off the queue: its image was already "
                                                r"in memory as sample 1$"):
            sink.queue.answered_sample(item_id, sink.memory)
    finally:
        sink.close()


def test_the_cli_and_the_console_refuse_it_alike(tmp_path, capsys):
    """``edgecl labels answer`` exits 2 with the line; ``POST /api/labels/ID`` is 409 with it."""
    root = dataset(tmp_path / "ds")
    state = tmp_path / "state"
    sink = sink_for(state, "field")
    try:
        (frame,) = streamed(root)
        cli_item, http_item = (sink.queue.push(frame, dets([0.5]), names={0: "car"}) for _ in range(2))
        assert imported(root, sink)["imported"] == 1
        boxes = tmp_path / "boxes.json"
        boxes.write_text(json.dumps([{"class": "car", "xyxy": [40, 30, 80, 60]}]))
        code = main(["labels", "answer", cli_item, "--boxes", str(boxes), "--state-dir", str(state)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and "its image is already in memory as sample 1 (origin import)" in err[-1]
        app = create_app(ConsoleHooks(health=lambda: {"status": "ok"},
                                      answer=lambda item, b, skip: sink.answer(item, b)))
        response = TestClient(app, raise_server_exceptions=False).post(
            f"/api/labels/{http_item}", json={"boxes": [{"class": "car", "xyxy": [40, 30, 80, 60]}]})
        assert response.status_code == 409
        assert "its image is already in memory as sample 1 (origin import)" in response.json()["error"]
        assert sink.queue.pending() == [] and len(sink.memory.ids()) == 1
    finally:
        sink.close()


def _exif_rotated_jpeg(path: Path, image: np.ndarray) -> None:
    """A JPEG whose EXIF orientation is 6 (shown rotated 90 degrees clockwise)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image[..., ::-1]).save(path, quality=90, exif=exif.tobytes())


@pytest.mark.parametrize("kind", ["jpeg_exif", "png16", "grey", "bgra", "tiff", "webp", "bmp"])
def test_a_dir_source_and_an_import_decode_an_image_to_the_same_pixels(tmp_path, kind):
    """The pixels hash matches only if both decode alike: EXIF orientation, 16-bit, greyscale,
    alpha and the other formats."""
    image = textured(1, (60, 80, 3))
    root = tmp_path / "ds"
    if kind == "jpeg_exif":
        dataset(root, ".jpg", image)
        (root / "images" / "a.jpg").unlink()
        _exif_rotated_jpeg(root / "images" / "a.jpg", image)
    elif kind == "png16":
        dataset(root, ".png", (image.astype(np.uint16) * 37 + 7000))
    elif kind == "grey":
        dataset(root, ".png", image[..., 0])
    elif kind == "bgra":
        dataset(root, ".png", np.dstack([image, np.full(image.shape[:2], 128, np.uint8)]))
    else:
        dataset(root, {"tiff": ".tif", "webp": ".webp", "bmp": ".bmp"}[kind], image)
    (frame,) = streamed(root)
    (item,) = list(iter_labelled(root))
    assert isinstance(item, ImportItem)
    assert frame.image.shape == item.image.shape and frame.image.dtype == np.uint8
    if kind == "jpeg_exif":
        assert frame.image.shape[:2] == (80, 60)  # upright
    assert pixels_hash(frame.image) == pixels_hash(item.image)


def test_a_pseudo_labelled_frame_is_replaced_by_its_import(tmp_path):
    """Before: the frame the device pseudo-labelled made the team's human labels for the same
    image a duplicate ('already in memory'), so the pseudo-labels stayed."""
    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "pseudo")
    try:
        (frame,) = streamed(root)
        write(sink, SimpleNamespace(**{**vars(frame), "labels": None}), [0.9])
        assert sink.stats()["counts"]["stored_pseudo"] == 1
        report = imported(root, sink)
        assert (report["imported"], report["skipped"]) == (1, 0)
        assert [r.origin.value for r in sink.memory.records()] == ["import"]
        write(sink, SimpleNamespace(**{**vars(frame), "labels": None}), [0.9])   # streamed again
        assert [r.origin.value for r in sink.memory.records()] == ["import"]  # never replaced
    finally:
        sink.close()


def test_an_answer_replaces_a_pseudo_labelled_copy_of_its_frame(tmp_path):
    from edgecl.continual.memory import Sample
    from edgecl.frames import LabelOrigin

    root = dataset(tmp_path / "ds")
    sink = sink_for(tmp_path / "state", "field")
    try:
        (frame,) = streamed(root)
        item_id = sink.queue.push(frame, dets([0.5]), names={0: "car"})
        sink.memory.add(Sample(frame.image, np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32),
                               task="stream", origin=LabelOrigin.PSEUDO,
                               content_hash=pixels_hash(frame.image)))
        out = sink.answer(item_id, [{"class": "car", "xyxy": [40, 30, 80, 60]}])
        assert [(r.id, r.origin.value) for r in sink.memory.records()] == [(out["sample"], "operator")]
    finally:
        sink.close()


def test_a_frame_waiting_for_a_person_is_not_queued_again(tmp_path):
    """A looping recording came round after the near-duplicate window (300 s) and queued the
    same picture while its first item still waited: the person labelled it twice."""
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car"})
    cfg = Config(state_dir=str(state), memory=MemoryConfig(capacity=50, holdout_fraction=0.0),
                 labels=LabelsConfig(mode="field", max_per_minute=0, dedup_window_s=0,
                                     selection=SelectionConfig(uncertain=1.0, novel=0,
                                                               disagreement=0, forgetting=0,
                                                               random=0)))
    sink = MemorySink.from_config(cfg, classes=ClassRegistry(state))
    try:
        (frame,) = streamed(dataset(tmp_path / "ds"))
        frame = dataclasses.replace(frame, labels=None)
        write(sink, frame, [0.45])
        write(sink, dataclasses.replace(frame, frame_id=frame.frame_id + 1), [0.45])
        assert len(sink.queue.pending()) == 1
        assert sink.stats()["counts"]["duplicate_frame"] == 1
        sink.queue.skip(sink.queue.pending()[0]["id"])          # once passed on, it may return
        write(sink, frame, [0.45])
        assert len(sink.queue.pending()) == 1
    finally:
        sink.close()


def test_a_looping_folder_larger_than_the_memory_stores_each_image_once(tmp_path):
    """Before: a frame the full memory evicted came back as a new sample on the folder's next
    pass, evicting another one that came back on the pass after: "new" samples for ever (a
    learning round every few frames with no new image) and, drawn again, a frame trained on
    could return held out."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(5):
        assert cv2.imwrite(str(root / "images" / f"f{k}.png"), textured(k, (96, 128, 3)))
        (root / "labels" / f"f{k}.txt").write_text(CAR_ROW)
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car"})
    cfg = Config(state_dir=str(state), memory=MemoryConfig(capacity=3, holdout_fraction=0.0),
                 labels=LabelsConfig(mode="ground_truth", max_per_minute=0,
                                     selection=NO_SELECTION))
    sink = MemorySink.from_config(cfg, classes=ClassRegistry(state))
    try:
        frames = streamed(root, 15)  # three passes over 5 images
        for frame in frames[:5]:
            write(sink, frame)
        first = sink.stats()["counts"]
        kept = {r.source for r in sink.memory.records()}
        assert len(kept) == 3 and sink.memory.evicted == first["stored_ground_truth"] - 3
        for frame in frames[5:]:
            write(sink, frame)
        counts = sink.stats()["counts"]
        assert counts["stored_ground_truth"] == first["stored_ground_truth"]  # nothing new
        evicted = first["stored_ground_truth"] - 3
        assert counts["evicted_before"] == 2 * evicted
        assert counts["duplicate_frame"] == first.get("duplicate_frame", 0) + 2 * 3
        assert {r.source for r in sink.memory.records()} == kept
        # a removal by hand is no eviction: that image is stored again on the next pass
        sink.memory.remove([sink.memory.records()[0].id])
        for frame in streamed(root, 5):
            write(sink, frame)
        assert sink.stats()["counts"]["stored_ground_truth"] == first["stored_ground_truth"] + 1
        assert {r.source for r in sink.memory.records()} == kept
    finally:
        sink.close()
