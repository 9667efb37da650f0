"""Alzheimer MRI slices from parquet (facts §4): ``train.parquet`` / ``test.parquet``.

Format (the Hugging Face ``datasets`` image export): column ``image`` a struct
``{bytes: binary (a JPEG/PNG file), path: string}`` and ``label`` int64 with classes
0 Mild_Demented, 1 Moderate_Demented, 2 Non_Demented, 3 Very_Mild_Demented. Images are decoded
with ``cv2.imdecode`` to grayscale and resized to 128x128 when needed.

Localisation ground truth (gcfeat's side file, written by the synthetic generator):
``<root>/<split>_masks.npz`` with key ``masks`` uint8 ``(N, 128, 128)``, row-aligned.

Samples: ``image`` float32 ``(1, 128, 128)`` in [0, 1], ``label`` int64, ``labels`` one-hot
``(4,)``, ``video`` (split), ``frame_index`` (row), ``gt_mask`` bool ``(128, 128)`` if present.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gcfeat.data.errors import DataError

__all__ = ["ALZHEIMER_CLASSES", "decode_image", "read_alzheimer_parquet", "AlzheimerSlices"]

ALZHEIMER_CLASSES: tuple[str, ...] = (
    "Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented",
)


def decode_image(data: bytes, size: int = 128, where: str = "image") -> np.ndarray:
    """Encoded image bytes -> uint8 grayscale ``(size, size)``; ``DataError`` naming ``where``."""
    import cv2

    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise DataError(f"{where}: expected encoded image bytes, found {type(data).__name__} "
                        f"of length {len(data) if hasattr(data, '__len__') else '?'}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(f"{where}: cannot decode the image bytes ({len(data)} bytes starting "
                        f"{bytes(data[:4])!r}); expected a JPEG or PNG file")
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def read_alzheimer_parquet(path: str | os.PathLike, size: int = 128,
                           num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Read a parquet file -> ``(images uint8 (N, size, size), labels int64 (N,))``."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"parquet file {path} does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"cannot read {path} as parquet: {type(exc).__name__}: {exc}") from exc
    missing = {"image", "label"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}; found {list(df.columns)}, "
                        "expected 'image' (struct with 'bytes') and 'label' (int64)")
    images = np.zeros((len(df), size, size), np.uint8)
    for i, cell in enumerate(df["image"]):
        where = f"{path} row {i}"
        if not isinstance(cell, dict) or "bytes" not in cell:
            raise DataError(f"{where}: 'image' is {type(cell).__name__}, expected a struct with a "
                            "'bytes' field")
        images[i] = decode_image(cell["bytes"], size, where)
    labels = df["label"].to_numpy()
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'label' has dtype {labels.dtype}, expected int64")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise DataError(f"{path} row {bad[0]}: label {labels[bad[0]]}, expected 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


class AlzheimerSlices(torch.utils.data.Dataset):
    """``<root>/<split>.parquet`` as a Dataset (``split`` = ``train`` or ``test``)."""

    classes = ALZHEIMER_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train", *, size: int = 128,
                 masks: bool = True):
        self.root = Path(root)
        self.split = split
        self.images, self.labels = read_alzheimer_parquet(self.root / f"{split}.parquet", size)
        self.masks = None
        mpath = self.root / f"{split}_masks.npz"
        if masks and mpath.is_file():
            with np.load(mpath) as npz:
                if "masks" not in npz.files:
                    raise DataError(f"{mpath}: no 'masks' key; found {sorted(npz.files)}")
                m = npz["masks"]
            if m.shape != self.images.shape:
                raise DataError(f"{mpath}: masks have shape {m.shape}, expected "
                                f"{self.images.shape} (one per parquet row)")
            self.masks = m

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        label = int(self.labels[i])
        onehot = torch.zeros(len(self.classes))
        onehot[label] = 1
        s = {"image": torch.from_numpy(self.images[i]).float().div_(255).unsqueeze(0),
             "label": torch.tensor(label), "labels": onehot, "video": self.split,
             "frame_index": int(i)}
        if self.masks is not None:
            s["gt_mask"] = torch.from_numpy(self.masks[i] > 0)
        return s
