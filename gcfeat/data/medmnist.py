"""MedMNIST 3D volumes (OrganMNIST3D, facts §3): the `.npz` reader and a Dataset.

File format (as distributed by MedMNIST, e.g. ``organmnist3d.npz`` / ``organmnist3d_64.npz``):
keys ``train_images, train_labels, val_images, val_labels, test_images, test_labels``; images
uint8 ``(N, S, S, S)`` with S = 28 or 64; labels integer ``(N, 1)``.

Localisation ground truth (gcfeat's own side file, written by the synthetic generator): next to
``<name>.npz`` a ``<name>_masks.npz`` with keys ``train_masks, val_masks, test_masks``, uint8
``(N, S, S, S)`` aligned row by row with the images (1 = the organ that causes the label).

Samples: ``image`` float32 ``(1, S, S, S)`` = uint8 / 255 (so deletion's zero baseline is black),
``label`` int64, ``labels`` one-hot float32 ``(K,)``, ``video`` (split name), ``frame_index``
(row), and ``gt_mask`` bool ``(S, S, S)`` when a masks file exists.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from gcfeat.data.errors import DataError, read_npz

__all__ = ["ORGAN3D_CLASSES", "SPLITS", "load_medmnist_npz", "masks_path_for", "MedMNIST3D"]

#: OrganMNIST3D classes by index (facts §3).
ORGAN3D_CLASSES: tuple[str, ...] = (
    "liver",
    "kidney-right",
    "kidney-left",
    "femur-right",
    "femur-left",
    "bladder",
    "heart",
    "lung-right",
    "lung-left",
    "spleen",
    "pancreas",
)
SPLITS = ("train", "val", "test")


def masks_path_for(npz_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.npz`` -> ``<dir>/<name>_masks.npz``."""
    p = Path(npz_path)
    return p.with_name(p.stem + "_masks.npz")


def load_medmnist_npz(
    path: str | os.PathLike, split: str, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of a MedMNIST 3D ``.npz`` -> ``(images uint8 (N, S, S, S), labels (N,))``.

    Raises ``DataError`` naming the file when keys are missing or shapes / dtypes are wrong.
    """
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if not path.is_file():
        raise DataError(f"MedMNIST file {path} does not exist")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(
            f"{path}: cannot read as .npz ({type(exc).__name__}: {exc}); expected a MedMNIST 3D .npz"
        ) from None
    with npz:
        want = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [k for k in want if k not in npz.files]
        if missing:
            raise DataError(
                f"{path}: missing keys {missing}; found {sorted(npz.files)}, expected "
                f"the MedMNIST keys {want}"
            )
        try:
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(
                f"{path}: cannot read {split}_images / {split}_labels "
                f"({type(exc).__name__}: {exc}); the file is truncated or "
                f"corrupt"
            ) from None
    if images.ndim != 4 or len(set(images.shape[1:])) != 1 or images.shape[1] not in (28, 64):
        raise DataError(
            f"{path}: {split}_images has shape {images.shape}, expected (N, 28, 28, 28) or (N, 64, 64, 64)"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {split}_images has dtype {images.dtype}, expected uint8")
    if labels.shape not in ((len(images), 1), (len(images),)):
        raise DataError(f"{path}: {split}_labels has shape {labels.shape}, expected ({len(images)}, 1)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {split}_labels has dtype {labels.dtype}, expected integers")
    labels = labels.reshape(-1).astype(np.int64)
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: {split}_labels holds values in [{labels.min()}, {labels.max()}], "
            f"expected 0..{num_classes - 1}"
        )
    return images, labels


def load_masks(path: str | os.PathLike, split: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read ``<split>_masks`` from a masks npz and check it matches the images' ``shape``."""
    path = Path(path)
    npz = read_npz(path, f"a MedMNIST masks .npz with key {split}_masks")
    key = f"{split}_masks"
    if key not in npz:
        raise DataError(f"{path}: missing key {key!r}; found {sorted(npz)}")
    masks = npz[key]
    if masks.shape != tuple(shape):
        raise DataError(
            f"{path}: {key} has shape {masks.shape}, expected {tuple(shape)} (one mask per image)"
        )
    return masks


class MedMNIST3D(torch.utils.data.Dataset):
    """One split of a MedMNIST 3D ``.npz`` as a Dataset of dict samples (see module docstring).

    ``masks``: ``"auto"`` reads ``<name>_masks.npz`` when it exists, ``None`` never, or a path.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        *,
        classes: tuple[str, ...] = ORGAN3D_CLASSES,
        masks="auto",
    ):
        self.path = Path(path)
        self.split = split
        self.classes = tuple(classes)
        self.images, self.labels = load_medmnist_npz(self.path, split, len(self.classes))
        mpath = masks_path_for(self.path) if masks == "auto" else masks
        self.masks = None
        if mpath is not None and Path(mpath).is_file():
            self.masks = load_masks(mpath, split, self.images.shape)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        label = int(self.labels[i])
        onehot = torch.zeros(len(self.classes))
        onehot[label] = 1
        sample = {
            "image": torch.from_numpy(self.images[i]).float().div_(255).unsqueeze(0),
            "label": torch.tensor(label),
            "labels": onehot,
            "video": self.split,
            "frame_index": int(i),
        }
        if self.masks is not None:
            sample["gt_mask"] = torch.from_numpy(self.masks[i] > 0)
        return sample
