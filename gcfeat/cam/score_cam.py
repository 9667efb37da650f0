"""Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279), 2D and 3D."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from gcfeat.cam.base import _INTERP, BaseCAM, CAMError, _Forward, _Plan

__all__ = ["ScoreCAM"]

_SCORINGS = ("paper", "pytorch-grad-cam")


class ScoreCAM(BaseCAM):
    r"""Score-CAM: each channel is weighted by the model's score on the input masked by it.

    .. math::
        H_c = \mathrm{minmax}(\mathrm{up}(A_c)), \qquad
        s_c = f(X \circ H_c), \qquad
        L^k = \mathrm{ReLU}\Big(\sum_c w_c^k A_c\Big)

    ``scoring="paper"`` (default, the authors' code): :math:`w_c^k = \mathrm{softmax}(s_c)_k`,
    the softmax probability of class :math:`k`; channels whose activation map is constant are
    skipped (:math:`w_c^k = 0`), as in the authors' code. ``scoring="pytorch-grad-cam"``:
    :math:`w^k = \mathrm{softmax}_c(s_{c,k})`, raw logits with a softmax over channels; a
    constant channel gives an all-zero mask (:math:`H_c = 0`).

    The masked forwards do not depend on the class: one set of :math:`B \cdot C` masked inputs
    (minus skipped channels), ``batch_size`` at a time, serves all requested classes, so all
    classes cost the same as one. ``up`` is bilinear / trilinear (``align_corners`` selectable:
    pytorch-grad-cam uses ``True``, gcfeat defaults to ``False`` like its other resizes).
    Constancy is decided at feature resolution (``max == min``), which avoids the rounding noise
    that interpolating a constant map can produce. The sum :math:`\sum_c w_c^k A_c` is formed
    at feature resolution and then resized like every other method (the paper sums the
    upsampled maps; the two differ only through the ReLU before resizing).

    Args:
        model, target_layers: see :class:`~gcfeat.cam.base.BaseCAM`.
        scoring: ``"paper"`` or ``"pytorch-grad-cam"``.
        batch_size: masked inputs per forward (memory knob: ``batch_size`` inputs and their
            activations).
        channels_last: feed the masked inputs in channels-last memory format (``None``: on
            the CPU only, where oneDNN runs ResNets about 1.4x faster that way; the numbers
            change only by float rounding).
        align_corners: for upsampling the masks.
        progress: show a tqdm bar over the masked batches (None: only on a terminal).

    Example:
        >>> from gcfeat.models.resnet3d import resnet3d_18
        >>> model = resnet3d_18(num_classes=11).eval()
        >>> cam = ScoreCAM(model, [model.layer4], batch_size=64)
        >>> heat = cam(torch.rand(2, 1, 28, 28, 28))         # (2, 11, 28, 28, 28)
    """

    def __init__(self, model: nn.Module, target_layers, *, scoring: str = "paper",
                 batch_size: int = 64, align_corners: bool = False,
                 channels_last: bool | None = None, progress: bool | None = None):
        super().__init__(model, target_layers)
        if scoring not in _SCORINGS:
            raise CAMError(f"scoring: expected one of {_SCORINGS}, found {scoring!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise CAMError(f"batch_size: expected a positive int, found {batch_size!r}")
        self.scoring = scoring
        self.batch_size = batch_size
        self.align_corners = bool(align_corners)
        self.channels_last = channels_last
        self.progress = progress

    def _layer_maps(self, x: Tensor, fwd: _Forward, sel: Tensor, plan: _Plan) -> list[Tensor]:
        return [self._layer_map(x, a, sel) for a in fwd.acts]

    @torch.no_grad()
    def _layer_map(self, x: Tensor, act: Tensor, sel: Tensor) -> Tensor:
        B, C = act.shape[:2]
        flat = act.flatten(2)
        lo, hi = flat.amin(-1), flat.amax(-1)                       # (B, C)
        varying = hi > lo
        paper = self.scoring == "paper"
        pairs = varying.nonzero() if paper else torch.cartesian_prod(
            torch.arange(B, device=x.device), torch.arange(C, device=x.device))
        scores = torch.zeros(B, C, sel.shape[1], dtype=torch.float32, device=x.device)
        size, mode = x.shape[2:], _INTERP[x.ndim - 2]
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim)
        if not (x.device.type == "cpu" if self.channels_last is None else self.channels_last):
            fmt = None
        chunks = range(0, pairs.shape[0], self.batch_size)
        for i in tqdm(chunks, desc="Score-CAM masked forwards", leave=False,
                      disable=None if self.progress is None else not self.progress):
            b, c = pairs[i:i + self.batch_size].unbind(1)
            up = F.interpolate(act[b, c][:, None], size=size, mode=mode,
                               align_corners=self.align_corners)
            up_f = up.flatten(2)
            mn, mx = up_f.amin(-1, keepdim=True), up_f.amax(-1, keepdim=True)
            eps = 0.0 if paper else 1e-8          # paper: only varying channels get here
            denom = mx - mn + eps
            up_f = (up_f - mn) / torch.where(denom > 0, denom, torch.ones_like(denom))
            up_f = up_f * varying[b, c].to(up_f.dtype)[:, None, None]   # constant -> zero mask
            masks = up_f.reshape(up.shape)
            masked = x[b] * masks
            if fmt is not None:
                masked = masked.contiguous(memory_format=fmt)
            logits = self.model(masked).float()                           # (n, N)
            if paper:
                logits = logits.softmax(-1)
            scores[b, c] = logits.gather(1, sel[b])
        weights = scores if paper else scores.softmax(1)                  # (B, C, K)
        m = torch.einsum("bck,bcs->bks", weights.to(act.dtype), flat)
        return m.reshape(B, -1, *act.shape[2:])
