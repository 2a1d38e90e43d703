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
