"""IDER (idempotent experience replay) adapted to the YOLO head.

* :mod:`edgecl.models.prior_adapter` - the class-prior input of each level's class branch,
  and folding the constant prior into BatchNorm shifts for export (``fold_prior``); it is a
  part of the model that checkpoints and exports must know, so it lives with them.
* :mod:`.losses` - the second-pass classification loss and the idempotence distillation.
* :mod:`.hook` - ``IderHook``, which plugs both into ``edgecl.continual.finetune.FineTuner``.
"""

from edgecl.models.prior_adapter import (
    UNIFORM_PRIOR,
    PriorAdaptedConv,
    attach_prior_adapter,
    fold_prior,
    has_prior_adapter,
    prior_adapters,
    prior_context,
    set_priors,
    split_levels,
)
from edgecl.calibration.ider.hook import IderHook

__all__ = [
    "UNIFORM_PRIOR",
    "IderHook",
    "PriorAdaptedConv",
    "attach_prior_adapter",
    "fold_prior",
    "has_prior_adapter",
    "prior_adapters",
    "prior_context",
    "set_priors",
    "split_levels",
]
