"""Label decisions (ground truth, pseudo-labels, uncertain band) and the operator queue."""

import numpy as np
import pytest

from edgecl.config import LabelsConfig
from edgecl.frames import Detections, Frame
from edgecl.runtime.labels import OperatorQueue, decide_labels

IMG = np.zeros((100, 200, 3), np.uint8)


def dets(scores):
    n = len(scores)
    return Detections(np.tile(np.array([[20, 10, 60, 50]], np.float32), (n, 1)),
                      np.array(scores, np.float32), np.zeros(n, np.int64))


def test_ground_truth_wins():
    gt = np.array([[1, 0.5, 0.5, 0.1, 0.1]], np.float32)
    d = decide_labels(Frame(IMG, 0, 0.0, "x", labels=gt), dets([0.9]), LabelsConfig(mode="pseudo"))
    assert d.origin == "ground_truth" and d.labels is gt


def test_pseudo_labels_from_confident_detections():
    cfg = LabelsConfig(mode="pseudo", pseudo_conf=0.6, uncertain_low=0.3, uncertain_high=0.6)
    d = decide_labels(Frame(IMG, 0, 0.0, "x"), dets([0.9, 0.1]), cfg)
    # box 20..60 x 10..50 in a 200x100 image -> cx 0.2, cy 0.3, w 0.2, h 0.4
    assert d.origin == "pseudo"
    np.testing.assert_allclose(d.labels, [[0, 0.2, 0.3, 0.2, 0.4]], atol=1e-6)


def test_uncertain_band_goes_to_operator_and_ground_truth_mode_ignores_detections():
    cfg = LabelsConfig(mode="pseudo", pseudo_conf=0.6, uncertain_low=0.3, uncertain_high=0.6)
    assert decide_labels(Frame(IMG, 0, 0.0, "x"), dets([0.9, 0.45]), cfg).queue_for_operator
    d = decide_labels(Frame(IMG, 0, 0.0, "x"), dets([0.9]), LabelsConfig(mode="ground_truth"))
    assert d.labels is None and not d.queue_for_operator


def test_operator_queue_bounded_accept_reject(tmp_path):
    q = OperatorQueue(tmp_path, max_pending=2)
    ids = [q.push(Frame(IMG, i, float(i), "cam", task="t1"), dets([0.5])) for i in range(3)]
    pending = q.list()
    assert len(pending) == 2 and pending[0]["frame_id"] == 1

    class FakeMemory:
        def __init__(self):
            self.samples = []

        def add(self, sample):
            self.samples.append(sample)
            return len(self.samples)

    mem = FakeMemory()
    assert q.accept(ids[1], mem) == 1
    np.testing.assert_allclose(mem.samples[0].labels, [[0, 0.2, 0.3, 0.2, 0.4]], atol=1e-6)
    q.reject(ids[2])
    assert q.list() == []
    with pytest.raises(KeyError):
        q.reject(ids[2])
