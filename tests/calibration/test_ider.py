"""IDER on the YOLO head: adapter, exact folding, second pass, distillation, ONNX structure."""

from __future__ import annotations

import copy
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecl.calibration.ider import (
    UNIFORM_PRIOR,
    IderHook,
    PriorAdaptedConv,
    attach_prior_adapter,
    fold_prior,
    has_prior_adapter,
    prior_adapters,
    prior_context,
    split_levels,
)
from edgecl.calibration.ider.losses import distillation_loss, second_pass_cls_loss
from edgecl.config import IderConfig, LearnerConfig
from edgecl.continual import yolo_train
from edgecl.continual.finetune import FineTuner
from edgecl.ultra import build_detection_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import draw_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _raw(model, x):
    model.eval()
    with torch.no_grad():
        y, preds = model(x)
    return y, preds


def _randomise(model, seed=0):
    """Non-zero adapters and non-trivial BatchNorm statistics, so folding has work to do."""
    gen = torch.Generator().manual_seed(seed)
    for adapter in prior_adapters(model):
        adapter.adapter.weight.data = torch.randn(adapter.adapter.weight.shape, generator=gen)
        bn = adapter.inner.bn
        bn.running_mean.data = torch.randn(bn.running_mean.shape, generator=gen)
        bn.running_var.data = torch.rand(bn.running_var.shape, generator=gen) + 0.5
        bn.bias.data = torch.randn(bn.bias.shape, generator=gen)


def test_attach_changes_nothing_and_is_idempotent():
    torch.manual_seed(0)
    model = build_detection_model(3)
    x = torch.rand(2, 3, 64, 64)
    y0, p0 = _raw(model, x)
    attach_prior_adapter(model)
    attach_prior_adapter(model)
    y1, p1 = _raw(model, x)
    assert len(prior_adapters(model)) == 3 and has_prior_adapter(model)
    assert all(a.nc == 3 for a in prior_adapters(model))
    assert torch.equal(y0, y1) and torch.equal(p0["scores"], p1["scores"])


def test_fold_is_exact_and_restores_plain_modules():
    torch.manual_seed(0)
    plain = build_detection_model(3)
    model = attach_prior_adapter(copy.deepcopy(plain))
    _randomise(model)
    x = torch.rand(2, 3, 64, 64)
    _, adapted = _raw(model, x)
    _, base = _raw(plain, x)
    assert (adapted["scores"] - base["scores"]).abs().max() > 1e-2  # the prior term matters
    folded = fold_prior(copy.deepcopy(model))
    _, out = _raw(folded, x)
    torch.testing.assert_close(out["scores"], adapted["scores"], rtol=0, atol=1e-4)
    assert not has_prior_adapter(folded)
    assert [type(m) for m in folded.modules()] == [type(m) for m in plain.modules()]
    assert not any(isinstance(m, PriorAdaptedConv) for m in folded.modules())


def test_fold_is_exact_after_ultralytics_fuse():
    torch.manual_seed(0)
    model = attach_prior_adapter(build_detection_model(2))
    _randomise(model, seed=1)
    x = torch.rand(1, 3, 64, 64)
    _, adapted = _raw(model, x)
    fused = copy.deepcopy(model).fuse(verbose=False)  # BN folded into convs, adapter kept
    _, out = _raw(fold_prior(fused), x)
    torch.testing.assert_close(out["scores"], adapted["scores"], rtol=0, atol=1e-4)


def test_prior_context_feeds_maps_and_restores_uniform():
    torch.manual_seed(0)
    model = attach_prior_adapter(build_detection_model(2))
    _randomise(model)
    x = torch.rand(1, 3, 64, 64)
    _, uniform = _raw(model, x)
    constant = split_levels(torch.full_like(uniform["scores"], UNIFORM_PRIOR), uniform["feats"])
    with prior_context(model, constant):
        _, same = _raw(model, x)
    torch.testing.assert_close(same["scores"], uniform["scores"], rtol=0, atol=1e-5)
    zeros = [torch.zeros_like(m) for m in constant]
    with prior_context(model, zeros):
        _, other = _raw(model, x)
    assert (other["scores"] - uniform["scores"]).abs().max() > 1e-2
    _, again = _raw(model, x)
    assert torch.equal(again["scores"], uniform["scores"])
    assert all(a.prior is None for a in prior_adapters(model))


def _train_batch(tmp_path, model, n=4):
    images = draw_dataset(tmp_path / "d", n, classes=(0, 1))
    hyp = yolo_train.training_hyp(64, 0.002)
    ds = yolo_train.build_dataset(images, model.names, imgsz=64, augment=False, hyp=hyp)
    batch = yolo_train.preprocess_batch(ds.collate_fn([ds[i] for i in range(len(ds))]),
                                        torch.device("cpu"))
    model.args = hyp
    return batch, yolo_train.make_criterion(model)


def test_second_pass_equals_pass_one_cls_loss_with_zero_adapter(tmp_path):
    torch.manual_seed(0)
    model = attach_prior_adapter(build_detection_model(2))
    batch, criterion = _train_batch(tmp_path, model)
    model.train()
    preds = model(batch["img"])
    _, items = criterion(preds, batch)
    stats = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    loss2 = second_pass_cls_loss(model, preds, criterion.last_assignment, float(model.args.cls))
    # zero adapter: the prior has no effect, so pass 2 = pass 1's class loss x batch size
    assert loss2.item() == pytest.approx(items["cls_loss"].item() * 4, rel=1e-5)
    after = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after))  # pass 2 froze BN statistics
    _randomise(model)
    model.train()
    preds = model(batch["img"])
    criterion(preds, batch)
    loss2 = second_pass_cls_loss(model, preds, criterion.last_assignment, float(model.args.cls))
    loss2.backward()
    assert prior_adapters(model)[0].adapter.weight.grad.abs().sum() > 0


def test_distillation_loss_hand_checks(tmp_path):
    torch.manual_seed(0)
    prev = attach_prior_adapter(build_detection_model(2)).eval()
    img = torch.rand(2, 3, 64, 64)
    _, old = _raw(prev, img)
    same = old["scores"].clone()
    ones = torch.ones(2)
    assert distillation_loss(prev, img, same, ones, conf=0.0).item() == 0.0
    shifted = same + 1.0
    full = distillation_loss(prev, img, shifted, ones, conf=0.0)
    p_old, p_new = old["scores"].sigmoid(), shifted.sigmoid()
    expected = (p_new - p_old).pow(2).mean(dim=(1, 2)).sum()  # every anchor confident at conf 0
    assert full.item() == pytest.approx(expected.item(), rel=1e-5)
    assert distillation_loss(prev, img, shifted, ones, conf=1.0).item() == 0.0  # none confident
    memory_only = distillation_loss(prev, img, shifted, torch.tensor([1.0, 0.0]), conf=0.0)
    assert memory_only.item() == pytest.approx((p_new - p_old).pow(2).mean(dim=(1, 2))[0].item(), rel=1e-5)
    grown = torch.cat([shifted, torch.full_like(shifted[:, :1], 9.0)], dim=1)  # a new class
    assert distillation_loss(prev, img, grown, ones, conf=0.0).item() == pytest.approx(full.item())


def test_ider_round_adds_terms_and_keeps_caller_prev(tmp_path):
    torch.manual_seed(0)
    model = build_detection_model(2)
    prev = build_detection_model(2)
    prev_state = {k: v.clone() for k, v in prev.state_dict().items()}
    new = draw_dataset(tmp_path / "new", 4, classes=(0, 1))
    mem = draw_dataset(tmp_path / "memory", 2, classes=(0,), prefix="m")
    cfg = IderConfig(enabled=True, distill_conf=0.0)
    tuner = FineTuner(model, LearnerConfig(imgsz=64, batch=6, bn_recalibration_batches=1), cfg,
                      prev_model=prev)
    assert any(isinstance(h, IderHook) for h in tuner.hooks)
    result = tuner.run(new, mem, budget_s=60, max_steps=2, epochs=5, device="cpu")
    assert result.steps == 2
    assert result.last_terms["ider_pass2"] > 0 and result.last_terms["ider_distill"] > 0
    assert has_prior_adapter(model)
    assert not has_prior_adapter(prev)
    assert all(torch.equal(prev_state[k], v) for k, v in prev.state_dict().items())


def _onnx_ops(path):
    import onnx

    graph = onnx.load(str(path)).graph
    return len(graph.node), Counter(n.op_type for n in graph.node)


def test_folded_onnx_matches_plain_structure_and_unfolded_outputs(tmp_path):
    import onnxruntime as ort

    from edgecl.models.export import export_onnx

    torch.manual_seed(0)
    plain = build_detection_model(2)
    model = attach_prior_adapter(copy.deepcopy(plain))
    _randomise(model)
    plain_path = export_onnx(plain, tmp_path / "plain.onnx", imgsz=64)
    ider_path = export_onnx(model, tmp_path / "ider.onnx", imgsz=64)
    assert _onnx_ops(ider_path) == _onnx_ops(plain_path)
    assert has_prior_adapter(model)  # the caller's model keeps its adapter
    x = torch.rand(1, 3, 64, 64)
    expected, _ = _raw(model, x)  # unfolded, uniform prior
    session = ort.InferenceSession(str(ider_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got[:, 4:], expected[:, 4:].numpy(), atol=1e-4)  # class scores
    np.testing.assert_allclose(got[:, :4], expected[:, :4].numpy(), atol=1e-2)  # boxes, pixels


def test_the_second_pass_leaves_an_exact_batchnorm_average_alone():
    """A round averaging its last batches' statistics (momentum=None): batches of mean 1 and 3
    around IDER's second pass average to 2.0 (before: the pass counted as a batch, 1.667)."""
    from edgecl.calibration.ider.losses import frozen_bn_statistics

    bn = torch.nn.BatchNorm2d(1, momentum=None)
    bn.train()
    bn(torch.full((2, 1, 1, 1), 1.0))
    with frozen_bn_statistics(bn):
        bn(torch.full((2, 1, 1, 1), 100.0))
    bn(torch.full((2, 1, 1, 1), 3.0))
    assert bn.running_mean.item() == 2.0 and bn.num_batches_tracked.item() == 2
