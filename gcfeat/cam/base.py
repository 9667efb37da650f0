"""Shared machinery of the CAM family: hooks, one forward, batched class gradients, normalisation.

Every method in :mod:`gcfeat.cam` runs the backbone ONCE per call, for the whole batch and all
requested classes, and stays in torch on the input's device. 2D ``(B, C, H, W)`` and 3D
``(B, C, D, H, W)`` inputs share one code path: reductions run over ``flatten(2)`` ("all spatial
dims") and resizing picks bilinear / trilinear from the number of spatial dims.

Post-processing (identical to pytorch-grad-cam 1.5.7, so maps agree to ~1e-6):

1. per target layer ``l`` and class ``k``: ``M = ReLU(raw map)`` at feature resolution;
2. min-max per image and class over all spatial dims: ``(M - min) / (max - min + 1e-7)``
   (``1e-7`` is pytorch-grad-cam's ``scale_cam_image`` eps; a constant map becomes zeros,
   never NaN); these are :attr:`CAMResult.layer_heatmaps`;
3. resize to the input's spatial size, ``F.interpolate(..., mode="bilinear"|"trilinear",
   align_corners=False)``. This equals pytorch-grad-cam's ``cv2.resize(img, (W, H))``
   (INTER_LINEAR uses the same half-pixel centres and edge clamping; measured max difference
   5e-7 for 7x7->224x224, 8x10->256x320, 7x9->230x300, 13x17->100x37). In 3D pytorch-grad-cam
   uses ``scipy.ndimage.zoom`` (cubic spline), which gcfeat deliberately does not copy;
4. mean over target layers, then min-max again -> :attr:`CAMResult.heatmap` in ``[0, 1]``.

Gradients: gradient methods need ``dS_k / dA`` for every requested class ``k`` (``S_k`` = raw
logit, like ``ClassifierOutputTarget(k)``). gcfeat takes them in ONE batched backward,
``torch.autograd.grad(logits, activations, grad_outputs=one_hots, is_grads_batched=True)``,
with respect to the hooked activations only: parameters' ``.grad`` is never touched and the
part of the network before the first target layer runs without building a graph. Classes are
processed ``class_chunk`` at a time to bound memory (``class_chunk * B * C * prod(spatial)``
gradient values per layer). Should ``vmap`` fail on some op of the model, gcfeat falls back
to a loop over the classes of a chunk (warning once).

Closed form: when the target layer's output feeds global average pooling -> (dropout) ->
linear (torchvision ResNets and :mod:`gcfeat.models.resnet3d` with target ``model.layer4`` or
``model.layer4[-1]``), ``dS_k / dA[c, i] = W[k, c] / area`` exactly, so gradient methods need no
backward at all. This is detected structurally and then verified numerically on each call
(the head's input must equal the pooled activation and the head's output must be the model's
output); any dropout in the head must be inactive (``model.eval()``), otherwise gcfeat uses the
general path.

Token models: a ``reshape_transform`` turns a target layer's output into ``(B, C, *grid)``
(pytorch-grad-cam's option; gradients go through the same transform). ``"auto"`` (default)
takes :func:`gcfeat.models.levels.token_reshape`: torchvision / timm ViT and DeiT (class and
distillation tokens dropped, tokens laid on the patch grid) and Swin (channels last -> first);
other layers are used as they are. The closed form is never used with a reshape transform.

Targets: besides class indices, ``explain(x, targets=[...])`` takes pytorch-grad-cam's
target callables (:mod:`gcfeat.cam.targets`): plain ``ClassifierOutputTarget`` lists are read as
class indices (all-classes speed, closed form allowed); any other target (softmax, a lambda, a
segmentation mask) is differentiated as pytorch-grad-cam does, ``sum_i target_i(output_i)`` in
one backward, and never through the closed form (it holds for raw logits only).

Smoothing (:mod:`gcfeat.cam.smooth`): ``aug_smooth=True`` averages the maps of augmented
inputs mapped back (pytorch-grad-cam's flips x brightness set by default);
``eigen_smooth=True`` replaces the channel sum of the weighted activations by their first
principal component (gradient methods and Score-CAM; Eigen-CAM already is one).

Hygiene: hooks live only for the duration of a call (registered in :meth:`BaseCAM.explain`,
removed in ``finally``); the model's train/eval mode is left as the user set it (call
``model.eval()`` for explanations: in train mode batch norm uses batch statistics and updates
its running stats, as any forward would); everything returned is detached.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gcfeat.cam.smooth import DEFAULT_AUGMENTATIONS, eigen_projection
from gcfeat.cam.targets import plain_classes, target_scores
from gcfeat.errors import GcfeatError
from gcfeat.models.levels import token_reshape

__all__ = [
    "BaseCAM",
    "GradientCAM",
    "CAMError",
    "CAMResult",
    "minmax_normalize",
    "resize_maps",
    "gap_linear_head",
]

#: pytorch-grad-cam's ``scale_cam_image`` eps.
EPS = 1e-7
_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}

Classes = None | int | str | Sequence[int] | Tensor
Transform = Callable[[Tensor], Tensor] | None


class CAMError(GcfeatError):
    """A CAM call the user can fix: wrong input shape, layer, class index or option."""


@dataclass
class CAMResult:
    """Everything one CAM call produces, all detached and on the input's device.

    Attributes:
        heatmap: ``(B, K', *spatial)`` float32 in ``[0, 1]``; ``spatial`` is the input's
            (or the first target layer's feature size with ``resize=False``).
        layer_heatmaps: one ``(B, K', *feature_spatial_l)`` float32 per target layer, after
            ReLU and min-max, at feature resolution.
        logits: ``(B, N)`` model output of the same forward.
        activations: one ``(B, C_l, *feature_spatial_l)`` per target layer.
        extra: one ``(B, C, *s)`` per ``extra_layers`` entry.
        classes: ``(K',)`` int64 class indices, or ``(B, K')`` when chosen per image.
    """

    heatmap: Tensor
    layer_heatmaps: list[Tensor]
    logits: Tensor
    activations: list[Tensor]
    extra: list[Tensor] = field(default_factory=list)
    classes: Tensor | None = None


# --------------------------------------------------------------------------------------------
# plain functions over tensors


def minmax_normalize(maps: Tensor, spatial_dims: int, eps: float = EPS) -> Tensor:
    """Min-max each map over its last ``spatial_dims`` dims: ``(m - min) / (max - min + eps)``.

    ``maps``: ``(..., *spatial)``; returns the same shape. A constant map becomes zeros.
    """
    flat = maps.flatten(-spatial_dims) if spatial_dims > 1 else maps
    flat = flat - flat.amin(-1, keepdim=True)
    flat = flat / (flat.amax(-1, keepdim=True) + eps)
    return flat.reshape(maps.shape)


def resize_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Resize ``(B, K, *s)`` maps to ``(B, K, *size)``: linear / bilinear / trilinear by
    ``len(size)``, ``align_corners=False`` (equal to ``cv2.resize`` INTER_LINEAR in 2D)."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode=_INTERP[len(size)], align_corners=False)


def _head_linear(fc: nn.Module | None) -> nn.Linear | None:
    """``fc`` if it is a Linear, or the Linear of ``Sequential(Dropout/Identity..., Linear)``."""
    if isinstance(fc, nn.Linear):
        return fc
    if isinstance(fc, nn.Sequential) and len(fc) and isinstance(fc[-1], nn.Linear):
        if all(isinstance(m, (nn.Dropout, nn.Identity, nn.Flatten)) for m in list(fc)[:-1]):
            return fc[-1]
    return None


def gap_linear_head(model: nn.Module, layer: nn.Module) -> nn.Linear | None:
    """The head Linear if ``layer``'s output feeds ``avgpool`` (adaptive, to 1) -> ``fc``.

    Structural check for torchvision-style ResNets (``model.avgpool``, ``model.fc`` a Linear or
    ``Sequential(Dropout, Linear)``): ``layer`` must be the child registered just before
    ``avgpool`` (``model.layer4``) or, when that child is a Sequential, its last element
    (``model.layer4[-1]``). Returns None when the structure does not match or when a dropout in
    the head is active (train mode), because then ``dS/dA`` is not ``W / area``.
    """
    pool, fc = getattr(model, "avgpool", None), getattr(model, "fc", None)
    if not isinstance(pool, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        return None
    if not isinstance(fc, nn.Module):
        return None
    out = pool.output_size
    if any(o != 1 for o in (out if isinstance(out, (tuple, list)) else (out,))):
        return None
    linear = _head_linear(fc)
    if linear is None:
        return None
    if any(isinstance(m, nn.Dropout) and m.training and m.p > 0 for m in fc.modules()):
        return None
    children = list(model.children())
    idx = next((i for i, m in enumerate(children) if m is pool), 0)
    if idx == 0:
        return None
    prev = children[idx - 1]
    if layer is prev or (isinstance(prev, nn.Sequential) and len(prev) and layer is prev[-1]):
        return linear
    return None


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name or "<model>"
    return type(module).__name__


# --------------------------------------------------------------------------------------------
# hooks


class _Recorder:
    """Forward hooks of one call.

    Target layers: with ``grad_leaves`` the first target hook switches autograd on (the forward
    before it runs under ``no_grad``) and each activation becomes a tensor that requires grad;
    downstream layers receive a clone, so in-place ops after the target (``ReLU(inplace=True)``,
    ``out += identity``) cannot change the recorded activation or its gradient. Without
    ``grad_leaves`` a detached clone is kept. ``head`` records the head Linear's input and
    output for the closed-form check.
    """

    def __init__(
        self, targets: list[nn.Module], extras: list[nn.Module], grad_leaves: bool, head: nn.Linear | None
    ):
        self.grad_leaves = grad_leaves
        self.acts: list[Tensor | None] = [None] * len(targets)
        self.extra: list[Tensor | None] = [None] * len(extras)
        self.head_in: Tensor | None = None
        self.head_out: Tensor | None = None
        self.handles = []
        try:
            for i, m in enumerate(targets):
                self.handles.append(m.register_forward_hook(functools.partial(self._target, i)))
            for i, m in enumerate(extras):
                self.handles.append(m.register_forward_hook(functools.partial(self._extra, i)))
            if head is not None:
                self.handles.append(head.register_forward_hook(self._head))
        except BaseException:
            self.remove()
            raise

    def _target(self, i: int, module: nn.Module, args, out):
        if not isinstance(out, Tensor):
            raise CAMError(
                f"target_layers[{i}] ({type(module).__name__}) returned "
                f"{type(out).__name__}; expected a tensor (B, C, *spatial)"
            )
        if not self.grad_leaves:
            self.acts[i] = out.detach().clone()
            return None
        if not torch.is_grad_enabled():
            torch.set_grad_enabled(True)  # restored by the caller's `with torch.no_grad()`
        act = out if out.requires_grad else out.detach().requires_grad_()
        self.acts[i] = act
        return act.clone()

    def _extra(self, i: int, module: nn.Module, args, out):
        if not isinstance(out, Tensor):
            raise CAMError(
                f"extra_layers[{i}] ({type(module).__name__}) returned "
                f"{type(out).__name__}; expected a tensor"
            )
        self.extra[i] = out.detach().clone()

    def _head(self, module: nn.Module, args, out):
        self.head_in, self.head_out = args[0].detach(), out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


@dataclass
class _Forward:
    logits: Tensor
    acts: list[Tensor]  # (B, C, *grid) per target layer (reshaped)
    extra: list[Tensor]
    head_in: Tensor | None
    head_out: Tensor | None
    leaves: list[Tensor] = field(default_factory=list)  # raw outputs (autograd leaves)


@dataclass
class _Plan:
    grad: bool  # record a graph from the target layers on
    head: nn.Linear | None  # head Linear to probe (closed form / CAM)
    closed_form: bool
    score: Callable[[Tensor], Tensor] | None = None  # outputs -> (B,) instead of classes
    eigen: bool = False  # eigen_smooth


def apply_transform(t: Tensor, transform: Transform, lead: int = 1) -> Tensor:
    """``transform`` on ``t`` whose first ``lead`` dims are batch-like: ``(*lead, *out)``
    -> ``(*lead, C, *grid)``."""
    if transform is None:
        return t
    out = transform(t.flatten(0, lead - 1) if lead > 1 else t)
    return out.reshape(*t.shape[:lead], *out.shape[1:]) if lead > 1 else out


# --------------------------------------------------------------------------------------------
# base classes


class BaseCAM:
    """Base of every CAM method: hooks, the single forward, class selection, post-processing.

    Args:
        model: a classifier returning logits ``(B, N)``.
        target_layers: a module or a list of modules of ``model`` whose output ``(B, C, *s)``
            is explained; maps of several layers are averaged. A module called several times
            per forward is recorded at its last call.

        reshape_transform: ``"auto"`` (known token layouts, see the module docstring), None,
            a callable ``output -> (B, C, *grid)`` for every target layer, or a list of one
            callable (or None) per target layer.

    Subclasses implement :meth:`_layer_maps` (raw, un-normalised maps per target layer).
    """

    #: whether the method needs dS/dA (decides whether the forward records a graph)
    uses_gradients: bool = False
    #: whether the method explains target callables other than class logits
    supports_score: bool = False

    def __init__(
        self, model: nn.Module, target_layers: nn.Module | Sequence[nn.Module], *, reshape_transform="auto"
    ):
        if not isinstance(model, nn.Module):
            raise CAMError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
        if isinstance(target_layers, nn.Module):
            target_layers = [target_layers]
        target_layers = list(target_layers)
        if not target_layers or not all(isinstance(m, nn.Module) for m in target_layers):
            raise CAMError(
                f"target_layers: expected a non-empty list of modules of the model, found {target_layers!r}"
            )
        owned = {id(m) for m in model.modules()}
        for i, m in enumerate(target_layers):
            if id(m) not in owned:
                raise CAMError(f"target_layers[{i}] ({type(m).__name__}) is not a submodule of the model")
        self.model = model
        self.target_layers = target_layers
        self.reshape_transform = reshape_transform
        self._transforms = self._resolve_transforms(reshape_transform)

    def _resolve_transforms(self, spec) -> list[Transform]:
        n = len(self.target_layers)
        if isinstance(spec, str):
            if spec != "auto":
                raise CAMError(
                    f"reshape_transform: expected 'auto', None, a callable or a list of them, found {spec!r}"
                )
            return [token_reshape(self.model, m) for m in self.target_layers]
        if spec is None or callable(spec):
            return [spec] * n
        spec = list(spec)
        if len(spec) != n or not all(t is None or callable(t) for t in spec):
            raise CAMError(
                f"reshape_transform: expected one callable (or None) per target layer ({n}), found {spec!r}"
            )
        return spec

    # -- public API ---------------------------------------------------------------------------

    def __call__(self, x: Tensor, classes: Classes = None, *, resize: bool = True, **kwargs) -> Tensor:
        """Heatmaps ``(B, K', *x.shape[2:])`` float32 in ``[0, 1]`` (see :meth:`explain`)."""
        return self.explain(x, classes, resize=resize, **kwargs).heatmap

    def explain(
        self,
        x: Tensor,
        classes: Classes = None,
        *,
        targets=None,
        extra_layers: Iterable = (),
        resize: bool = True,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        augmentations=None,
    ) -> CAMResult:
        """One forward (and for gradient methods one batched backward) for all classes.

        Args:
            x: input ``(B, C, *spatial)``, 1 to 3 spatial dims, on the model's device.
            classes: None (every output), an int, a sequence / ``(K',)`` tensor of class
                indices (same for every image, in that order), a ``(B, K')`` tensor (per
                image), or ``"argmax"`` (each image's top class, ``(B, 1)``).
            targets: instead of ``classes``, one pytorch-grad-cam target callable per image
                (:mod:`gcfeat.cam.targets`); ``heatmap`` is then ``(B, 1, *spatial)`` and
                ``classes`` the indices of plain ``ClassifierOutputTarget`` lists, else None.
            extra_layers: modules (or ``(module, reshape_transform)`` pairs) whose outputs are
                recorded (detached) from the same forward, e.g. ``(model.layer2,
                model.layer3)`` for ROI features; a bare module gets the ``"auto"`` reshape
                when the CAM's ``reshape_transform`` is ``"auto"``.
            resize: False keeps ``heatmap`` at the first target layer's feature resolution.
            aug_smooth: average over ``augmentations`` (default: pytorch-grad-cam's six
                flips x brightness); the other fields come from the un-augmented pass,
                ``layer_heatmaps`` are averaged like ``heatmap``.
            eigen_smooth: first principal component of the weighted activations instead of
                their channel sum (see :mod:`gcfeat.cam.smooth`).
            augmentations: objects with ``augment_image`` / ``deaugment_mask``.

        Returns:
            :class:`CAMResult`.
        """
        x = self._check_input(x)
        extras = self._extras(extra_layers)
        score = None
        if targets is not None:
            if classes is not None:
                raise CAMError("classes and targets: pass one of them, not both")
            targets = list(targets)
            if len(targets) != x.shape[0]:
                raise CAMError(f"targets: expected one target per image ({x.shape[0]}), found {len(targets)}")
            cats = plain_classes(targets)
            if cats is not None:
                classes = torch.tensor(cats, device=x.device).view(-1, 1)
            else:
                score = functools.partial(target_scores, targets)
        if not aug_smooth:
            return self._explain_once(x, classes, score, extras, resize, eigen_smooth)
        runs = [
            (a, self._explain_once(a.augment_image(x), classes, score, extras, resize, eigen_smooth))
            for a in (DEFAULT_AUGMENTATIONS if augmentations is None else augmentations)
        ]
        if not runs:
            raise CAMError("augmentations: expected at least one augmentation")
        base = next((r for a, r in runs if getattr(a, "identity", False)), runs[0][1])
        with torch.no_grad():
            heat = torch.stack([a.deaugment_mask(r.heatmap) for a, r in runs]).mean(0)
            layers = [
                torch.stack([a.deaugment_mask(r.layer_heatmaps[i]) for a, r in runs]).mean(0)
                for i in range(len(base.layer_heatmaps))
            ]
        return replace(base, heatmap=heat, layer_heatmaps=layers)

    def _extras(self, extra_layers: Iterable) -> list[tuple[nn.Module, Transform]]:
        out = []
        for i, e in enumerate(extra_layers):
            m, t = e if isinstance(e, tuple) and len(e) == 2 else (e, "auto")
            if not isinstance(m, nn.Module) or not (t is None or t == "auto" or callable(t)):
                raise CAMError(
                    f"extra_layers[{i}]: expected a module or a (module, reshape_transform) pair, found {e!r}"
                )
            if isinstance(t, str):
                t = token_reshape(self.model, m) if isinstance(self.reshape_transform, str) else None
            out.append((m, t))
        return out

    def _explain_once(
        self, x: Tensor, classes: Classes, score, extras, resize: bool, eigen: bool
    ) -> CAMResult:
        if score is not None and not self.supports_score:
            raise CAMError(
                f"{type(self).__name__} explains class logits only; targets other "
                f"than ClassifierOutputTarget need a gradient method (GradCAM ...)"
            )
        plan = replace(self._plan(score), score=score, eigen=eigen)
        try:
            fwd = self._forward(x, extras, plan)
        except RuntimeError:
            self._check_channels(x)  # the usual cause, said in the caller's terms
            raise
        _check_finite(
            fwd.logits, "model output (logits)", "the model's weights hold NaN / inf or its forward overflows"
        )
        if plan.closed_form and not self._head_matches(fwd, plan.head):
            plan = replace(self._closed_form_failed(), score=score, eigen=eigen)
            fwd = self._forward(x, extras, plan)
        if score is None:
            sel, classes_out = _select_classes(classes, fwd.logits)
        else:
            sel = torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device)
            classes_out = None
        raw = self._layer_maps(x, fwd, sel, plan)
        with torch.no_grad():
            layer_maps = [minmax_normalize(m.detach().float().clamp_min(0), m.ndim - 2) for m in raw]
            size = x.shape[2:] if resize else layer_maps[0].shape[2:]
            resized = [resize_maps(m, size) for m in layer_maps]
            agg = resized[0] if len(resized) == 1 else torch.stack(resized).mean(0)
            heat = minmax_normalize(agg, len(size))
        return CAMResult(
            heatmap=heat,
            layer_heatmaps=layer_maps,
            logits=fwd.logits.detach(),
            activations=[a.detach() for a in fwd.acts],
            extra=list(fwd.extra),
            classes=classes_out,
        )

    def close(self) -> None:
        """Nothing to release: hooks only exist during a call. Kept for symmetry with
        pytorch-grad-cam's ``release()``."""

    release = close

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(_module_name(self.model, m) for m in self.target_layers)
        return f"{type(self).__name__}(target_layers=[{names}])"

    # -- for subclasses -----------------------------------------------------------------------

    def _plan(self, score=None) -> _Plan:
        return _Plan(grad=self.uses_gradients, head=None, closed_form=False)

    def _closed_form_failed(self) -> _Plan:
        raise CAMError(
            f"{type(self).__name__}: the head is not global-average-pool -> linear "
            f"on the target layer's output (the head's input differs from the "
            f"pooled activation); expected a ResNet-like model with target "
            f"model.layer4 or model.layer4[-1] and inactive dropout (model.eval())"
        )

    def _layer_maps(self, x: Tensor, fwd: _Forward, sel: Tensor, plan: _Plan) -> list[Tensor]:
        """Raw maps, one ``(B, K', *s_l)`` per target layer (before ReLU / min-max)."""
        raise NotImplementedError

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _check_input(x) -> Tensor:
        if not isinstance(x, Tensor):
            raise CAMError(f"x: expected a torch.Tensor (B, C, *spatial), found {type(x).__name__}")
        if x.ndim not in (3, 4, 5) or not x.is_floating_point():
            raise CAMError(
                f"x: expected a floating tensor (B, C, H, W) or (B, C, D, H, W), "
                f"found shape {tuple(x.shape)} dtype {x.dtype}"
            )
        if x.shape[0] == 0 or 0 in x.shape[2:]:
            raise CAMError(
                f"x: empty input of shape {tuple(x.shape)}; expected at least one "
                f"image (B >= 1) with non-empty spatial dims"
            )
        _check_finite(x, "x", "expected finite, normalised inputs")
        return x

    def _check_channels(self, x: Tensor) -> None:
        """Raise :class:`CAMError` when the model's first convolution does not take ``x``'s
        channel count or number of spatial dims (checked after a failed forward, so a model
        whose first registered convolution is not its stem is never refused)."""
        conv = next((m for m in self.model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if conv is None:
            return
        dims = len(conv.kernel_size)
        if x.ndim - 2 != dims or x.shape[1] != conv.in_channels:
            want = ", ".join(["B", str(conv.in_channels), *"DHW"[3 - dims :]])
            raise CAMError(
                f"x: shape {tuple(x.shape)}, but the model's first convolution "
                f"({_module_name(self.model, conv)}) takes {conv.in_channels} "
                f"channels in {dims}D; expected ({want})"
            )

    def _forward(self, x: Tensor, extras: list[tuple[nn.Module, Transform]], plan: _Plan) -> _Forward:
        if plan.grad and torch.is_inference_mode_enabled():
            raise CAMError(
                f"{type(self).__name__} needs gradients, which torch.inference_mode()"
                f" forbids; call it under torch.no_grad() or outside any mode"
            )
        rec = _Recorder(self.target_layers, [m for m, _ in extras], plan.grad, plan.head)
        try:
            with torch.no_grad():  # the first target hook turns autograd on when needed
                logits = self.model(x)
        finally:
            rec.remove()
        if (
            not isinstance(logits, Tensor)
            or logits.shape[0] != x.shape[0]
            or (logits.ndim != 2 and plan.score is None)
        ):
            found = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise CAMError(f"model output: expected logits (B={x.shape[0]}, N), found {found}")
        leaves: list[Tensor] = []
        for i, a in enumerate(rec.acts):
            if a is None:
                name = _module_name(self.model, self.target_layers[i])
                raise CAMError(f"target_layers[{i}] ({name}) was not called during the forward pass")
            leaves.append(a)
        extra_raw: list[Tensor] = []
        for i, a in enumerate(rec.extra):
            if a is None:
                raise CAMError(f"extra_layers[{i}] was not called during the forward pass")
            extra_raw.append(a)
        if plan.grad and not logits.requires_grad:
            raise CAMError(
                "model output does not depend on the target layers (no gradient "
                "path); are the target layers part of the forward to the logits?"
            )
        acts = [
            self._to_grid(a, t, x, f"target_layers[{i}]")
            for i, (a, t) in enumerate(zip(leaves, self._transforms))
        ]
        extra = [
            self._to_grid(a, t, x, f"extra_layers[{i}]")
            for i, (a, (_, t)) in enumerate(zip(extra_raw, extras))
        ]
        return _Forward(logits, acts, extra, rec.head_in, rec.head_out, leaves=leaves)

    @staticmethod
    def _to_grid(a: Tensor, transform: Transform, x: Tensor, what: str) -> Tensor:
        try:
            g = apply_transform(a, transform)
        except Exception as e:  # a user's transform on an unexpected layout
            raise CAMError(
                f"{what}: reshape_transform failed on an output of shape {tuple(a.shape)}: {e}"
            ) from e
        if g.ndim != x.ndim or g.shape[0] != x.shape[0]:
            raise CAMError(
                f"{what}: output of shape {tuple(g.shape)} is not a map (B, C, "
                f"*spatial) like the input {tuple(x.shape)}; pass reshape_transform "
                f"(token models: see gcfeat.models.levels.TokenGrid)"
            )
        return g

    @staticmethod
    def _head_matches(fwd: _Forward, head: nn.Linear | None) -> bool:
        """Numerical check of the closed form: logits = head(GAP(A)) for every target A."""
        if head is None or fwd.head_out is not fwd.logits or fwd.head_in is None:
            return False
        hin = fwd.head_in
        for a in fwd.acts:
            gap = a.detach().flatten(2).mean(-1)
            if gap.shape != hin.shape:
                return False
            tol = 1e-5 * float(gap.abs().max()) + 1e-7
            if not torch.allclose(hin, gap, rtol=1e-4, atol=tol):
                return False
        return True


def _check_finite(t: Tensor, name: str, expected: str) -> None:
    """Raise :class:`CAMError` naming the batch rows of ``t (B, ...)`` that hold NaN or inf."""
    bad = ~torch.isfinite(t.detach()).flatten(1).all(1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
        raise CAMError(
            f"{name}: NaN or inf in {len(rows)} of {t.shape[0]} images (batch rows {shown}); {expected}"
        )


def _select_classes(classes: Classes, logits: Tensor) -> tuple[Tensor, Tensor]:
    """-> (sel ``(B, K')`` int64, classes as returned: ``(K',)`` or ``(B, K')``)."""
    B, N = logits.shape
    dev = logits.device
    if classes is None:
        idx = torch.arange(N, device=dev)
        return idx.expand(B, N), idx
    if isinstance(classes, str):
        if classes != "argmax":
            raise CAMError(f"classes: expected None, indices or 'argmax', found {classes!r}")
        idx = logits.detach().argmax(1, keepdim=True)
        return idx, idx
    try:
        idx = torch.as_tensor(classes, device=dev)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CAMError(f"classes: expected int indices, found {classes!r}") from e
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.is_complex():
        raise CAMError(f"classes: expected integer indices, found dtype {idx.dtype}")
    idx = idx.long()
    if idx.ndim == 0:
        idx = idx[None]
    if idx.ndim > 2 or (idx.ndim == 2 and idx.shape[0] != B) or idx.numel() == 0:
        raise CAMError(
            f"classes: expected (K',) or (B={B}, K') non-empty indices, found shape {tuple(idx.shape)}"
        )
    if bool(((idx < 0) | (idx >= N)).any()):
        raise CAMError(
            f"classes: indices must lie in [0, {N}) (the model has {N} outputs), found {idx.tolist()}"
        )
    return (idx.expand(B, -1) if idx.ndim == 1 else idx), idx


class GradientCAM(BaseCAM):
    """Base of the gradient methods (Grad-CAM, Grad-CAM++, XGrad-CAM, HiRes-CAM, Layer-CAM).

    A method overrides :meth:`weights` (channel weights ``(B, k, C)`` from activations and
    gradients; the map is then ``sum_c w_c A_c``) or :meth:`cam_from_grads` (the map itself).

    Args:
        model, target_layers: see :class:`BaseCAM`.
        class_chunk: classes per batched backward; memory grows with
            ``class_chunk * B * C * prod(feature_spatial)`` per target layer.
        closed_form: ``"auto"`` (default) uses ``dS_k/dA = W[k] / area`` when the target feeds
            GAP -> (dropout) -> linear (see :func:`gap_linear_head`; verified on every call,
            else the general path); ``True`` requires it (``CAMError`` otherwise); ``False``
            always backpropagates.
    """

    uses_gradients = True
    supports_score = True

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module],
        *,
        class_chunk: int = 16,
        closed_form: bool | str = "auto",
        reshape_transform="auto",
    ):
        super().__init__(model, target_layers, reshape_transform=reshape_transform)
        if not isinstance(class_chunk, int) or class_chunk < 1:
            raise CAMError(f"class_chunk: expected a positive int, found {class_chunk!r}")
        if closed_form not in ("auto", True, False):
            raise CAMError(f"closed_form: expected 'auto', True or False, found {closed_form!r}")
        self.class_chunk = class_chunk
        self.closed_form = closed_form
        self._batched_ok = True

    # -- method-specific maths (override one) -------------------------------------------------

    def weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """Channel weights ``(B, k, C)`` from ``acts (B, C, S)`` and ``grads (B, k, C, S)``
        (spatial dims flattened to ``S``)."""
        raise NotImplementedError

    def cam_from_grads(self, acts: Tensor, grads: Tensor) -> Tensor:
        """Raw maps ``(B, k, S)`` from ``acts (B, C, S)`` and ``grads (B, k, C, S)``."""
        return torch.einsum("bkc,bcs->bks", self.weights(acts, grads), acts)

    def weighted_activations(self, acts: Tensor, grads: Tensor) -> Tensor:
        """``(B, k, C, S)`` terms whose channel sum is :meth:`cam_from_grads` (for
        ``eigen_smooth``)."""
        return self.weights(acts, grads)[..., None] * acts[:, None]

    # -- machinery ----------------------------------------------------------------------------

    def _plan(self, score=None) -> _Plan:
        if self.closed_form is False:
            return _Plan(grad=True, head=None, closed_form=False)
        if score is not None or any(t is not None for t in self._transforms):
            if self.closed_form is True:
                raise CAMError(
                    f"{type(self).__name__}: closed_form=True needs raw-logit class "
                    f"targets and no reshape_transform"
                )
            return _Plan(grad=True, head=None, closed_form=False)
        heads = [gap_linear_head(self.model, m) for m in self.target_layers]
        if all(h is not None and h is heads[0] for h in heads):
            return _Plan(grad=False, head=heads[0], closed_form=True)
        if self.closed_form is True:
            self._closed_form_failed()
        return _Plan(grad=True, head=None, closed_form=False)

    def _closed_form_failed(self) -> _Plan:
        if self.closed_form is True:
            super()._closed_form_failed()
        return _Plan(grad=True, head=None, closed_form=False)

    def _layer_maps(self, x: Tensor, fwd: _Forward, sel: Tensor, plan: _Plan) -> list[Tensor]:
        B, K = sel.shape
        out: list[list[Tensor]] = [[] for _ in fwd.acts]
        acts = [a.detach() for a in fwd.acts]
        for j in range(0, K, self.class_chunk):
            s = sel[:, j : j + self.class_chunk]
            if plan.score is not None:
                grads = self._score_grads(fwd, plan.score)
            elif plan.closed_form:
                head = plan.head
                assert head is not None  # _plan builds a closed-form plan only with its head
                grads = [self._closed_form_grads(head, a, s) for a in acts]
            else:
                grads = self._batched_grads(fwd, s)
            with torch.no_grad():
                for li, (a, g) in enumerate(zip(acts, grads)):
                    if plan.eigen:
                        m = eigen_projection(self.weighted_activations(a.flatten(2), g.flatten(3)))
                    else:
                        m = self.cam_from_grads(a.flatten(2), g.flatten(3))
                    out[li].append(m.reshape(*m.shape[:2], *a.shape[2:]))
            del grads
        return [torch.cat(o, 1) if len(o) > 1 else o[0] for o in out]

    @staticmethod
    def _closed_form_grads(head: nn.Linear, act: Tensor, sel: Tensor) -> Tensor:
        """``dS_k/dA = W[k] / area`` broadcast (no copy) to ``(B, k, C, *s)``."""
        area = math.prod(act.shape[2:])
        w = head.weight.detach().to(act.dtype)[sel] / area  # (B, k, C)
        return w.reshape(*w.shape, *([1] * (act.ndim - 2))).expand(*w.shape, *act.shape[2:])

    def _score_grads(self, fwd: _Forward, score) -> list[Tensor]:
        """``dS/dA`` of a target score ``(B,)`` (one backward for the batch) ->
        ``(B, 1, C, *grid)`` per target layer."""
        s = score(fwd.logits)
        if not isinstance(s, Tensor) or s.shape != (fwd.logits.shape[0],):
            raise CAMError(
                f"targets: expected one scalar score per image, found {getattr(s, 'shape', type(s).__name__)}"
            )
        grads = torch.autograd.grad(s.sum(), fwd.leaves, allow_unused=True)
        return [
            torch.zeros_like(a)[:, None] if g is None else apply_transform(g, t)[:, None]
            for a, g, t in zip(fwd.acts, grads, self._transforms)
        ]

    def _batched_grads(self, fwd: _Forward, sel: Tensor) -> list[Tensor]:
        """``dS_k/dA`` for the classes ``sel (B, k)``: one vmapped backward -> ``(B, k, C, *s)``."""
        logits = fwd.logits
        B, k = sel.shape
        onehot = torch.zeros(k, *logits.shape, dtype=logits.dtype, device=logits.device)
        onehot.scatter_(2, sel.t().unsqueeze(-1), 1.0)
        grads: Sequence[Tensor | None] | None = None
        if self._batched_ok:
            try:
                grads = torch.autograd.grad(
                    logits, fwd.leaves, onehot, retain_graph=True, allow_unused=True, is_grads_batched=True
                )
            except RuntimeError as e:  # an op without a vmap rule: loop over the chunk
                self._batched_ok = False
                warnings.warn(
                    f"{type(self).__name__}: batched backward failed ({e}); "
                    f"falling back to one backward per class",
                    RuntimeWarning,
                )
        if grads is None:
            per_class = [
                torch.autograd.grad(logits, fwd.leaves, onehot[i], retain_graph=True, allow_unused=True)
                for i in range(k)
            ]
            grads = [
                None if any(g[li] is None for g in per_class) else torch.stack([g[li] for g in per_class])
                for li in range(len(fwd.acts))
            ]
        return [
            torch.zeros(B, k, *a.shape[1:], dtype=a.dtype, device=a.device)
            if g is None
            else apply_transform(g.movedim(0, 1), t, lead=2)
            for a, g, t in zip(fwd.acts, grads, self._transforms)
        ]
