"""Prostate MRI (PI-CAI-like, facts §2): NIfTI cases -> 2D slices [gland, ADC, T2W].

Layout (gcfeat's documented naming for PI-CAI-like data; the synthetic writer produces it)::

    <root>/labels.csv                          columns: case_id, label (csPCa 0/1), split
    <root>/<case_id>/<case_id>_t2w.nii.gz      T2-weighted volume
    <root>/<case_id>/<case_id>_adc.nii.gz      ADC map (resampled to the T2W grid)
    <root>/<case_id>/<case_id>_gland.nii.gz    whole-gland mask (0/1)
    <root>/<case_id>/<case_id>_lesion.nii.gz   lesion mask (0/1; empty for negative cases)

``split`` is ``train``, ``val`` or ``test``. All four volumes of a case share one grid and affine
(checked). Arrays stay in nibabel voxel order ``(X, Y, Z)``; slices are axial, ``vol[:, :, z]``,
shown as ``(H, W) = (X, Y)``.

Pipeline (``case_slices``):

1. crop to the gland's foreground: the 3D bounding box of the gland mask (one box per volume,
   like MONAI's ``CropForeground`` on the volume), widened by ``margin`` voxels in-plane; only
   slices that contain gland are kept;
2. intensities: :func:`scale_intensity_range_percentiles` on T2W and ADC separately, computed
   over the cropped volume (MONAI ``ScaleIntensityRangePercentiles`` semantics, default
   percentiles 1 / 99 -> [0, 1], clipped);
3. each slice resized to ``size`` (bilinear for images, nearest for masks), channels
   ``[gland, ADC, T2W]``;
4. slice label = 1 when the slice contains lesion and the case is csPCa (label 1), else 0. A
   csPCa case whose lesion mask is empty is used with all slices 0: a counted
   :class:`gcfeat.errors.GcfeatWarning` per dataset names those cases
   (``ProstateSlices.positive_without_lesion``).

``ProstateSlices`` (a Dataset) subsamples negative slices to the number of positives when
``balance=True`` (seeded). Samples: ``image`` float32 ``(3, S, S)``, ``label`` int64,
``labels`` one-hot ``(2,)``, ``gt_mask`` bool ``(S, S)`` (lesion), ``video`` (case id),
``frame_index`` (z in the original volume), ``crop`` ``(x1, y1, x2, y2)`` in voxels.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gcfeat.data.errors import DataError
from gcfeat.errors import GcfeatWarning

__all__ = [
    "PROSTATE_CLASSES",
    "MODALITIES",
    "ProstateCase",
    "read_labels",
    "case_paths",
    "load_case",
    "scale_intensity_range_percentiles",
    "gland_bbox",
    "case_slices",
    "paste_slices",
    "ProstateSlices",
]

PROSTATE_CLASSES: tuple[str, ...] = ("non_significant", "significant")
MODALITIES = ("t2w", "adc", "gland", "lesion")


@dataclass
class ProstateCase:
    """One case: float32 ``t2w``, ``adc`` and uint8 ``gland``, ``lesion`` ``(X, Y, Z)``."""

    case_id: str
    t2w: np.ndarray
    adc: np.ndarray
    gland: np.ndarray
    lesion: np.ndarray
    affine: np.ndarray
    label: int = 0


def read_labels(root: str | os.PathLike) -> list[dict]:
    """Rows of ``<root>/labels.csv`` as dicts ``{case_id, label (int), split}``."""
    path = Path(root) / "labels.csv"
    if not path.is_file():
        raise DataError(f"{path} does not exist (expected a csv with columns case_id,label,split)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"case_id", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(
                f"{path}: missing columns {sorted(missing)}; found "
                f"{reader.fieldnames}, expected case_id,label,split"
            )
        rows = []
        for n, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise DataError(f"{path} line {n}: label {row['label']!r}, expected 0 or 1")
            rows.append({"case_id": row["case_id"], "label": int(row["label"]), "split": row["split"]})
    return rows


def case_paths(root: str | os.PathLike, case_id: str) -> dict[str, Path]:
    """``{modality: path}`` of a case's four NIfTI files."""
    d = Path(root) / case_id
    return {m: d / f"{case_id}_{m}.nii.gz" for m in MODALITIES}


def load_case(root: str | os.PathLike, case_id: str, label: int = 0) -> ProstateCase:
    """Read a case's four volumes; checks that shapes and affines agree."""
    from gcfeat.data.medical import load_nifti

    vols, affine = {}, None
    for m, path in case_paths(root, case_id).items():
        arr, aff = load_nifti(path, dtype=None)
        if arr.ndim != 3:
            raise DataError(f"{path}: volume has shape {arr.shape}, expected 3 dims (X, Y, Z)")
        if affine is None:
            affine, shape = aff, arr.shape
        elif arr.shape != shape or not np.allclose(aff, affine, atol=1e-4):
            raise DataError(
                f"{path}: grid {arr.shape} / affine differ from the case's T2W "
                f"{shape}; all four volumes must share one grid (resample first)"
            )
        vols[m] = arr
    return ProstateCase(
        case_id,
        vols["t2w"].astype(np.float32),
        vols["adc"].astype(np.float32),
        (vols["gland"] > 0).astype(np.uint8),
        (vols["lesion"] > 0).astype(np.uint8),
        affine,
        label,
    )


def scale_intensity_range_percentiles(
    img,
    lower: float = 1.0,
    upper: float = 99.0,
    b_min: float | None = 0.0,
    b_max: float | None = 1.0,
    clip: bool = True,
    relative: bool = False,
):
    """MONAI ``ScaleIntensityRangePercentiles`` on one image (array or tensor, any shape).

    ``a_min, a_max`` = the ``lower`` / ``upper`` percentiles of ``img`` (linear interpolation);
    then ``(img - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``, clipped to
    ``[b_min, b_max]`` if ``clip``. ``relative=True`` moves the targets to
    ``b_min + (b_max - b_min) * lower / 100`` and ``b_min + (b_max - b_min) * upper / 100``.
    If ``a_max == a_min`` the image is shifted only (``img - a_min (+ b_min)``), like MONAI.
    ``b_min / b_max = None`` skip the affine rescale (output in [0, 1] over the percentiles).
    """
    if not 0 <= lower <= 100 or not 0 <= upper <= 100 or lower > upper:
        raise ValueError(
            f"percentiles must satisfy 0 <= lower <= upper <= 100, got lower={lower}, upper={upper}"
        )
    is_tensor = torch.is_tensor(img)
    x = img.detach().cpu().double().numpy() if is_tensor else np.asarray(img, dtype=np.float64)
    a_min, a_max = np.percentile(x, [lower, upper])
    if relative:
        if b_min is None or b_max is None:
            raise ValueError("relative=True needs b_min and b_max")
        b_min, b_max = (b_min + (b_max - b_min) * lower / 100.0, b_min + (b_max - b_min) * upper / 100.0)
    if a_max - a_min == 0.0:
        out = x - a_min if b_min is None else x - a_min + b_min
    else:
        out = (x - a_min) / (a_max - a_min)
        if b_min is not None and b_max is not None:
            out = out * (b_max - b_min) + b_min
        if clip and b_min is not None and b_max is not None:
            out = np.clip(out, b_min, b_max)
    out = out.astype(np.float32)
    return torch.from_numpy(out).to(img.device) if is_tensor else out


def gland_bbox(gland: np.ndarray, margin: int = 2) -> tuple[int, int, int, int, int, int]:
    """3D bounding box ``(x1, y1, z1, x2, y2, z2)`` (exclusive end) of the mask's foreground,
    widened in-plane by ``margin`` voxels and clipped to the volume."""
    idx = np.nonzero(gland)
    if len(idx[0]) == 0:
        raise DataError("the gland mask is empty: cannot crop to its foreground")
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    x1, y1 = max(lo[0] - margin, 0), max(lo[1] - margin, 0)
    x2, y2 = min(hi[0] + margin, gland.shape[0]), min(hi[1] + margin, gland.shape[1])
    return x1, y1, lo[2], x2, y2, hi[2]


def _resize(stack: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``(Z, X, Y) -> (Z, size, size)``."""
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=(size, size), mode=mode, **kw)[:, 0]


def case_slices(
    case: ProstateCase, size: int = 128, margin: int = 2, lower: float = 1.0, upper: float = 99.0
) -> dict:
    """Preprocess one case into slices (see the module docstring).

    Returns ``image (S, 3, size, size)`` float32 [gland, ADC, T2W], ``lesion (S, size, size)``
    bool, ``label (S,)`` int64, ``z (S,)`` slice indices, ``crop`` ``(x1, y1, x2, y2)``.
    """
    x1, y1, z1, x2, y2, z2 = gland_bbox(case.gland, margin)
    crop = lambda v: np.moveaxis(v[x1:x2, y1:y2, z1:z2], -1, 0)  # noqa: E731  (Z, X, Y)
    t2w = scale_intensity_range_percentiles(crop(case.t2w), lower, upper)
    adc = scale_intensity_range_percentiles(crop(case.adc), lower, upper)
    gland = crop(case.gland).astype(np.float32)
    lesion = _resize(crop(case.lesion), size, "nearest") > 0.5
    image = torch.stack(
        [_resize(gland, size, "nearest"), _resize(adc, size, "bilinear"), _resize(t2w, size, "bilinear")],
        dim=1,
    )
    has_lesion = torch.from_numpy(crop(case.lesion).reshape(z2 - z1, -1).any(1))
    label = (has_lesion & bool(case.label)).long()
    return {
        "image": image,
        "lesion": lesion,
        "label": label,
        "z": torch.arange(z1, z2),
        "crop": (x1, y1, x2, y2),
    }


def paste_slices(heat, z, crop, shape) -> np.ndarray:
    """Put per-slice maps back on the case's voxel grid (the inverse of crop + resize).

    ``heat (S, h, w)`` for the slices ``z (S,)`` of one case, ``crop`` ``(x1, y1, x2, y2)``,
    ``shape`` ``(X, Y, Z)`` -> float32 volume ``(X, Y, Z)`` (zero outside the crop), ready for
    :func:`gcfeat.data.medical.save_nifti` with the case's affine.
    """
    h = torch.as_tensor(heat, dtype=torch.float32)
    x1, y1, x2, y2 = crop
    up = F.interpolate(h[:, None], size=(x2 - x1, y2 - y1), mode="bilinear", align_corners=False)[:, 0]
    out = np.zeros(shape, np.float32)
    for i, zi in enumerate(np.asarray(z).reshape(-1).tolist()):
        out[x1:x2, y1:y2, int(zi)] = up[i].numpy()
    return out


class ProstateSlices(torch.utils.data.Dataset):
    """All gland slices of the cases of one ``split`` (preprocessed once, kept in memory).

    Args:
        root: dataset folder (layout in the module docstring).
        split: ``train`` / ``val`` / ``test`` as listed in ``labels.csv``.
        size: output side (128).
        balance: subsample negative slices to the number of positive ones (seeded by ``seed``).
    """

    classes = PROSTATE_CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        size: int = 128,
        balance: bool = False,
        seed: int = 0,
        margin: int = 2,
        lower: float = 1.0,
        upper: float = 99.0,
    ):
        self.root = Path(root)
        rows = [r for r in read_labels(root) if r["split"] == split]
        if not rows:
            raise DataError(f"{self.root / 'labels.csv'}: no case has split {split!r}")
        images, lesions, labels, cases, zs, crops = [], [], [], [], [], []
        self.affines: dict[str, np.ndarray] = {}  # case_id -> NIfTI affine (for exports)
        self.shapes: dict[str, tuple] = {}  # case_id -> (X, Y, Z)
        self.positive_without_lesion: list[str] = []  # csPCa cases whose lesion mask is empty
        for r in rows:
            case = load_case(root, r["case_id"], r["label"])
            if case.label == 1 and not np.any(case.lesion):
                self.positive_without_lesion.append(r["case_id"])
            self.affines[r["case_id"]], self.shapes[r["case_id"]] = case.affine, case.t2w.shape
            s = case_slices(case, size, margin, lower, upper)
            images.append(s["image"]), lesions.append(s["lesion"]), labels.append(s["label"])
            cases += [r["case_id"]] * len(s["label"])
            zs.append(s["z"])
            crops += [s["crop"]] * len(s["label"])
        if self.positive_without_lesion:
            warnings.warn(
                GcfeatWarning(
                    f"{self.root / 'labels.csv'}: {len(self.positive_without_lesion)} of {len(rows)} "
                    f"{split!r} cases labelled 1 (csPCa) have an empty lesion mask "
                    f"({', '.join(self.positive_without_lesion[:5])}"
                    f"{', ...' if len(self.positive_without_lesion) > 5 else ''}): their slices are "
                    f"labelled 0 (no slice shows a lesion) and have no localisation ground truth"
                ),
                stacklevel=2,
            )
        self.images = torch.cat(images)
        self.lesions = torch.cat(lesions)
        self.labels = torch.cat(labels)
        self.cases, self.z, self.crops = cases, torch.cat(zs), crops
        self.index = np.arange(len(self.labels))
        if balance:
            rng = np.random.default_rng(seed)
            pos = np.flatnonzero(self.labels.numpy() == 1)
            neg = np.flatnonzero(self.labels.numpy() == 0)
            keep = rng.choice(neg, size=min(len(pos), len(neg)), replace=False)
            self.index = np.sort(np.concatenate([pos, keep]))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        j = int(self.index[i])
        label = int(self.labels[j])
        return {
            "image": self.images[j],
            "label": torch.tensor(label),
            "labels": F.one_hot(torch.tensor(label), 2).float(),
            "gt_mask": self.lesions[j],
            "video": self.cases[j],
            "frame_index": int(self.z[j]),
            "crop": self.crops[j],
        }
