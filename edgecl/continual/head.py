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


def _grown_conv(old, new_nc: int, stride: float):
    """Return a copy of a 1x1 class conv with ``new_nc`` output rows (old rows copied)."""
    from torch import nn

    grown = nn.Conv2d(old.in_channels, new_nc, old.kernel_size, old.stride, old.padding,
                      bias=True).to(old.weight)
    old_nc = old.out_channels
    grown.weight.data[:old_nc] = old.weight.data
    grown.bias.data[:old_nc] = old.bias.data if old.bias is not None else 0.0
    grown.bias.data[old_nc:] = math.log(5 / new_nc / (640 / float(stride)) ** 2)
    return grown


def _grow_branches(branches, new_nc: int, strides) -> None:
    for i, branch in enumerate(branches):
        branch[-1] = _grown_conv(branch[-1], new_nc, strides[i])


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
    from edgecl.calibration.ider.adapter import grow_adapters

    head = model.model[-1]
    old_nc = int(head.nc)
    new_nc = _check_new_ids(old_nc, {int(k): v for k, v in new_names.items()})
    if new_nc == old_nc:
        return model
    strides = head.stride.tolist()
    _grow_branches(head.cv3, new_nc, strides)
    if getattr(head, "one2one_cv3", None) is not None:
        _grow_branches(head.one2one_cv3, new_nc, strides)
    grow_adapters(model, new_nc)
    head.nc = new_nc
    head.no = new_nc + head.reg_max * 4
    model.nc = new_nc
    model.yaml["nc"] = new_nc
    names = dict(getattr(model, "names", None) or {i: str(i) for i in range(old_nc)})
    names.update({int(k): str(v) for k, v in new_names.items() if int(k) >= old_nc})
    model.names = names
    if getattr(model, "criterion", None) is not None:
        model.criterion = None  # sized for the old class count
    return model
