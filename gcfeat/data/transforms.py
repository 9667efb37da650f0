"""Image and sample transforms shared by the surgical Datasets.

Sizes are ``(H, W)`` tuples (torch order); CLIs write them as ``256x320`` (H x W).
Boxes are ``x1, y1, x2, y2`` with exclusive end, in pixels of the image they belong to.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from gcfeat.errors import ArgumentError

from .classes import SURGICAL_MEAN, SURGICAL_STD


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """``"256x320"`` (H x W), ``"256"`` (square) or ``(256, 320)`` -> ``(H, W)``."""
    if isinstance(text, str):
        parts = text.lower().replace("*", "x").split("x")
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            raise ArgumentError(f"size {text!r}: expected HxW such as 256x320") from None
    else:
        size = tuple(int(p) for p in text)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ArgumentError(f"size {text!r}: expected two positive integers H x W such as 256x320")
    return size  # type: ignore[return-value]


#: Frame resizing rules: OpenCV (area averaging when shrinking, bilinear when growing), or
#: PIL bilinear (``torchvision.transforms.Resize`` on a PIL image, the original's; PIL widens
#: its bilinear kernel by the scale factor when shrinking, i.e. anti-aliases).
RESIZE_METHODS: tuple[str, ...] = ("area", "pil")


def resize_image(image: np.ndarray, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """Resize a uint8 ``(h, w, 3)`` image to ``size = (H, W)``.

    ``method="area"`` (default): ``cv2.INTER_AREA`` when shrinking, ``INTER_LINEAR`` when
    growing. ``"pil"``: ``PIL.Image.resize(..., BILINEAR)``, what the original's
    ``transforms.Resize((256, 320))`` did to its PIL frames (uint8 out, rounded).
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize: got {method!r}, expected one of {RESIZE_METHODS}")
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    if method == "pil":
        out = Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(out)
    shrink = size[0] * size[1] < h * w
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_input(
    image: np.ndarray,
    size: tuple[int, int] | None = None,
    mean: Sequence[float] = SURGICAL_MEAN,
    std: Sequence[float] = SURGICAL_STD,
    resize: str = "area",
) -> torch.Tensor:
    """uint8 RGB ``(h, w, 3)`` -> normalised float32 ``(3, H, W)`` at ``size`` (or unchanged);
    ``resize``: see :func:`resize_image`."""
    if size is not None:
        image = resize_image(image, size, resize)
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Rescale ``(n, 4)`` x1, y1, x2, y2 boxes from an ``(H, W)`` frame to another ``(H, W)``.

    The result is float32 and not rounded: an exclusive-end box covering the whole frame maps
    to the whole input exactly.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    sy = to_size[0] / from_size[0]
    sx = to_size[1] / from_size[1]
    return boxes * np.array([sx, sy, sx, sy], np.float32)


class Compose:
    """Apply sample transforms in order: ``Compose([RandomHorizontalFlip(), ...])(sample)``."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample


def hflip_sample(sample: dict) -> dict:
    """Mirror a sample left-right: ``image (3, H, W)`` and its ``gt_boxes`` (input pixels)."""
    out = dict(sample)
    out["image"] = sample["image"].flip(-1)
    if "gt_boxes" in sample:
        w = sample["image"].shape[-1]
        b = sample["gt_boxes"]
        out["gt_boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    return out


class RandomHorizontalFlip:
    """Flip a sample left-right with probability ``p`` (labels are unchanged by a flip)."""

    def __init__(self, p: float = 0.5, seed: int | None = None):
        self.p = p
        self._rng = random.Random(seed)

    def __call__(self, sample: dict) -> dict:
        return hflip_sample(sample) if self._rng.random() < self.p else sample
