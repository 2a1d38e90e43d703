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
