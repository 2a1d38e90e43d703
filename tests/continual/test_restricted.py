"""The class loss restricted to a device's classes (:mod:`edgecl.continual.restricted`)."""

from types import SimpleNamespace

import numpy as np
import torch

from edgecl.continual.restricted import RestrictedClassLoss


def _loss_and_class_row_grads(hook):
    """Class loss of one image with one box of class 0 on a tiny 3-class YOLO, and the gradient
    of each class's output row (the bias of the last class conv of every level)."""
    from edgecl.continual import yolo_train
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(3, names={0: "a", 1: "b", 2: "c"})
    model.args = yolo_train.training_hyp(64, 0.001)
    model.train()
    tuner = SimpleNamespace(model=model, device=torch.device("cpu"),
                            criterion=yolo_train.make_criterion(model))
    if hook is not None:
        hook.on_round_start(tuner)
    batch = {"img": torch.rand(1, 3, 64, 64), "batch_idx": torch.zeros(1),
             "cls": torch.zeros(1, 1), "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}
    preds = model(batch["img"])
    loss, _ = tuner.criterion(preds, batch)
    cls_loss = loss[1].item()
    loss.sum().backward()
    rows = torch.stack([level[-1].bias.grad for level in model.model[-1].cv3]).abs().sum(0)
    return cls_loss, rows.numpy()


def test_only_the_held_classes_rows_learn():
    full_loss, full = _loss_and_class_row_grads(None)
    assert np.all(full > 0)  # the plain loss trains every class: 1 and 2 as background
    hook = RestrictedClassLoss([0, 7])  # 7 is beyond this head: ignored
    loss, restricted = _loss_and_class_row_grads(hook)
    assert restricted[0] > 0 and restricted[1] == 0 and restricted[2] == 0
    assert hook.weights.flatten().tolist() == [1.0, 0.0, 0.0]
    assert 0 < loss < full_loss  # the same positives, without classes 1 and 2's negatives
    assert hook.on_batch_loss({}, None, {}) is None
