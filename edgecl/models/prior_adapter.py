"""The IDER prior input of the YOLO class branch, and folding it away for export.

Where the prior enters.  Each level's class branch in ultralytics' ``Detect`` is
``cv3[i] = [DWConv 3x3 -> Conv 1x1] -> [DWConv 3x3 -> Conv 1x1] -> Conv2d 1x1 (nc)`` where
``Conv`` is conv -> BatchNorm -> SiLU.  The prior map (nc channels, one value per anchor)
goes through a zero-initialised 1x1 conv and is added to the first block's 1x1 ``Conv``
*after its BatchNorm and before its SiLU*::

    act(bn(conv(x)) + adapter(prior))

Why there: a constant prior then contributes a constant per-channel vector, which is exactly
a change of the BatchNorm shift (``bn.bias``), so :func:`fold_prior` is exact everywhere,
borders included (a constant added before a zero-padded 3x3 conv is not a bias at the image
border; a constant added before BatchNorm would be cancelled by batch statistics during
training and would mix pass-2 statistics into the running mean).

The uninformative prior is the constant ``UNIFORM_PRIOR = 0.5`` = sigmoid(0), the
maximum-entropy value of a per-class Bernoulli score.  It does not depend on the number of
classes, so growing the head (new adapter input channels start at zero) keeps every old
output unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

UNIFORM_PRIOR = 0.5


class PriorAdaptedConv(nn.Module):
    """An ultralytics ``Conv`` (conv -> BN -> act) with a class-prior term before the activation.

    Args:
        conv: the ultralytics ``Conv`` to wrap (kept as ``self.inner``, weights unchanged).
        nc: number of prior channels (the model's class count).

    Attributes:
        prior: transient per-pixel prior map ``(B, nc, H, W)``; ``None`` means the uniform
            constant prior.  Set it with :func:`prior_context`, never persist it.
    """

    def __init__(self, conv: nn.Module, nc: int):
        super().__init__()
        self.inner = conv
        out_channels = conv.conv.out_channels
        self.adapter = nn.Conv2d(nc, out_channels, 1, bias=False).to(conv.conv.weight)
        nn.init.zeros_(self.adapter.weight)  # attaching changes no output
        self.prior = None

    @property
    def nc(self) -> int:
        """Number of prior channels."""
        return self.adapter.in_channels

    def uniform_term(self) -> torch.Tensor:
        """Return adapter(constant uniform prior) as a per-channel vector.

        Returns:
            Tensor of shape (out_channels,).
        """
        return self.adapter.weight.sum(dim=(1, 2, 3)) * UNIFORM_PRIOR

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run conv -> BN, add the prior term, then the activation."""
        y = self.inner.conv(x)
        if hasattr(self.inner, "bn"):  # ultralytics' fuse() removes the BN
            y = self.inner.bn(y)
        if self.prior is None:
            y = y + self.uniform_term().view(1, -1, 1, 1)
        else:
            y = y + self.adapter(self.prior.to(y.dtype))
        return self.inner.act(y)

    def folded(self) -> nn.Module:
        """Return the inner ``Conv`` with the uniform prior term folded into its shift.

        Returns:
            The wrapped ultralytics ``Conv`` (modified in place), bit-for-bit the same
            module type a never-adapted model has.
        """
        shift = self.uniform_term().detach()
        if hasattr(self.inner, "bn"):
            self.inner.bn.bias.data += shift.to(self.inner.bn.bias)
        else:
            conv = self.inner.conv
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels).to(conv.weight))
            conv.bias.data += shift.to(conv.bias)
        return self.inner


def _prior_site(branch: nn.Sequential) -> tuple[nn.Module, int]:
    """Locate the first block's 1x1 Conv in a class branch (container, index)."""
    first = branch[0]
    if isinstance(first, nn.Sequential):  # YOLO11: [DWConv, Conv] -> the Conv
        return first, len(first) - 1
    return branch, 0  # legacy heads (v8): Conv 3x3 -> itself


def detect_head(model: nn.Module) -> nn.Module:
    """Return the ``Detect`` head of a DetectionModel.

    Args:
        model: ultralytics DetectionModel.

    Returns:
        The last layer.

    Raises:
        ValueError: the head has no one-to-many class branch (``cv3``).
    """
    head = model.model[-1]
    if getattr(head, "cv3", None) is None:
        raise ValueError(f"{type(head).__name__} head has no class branch cv3")
    return head


def prior_adapters(model: nn.Module) -> list[PriorAdaptedConv]:
    """List the attached prior adapters, one per detection level (empty when none).

    Args:
        model: DetectionModel.

    Returns:
        Adapters ordered by level.
    """
    head = detect_head(model)
    found = []
    for branch in head.cv3:
        container, index = _prior_site(branch)
        if isinstance(container[index], PriorAdaptedConv):
            found.append(container[index])
    return found


def has_prior_adapter(model: nn.Module) -> bool:
    """Tell whether IDER's prior adapter is attached.

    Args:
        model: DetectionModel.

    Returns:
        True when every level's class branch carries an adapter.
    """
    return len(prior_adapters(model)) > 0


def attach_prior_adapter(model: nn.Module) -> nn.Module:
    """Give each level's class branch a class-prior input (zero-initialised; idempotent).

    Args:
        model: DetectionModel with a one-to-many ``Detect`` head (YOLOv8/11 style).

    Returns:
        The same model, modified in place; outputs are unchanged by attaching.

    Raises:
        ValueError: the model is an end-to-end (one-to-one) model; IDER supports the
            one-to-many head only.
    """
    head = detect_head(model)
    if getattr(head, "one2one_cv3", None) is not None:
        raise ValueError("IDER's prior adapter supports one-to-many YOLO heads only (not end-to-end)")
    if has_prior_adapter(model):
        return model
    for branch in head.cv3:
        container, index = _prior_site(branch)
        container[index] = PriorAdaptedConv(container[index], head.nc)
    return model


def fold_prior(model: nn.Module) -> nn.Module:
    """Fold the constant uniform prior into BatchNorm shifts and remove the adapters.

    Exact for the uniform prior (up to float rounding): the result computes the same
    function with exactly the modules of a never-adapted model.  A model without
    adapters is returned unchanged.

    Args:
        model: DetectionModel, modified in place (fold a copy to keep the original).

    Returns:
        The same model object, now plain.
    """
    head = detect_head(model)
    for branch in head.cv3:
        container, index = _prior_site(branch)
        if isinstance(container[index], PriorAdaptedConv):
            container[index] = container[index].folded()
    return model


def set_priors(model: nn.Module, priors: Sequence[torch.Tensor] | None) -> None:
    """Set (or clear with ``None``) the per-level prior maps of a model's adapters.

    Args:
        model: DetectionModel with adapters.
        priors: one ``(B, nc, H_i, W_i)`` map per level, or ``None`` for the uniform prior.

    Raises:
        ValueError: the number of maps differs from the number of adapted levels.
    """
    adapters = prior_adapters(model)
    if priors is not None and len(priors) != len(adapters):
        raise ValueError(f"{len(priors)} prior maps for {len(adapters)} adapted levels")
    for i, adapter in enumerate(adapters):
        adapter.prior = None if priors is None else priors[i]


@contextlib.contextmanager
def prior_context(model: nn.Module, priors: Sequence[torch.Tensor] | None) -> Iterator[None]:
    """Run a block with the given prior maps, restoring the uniform prior afterwards.

    Args:
        model: DetectionModel with adapters.
        priors: per-level prior maps (see :func:`set_priors`).

    Yields:
        Nothing.
    """
    set_priors(model, priors)
    try:
        yield
    finally:
        set_priors(model, None)


def split_levels(scores: torch.Tensor, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split flattened anchor scores ``(B, C, A)`` into per-level maps ``(B, C, H_i, W_i)``.

    Args:
        scores: scores over all anchors (levels concatenated, as ``Detect`` does).
        feats: the per-level feature maps that give each level's H, W.

    Returns:
        One map per level.
    """
    sizes = [f.shape[2] * f.shape[3] for f in feats]
    chunks = scores.split(sizes, dim=2)
    return [c.reshape(c.shape[0], c.shape[1], f.shape[2], f.shape[3]) for c, f in zip(chunks, feats)]


def grow_adapters(model: nn.Module, new_nc: int) -> None:
    """Widen each adapter's prior input to ``new_nc`` channels (new channels start at zero).

    Args:
        model: DetectionModel with or without adapters.
        new_nc: the new class count (>= the current one).
    """
    for adapter in prior_adapters(model):
        old = adapter.adapter
        if old.in_channels >= new_nc:
            continue
        wider = nn.Conv2d(new_nc, old.out_channels, 1, bias=False).to(old.weight)
        nn.init.zeros_(wider.weight)
        wider.weight.data[:, : old.in_channels] = old.weight.data
        adapter.adapter = wider
