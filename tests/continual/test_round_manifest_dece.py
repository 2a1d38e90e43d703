"""A version's D-ECE in its manifest: the detections of its tasks pooled, as everywhere else."""

import numpy as np
import pytest

from edgecl.calibration.dece import ReliabilityBins
from edgecl.continual.evaluate import EvalResult
from edgecl.continual.round import pooled_dece

EDGES = np.array([0.0, 0.5, 1.0])


def _result(conf, precision, counts, dece):
    bins = ReliabilityBins(EDGES, np.array(conf), np.array(precision), np.array(counts))
    return EvalResult(map50_95=0.0, map50=0.0, recall=0.0, precision=0.0, per_class_ap50_95={},
                      n_images=1, n_boxes=1, dece=dece, reliability=bins)


def test_a_versions_dece_pools_its_tasks_detections():
    """Before: the plain mean of the per-task figures (0.45 here; 0.540 on a device whose
    /metrics and monitor summary said 0.453 for the same version)."""
    # task A: 1 detection at confidence 0.9, wrong (gap 0.9); task B: 3 at confidence 0.3
    # with precision 0.3 (gap 0): pooled (1 x 0.9 + 3 x 0) / 4 = 0.225, not (0.9 + 0) / 2
    a = _result([np.nan, 0.9], [np.nan, 0.0], [0, 1], dece=0.9)
    b = _result([0.3, np.nan], [0.3, np.nan], [3, 0], dece=0.0)
    assert pooled_dece([a, b]) == pytest.approx(0.225)
    assert pooled_dece([]) is None
    empty = _result([np.nan, np.nan], [np.nan, np.nan], [0, 0], dece=float("nan"))
    assert pooled_dece([empty]) is None
