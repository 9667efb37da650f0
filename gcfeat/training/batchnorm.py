"""BatchNorm recalibration: the running statistics recomputed from the training data."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device="cpu") -> int:
    """Recompute every BatchNorm's running mean / variance as the plain average over the
    batches of ``loader`` (train-mode forwards, no gradients); returns the number of layers.

    Short runs need it: with momentum 0.1 the running statistics still carry their initial
    (0, 1) after a few dozen steps, and on mostly-zero volumes the first layers' true variance
    is ~1e-3, so eval-mode predictions collapse to one class while train-mode ones are right.
    """
    bns = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = mean over the batches
    model.train()
    for batch in loader:
        model(batch["image"].to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return len(bns)
