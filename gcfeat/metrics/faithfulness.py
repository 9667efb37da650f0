r"""Deletion / insertion faithfulness of saliency maps (RISE, Petsiuk et al. 2018).

Pixels (2D) or voxels (3D) are ordered by descending saliency (a stable sort, so ties keep raster
order). Over ``n_steps`` steps the top :math:`k_t` of them are switched from a *start* image to a
*target* image, and the model scores every step:

* deletion:  start = the image, target = ``baseline`` (zeros by default). Lower AUC is better.
* insertion: start = a blurred copy of the image (Gaussian, ``blur_sigma`` pixels, separable, over
  all spatial dims, replicate padding), target = the image. Higher AUC is better.

With :math:`N` pixels, :math:`k_t = \lfloor tN / n \rfloor` for :math:`t = 0..n`, so a curve has
``n_steps + 1`` points (default 129 steps -> 130 points, the seed's count) with x positions
:math:`k_t / N` in [0, 1]; the AUC is the trapezoid over them. The score of a step is the softmax
probability of the class (``score="prob"``) or 0/1 correctness of the arg-max (``"correct"``);
``activation="sigmoid"`` scores multi-label / binary heads by the sigmoid (correct: > 0.5).

All the steps of an image are one batch: ``mask_t = rank < k_t`` broadcast over channels, fed to
the model in chunks of ``batch_size``. 2D and 3D share the code (everything works on
``flatten(2)``).

Example::

    >>> res = deletion(model, x, heat[:, 0], classes=y)        # x (B, C, D, H, W), heat (B, D, H, W)
    >>> res.auc.mean(), res.auc.std(unbiased=False)            # DAUC mean +- std
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "Curves", "deletion", "insertion", "perturbation_curves", "gaussian_blur", "saliency_ranks",
    "step_counts", "trapezoid_auc", "mean_std", "random_saliency",
]


@dataclass
class Curves:
    """Per-image perturbation curves.

    ``scores (B, n_steps + 1)``, ``x (n_steps + 1,)`` fractions of pixels switched,
    ``auc (B,)`` trapezoid areas.
    """
    scores: torch.Tensor
    x: torch.Tensor
    auc: torch.Tensor

    def summary(self) -> tuple[float, float]:
        """(mean, population std) of the per-image AUCs."""
        return mean_std(self.auc)


def step_counts(num_pixels: int, n_steps: int, device=None) -> torch.Tensor:
    """``k_t = floor(t * N / n)`` for ``t = 0..n`` -> LongTensor ``(n + 1,)``; ``k_n = N``."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    t = torch.arange(n_steps + 1, device=device, dtype=torch.long)
    return torch.div(t * num_pixels, n_steps, rounding_mode="floor")


def saliency_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by descending saliency (stable): ``(B, *S) -> (B, N)`` long, 0 = top."""
    flat = saliency.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def trapezoid_auc(scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of ``scores (B, T)`` over ``x (T,)`` -> ``(B,)``."""
    return torch.trapezoid(scores, x.to(scores.dtype), dim=-1)


def mean_std(values: torch.Tensor) -> tuple[float, float]:
    """Mean and population standard deviation (``np.std``'s default) of a 1-D tensor."""
    v = values.double().flatten()
    return float(v.mean()), float(v.std(unbiased=False)) if v.numel() > 1 else 0.0


def random_saliency(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Uniform random saliency ``(B, *S)`` in [0, 1): the baseline a CAM must beat."""
    return torch.rand(shape, generator=generator, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``x (B, C, *S)`` over all spatial dims (2D or 3D).

    Kernel radius ``ceil(3 sigma)`` unless given; replicate padding, so any size works.
    ``sigma <= 0`` returns ``x`` unchanged.
    """
    if sigma <= 0:
        return x
    r = int(math.ceil(3 * sigma)) if radius is None else int(radius)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1)
    out = x
    for d in range(2, x.dim()):
        moved = out.movedim(d, -1)
        shape = moved.shape
        line = moved.reshape(-1, 1, shape[-1])
        line = F.pad(line, (r, r), mode="replicate")
        out = F.conv1d(line, k).reshape(shape).movedim(-1, d)
    return out


@torch.no_grad()
def perturbation_curves(model: torch.nn.Module, start: torch.Tensor, target: torch.Tensor,
                        saliency: torch.Tensor, classes, *, n_steps: int = 129,
                        score: str = "prob", activation: str = "softmax",
                        batch_size: int = 64) -> Curves:
    """Switch pixels from ``start`` to ``target`` in descending-saliency order; score each step.

    Args:
        model: classifier returning logits ``(b, num_classes)``; used as given (call ``eval()``).
        start, target: ``(B, C, *S)`` images (2D: S = H, W; 3D: S = D, H, W).
        saliency: ``(B, *S)`` or ``(B, 1, *S)``; the order in which pixels are switched.
        classes: ``(B,)`` class index scored per image (e.g. the true or predicted class).
        n_steps: number of steps; curves have ``n_steps + 1`` points.
        score: ``"prob"`` (class probability) or ``"correct"`` (1 if the class wins, else 0),
            or a tuple of both: then a dict ``{name: Curves}`` from the same forwards.
        activation: ``"softmax"`` (single-label) or ``"sigmoid"`` (multi-label / binary logit).
        batch_size: steps per forward pass.

    Returns:
        :class:`Curves` with ``scores (B, n_steps + 1)``, ``x (n_steps + 1,)``, ``auc (B,)``
        (a dict of them when ``score`` is a tuple).
    """
    names = (score,) if isinstance(score, str) else tuple(score)
    if not names or any(n not in ("prob", "correct") for n in names):
        raise ValueError(f"score must be 'prob', 'correct' or a tuple of them, got {score!r}")
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    B, C = start.shape[:2]
    spatial = start.shape[2:]
    if target.shape != start.shape:
        raise ValueError(f"start {tuple(start.shape)} and target {tuple(target.shape)} differ")
    if saliency.dim() == start.dim() and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if tuple(saliency.shape) != (B, *spatial):
        raise ValueError(f"saliency has shape {tuple(saliency.shape)}, expected "
                         f"{(B, *spatial)} (one map per image over the image's spatial dims)")
    classes = torch.as_tensor(classes, device=start.device).long().reshape(B)
    num = math.prod(spatial)
    counts = step_counts(num, n_steps, device=start.device)       # (T,)
    ranks = saliency_ranks(saliency.to(start.device))              # (B, N)
    T = counts.numel()
    scores = torch.empty(len(names), B, T, device=start.device, dtype=torch.float32)
    for b in range(B):
        src = start[b].flatten(1)                                  # (C, N)
        dst = target[b].flatten(1)
        for lo in range(0, T, batch_size):
            k = counts[lo:lo + batch_size]                         # (t,)
            mask = (ranks[b][None] < k[:, None]).unsqueeze(1)      # (t, 1, N)
            steps = torch.where(mask, dst[None], src[None]).reshape(len(k), C, *spatial)
            logits = model(steps)
            for i, name in enumerate(names):  # several scorings share the forwards
                scores[i, b, lo:lo + len(k)] = _score(logits, classes[b], name, activation)
    x = counts.to(torch.float32) / num
    curves = {n: Curves(scores=scores[i], x=x, auc=trapezoid_auc(scores[i], x))
              for i, n in enumerate(names)}
    return curves[score] if isinstance(score, str) else curves


def deletion(model, images, saliency, classes, *, baseline: float | torch.Tensor = 0.0,
             n_steps: int = 129, score: str = "prob", activation: str = "softmax",
             batch_size: int = 64) -> Curves:
    """Deletion curve: most salient pixels replaced by ``baseline`` first (lower AUC = better).

    ``images (B, C, *S)``; ``baseline`` a scalar or a tensor broadcastable to ``images``.
    """
    target = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    target = target.expand_as(images).contiguous()
    return perturbation_curves(model, images, target, saliency, classes, n_steps=n_steps,
                               score=score, activation=activation, batch_size=batch_size)


def insertion(model, images, saliency, classes, *, blur_sigma: float = 5.0,
              start: torch.Tensor | None = None, n_steps: int = 129, score: str = "prob",
              activation: str = "softmax", batch_size: int = 64) -> Curves:
    """Insertion curve: most salient pixels copied into a blurred image first (higher = better).

    ``start`` overrides the blurred copy (``gaussian_blur(images, blur_sigma)``).
    """
    if start is None:
        start = gaussian_blur(images, blur_sigma)
    return perturbation_curves(model, start, images, saliency, classes, n_steps=n_steps,
                               score=score, activation=activation, batch_size=batch_size)


def _score(logits: torch.Tensor, cls: torch.Tensor, score: str, activation: str) -> torch.Tensor:
    logits = logits.float()
    if score == "prob":
        p = logits.softmax(-1) if activation == "softmax" else logits.sigmoid()
        return p[:, cls]
    if activation == "softmax":
        return (logits.argmax(-1) == cls).float()
    return (logits[:, cls] > 0).float()
