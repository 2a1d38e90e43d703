"""LwF distillation terms on hand-made tensors, and the hook on a tiny YOLO."""

import math

import pytest
import torch

from edgecl.continual.distill import DistillHook, lwf_terms


def _boxes(b, a, reg_max, value=0.0):
    return torch.full((b, 4 * reg_max, a), value)


def test_terms_are_zero_when_student_equals_teacher():
    t = torch.tensor([[[2.0, -3.0, 0.5]]])  # (B=1, nc=1, A=3)
    boxes = torch.randn(1, 8, 3)
    cls, box = lwf_terms(t.clone(), t, boxes.clone(), boxes, reg_max=2, conf=0.1)
    assert cls.shape == (1,) and box.shape == (1,)
    assert cls.item() == pytest.approx(0.0, abs=1e-6) and box.item() == pytest.approx(0.0, abs=1e-6)


def test_class_term_hand_computed():
    # one anchor, one old class: teacher p = sigmoid(0) = 0.5, student q = sigmoid(log 3) = 0.75
    # KL(0.5 || 0.75) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25); normaliser max(1, 0.5) = 1
    t = torch.zeros(1, 1, 1)
    s = torch.full((1, 2, 1), math.log(3.0))  # the student's head grew to 2 classes
    cls, box = lwf_terms(s, t, _boxes(1, 1, 2), _boxes(1, 1, 2), reg_max=2, conf=0.9)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert cls.item() == pytest.approx(expected, rel=1e-5)
    assert box.item() == 0.0  # teacher not confident (0.5 < 0.9): no box term


def test_class_term_is_normalised_by_teacher_soft_count():
    # two anchors with teacher prob ~1 -> normaliser ~2; the KL of each anchor ~ -ln q
    t = torch.full((1, 1, 2), 20.0)
    s = torch.zeros(1, 1, 2)  # q = 0.5
    cls, _ = lwf_terms(s, t, _boxes(1, 2, 1), _boxes(1, 2, 1), reg_max=1, conf=0.5)
    assert cls.item() == pytest.approx(math.log(2.0), rel=1e-4)


def test_box_term_hand_computed_on_confident_anchor_only():
    reg_max = 2
    t_scores = torch.tensor([[[5.0, -5.0]]])  # anchor 0 confident (p ~ .993), anchor 1 not
    tb = torch.zeros(1, 4 * reg_max, 2)  # teacher bins uniform: (0.5, 0.5)
    sb = torch.zeros(1, 4 * reg_max, 2)
    sb.view(1, 4, reg_max, 2)[:, :, 0, :] = math.log(3.0)  # student bins (0.75, 0.25)
    _, box = lwf_terms(t_scores.clone(), t_scores, sb, tb, reg_max=reg_max, conf=0.5)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert box.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_pulls_student_towards_teacher():
    t = torch.tensor([[[3.0]]])
    s = torch.tensor([[[-1.0]]], requires_grad=True)
    cls, _ = lwf_terms(s, t, _boxes(1, 1, 1), _boxes(1, 1, 1), reg_max=1, conf=0.5)
    cls.sum().backward()
    assert s.grad.item() < 0  # descending the loss raises the student's logit


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="do not cover"):
        lwf_terms(torch.zeros(1, 1, 3), torch.zeros(1, 2, 3), _boxes(1, 3, 1), _boxes(1, 3, 1),
                  reg_max=1, conf=0.5)


def test_hook_on_tiny_yolo_is_zero_against_itself_and_positive_after_change():
    from types import SimpleNamespace

    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(2, names={0: "a", 1: "b"}).eval()
    hook = DistillHook(model, cls_weight=1.0, box_weight=1.0, conf=0.0)
    hook.on_round_start(SimpleNamespace(device=torch.device("cpu")))
    img = torch.rand(2, 3, 64, 64)
    _, preds = model(img)
    loss = hook.on_batch_loss({"img": img}, preds, {})
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model.model[-1].cv3[0][-1].bias.add_(2.0)
    _, preds = model(img)
    assert hook.on_batch_loss({"img": img}, preds, {}).item() > 0
    assert set(hook.last_terms) == {"distill_cls", "distill_box"}
    hook.on_round_end(None)
    assert hook.teacher is None


def _frozen_student(parent, freeze: int):
    """A student as a later round builds it: the parent's copy, its first layers frozen."""
    import copy
    from types import SimpleNamespace

    from edgecl.continual.yolo_train import train_mode

    student = copy.deepcopy(parent)
    frozen = list(student.model[:freeze])
    for layer in frozen:
        for p in layer.parameters():
            p.requires_grad_(False)
    train_mode(student, frozen)
    return student, SimpleNamespace(device=torch.device("cpu"), frozen=frozen)


def test_teacher_shares_the_students_frozen_layers_with_the_same_outputs():
    import copy

    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    parent = build_detection_model(2, names={0: "a", 1: "b"}).eval()
    reference = copy.deepcopy(parent).eval()
    student, tuner = _frozen_student(parent, 10)
    for layer in parent.model[:10]:  # the teacher never runs them: they are not even copied
        layer.__deepcopy__ = lambda memo: pytest.fail("a shared layer was copied")
    hook = DistillHook(parent, cls_weight=1.0, box_weight=1.0, conf=0.0)
    hook.on_round_start(tuner)
    assert hook.shared_layers == 10
    calls = []
    hook.teacher.model[11].register_forward_hook(lambda *_: calls.append(1))
    for seed in (1, 2):  # two batches: the teacher follows the student's latest one
        img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
        student(img)
        with torch.no_grad():
            shared = hook.teacher(img)[1]
            full = reference(img)[1]
        for key in ("boxes", "scores"):
            assert torch.allclose(shared[key], full[key], atol=1e-5), key
    assert len(calls) == 2  # the unshared layers still run
    hook.on_round_end(None)
    assert hook.shared_layers == 0 and not student.model[0]._forward_hooks


def test_teacher_runs_in_full_when_the_frozen_layers_differ():
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    parent = build_detection_model(2, names={0: "a", 1: "b"}).eval()
    student, tuner = _frozen_student(parent, 4)
    with torch.no_grad():
        next(student.model[2].parameters()).add_(0.1)  # not the parent's weights any more
    hook = DistillHook(parent, cls_weight=1.0, box_weight=1.0, conf=0.0)
    hook.on_round_start(tuner)
    assert hook.shared_layers == 0
    hook.on_round_start(type(tuner)(device=tuner.device, frozen=[]))  # nothing frozen
    assert hook.shared_layers == 0


def test_a_bf16_student_shares_its_frozen_layers_with_a_teacher_in_bf16():
    """A round in bfloat16 autocast stores the frozen layers' outputs in bfloat16: the teacher
    runs in the same precision (before: a float32 convolution refused a bfloat16 input) and
    hands float32 outputs to the loss."""
    from types import SimpleNamespace

    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    parent = build_detection_model(2, names={0: "a", 1: "b"}).eval()
    student, tuner = _frozen_student(parent, 10)
    student.eval()  # BatchNorm as the teacher's: the same network, so the loss is about 0
    tuner = SimpleNamespace(**vars(tuner),
                            autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    hook = DistillHook(parent, cls_weight=1.0, box_weight=1.0, conf=0.0)
    hook.on_round_start(tuner)
    assert hook.shared_layers == 10
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with tuner.autocast():
        out = student(img)
    preds = {k: v.float() for k, v in out[1].items() if k in ("boxes", "scores")}
    loss = hook.on_batch_loss({"img": img}, preds, {})
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    hook.on_round_end(None)


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolo26n.yaml"])
def test_the_teacher_runs_with_batchnorm_folded_and_gives_the_same_outputs(cfg):
    """The teacher only ever runs in eval mode: each conv + BatchNorm is one conv (about 3 ms
    of a 130 ms step at 160 px); an end-to-end head keeps both branches, which distillation
    reads (ultralytics' DetectionModel.fuse would drop the one-to-many one)."""
    import copy
    from types import SimpleNamespace

    from torch import nn

    from edgecl.continual.distill import fuse_batchnorm
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    parent = build_detection_model(2, cfg=cfg, names={0: "a", 1: "b"}).eval()
    for m in parent.modules():  # statistics that are not the identity, so the fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = copy.deepcopy(parent)
    assert fuse_batchnorm(fused) > 50
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, got = parent(img)[1], fused(img)[1]
    branches = ("one2many", "one2one") if "one2one" in expected else (None,)
    for branch in branches:
        want = expected[branch] if branch else expected
        have = got[branch] if branch else got
        for key in ("boxes", "scores"):
            torch.testing.assert_close(have[key], want[key], rtol=1e-4, atol=1e-4)
    hook = DistillHook(parent, cls_weight=1.0, box_weight=1.0)
    hook.on_round_start(SimpleNamespace(device=torch.device("cpu"), frozen=[]))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in hook.teacher.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in parent.modules())  # the source untouched


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolo26n.yaml"])
def test_the_teacher_prepared_from_the_frozen_layers_outputs_equals_the_whole_teacher(cfg):
    """Where batches are prepared ahead of their step (the loading thread on a CPU), the
    teacher runs from the frozen layers' outputs the batch carries and gives the outputs of
    the whole previous model; without them (a GPU) it leaves the batch for on_batch_loss."""
    import copy

    from edgecl.continual import yolo_train
    from edgecl.continual.distill import TEACHER_KEY
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    parent = build_detection_model(2, cfg=cfg, names={0: "a", 1: "b"}).eval()
    reference = copy.deepcopy(parent).eval()
    student, tuner = _frozen_student(parent, 10)
    hook = DistillHook(parent, cls_weight=1.0, box_weight=1.0, conf=0.0)
    hook.on_round_start(tuner)
    assert hook.shared_layers == 10
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    batch = {"img": img}
    hook.on_batch_prepare(batch)
    assert TEACHER_KEY not in batch  # the student's own pass of this batch is needed
    batch[yolo_train.FROZEN_KEY] = yolo_train.FrozenLayers(student, 10)(img)
    hook.on_batch_prepare(batch)
    with torch.no_grad():
        expected = reference(img)[1]
    got = batch[TEACHER_KEY]
    for branch in ("one2many", "one2one") if "one2one" in expected else (None,):
        want, have = (expected[branch], got[branch]) if branch else (expected, got)
        for key in ("boxes", "scores"):
            torch.testing.assert_close(have[key], want[key], rtol=1e-4, atol=1e-4)
    # the loss takes the prepared outputs: the student's frozen layers never ran on this batch
    assert hook.on_batch_loss(batch, got, {}).item() == pytest.approx(0.0, abs=1e-4)
    hook.on_round_end(None)
