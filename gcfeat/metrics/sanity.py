r"""Sanity checks for saliency maps: do the maps depend on what the model learned?

* :func:`cascading_randomization` -- Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018, Sec. 3.1: re-initialise the model's layers one by one from the top (the logits)
  down, cumulatively, and compare each step's maps with the trained model's. Maps that stay
  similar while the weights that produced the decision are destroyed do not explain the
  decision. The user's model is never touched: a deep copy is randomised.
* :func:`random_logit_test` -- Sixt et al., "When Explanations Lie", ICML 2020, Sec. 5: the
  map of the explained class against the map of a random other class of the same image; a
  class-sensitive method gives different maps.

Similarity per image, 2D and 3D (maps flattened over all spatial dims):

* :func:`spearman` -- Spearman's rank correlation (Pearson correlation of the ranks, ties
  averaged, as ``scipy.stats.spearmanr``); NaN when a map is constant.
* :func:`ssim` -- structural similarity (Wang et al., IEEE TIP 2004) with an 11-tap Gaussian
  window (sigma 1.5), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = 1``, averaged over the
  positions whose window lies inside the map (``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False, data_range=1``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gcfeat.errors import GcfeatError
from gcfeat.metrics.faithfulness import gaussian_blur

__all__ = [
    "RandomLogitResult",
    "RandomizationResult",
    "SanityError",
    "cam_map_fn",
    "cascading_randomization",
    "random_logit_test",
    "spearman",
    "ssim",
    "top_down_layers",
]

MapFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


class SanityError(GcfeatError):
    """A sanity-check argument that cannot be used (layer names, shapes)."""


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks ``(B, N)`` (0-based) of each row, ties get their mean rank."""
    B, N = x.shape
    v, idx = x.sort(dim=1, stable=True)
    new = torch.ones_like(v, dtype=torch.bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    g = (new.cumsum(1) - 1) + torch.arange(B, device=x.device)[:, None] * N
    pos = torch.arange(N, device=x.device, dtype=torch.float64).expand(B, N)
    sums = torch.zeros(B * N, dtype=torch.float64, device=x.device).scatter_add_(
        0, g.flatten(), pos.flatten()
    )
    cnt = torch.zeros(B * N, dtype=torch.float64, device=x.device).scatter_add_(
        0, g.flatten(), torch.ones_like(pos).flatten()
    )
    avg = (sums / cnt.clamp(min=1))[g]
    return torch.empty_like(avg).scatter_(1, idx, avg)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row of ``a, b (B, *S)`` -> ``(B,)`` float64 (NaN when a
    row is constant)."""
    ra, rb = _average_ranks(a.flatten(1).double()), _average_ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp(min=1e-300), torch.full_like(den, float("nan")))


def ssim(a: Tensor, b: Tensor, *, data_range: float = 1.0, sigma: float = 1.5, radius: int = 5) -> Tensor:
    """Mean SSIM per map of ``a, b (B, *S)`` (2D or 3D) -> ``(B,)`` float64 (module docstring).
    Every spatial size must exceed ``2 * radius``."""
    if a.shape != b.shape:
        raise SanityError(f"ssim: maps of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if any(s <= 2 * radius for s in a.shape[1:]):
        raise SanityError(f"ssim: maps {tuple(a.shape[1:])} too small for a {2 * radius + 1}-tap window")
    a, b = a.double(), b.double()
    x = torch.stack([a, b], 1)  # (B, 2, *S)
    mu = gaussian_blur(x, sigma, radius)
    m2 = gaussian_blur(torch.stack([a * a, b * b, a * b], 1), sigma, radius)
    va, vb = m2[:, 0] - mu[:, 0] ** 2, m2[:, 1] - mu[:, 1] ** 2
    cov = m2[:, 2] - mu[:, 0] * mu[:, 1]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (
        (2 * mu[:, 0] * mu[:, 1] + c1)
        * (2 * cov + c2)
        / ((mu[:, 0] ** 2 + mu[:, 1] ** 2 + c1) * (va + vb + c2))
    )
    crop = (slice(None),) + (slice(radius, -radius),) * (a.dim() - 1)
    return s[crop].flatten(1).mean(1)


def top_down_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s direct children that hold parameters, output side first (for a
    torchvision ResNet: fc, layer4, layer3, layer2, layer1, bn1, conv1)."""
    return [n for n, m in reversed(list(model.named_children())) if any(True for _ in m.parameters())]


def _reinit(module: nn.Module, seed: int) -> None:
    """Re-initialise every submodule with ``reset_parameters`` (PyTorch's default init)."""
    torch.manual_seed(seed)
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


@dataclass
class RandomizationResult:
    """Similarity of the maps after each cumulative randomisation step.

    Attributes:
        steps: names of the layers re-initialised at each step (cumulative, top first);
        spearman, ssim: ``(S, B)`` float64 per step and image against the trained model's maps.
    """

    steps: list[str]
    spearman: Tensor
    ssim: Tensor

    def mean(self) -> tuple[Tensor, Tensor]:
        """``(S,)`` mean Spearman (NaN-ignoring) and SSIM per step."""
        sp = self.spearman.nan_to_num(nan=0.0).sum(1) / (~torch.isnan(self.spearman)).sum(1).clamp(min=1)
        return sp, self.ssim.mean(1)

    def unchanged_steps(self, threshold: float = 0.5) -> list[str]:
        """Steps whose maps still correlate above ``threshold`` (mean Spearman): the method is
        insensitive to those layers' weights. Empty = the sanity check passes."""
        sp, _ = self.mean()
        return [s for s, v in zip(self.steps, sp.tolist()) if v > threshold]

    def summary(self, threshold: float = 0.5) -> str:
        sp, ss = self.mean()
        lines = [
            f"randomised up to {s}: Spearman {a:.3f}, SSIM {b:.3f}"
            for s, a, b in zip(self.steps, sp.tolist(), ss.tolist())
        ]
        bad = self.unchanged_steps(threshold)
        lines.append(
            "maps change as the model is randomised"
            if not bad
            else f"maps do NOT change (Spearman > {threshold}) after randomising: {', '.join(bad)}"
        )
        return "\n".join(lines)


def _maps(map_fn: MapFn, model: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
    m = map_fn(model, images, classes)
    if m.shape[0] != images.shape[0] or m.shape[-(images.dim() - 2) :] != images.shape[2:]:
        raise SanityError(
            f"map_fn returned shape {tuple(m.shape)}, expected (B, *S) = "
            f"{(images.shape[0], *images.shape[2:])}"
        )
    return m.reshape(images.shape[0], *images.shape[2:]).detach().float()


def cam_map_fn(method, target_layers: Sequence[str], **kwargs) -> MapFn:
    """A ``map_fn`` running CAM class ``method`` on the named layers of the given model (so it
    follows the randomised copy): ``(model, images, classes (B,)) -> (B, *S)``."""

    def fn(model, images, classes):
        layers = [model.get_submodule(n) for n in target_layers]
        cam = method(model, layers, **kwargs)
        return cam(images, classes.reshape(-1, 1))[:, 0]

    return fn


def cascading_randomization(
    model: nn.Module,
    images: Tensor,
    classes,
    map_fn: MapFn,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> RandomizationResult:
    """Adebayo et al.'s cascading model-parameter randomisation (module docstring).

    Args:
        model: the trained model (left unchanged: a deep copy is randomised).
        images: ``(B, C, *S)``; classes: ``(B,)`` class explained per image.
        map_fn: ``(model, images, classes) -> (B, *S)`` maps, e.g.
            ``cam_map_fn(GradCAM, ["layer4"])``.
        layers: submodule names in randomisation order (default :func:`top_down_layers`).
        seed: step s re-initialises with ``torch.manual_seed(seed + s)``.

    Returns:
        :class:`RandomizationResult` with one step per layer.
    """
    classes = torch.as_tensor(classes, device=images.device).long().reshape(-1)
    layers = top_down_layers(model) if layers is None else list(layers)
    names = {n for n, _ in model.named_modules()}
    missing = [n for n in layers if n not in names]
    if missing or not layers:
        raise SanityError(
            f"layers: {missing or layers} are not submodules of the model; "
            f"expected names such as {top_down_layers(model)}"
        )
    ref = _maps(map_fn, model, images, classes)
    rng_state = torch.random.get_rng_state()
    copy_ = copy.deepcopy(model)
    sp, ss = [], []
    try:
        for s, name in enumerate(layers):
            _reinit(copy_.get_submodule(name), seed + s)
            m = _maps(map_fn, copy_, images, classes)
            sp.append(spearman(ref, m))
            ss.append(ssim(ref, m))
    finally:
        torch.random.set_rng_state(rng_state)  # the caller's random stream is left as it was
    return RandomizationResult(layers, torch.stack(sp), torch.stack(ss))


@dataclass
class RandomLogitResult:
    """Maps of the explained class vs a random other class: ``other (B,)`` the class drawn,
    ``spearman``, ``ssim`` ``(B,)``."""

    other: Tensor
    spearman: Tensor
    ssim: Tensor


def random_logit_test(
    model: nn.Module, images: Tensor, classes, map_fn: MapFn, num_classes: int, *, seed: int = 0
) -> RandomLogitResult:
    """Sixt et al.'s random-logit test: per image a class drawn uniformly among the other
    ``num_classes - 1`` (seeded), its map compared with the explained class's map."""
    classes = torch.as_tensor(classes, device=images.device).long().reshape(-1)
    if num_classes < 2:
        raise SanityError(f"num_classes: the random-logit test needs >= 2 classes, got {num_classes}")
    g = torch.Generator().manual_seed(int(seed))
    shift = torch.randint(1, num_classes, (len(classes),), generator=g).to(classes.device)
    other = (classes + shift) % num_classes
    a = _maps(map_fn, model, images, classes)
    b = _maps(map_fn, model, images, other)
    return RandomLogitResult(other, spearman(a, b), ssim(a, b))
