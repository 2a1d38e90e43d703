"""The one matching rule of evaluation and D-ECE, as recorded in every D-ECE protocol."""

import numpy as np

from edgecl.calibration.matching import MATCHING_RULE, match_detections
from edgecl.frames import Detections


def test_the_matching_rule_is_the_one_recorded_greedy_by_confidence():
    """Before: the protocol recorded 'one-to-one in descending IoU order' while the matcher is
    greedy by confidence (COCO's): a confident looser box takes the object from a tighter one."""
    truth = np.array([[0, 150 / 640, 150 / 640, 100 / 640, 100 / 640]], np.float32)  # 100-200 px
    looser = [100, 100, 200, 250]  # IoU 10000 / 15000 = 0.667
    tighter = [100, 100, 200, 210]  # IoU 10000 / 11000 = 0.909
    detections = Detections(np.array([looser, tighter], np.float32),
                            np.array([0.9, 0.5], np.float32), np.array([0, 0]))
    stats = match_detections([detections], [truth], [(640, 640)], np.array([0.5, 0.75]))
    assert stats.conf.tolist() == [0.8999999761581421, 0.5]
    assert stats.tp.tolist() == [[True, False], [False, True]]  # at 0.75 only the tighter one
    assert "greedy in descending confidence order" in MATCHING_RULE
