"""Alzheimer MRI slices from parquet (facts §4): ``train.parquet`` / ``test.parquet``.

Format (the Hugging Face ``datasets`` image export): column ``image`` a struct
``{bytes: binary (a JPEG/PNG file), path: string}`` and ``label`` int64 with classes
0 Mild_Demented, 1 Moderate_Demented, 2 Non_Demented, 3 Very_Mild_Demented. Images are decoded
with ``cv2.imdecode`` to grayscale and resized to 128x128 when needed.

Splits: ``train``, ``val`` and ``test``. The published dataset has no validation file, so
``val`` is a fixed class-stratified holdout of ``train.parquet`` (:func:`stratified_holdout`)
and ``train`` is the rest; a real ``val.parquet`` in the folder replaces the holdout. Model
selection therefore never sees ``test``.

Localisation ground truth (gcfeat's side file, written by the synthetic generator):
``<root>/<file>_masks.npz`` with key ``masks`` uint8 ``(N, 128, 128)``, row-aligned with
``<file>.parquet`` (the holdout takes the mask rows of the image rows it takes).

Samples: ``image`` float32 ``(1, 128, 128)`` in [0, 1], ``label`` int64, ``labels`` one-hot
``(4,)``, ``video`` (the split name), ``frame_index`` (the row in the parquet file the sample
comes from: for holdout ``val`` samples a row of ``train.parquet``), ``gt_mask`` bool
``(128, 128)`` if present. ``(video, frame_index)`` is unique over all splits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gcfeat.data.errors import DataError, read_npz

__all__ = [
    "ALZHEIMER_CLASSES",
    "decode_image",
    "read_alzheimer_parquet",
    "stratified_holdout",
    "AlzheimerSlices",
]

ALZHEIMER_CLASSES: tuple[str, ...] = (
    "Mild_Demented",
    "Moderate_Demented",
    "Non_Demented",
    "Very_Mild_Demented",
)


def decode_image(data: bytes, size: int = 128, where: str = "image") -> np.ndarray:
    """Encoded image bytes -> uint8 grayscale ``(size, size)``; ``DataError`` naming ``where``."""
    import cv2

    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise DataError(
            f"{where}: expected encoded image bytes, found {type(data).__name__} "
            f"of length {len(data) if hasattr(data, '__len__') else '?'}"
        )
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(
            f"{where}: cannot decode the image bytes ({len(data)} bytes starting "
            f"{bytes(data[:4])!r}); expected a JPEG or PNG file"
        )
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _read_table(path: Path, num_classes: int):
    """``(DataFrame, labels int64 (N,))`` of a parquet file, columns and labels checked."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"parquet file {path} does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"cannot read {path} as parquet: {type(exc).__name__}: {exc}") from exc
    missing = {"image", "label"} - set(df.columns)
    if missing:
        raise DataError(
            f"{path}: missing columns {sorted(missing)}; found {list(df.columns)}, "
            "expected 'image' (struct with 'bytes') and 'label' (int64)"
        )
    labels = df["label"].to_numpy()
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'label' has dtype {labels.dtype}, expected int64")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise DataError(f"{path} row {bad[0]}: label {labels[bad[0]]}, expected 0..{num_classes - 1}")
    return df, labels.astype(np.int64)


def _decode_rows(df, rows: np.ndarray, size: int, path: Path) -> np.ndarray:
    images = np.zeros((len(rows), size, size), np.uint8)
    column = df["image"].to_numpy()
    for j, r in enumerate(rows):
        cell, where = column[r], f"{path} row {r}"
        if not isinstance(cell, dict) or "bytes" not in cell:
            raise DataError(
                f"{where}: 'image' is {type(cell).__name__}, expected a struct with a 'bytes' field"
            )
        images[j] = decode_image(cell["bytes"], size, where)
    return images


def read_alzheimer_parquet(
    path: str | os.PathLike, size: int = 128, num_classes: int = 4, rows=None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a parquet file -> ``(images uint8 (M, size, size), labels int64 (M,))``.

    ``rows``: the row indices to decode (default all ``N``); only those images are decoded.
    """
    path = Path(path)
    df, labels = _read_table(path, num_classes)
    rows = np.arange(len(df)) if rows is None else np.asarray(rows, np.int64).reshape(-1)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(df)):
        raise DataError(f"{path}: rows {rows.min()}..{rows.max()} asked for, the file has {len(df)} rows")
    return _decode_rows(df, rows, size, path), labels[rows]


_M64 = (1 << 64) - 1


def _row_keys(n: int, seed: int) -> np.ndarray:
    """SplitMix64's finaliser of ``row + (seed * 2**32 + 1) * 0x9E3779B97F4A7C15`` (mod 2**64)
    for rows ``0..n-1``: uint64 ``(n,)``, all distinct (the finaliser is a bijection).

    Pure integer arithmetic (wrapping uint64), so the keys - and the holdout - are the same on
    every machine and numpy version (a ``numpy.random`` stream is not promised to be)."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(((seed << 32) + 1) & _M64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def stratified_holdout(labels, fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """The rows of a deterministic class-stratified holdout: sorted int64 ``(M,)``.

    ``labels``: int ``(N,)``, the class of each row. Class ``k`` with ``n_k`` rows gives
    ``round(fraction * n_k)`` rows (half up), but at least 1 and at most ``n_k - 1`` when
    ``n_k >= 2`` and ``fraction > 0`` (every class in both parts; a single-row class stays in
    the rest), so each class count is within 1 of ``fraction * n_k``. Within a class the rows
    with the smallest :func:`_row_keys` hash of ``(seed, row)`` are taken: the choice depends
    only on the labels, ``fraction`` and ``seed``.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction {fraction}: expected a fraction in [0, 1)")
    if len(labels) == 0 or fraction == 0:
        return np.zeros(0, np.int64)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = np.floor(fraction * counts + 0.5).astype(np.int64)
    take = np.where(counts >= 2, np.clip(take, 1, counts - 1), 0)
    order = np.lexsort((_row_keys(len(labels), seed), inverse))  # by class, then by key
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - start[inverse[order]]  # position within its class
    return np.flatnonzero(rank < take[inverse]).astype(np.int64)


class AlzheimerSlices(torch.utils.data.Dataset):
    """The ``train`` / ``val`` / ``test`` split of the parquet files under ``root``.

    Args:
        root: folder with ``train.parquet`` and ``test.parquet`` (optionally ``val.parquet``
            and ``<file>_masks.npz``).
        split: ``"train"``, ``"val"`` or ``"test"`` (any other name reads ``<split>.parquet``).
        size: image side after decoding (resized if the file differs).
        masks: attach ``gt_mask`` when the masks file exists.
        val_fraction: without a ``val.parquet``, the fraction of each class of
            ``train.parquet`` held out as ``val`` (default 0.15; rows chosen by
            :func:`stratified_holdout`); ``train`` is then the other rows of the file and
            ``test`` is ``test.parquet`` untouched. ``0`` means no holdout (``train`` = the
            whole file and asking for ``val`` is an error). Ignored when ``val.parquet``
            exists: then ``val`` is that file and ``train`` the whole ``train.parquet``.
        seed: the holdout's seed (fixed, independent of any training seed, so that the same
            rows are ``val`` on every machine and every run).

    Attributes: ``source`` (the parquet file the samples come from), ``rows`` int64 ``(N,)``
    (their rows in it, ascending; ``frame_index`` of the samples), ``images`` uint8
    ``(N, size, size)``, ``labels`` int64 ``(N,)``, ``masks`` uint8 ``(N, 128, 128)`` or None.

    Rows are slices, not subjects: the parquet has no subject id, so slices of one subject can
    fall in both ``train`` and the holdout ``val`` (val accuracy is then optimistic; ``test``
    is the separate file).
    """

    classes = ALZHEIMER_CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        size: int = 128,
        masks: bool = True,
        val_fraction: float = 0.15,
        seed: int = 0,
    ):
        self.root = Path(root)
        self.split = split
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction}: expected a fraction in [0, 1)")
        holdout = split in ("train", "val") and not (self.root / "val.parquet").is_file()
        stem = "train" if holdout else split
        self.source = self.root / f"{stem}.parquet"
        df, labels = _read_table(self.source, len(self.classes))
        self.rows = np.arange(len(df), dtype=np.int64)
        if holdout:
            val = stratified_holdout(labels, self.val_fraction, self.seed)
            if split == "val" and len(val) == 0:
                raise DataError(
                    f"{self.root}: no val.parquet and val_fraction="
                    f"{self.val_fraction} holds out no rows of {self.source.name} "
                    f"({len(df)} rows); expected val.parquet or val_fraction > 0"
                )
            self.rows = val if split == "val" else np.setdiff1d(self.rows, val)
        self.images = _decode_rows(df, self.rows, size, self.source)
        self.labels = labels[self.rows]
        self.masks = None
        mpath = self.root / f"{stem}_masks.npz"
        if masks and mpath.is_file():
            npz = read_npz(mpath, "a masks .npz with key 'masks' (one mask per row)")
            if "masks" not in npz:
                raise DataError(f"{mpath}: no 'masks' key; found {sorted(npz)}")
            m = npz["masks"]
            expected = (len(df),) + self.images.shape[1:]
            if m.shape != expected:
                raise DataError(
                    f"{mpath}: masks have shape {m.shape}, expected {expected} "
                    f"(one per row of {self.source.name})"
                )
            self.masks = m[self.rows]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        label = int(self.labels[i])
        onehot = torch.zeros(len(self.classes))
        onehot[label] = 1
        s = {
            "image": torch.from_numpy(self.images[i]).float().div_(255).unsqueeze(0),
            "label": torch.tensor(label),
            "labels": onehot,
            "video": self.split,
            "frame_index": int(self.rows[i]),
        }
        if self.masks is not None:
            s["gt_mask"] = torch.from_numpy(self.masks[i] > 0)
        return s
