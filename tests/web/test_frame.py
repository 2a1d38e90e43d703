"""The Live page's frame: boxes and names drawn, scaled down, JPEG."""

import cv2
import numpy as np
import pytest

from edgecl.frames import Detections
from edgecl.web.frame import render_jpeg


def test_render_draws_and_scales():
    image = np.zeros((480, 1920, 3), np.uint8)
    dets = Detections(np.array([[100, 100, 600, 400]], np.float32), np.array([0.9], np.float32),
                      np.array([1], np.int64))
    jpeg = render_jpeg(image, dets, {1: "car"}, max_width=960)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 960, 3)
    assert decoded[100, 50:300].max() > 100  # the box edge at y=100*0.5 is drawn
    assert image.max() == 0  # the frame itself is untouched
    assert render_jpeg(image[:10, :10], Detections(), {})[:2] == b"\xff\xd8"


def test_render_refuses_a_non_image():
    with pytest.raises(ValueError):
        render_jpeg(np.zeros((4, 4), np.uint8), Detections(), {})


@pytest.mark.parametrize("shape, expected", [((2, 5000, 3), (1, 960, 3)),  # 2 * 960/5000 -> 1
                                             ((70000, 2, 3), (65500, 2, 3))])  # JPEG's side limit
def test_render_keeps_every_side_at_least_one_pixel_and_within_jpeg(shape, expected):
    dets = Detections(np.array([[0, 0, 1, 1]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int64))
    jpeg = render_jpeg(np.zeros(shape, np.uint8), dets, {0: "car"}, max_width=960)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == expected


def test_a_label_too_long_for_the_frame_is_cut_and_keeps_its_score():
    """Before: a 100-character class name ran off the frame's right edge, its score with it."""
    from edgecl.web.frame import FONT, fitted_label

    text = fitted_label("L" * 100, 0.42, 300, 0.4)
    assert text.endswith("... 0.42") and text.startswith("LLL")
    assert cv2.getTextSize(text, FONT, 0.4, 1)[0][0] <= 300
    assert fitted_label("car", 0.9, 300, 0.4) == "car 0.90"


def test_a_label_at_the_right_edge_stays_inside_the_frame():
    """Before: the label started at the box's left edge whatever its width, so a box near the
    right edge had its label (name and score) cut off by the frame's edge."""
    image = np.zeros((240, 640, 3), np.uint8)
    dets = Detections(np.array([[600, 100, 639, 200]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int64))
    jpeg = render_jpeg(image, dets, {0: "forklift operator cabin"}, max_width=960)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    band = decoded[85:98]  # the label's row, above the box
    assert band[:, :595].max() > 100  # the label starts left of the box so that it fits


def test_right_to_left_names_are_drawn_in_reading_order():
    """Before: OpenCV drew a Hebrew or Arabic name in memory order, i.e. mirrored."""
    from edgecl.web.frame import visual_order

    assert visual_order("car") == "car"
    assert visual_order("שלום עולם") == "םלוע םולש"
    assert visual_order("שלום עולם 0.80") == "םלוע םולש 0.80"  # the score stays on the right
    assert visual_order("crate שלום 2") == "crate םולש 2"
    assert visual_order("שָׁלוֹם") == "םוֹלשָׁ"  # points stay on their letter


WORLD_NAMES = {0: "自行车", 1: "دراجة هوائية", 2: "🚲 bike", 3: "שלום"}
"""Class names in scripts OpenCV's font cannot draw (it drew each as ``???``)."""


def _dets(*rows):
    """Detections from ``(class, x1, y1, x2, y2, score)`` rows."""
    return Detections(np.array([r[1:5] for r in rows], np.float32).reshape(-1, 4),
                      np.array([r[5] for r in rows], np.float32), np.array([r[0] for r in rows], np.int64))


def test_a_live_frame_carries_its_names_as_text_beside_a_jpeg_without_text():
    """Before: the only Live frame was a JPEG with the names burnt in by OpenCV, whose font has
    ASCII only: 自行车, دراجة and 🚲 came out as ``???``. Now the names travel as text, exactly
    as registered, with the box in the JPEG's pixels and the colour the box has there."""
    from edgecl.web.frame import PALETTE_BGR, render_frame

    image = np.zeros((480, 1920, 3), np.uint8)
    dets = _dets((0, 100, 100, 600, 400, 0.9), (1, 1000, 50, 1200, 300, 0.456),
                 (12, -50, 0, 80, 500, 0.3))
    frame = render_frame(image, dets, WORLD_NAMES, seq=7)
    data = frame.to_json()
    assert (data["seq"], data["width"], data["height"]) == (7, 960, 240)
    assert [b["name"] for b in data["boxes"]] == ["自行车", "دراجة هوائية", "12"]  # unknown: its number
    assert data["boxes"][0]["xyxy"] == [50.0, 50.0, 300.0, 200.0]  # the JPEG's pixels (x 0.5)
    assert data["boxes"][2]["xyxy"] == [0.0, 0.0, 40.0, 240.0]  # clipped to the picture
    assert [b["color_index"] for b in data["boxes"]] == [0, 1, 2]
    assert data["boxes"][1]["score"] == 0.456
    decoded = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 960, 3)
    assert decoded[50, 100:250].max() > 100  # the box is drawn ...
    assert decoded[30:47, 50:300].max() < 40  # ... but no label above it
    labelled = cv2.imdecode(np.frombuffer(frame.labelled_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert labelled[30:47, 50:300].max() > 100  # for API clients: the label burnt in
    assert frame.labelled_jpeg() is frame.labelled_jpeg()  # drawn once per frame
    assert tuple(PALETTE_BGR[0]) == (180, 119, 31)  # EC.PALETTE[0] "#1f77b4", in BGR


class _Result:
    def __init__(self, image, detections):
        self.frame = type("Frame", (), {"image": image})()
        self.detections = detections


def test_the_live_sink_numbers_its_frames_and_keeps_the_last_few():
    """The page reads a frame's labels, then asks for the JPEG of that ``seq``: the sink must
    still have it though newer frames came in between, and both must be the same frame."""
    from edgecl.runtime.console import LiveViewSink

    sink = LiveViewSink(lambda: WORLD_NAMES, max_hz=1e9)
    assert sink.frame() is None and sink.latest() is None
    for k in range(LiveViewSink.KEPT_FRAMES + 2):
        image = np.full((120, 160, 3), 10 * k, np.uint8)
        sink.write(_Result(image, _dets((k % 4, 10, 10, 60, 60, 0.5))))
    newest = sink.frame()
    assert newest.seq == LiveViewSink.KEPT_FRAMES + 2
    assert newest.boxes[0]["name"] == WORLD_NAMES[(newest.seq - 1) % 4]
    third = sink.frame(3)
    assert third.seq == 3 and third.to_json()["boxes"][0]["name"] == WORLD_NAMES[2]
    assert sink.frame(2) is None and sink.frame(10 ** 9) is None  # no longer / never kept
    assert third.labelled_jpeg()[:2] == b"\xff\xd8"  # an older frame still burns its labels in
    assert sink.latest() == newest.labelled_jpeg()

    slow = LiveViewSink(lambda: {}, max_hz=0.001)
    slow.write(_Result(np.zeros((8, 8, 3), np.uint8), Detections()))
    slow.write(_Result(np.zeros((8, 8, 3), np.uint8), Detections()))
    assert slow.frame().seq == 1  # at most max_hz encodes


def test_the_live_labels_give_the_calibrated_score_and_the_detectors_own():
    """Before: /api/live/detections gave calibrated confidences (0.0893, below model.conf) under
    'score', the key --out and the queue use for the detector's raw score, with no raw one."""
    from edgecl.runtime.console import LiveViewSink

    def halve(dets):
        return Detections(dets.boxes_xyxy, dets.scores / 2, dets.classes)

    sink = LiveViewSink(lambda: WORLD_NAMES, max_hz=1e9, calibrate=halve)
    sink.write(_Result(np.zeros((120, 160, 3), np.uint8), _dets((1, 10, 10, 60, 60, 0.5))))
    box = sink.frame().to_json()["boxes"][0]
    assert (box["score"], box["raw_score"]) == (0.25, 0.5)
