"""Synthetic MRI / CT data in the REAL file formats, with a planted, known cause of the label.

Real PI-CAI, OrganMNIST3D and the Alzheimer parquet files are not reachable here, so each task
gets a generator whose output the task's reader accepts unchanged, and whose ground-truth mask
marks exactly the region that determines the label (so a CAM's localisation can be measured):

* ``write_organ3d(out, ...)``: ``<out>/organmnist3d.npz`` with the MedMNIST keys, uint8
  ``(N, S, S, S)`` volumes and ``(N, 1)`` labels over the 11 OrganMNIST3D classes, plus
  ``<out>/organmnist3d_masks.npz`` (``<split>_masks``). A volume is a dim textured "body" with a
  few faint distractor blobs; the class is decided by one bright organ ellipsoid whose centre and
  radii are class-specific (jittered); the mask is that ellipsoid.
* ``write_prostate(out, ...)``: PI-CAI-like NIfTI cases (see :mod:`gcfeat.data.prostate` for the
  naming) with a NON-identity affine (anisotropic spacing, a rotation, an offset): a textured T2W
  and ADC volume, a whole-gland ellipsoid, and in positive (csPCa) cases a lesion that is dark in
  ADC and T2W, with its mask.
* ``write_alzheimer(out, ...)``: ``train.parquet`` / ``test.parquet`` with an ``image`` struct
  column (``bytes`` = JPEG from ``cv2.imencode``, ``path``) and ``label`` int64 over the four
  classes; the class sets the ventricle size (atrophy, T2-like contrast: CSF bright). Side files
  ``<split>_masks.npz`` (key ``masks``, uint8 ``(N, 128, 128)``, row-aligned) hold the ventricles.

CLI: ``python -m gcfeat.data.mri_synthetic --task organ3d --out data/organ3d`` (see ``--help``;
:mod:`gcfeat.cli.mri_synthetic`).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

__all__ = ["write_organ3d", "write_prostate", "write_alzheimer", "ORGAN3D_LAYOUT"]


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random texture."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape), sigma)
    return (n - n.mean()) / (n.std() + 1e-8)


def _ellipsoid(shape, center, radii, rotation: np.ndarray | None = None) -> np.ndarray:
    """Boolean ellipsoid (or ellipse) over a grid of ``shape``; centre / radii in voxels."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    pts = np.stack([g - c for g, c in zip(grids, center)], -1)
    if rotation is not None:
        pts = pts @ rotation.T
    return (sum((pts[..., i] / r) ** 2 for i, r in enumerate(radii))) <= 1.0


# ------------------------------------------------------------------------------------ organ3d
#: Per class (OrganMNIST3D order): organ centre (z, y, x) and radii as fractions of the side.
ORGAN3D_LAYOUT: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.45, 0.45, 0.30), (0.16, 0.18, 0.20)),  # 0 liver: big, image-left (patient right)
    ((0.55, 0.62, 0.32), (0.10, 0.07, 0.06)),  # 1 kidney-right
    ((0.55, 0.62, 0.68), (0.10, 0.07, 0.06)),  # 2 kidney-left
    ((0.85, 0.50, 0.35), (0.12, 0.06, 0.06)),  # 3 femur-right: long along z
    ((0.85, 0.50, 0.65), (0.12, 0.06, 0.06)),  # 4 femur-left
    ((0.75, 0.40, 0.50), (0.08, 0.09, 0.09)),  # 5 bladder: round, low, central
    ((0.22, 0.40, 0.55), (0.10, 0.11, 0.11)),  # 6 heart
    ((0.20, 0.50, 0.30), (0.14, 0.14, 0.09)),  # 7 lung-right
    ((0.20, 0.50, 0.70), (0.14, 0.14, 0.09)),  # 8 lung-left
    ((0.42, 0.55, 0.72), (0.08, 0.10, 0.07)),  # 9 spleen
    ((0.50, 0.45, 0.55), (0.05, 0.05, 0.13)),  # 10 pancreas: thin, across x
)


def organ3d_volume(
    rng: np.random.Generator, label: int, size: int = 28, n_distractors: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic organ volume -> ``(image uint8 (S, S, S), mask uint8 (S, S, S))``."""
    shape = (size,) * 3
    body = _ellipsoid(shape, [size / 2 - 0.5] * 3, [size * 0.47] * 3)
    img = np.where(body, 0.25, 0.0) + 0.06 * _smooth_noise(rng, shape, size / 28) * body
    for _ in range(n_distractors):  # faint blobs anywhere in the body: not the cause
        c = rng.uniform(0.2, 0.8, 3) * size
        r = rng.uniform(0.05, 0.1, 3) * size
        img = np.where(_ellipsoid(shape, c, r) & body, img + 0.15, img)
    center, radii = ORGAN3D_LAYOUT[label]
    c = (np.array(center) + rng.normal(0, 0.025, 3)) * size
    r = np.array(radii) * rng.uniform(0.85, 1.15, 3) * size
    organ = _ellipsoid(shape, c, np.maximum(r, 1.0))
    img = np.where(organ, 0.75 + 0.08 * _smooth_noise(rng, shape, 1.0), img)
    img = img + rng.normal(0, 0.02, shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), organ.astype(np.uint8)


def write_organ3d(
    out: str | os.PathLike,
    *,
    n_train: int = 330,
    n_val: int = 55,
    n_test: int = 110,
    size: int = 28,
    seed: int = 0,
    name: str = "organmnist3d",
) -> Path:
    """Write ``<out>/<name>.npz`` (MedMNIST keys) and ``<out>/<name>_masks.npz``; returns the npz.

    Labels cycle through the 11 classes (balanced), shuffled per split.
    """
    if size not in (28, 64):
        raise ValueError(f"size must be 28 or 64 (MedMNIST 3D sizes), got {size}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays, masks = {}, {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % len(ORGAN3D_LAYOUT))
        vols = [organ3d_volume(rng, int(k), size) for k in labels]
        arrays[f"{split}_images"] = (
            np.stack([v for v, _ in vols]) if n else np.zeros((0, size, size, size), np.uint8)
        )
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
        masks[f"{split}_masks"] = (
            np.stack([m for _, m in vols]) if n else np.zeros((0, size, size, size), np.uint8)
        )
    path = out / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    np.savez_compressed(out / f"{name}_masks.npz", **masks)
    return path


# ----------------------------------------------------------------------------------- prostate
def _prostate_affine(rng: np.random.Generator, spacing=(0.5, 0.5, 3.0)) -> np.ndarray:
    """A realistic non-identity affine: anisotropic spacing, a small rotation, an offset."""
    a = rng.uniform(-0.2, 0.2)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = rng.uniform(-60, 60, 3)
    return aff


def prostate_case(rng: np.random.Generator, positive: bool, shape=(96, 96, 16)):
    """One synthetic case -> dict of ``t2w, adc`` float32 and ``gland, lesion`` uint8 volumes
    in nibabel voxel order ``(X, Y, Z)``, plus ``affine``."""
    X, Y, Z = shape
    center = np.array([X / 2, Y / 2, Z / 2]) + rng.normal(0, [3, 3, 0.5])
    radii = np.array([X * 0.22, Y * 0.18, Z * 0.35]) * rng.uniform(0.85, 1.15, 3)
    gland = _ellipsoid(shape, center, radii)
    tex = _smooth_noise(rng, shape, 1.5)
    t2w = 300 + 40 * tex + 120 * gland + 25 * _smooth_noise(rng, shape, 4)
    adc = 1600 + 150 * _smooth_noise(rng, shape, 2) - 300 * gland
    lesion = np.zeros(shape, bool)
    if positive:  # a lesion inside the gland: dark in ADC (restricted diffusion) and in T2W
        offset = rng.uniform(-0.45, 0.45, 3) * radii * np.array([1, 1, 0.4])
        lr = np.array([X * 0.06, Y * 0.06, max(Z * 0.15, 1.6)]) * rng.uniform(0.8, 1.3, 3)
        lesion = _ellipsoid(shape, center + offset, lr) & gland
        adc = np.where(lesion, 650 + 60 * tex, adc)
        t2w = np.where(lesion, t2w - 110, t2w)
    t2w = np.clip(t2w + rng.normal(0, 10, shape), 0, None)
    adc = np.clip(adc + rng.normal(0, 30, shape), 0, None)
    return {
        "t2w": t2w.astype(np.float32),
        "adc": adc.astype(np.float32),
        "gland": gland.astype(np.uint8),
        "lesion": lesion.astype(np.uint8),
        "affine": _prostate_affine(rng),
    }


def write_prostate(
    out: str | os.PathLike,
    *,
    n_cases: int = 40,
    positive_fraction: float = 0.5,
    shape=(96, 96, 16),
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Path:
    """Write PI-CAI-like NIfTI cases and ``labels.csv`` under ``out``; returns ``out``."""
    from gcfeat.data.medical import save_nifti

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_test = int(round(n_cases * test_fraction))
    n_val = int(round(n_cases * val_fraction))
    splits = ["test"] * n_test + ["val"] * n_val + ["train"] * (n_cases - n_test - n_val)
    positives = rng.permutation(np.arange(n_cases) < round(n_cases * positive_fraction))
    rows = []
    for i in range(n_cases):
        cid = f"case_{10000 + i:05d}"
        case = prostate_case(rng, bool(positives[i]), tuple(shape))
        for key in ("t2w", "adc", "gland", "lesion"):
            save_nifti(out / cid / f"{cid}_{key}.nii.gz", case[key], case["affine"])
        rows.append((cid, int(positives[i]), splits[i]))
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "label", "split"])
        w.writerows(rows)
    return out


# ---------------------------------------------------------------------------------- alzheimer
#: Severity (0 = none .. 3 = moderate) of each class index (facts §4 order).
ALZHEIMER_SEVERITY = (2, 3, 0, 1)  # Mild, Moderate, Non, Very_Mild


def alzheimer_slice(rng: np.random.Generator, label: int, size: int = 128):
    """One axial brain-like slice -> ``(image uint8 (S, S), ventricle mask uint8 (S, S))``.

    T2-like contrast (CSF bright). Severity enlarges the ventricles: the ONLY planted cause
    (the cortex ribbon is fixed), so the ventricle mask is the full localisation ground truth,
    and deleting it (to 0) removes the evidence.
    """
    sev = ALZHEIMER_SEVERITY[label]
    s = size / 128
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.normal(0, 2 * s), size / 2 + rng.normal(0, 2 * s)
    ry, rx = (54 + rng.normal(0, 2)) * s, (44 + rng.normal(0, 2)) * s
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    tex = _smooth_noise(rng, (size, size), 2.0 * s)
    img = np.zeros((size, size))
    img[r <= 1.08] = 0.85  # skull
    img[r <= 1.0] = 0.10  # CSF gap
    brain = r <= 0.96
    img[brain] = 0.55 + 0.05 * tex[brain]  # white matter
    cortex_w = 0.12
    ribbon = brain & (r > 0.96 - cortex_w)
    img[ribbon] = 0.38 + 0.04 * tex[ribbon]  # grey matter
    # Ventricles: two symmetric ellipses whose size grows with severity.
    scale = (1.0 + 0.55 * sev) * rng.uniform(0.93, 1.07)
    vh, vw, gap = 11 * s * scale, 4.5 * s * scale, (4 + 1.5 * sev) * s
    vent = np.zeros((size, size), bool)
    for side in (-1, 1):
        vent |= (((yy - cy) / vh) ** 2 + ((xx - cx - side * gap) / vw) ** 2) <= 1
    img[vent] = 0.92 + 0.03 * tex[vent]  # CSF, bright in T2
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), vent.astype(np.uint8)


def write_alzheimer(
    out: str | os.PathLike,
    *,
    n_train: int = 400,
    n_test: int = 100,
    size: int = 128,
    seed: int = 0,
    jpeg_quality: int = 95,
) -> Path:
    """Write ``train.parquet`` / ``test.parquet`` (+ ``<split>_masks.npz``) under ``out``."""
    import cv2
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 4)
        records, masks = [], []
        for i, k in enumerate(labels):
            img, mask = alzheimer_slice(rng, int(k), size)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            assert ok
            records.append({"bytes": buf.tobytes(), "path": f"{split}_{i:05d}.jpg"})
            masks.append(mask)
        df = pd.DataFrame({"image": records, "label": labels.astype(np.int64)})
        df.to_parquet(out / f"{split}.parquet", index=False)
        np.savez_compressed(
            out / f"{split}_masks.npz",
            masks=np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
        )
    return out


if __name__ == "__main__":  # `python -m gcfeat.data.mri_synthetic`: the CLI is gcfeat.cli.mri_synthetic
    from gcfeat.cli.mri_synthetic import main

    raise SystemExit(main())
