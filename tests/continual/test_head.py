"""Class-incremental head growth: old outputs unchanged, new rows initialised, training works."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from edgecl.calibration.ider import attach_prior_adapter, prior_adapters
from edgecl.config import IderConfig, LearnerConfig
from edgecl.continual.finetune import FineTuner
from edgecl.continual.head import grow_head
from edgecl.errors import LabelError
from edgecl.ultra import build_detection_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import draw_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)[1]["scores"]  # raw class logits (B, nc, anchors)


def test_grow_keeps_old_outputs_and_sets_counts():
    torch.manual_seed(0)
    model = build_detection_model(2, names={0: "car", 1: "truck"})
    x = torch.rand(2, 3, 64, 64)
    before = _logits(model, x)
    boxes_before = model(x)[0][:, :4]
    assert grow_head(model, {2: "drone"}) is model
    after = _logits(model, x)
    head = model.model[-1]
    assert after.shape == (2, 3, before.shape[2])
    # identical up to float accumulation order (a wider conv may pick another kernel)
    torch.testing.assert_close(after[:, :2], before, rtol=0, atol=1e-5)
    assert torch.equal(model(x)[0][:, :4], boxes_before)  # the box branch is untouched
    assert (head.nc, head.no, model.nc, model.yaml["nc"]) == (3, 3 + 16 * 4, 3, 3)
    assert model.names == {0: "car", 1: "truck", 2: "drone"}
    for i, stride in enumerate(head.stride.tolist()):
        expected = math.log(5 / 3 / (640 / stride) ** 2)
        assert head.cv3[i][-1].bias[2].item() == pytest.approx(expected)
        assert head.cv3[i][-1].bias[0].item() == pytest.approx(math.log(5 / 2 / (640 / stride) ** 2))


def test_grow_with_ider_adapter():
    torch.manual_seed(0)
    model = attach_prior_adapter(build_detection_model(2))
    for adapter in prior_adapters(model):
        torch.nn.init.normal_(adapter.adapter.weight, std=0.3)
    x = torch.rand(1, 3, 64, 64)
    before = _logits(model, x)
    grow_head(model, {2: "c", 3: "d"})
    assert [a.nc for a in prior_adapters(model)] == [4, 4, 4]
    torch.testing.assert_close(_logits(model, x)[:, :2], before, rtol=0, atol=1e-5)


def test_nothing_new_and_bad_ids():
    model = build_detection_model(2)
    assert grow_head(model, {1: "1"}) is model and model.model[-1].nc == 2
    with pytest.raises(LabelError, match="no name for class id"):
        grow_head(model, {3: "gap"})
    with pytest.raises(LabelError, match="negative"):
        grow_head(model, {-1: "x"})


@pytest.mark.parametrize("ider", [False, True])
def test_training_step_after_growth(tmp_path, ider):
    torch.manual_seed(0)
    model = build_detection_model(2)
    prev = build_detection_model(2)
    grow_head(model, {2: "new"})
    images = draw_dataset(tmp_path / "d", 4, classes=(0, 2))
    cfg = LearnerConfig(imgsz=64, batch=4, bn_recalibration_batches=1)
    result = FineTuner(model, cfg, IderConfig(enabled=ider, distill_conf=0.0),
                       prev_model=prev).run(images, [], budget_s=60, max_steps=2, epochs=5,
                                            device="cpu")
    assert (result.steps, result.stopped_reason) == (2, "max_steps")
    assert math.isfinite(result.final_loss)
    assert ("ider_distill" in result.last_terms) is ider
