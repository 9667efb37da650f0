"""gcfeat.data: class lists, synthetic surgical scenes, and Datasets over the real layouts.

>>> from gcfeat.data import write_miccai18, build_dataset, collate
>>> write_miccai18("data/demo", num_videos=4, num_frames=50, size=(128, 160), seed=0)  # doctest: +SKIP
>>> ds = build_dataset("data/demo", split="train", size=(128, 160))                     # doctest: +SKIP
>>> loader = make_loader(ds, batch_size=16, shuffle=True, num_workers=2)                # doctest: +SKIP

Layouts and file formats: :mod:`gcfeat.data.synthetic` (overview), :mod:`gcfeat.data.miccai18`,
:mod:`gcfeat.data.cholec80`, :mod:`gcfeat.data.groundtruth`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .cholec80 import Cholec80Dataset, cholec80_splits
from .classes import (
    CHOLEC80_TO_SURGICAL,
    CHOLEC80_TOOLS,
    INSTRUMENTS,
    MICCAI18_TOOLS,
    SURGICAL_CLASSES,
    SURGICAL_MEAN,
    SURGICAL_STD,
    SURGICAL_TO_CHOLEC80,
    TISSUE,
)
from .errors import DataError
from .groundtruth import FrameGT, read_frame_gt, rle_decode, rle_encode, write_frame_gt
from .miccai18 import MICCAI18_VAL_SEQUENCES, Miccai18Dataset, miccai18_splits, read_png
from .transforms import RandomHorizontalFlip, parse_size, scale_boxes, to_input
from .video import read_frames

LAYOUTS = ("miccai18", "cholec80")

__all__ = [
    "SURGICAL_CLASSES",
    "TISSUE",
    "INSTRUMENTS",
    "MICCAI18_TOOLS",
    "CHOLEC80_TOOLS",
    "CHOLEC80_TO_SURGICAL",
    "SURGICAL_TO_CHOLEC80",
    "SURGICAL_MEAN",
    "SURGICAL_STD",
    "DataError",
    "SceneFrame",
    "SyntheticVideo",
    "generate_video",
    "write_miccai18",
    "write_cholec80",
    "Miccai18Dataset",
    "Cholec80Dataset",
    "FrameGT",
    "read_frame_gt",
    "write_frame_gt",
    "rle_encode",
    "rle_decode",
    "read_frames",
    "read_png",
    "collate",
    "detect_layout",
    "build_dataset",
    "make_loader",
    "parse_size",
    "scale_boxes",
    "to_input",
    "RandomHorizontalFlip",
    "miccai18_splits",
    "cholec80_splits",
    "MICCAI18_VAL_SEQUENCES",
    "LAYOUTS",
]


_SYNTHETIC = ("SceneFrame", "SyntheticVideo", "generate_video", "write_cholec80", "write_miccai18")


def __getattr__(name: str):
    # Lazy, so that `python -m gcfeat.data.synthetic` does not find its module pre-imported.
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def collate(samples: Sequence[dict]) -> dict:
    """Batch sample dicts: ``image`` -> ``(B, C, *spatial)``, ``labels`` -> ``(B, K)`` (or
    ``(B,)`` class ids); every other key (video, frame_index, gt_boxes, gt_labels, ...) becomes a
    list of length B. ``(image, label)`` tuples are accepted too."""
    if not samples:
        raise ValueError("collate: empty batch")
    if not isinstance(samples[0], dict):
        samples = [{"image": s[0], "labels": s[1]} for s in samples]
    out: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack([torch.as_tensor(v) for v in values]) if key in ("image", "labels") else values
    return out


def detect_layout(root: os.PathLike | str) -> str:
    """ "miccai18" or "cholec80" from ``dataset.json`` or the folders under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a dataset in the MICCAI 2018 or Cholec80 layout")
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            layout = json.loads(meta.read_text()).get("layout")
        except json.JSONDecodeError as e:
            raise DataError(f"{meta}: not valid JSON ({e})") from None
        if layout in LAYOUTS:
            return layout
    if (root / "videos").is_dir() and (root / "tool_annotations").is_dir():
        return "cholec80"
    if (root / "annotation_tool").is_dir():
        return "miccai18"
    raise DataError(
        f"{root}: neither layout found; expected annotation_tool/ + seq_N/ "
        f"(miccai18) or videos/ + tool_annotations/ (cholec80)"
    )


def build_dataset(
    root: os.PathLike | str,
    layout: str = "auto",
    split: str = "train",
    size: tuple[int, int] | str = (256, 320),
    **kwargs,
) -> Dataset:
    """The Dataset for ``root``: :class:`Miccai18Dataset` or :class:`Cholec80Dataset`.

    ``layout`` "auto" uses :func:`detect_layout`; other keyword arguments (mean, std,
    with_gt, transform, sequences / videos, fps, ...) go to the Dataset.
    """
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "miccai18":
        return Miccai18Dataset(root, split=split, size=size, **kwargs)
    if layout == "cholec80":
        return Cholec80Dataset(root, split=split, size=size, **kwargs)
    raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS} or 'auto'")


def make_loader(
    dataset: Dataset, batch_size: int = 16, shuffle: bool = False, num_workers: int = 0, **kwargs
) -> DataLoader:
    """A DataLoader with :func:`collate`. For an IterableDataset (Cholec80) ``shuffle``
    shuffles the order of videos (the dataset's own option) instead of single frames."""
    if isinstance(dataset, IterableDataset):
        if shuffle and hasattr(dataset, "shuffle"):
            dataset.shuffle = True
        shuffle = False
    if num_workers > 0:
        kwargs.setdefault("persistent_workers", False)
        kwargs.setdefault("prefetch_factor", 2)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=collate, **kwargs
    )
