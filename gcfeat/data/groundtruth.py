"""Per-frame ground-truth files: labels, one box and one mask per object.

Every frame the synthetic writers produce gets one JSON file (for MICCAI 2018:
``groundtruth/seq_N/frameNNN.json``; for Cholec80, annotated frames only:
``groundtruth/videoNN/frameNNNNNN.json``)::

    {
      "format": "gcfeat-frame-gt", "version": 1,
      "video": "seq_1", "frame_index": 3, "image": "seq_1/left_frames/frame003.png",
      "size": [H, W],                       # frame pixels
      "classes": ["bipolar_forceps", ..., "tissue"],
      "labels": [0, 1, 0, ..., 1],          # multi-hot over "classes"
      "instances": [                        # one per present class, sorted by class
        {"class": 1, "name": "prograsp_forceps",
         "box": [x1, y1, x2, y2],           # exclusive end, frame pixels
         "area": 1234,                      # visible pixels
         "mask": {"size": [H, W], "counts": [z0, o0, z1, o1, ...]}},
        ...
        {"class": 10, "name": "tissue", "box": [0, 0, W, H], ...}
      ]
    }

Masks are COCO-style *uncompressed* run-length encodings: the mask is flattened in column-major
(Fortran) order and ``counts`` alternates runs of 0 and 1, starting with a (possibly empty) run
of 0. ``pycocotools.mask.frPyObjects`` reads them unchanged. An instrument's mask holds its
*visible* pixels (what occluding instruments leave) and its box is exactly that mask's extent.
The tissue mask is the visible tissue (no instrument on top), while its box is the whole frame
by convention.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classes import SURGICAL_CLASSES
from .errors import DataError, require_file

GT_FORMAT = "gcfeat-frame-gt"
GT_VERSION = 1


@dataclass
class FrameGT:
    """Ground truth of one frame. ``boxes``: class -> (x1, y1, x2, y2), exclusive end."""

    labels: np.ndarray  # uint8 (K,)
    boxes: dict[int, tuple[int, int, int, int]]
    size: tuple[int, int]  # (H, W) of the frame
    masks: dict[int, np.ndarray] | None = None  # class -> bool (H, W)
    video: str = ""
    frame_index: int = -1
    image: str | None = None
    areas: dict[int, int] = field(default_factory=dict)

    def boxes_array(self) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (n, 4) float32, labels (n,) int64)`` sorted by class."""
        keys = sorted(self.boxes)
        boxes = np.array([self.boxes[k] for k in keys], np.float32).reshape(-1, 4)
        return boxes, np.array(keys, np.int64)


def rle_encode(mask: np.ndarray) -> dict:
    """bool ``(H, W)`` -> ``{"size": [H, W], "counts": [...]}`` (COCO uncompressed RLE)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected a 2D (H, W) array, got shape {mask.shape}")
    flat = mask.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts.tolist()}


def rle_decode(rle: Mapping) -> np.ndarray:
    """COCO uncompressed RLE -> bool ``(H, W)``. Raises ValueError on inconsistent counts."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h} x {w} = {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape((h, w), order="F")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Exact extent of a bool ``(H, W)`` mask as ``(x1, y1, x2, y2)`` (exclusive end); None if empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def write_frame_gt(
    path: os.PathLike | str,
    *,
    labels: Sequence[int],
    boxes: Mapping[int, Sequence[int]],
    masks: Mapping[int, np.ndarray],
    size: tuple[int, int],
    video: str,
    frame_index: int,
    image: str | None = None,
    classes: Sequence[str] = SURGICAL_CLASSES,
) -> None:
    """Write one frame's ground truth (format in the module docstring)."""
    instances = []
    for c in sorted(boxes):
        inst = {"class": int(c), "name": classes[c], "box": [int(v) for v in boxes[c]]}
        if c in masks:
            inst["area"] = int(np.count_nonzero(masks[c]))
            inst["mask"] = rle_encode(masks[c])
        instances.append(inst)
    doc = {
        "format": GT_FORMAT,
        "version": GT_VERSION,
        "video": video,
        "frame_index": int(frame_index),
        "image": image,
        "size": [int(size[0]), int(size[1])],
        "classes": list(classes),
        "labels": [int(v) for v in labels],
        "instances": instances,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))


def read_frame_gt(
    path: os.PathLike | str, with_masks: bool = True, classes: Sequence[str] = SURGICAL_CLASSES
) -> FrameGT:
    """Read a file written by :func:`write_frame_gt`; class ids are checked against ``classes``."""
    require_file(path, "a ground-truth JSON file")
    try:
        doc = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected a {GT_FORMAT} file") from None
    try:
        if doc.get("format") != GT_FORMAT:
            raise DataError(f"{path}: format {doc.get('format')!r}, expected {GT_FORMAT!r}")
        if list(doc["classes"]) != list(classes):
            raise DataError(f"{path}: holds classes {doc['classes']}, expected {list(classes)}")
        size = (int(doc["size"][0]), int(doc["size"][1]))
        labels = np.asarray(doc["labels"], np.uint8)
        if labels.shape != (len(classes),):
            raise DataError(f"{path}: {labels.size} labels, expected {len(classes)}")
        boxes, masks, areas = {}, {}, {}
        for inst in doc["instances"]:
            c = int(inst["class"])
            boxes[c] = tuple(int(v) for v in inst["box"])
            if "area" in inst:
                areas[c] = int(inst["area"])
            if with_masks and "mask" in inst:
                masks[c] = rle_decode(inst["mask"])
    except DataError:
        raise
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise DataError(f"{path}: malformed ground-truth file ({type(e).__name__}: {e})") from None
    return FrameGT(
        labels=labels,
        boxes=boxes,
        size=size,
        masks=masks if with_masks else None,
        video=str(doc.get("video", "")),
        frame_index=int(doc.get("frame_index", -1)),
        image=doc.get("image"),
        areas=areas,
    )
