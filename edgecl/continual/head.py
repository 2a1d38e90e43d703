"""Class-incremental growth of the YOLO detection head.

When labels name a class the model does not have, the class branch's last 1x1 conv of every
level (``cv3[i][-1]``, and ``one2one_cv3[i][-1]`` on end-to-end heads) gains output rows:
old rows keep their weights and biases (old-class outputs stay bit-identical), new rows
get ultralytics' ``Detect.bias_init`` class prior ``log(5 / nc / (640 / stride) ** 2)``
and the default conv weight initialisation.  An attached IDER prior adapter gains matching
zero input channels.
"""

from __future__ import annotations

import math

from edgecl.errors import LabelError


def class_prior_bias(nc: int, stride: float) -> float:
    """Ultralytics' ``Detect.bias_init`` class prior of a new class row: ``log(5 / nc / (640 /
    stride) ** 2)`` (about 5 objects per 640 px image spread over ``nc`` classes).

    Args:
        nc: class count of the head.
        stride: the level's stride in pixels.
    """
    return math.log(5 / nc / (640 / float(stride)) ** 2)


def _grown_conv(old, new_nc: int, stride: float):
    """Return a copy of a 1x1 class conv with ``new_nc`` output rows (old rows copied)."""
    grown = _fresh_conv(old, new_nc, stride)
    old_nc = old.out_channels
    grown.weight.data[:old_nc] = old.weight.data
    grown.bias.data[:old_nc] = old.bias.data if old.bias is not None else 0.0
    return grown


def _fresh_conv(old, nc: int, stride: float):
    """A 1x1 class conv shaped like ``old`` with ``nc`` rows: default weight initialisation,
    bias at :func:`class_prior_bias`."""
    from torch import nn

    fresh = nn.Conv2d(old.in_channels, nc, old.kernel_size, old.stride, old.padding,
                      bias=True).to(old.weight)
    fresh.bias.data[:] = class_prior_bias(nc, stride)
    return fresh


def _replace_class_convs(model, nc: int, make) -> None:
    """Replace the last conv of every class branch (``cv3[i]``, and ``one2one_cv3[i]`` on
    end-to-end heads) by ``make(old_conv, stride)`` and record ``nc`` classes on the head and
    the model."""
    head = model.model[-1]
    strides = head.stride.tolist()
    branches = [head.cv3]
    if getattr(head, "one2one_cv3", None) is not None:
        branches.append(head.one2one_cv3)
    for branch_list in branches:
        for i, branch in enumerate(branch_list):
            branch[-1] = make(branch[-1], strides[i])
    head.nc = nc
    head.no = nc + head.reg_max * 4
    model.nc = nc
    model.yaml["nc"] = nc


def resize_class_rows(model, nc: int) -> None:
    """Give a DetectionModel's head ``nc`` fresh class rows (default initialisation, bias at
    :func:`class_prior_bias`), every other weight unchanged; unlike :func:`grow_head` no row is
    kept, so the count may also shrink. For models without an IDER prior adapter.

    Args:
        model: DetectionModel, modified in place.
        nc: the class count (>= 1).
    """
    _replace_class_convs(model, nc, lambda old, stride: _fresh_conv(old, nc, stride))


def _check_new_ids(old_nc: int, new_names: dict[int, str]) -> int:
    """Validate class ids and return the new class count."""
    ids = sorted(int(k) for k in new_names)
    if ids and ids[0] < 0:
        raise LabelError(f"class id {ids[0]} is negative")
    new_nc = max([old_nc - 1, *ids]) + 1
    missing = [i for i in range(old_nc, new_nc) if i not in new_names]
    if missing:
        raise LabelError(f"cannot grow head from {old_nc} to {new_nc} classes: "
                         f"no name for class id(s) {missing}")
    return new_nc


def grow_head(model, new_names: dict[int, str]):
    """Add classes to a DetectionModel's head, keeping old-class outputs identical.

    Args:
        model: ultralytics DetectionModel (IDER adapter attached or not), modified in place.
        new_names: class id -> name for the classes to add; ids must continue the model's
            ids without gaps (ids the model already has keep their current names).

    Returns:
        The same model with ``model.nc``, ``model.yaml['nc']``, ``head.nc``, ``head.no`` and
        ``model.names`` updated (unchanged when nothing is new).

    Raises:
        LabelError: a negative id or a gap in the ids.
    """
    from edgecl.models.prior_adapter import grow_adapters

    head = model.model[-1]
    old_nc = int(head.nc)
    new_nc = _check_new_ids(old_nc, {int(k): v for k, v in new_names.items()})
    if new_nc == old_nc:
        return model
    _replace_class_convs(model, new_nc, lambda old, stride: _grown_conv(old, new_nc, stride))
    grow_adapters(model, new_nc)
    names = dict(getattr(model, "names", None) or {i: str(i) for i in range(old_nc)})
    names.update({int(k): str(v) for k, v in new_names.items() if int(k) >= old_nc})
    model.names = names
    if getattr(model, "criterion", None) is not None:
        model.criterion = None  # sized for the old class count
    return model
