"""A looping ``dir://`` source warns once per bad file per run, and keeps counting every pass."""

import logging
from pathlib import Path

import cv2
import numpy as np

from edgecl.runtime.sources import open_source


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def test_looping_dir_warns_once_per_file_and_counts_every_pass(tmp_path, caplog):
    _png(tmp_path / "images" / "a.png", 10)
    _png(tmp_path / "images" / "b.png", 20)
    (tmp_path / "images" / "c.png").write_bytes(b"junk")  # unreadable
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "b.txt").write_text("1e3 0.5 0.5 0.2 0.2\n0 0.5 0.5 3 0.2\n")  # 2 refused
    (tmp_path / "labels" / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    caplog.set_level(logging.WARNING, logger="edgecl.runtime.sources.files")
    source = open_source(f"dir://{tmp_path}?loop=1").open()
    try:
        frames = [source.read() for _ in range(8)]  # 4 passes over a, b (c is skipped each pass)
    finally:
        source.close()
    assert [f.name for f in frames] == ["images/a.png", "images/b.png"] * 4
    assert all(f.labels is None for f in frames[1::2])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "edgecl.runtime.sources.files"]
    # one per bad file, not one per pass (before: 4 each)
    assert sum("skipping image" in w and "c.png" in w for w in warnings) == 1
    refused = [w for w in warnings if "delivering" in w and "b.png" in w]
    assert len(refused) == 1 and "class id '1e3' is not an integer" in refused[0]
    # counters count every pass: c (read after b) was reached in passes 1-3 only (the 8th read
    # returned pass 4's b), b's 2 refused rows in passes 1-4
    assert source.stats.skipped == 3
    assert source.stats.bad_labels == 4 and source.stats.refused_labels == 8


def test_a_run_says_when_its_source_ended(tmp_path, caplog):
    """Before: a folder (or a video) that played to its end stopped the run with the summary
    alone: a service restarting it replayed the file every few seconds without a word."""
    from edgecl.cli import main

    for i in range(3):
        _png(tmp_path / "frames" / f"{i}.png", 10 * i)
    caplog.set_level(logging.INFO, logger="edgecl.runtime.loop")
    uri = f"dir://{tmp_path / 'frames'}"
    assert main(["run", "--model", "yolo11n.yaml", "--source", uri, "model.imgsz=64",
                 "--quiet"]) == 0
    said = [r.getMessage() for r in caplog.records if "ended after" in r.getMessage()]
    assert said == [f"source {uri} ended after 3 frame(s): the run stops (a video file or a "
                    f"folder plays once; ?loop=1 plays it again and again)"]
