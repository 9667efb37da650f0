"""The extractor interface and the rows it returns.

Every extractor turns one frame batch plus the CAM pass over it (a ``CAMResult``: logits,
heatmaps, layer4 activations and the extra layer2 / layer3 maps) and the boxes drawn from the
heatmaps into :class:`Features`: one row per object. Extractors never run the backbone on the
frames again; only :class:`~gcfeat.extract.crop.CropExtractor` (M1) runs it, on the crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from gcfeat.models.levels import find_levels


@dataclass
class Features:
    """Object-level feature rows of one batch.

    Attributes:
        frame: ``(R,)`` int64, row of the frame in the batch (in a file: row in ``frame_index``).
        label: ``(R,)`` int64 class index.
        box: ``(R, 4)`` float32 ``x1, y1, x2, y2`` (exclusive end) in frame (model input) pixels;
            volumes: ``(R, 6)`` ``z1, y1, x1, z2, y2, x2``.
        score: ``(R,)`` float32 (box confidence for M1 / M2, the class's sigmoid score for M3).
        features: ``(R, D)`` float32.
        empty: ``(R,)`` bool, True where the region was empty (M3: nothing above the threshold;
            those rows hold zero features).
    """

    frame: torch.Tensor
    label: torch.Tensor
    box: torch.Tensor
    score: torch.Tensor
    features: torch.Tensor
    empty: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.empty is None:
            self.empty = torch.zeros(self.frame.shape[0], dtype=torch.bool, device=self.frame.device)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def to(self, device) -> Features:
        return Features(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def float(self) -> Features:
        """``features`` / ``box`` / ``score`` as float32 (after autocast)."""
        return Features(
            self.frame, self.label, self.box.float(), self.score.float(), self.features.float(), self.empty
        )

    def select(self, index: torch.Tensor) -> Features:
        return Features(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(parts: Sequence[Features]) -> Features:
        if not parts:
            raise ValueError("Features.cat: got an empty list, expected at least one part")
        return Features(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Features)})

    @staticmethod
    def empty_like(dim: int, device=None, box_dim: int = 4) -> Features:
        z = torch.zeros(0, dtype=torch.int64, device=device)
        return Features(
            z,
            z.clone(),
            torch.zeros(0, box_dim, device=device),
            torch.zeros(0, device=device),
            torch.zeros(0, dim, device=device),
        )


class Extractor:
    """One feature extraction method.

    ``extractor(images, result, boxes, probs) -> Features`` where

    - ``images``: ``(B, C, *spatial)`` the normalised frame (or volume) batch the CAM pass ran on,
    - ``result``: the ``CAMResult`` of that pass (``logits``, ``layer_heatmaps[0]``,
      ``activations[0]`` = the last level (layer4), ``extra`` = the other levels (layer2,
      layer3), ``classes``); see :func:`feature_levels`,
    - ``boxes``: ``Boxes`` (``xyxy (M, 4)``, ``frame``, ``label``, ``score``) in frame pixels,
    - ``probs``: ``(B, num_outputs)`` class scores (sigmoid, or softmax for single-label
      tasks).
    """

    #: short name used as the HDF5 group (``m1``, ``m2``, ``m3``)
    name: str = ""

    def output_dim(self, channels: dict[str, int]) -> int:  # pragma: no cover - interface
        """Feature length given the channel count of each backbone layer."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Everything that changes the numbers; stored in the HDF5 attributes."""
        return {}

    def __call__(self, images: torch.Tensor, result, boxes, probs: torch.Tensor) -> Features:
        raise NotImplementedError


def _out_channels(module: nn.Module) -> int:
    """Channels a module outputs: its own ``out_channels`` or that of its last conv."""
    if hasattr(module, "out_channels"):
        # torch types every Module attribute as Tensor | Module; this one is an int
        return int(module.out_channels)  # type: ignore[arg-type]
    convs = [m for m in module.modules() if hasattr(m, "out_channels")]
    if not convs:
        raise ValueError(
            f"cannot tell the output channels of {type(module).__name__}: it holds no convolution"
        )
    # the last block's last conv (a downsample conv, registered after it, has the same width)
    return int(convs[-1].out_channels)  # type: ignore[arg-type]  # an int (see above)


def feature_levels(
    model: nn.Module, levels: Sequence[str] | None = None, input_shape: Sequence[int] | None = None
) -> dict[str, nn.Module]:
    """The maps the extractors read, in order of increasing stride; the last is the CAM target.

    :func:`gcfeat.models.levels.find_levels`: torchvision ResNets and
    :mod:`gcfeat.models.resnet3d`: ``layer2, layer3, layer4``; models with a ``last_conv``
    (the Alzheimer CNNs): that conv alone; any other torchvision / timm classifier: its maps
    at strides 8 / 16 / 32 (ConvNeXt ``features.3 / .5 / .7``, ViT: the last block's norm);
    ``levels`` names them instead (``["features.5", "features.6", "features.7"]``). Token
    outputs are reshaped to ``(B, C, *grid)`` by the CAM engine's automatic
    ``reshape_transform`` (see :func:`gcfeat.models.levels.token_reshape`). ``input_shape``
    ``(C, *spatial)``: the probe's input (the checkpoint's input size; default
    :func:`gcfeat.models.levels.probe_shape`).
    """
    return {lv.name: lv.module for lv in find_levels(model, levels, input_shape=input_shape)}


def layer_channels(
    model: nn.Module, levels: dict[str, nn.Module] | None = None, input_shape: Sequence[int] | None = None
) -> dict[str, int]:
    """Output channels of each feature level (ResNet18/34 layer4: 512, ResNet50: 2048), as
    measured by :func:`~gcfeat.models.levels.find_levels` (the ResNet / ``last_conv`` shortcut:
    the last convolution's width)."""
    auto = {lv.name: lv for lv in find_levels(model, input_shape=input_shape)}  # ResNets: no probe
    names = list(auto) if levels is None else list(levels)
    info = (
        [auto[n] for n in names]
        if all(n in auto for n in names)
        else find_levels(model, names, input_shape=input_shape)
    )
    return {lv.name: lv.channels if lv.channels is not None else _out_channels(lv.module) for lv in info}


def level_strides(
    model: nn.Module, levels: Sequence[str] | None = None, input_shape: Sequence[int] | None = None
) -> tuple[float, ...] | None:
    """Strides of the feature levels (M2 routes boxes by them), or None for the ResNet /
    ``last_conv`` shortcut (routed by position, as the original)."""
    info = find_levels(model, levels, input_shape=input_shape)
    strides = tuple(float(lv.stride) for lv in info if lv.stride is not None)
    return strides if len(strides) == len(info) else None
