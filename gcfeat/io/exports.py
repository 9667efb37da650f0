"""Export a feature file for the downstream captioning and interaction models.

``python -m gcfeat.export captioning feats.h5 --method m2 --out DIR``
    One ``DIR/<video>/<frame>_node_features.npy`` per frame: ``(n, 512)`` float32, one row per
    object of the method, the tissue row first, then the file's order (class, then box). The
    captioning model (CIDACaptioning, M2 Transformer) zero-pads / truncates to 6 rows when it
    loads. ``DIR/index.json`` lists ``{"id_path": "<video>/<frame>", "caption": ""}`` per frame
    (the features of an entry are ``<id_path>_node_features.npy``); captions are left empty for
    the user to fill. ``<frame>`` is ``frame%03d`` of the source frame number (the MICCAI 2018
    file names; ``--frame-format`` changes it). Rows flagged empty (M3: nothing above T) are
    kept as zero vectors.

``python -m gcfeat.export interaction feats.h5 --out DIR [--methods m1 m2 m3]``
    One HDF5 per frame and method, ``DIR/<video>/vsgat/<method>/<frame>_features.hdf5``, with

    ==================  ===========  ==================================================
    ``img_name``        string       ``<frame>.png``
    ``node_num``        int64        N
    ``classes``         (N,) int64   index in the interaction model's class list
    ``boxes``           (N, 4) f32   x1, y1, x2, y2 in frame (model input) pixels
    ``node_features``   (N, 512) f32 the method's features
    ``spatial_features`` (E, 16) f32 one row per ordered pair of distinct nodes
    ==================  ===========  ==================================================

    The interaction model's classes are ``INTERACTION_CLASSES`` (kidney, bipolar_forceps,
    prograsp_forceps, large_needle_driver, monopolar_curved_scissors, ultrasound_probe, suction,
    clip_applier, stapler, maryland_dissector, spatulated_monopolar_cautery). gcfeat's
    ``tissue`` becomes ``kidney`` (0); every other name that exists in both lists takes the
    interaction index (e.g. bipolar_forceps 0 -> 1); ``hook`` and ``specimen_bag`` have no
    counterpart and their nodes are left out. The kidney node comes first. ``edge_labels``
    (ground-truth interactions) are not written: the feature file has no such labels.

Pair encoding (``spatial_features``, 16 values per ordered pair ``(i, j)``, E = N (N - 1), pairs
in row-major order ``(0, 1), (0, 2), ..., (1, 0), (1, 2), ...``). With boxes normalised by the
frame size (``x / W``, ``y / H``), widths ``w``, heights ``h``, centres ``(cx, cy)`` and areas
``a = w h`` (widths and heights floored at one pixel so that empty boxes stay finite):

    ====  ==========================================================
    0-4   box i: x1, y1, x2, y2, a
    5-9   box j: x1, y1, x2, y2, a
    10    (cx_j - cx_i) / w_i
    11    (cy_j - cy_i) / h_i
    12    log(w_j / w_i)
    13    log(h_j / h_i)
    14    IoU(i, j)
    15    centre distance sqrt(dcx^2 + dcy^2) in normalised units
    ====  ==========================================================
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from gcfeat.io.paths import writable_dir
from gcfeat.io.features import FeatureFile, FeatureFileError

INTERACTION_CLASSES: tuple[str, ...] = (
    "kidney", "bipolar_forceps", "prograsp_forceps", "large_needle_driver",
    "monopolar_curved_scissors", "ultrasound_probe", "suction", "clip_applier", "stapler",
    "maryland_dissector", "spatulated_monopolar_cautery",
)
#: gcfeat names whose interaction name differs.
RENAME = {"tissue": "kidney"}


def interaction_class_map(classes: Sequence[str]) -> np.ndarray:
    """``(K,)`` int64: interaction index of each gcfeat class, -1 where there is none."""
    return np.array([INTERACTION_CLASSES.index(RENAME.get(c, c))
                     if RENAME.get(c, c) in INTERACTION_CLASSES else -1 for c in classes],
                    dtype=np.int64)


def pair_spatial_features(boxes: np.ndarray, frame_size: Sequence[int]) -> np.ndarray:
    """16-d encoding of every ordered pair of distinct boxes (see the module docstring).

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2 in pixels.
        frame_size: ``(H, W)``.

    Returns:
        ``(N * (N - 1), 16)`` float32, pairs ``(i, j)``, ``i != j``, in row-major order.
    """
    H, W = float(frame_size[0]), float(frame_size[1])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = b.shape[0]
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    nb = b / np.array([W, H, W, H])
    wn, hn = w / W, h / H
    geom = np.concatenate([nb, (wn * hn)[:, None]], 1)                  # (N, 5)
    cx, cy = nb[:, [0, 2]].mean(1), nb[:, [1, 3]].mean(1)
    i, j = np.nonzero(~np.eye(n, dtype=bool))                          # row-major (i, j)
    dcx, dcy = cx[j] - cx[i], cy[j] - cy[i]
    ix1, iy1 = np.maximum(b[i, 0], b[j, 0]), np.maximum(b[i, 1], b[j, 1])
    ix2, iy2 = np.minimum(b[i, 2], b[j, 2]), np.minimum(b[i, 3], b[j, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area[i] + area[j] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    out = np.concatenate([
        geom[i], geom[j],
        np.stack([dcx / wn[i], dcy / hn[i], np.log(w[j] / w[i]), np.log(h[j] / h[i]), iou,
                  np.sqrt(dcx ** 2 + dcy ** 2)], 1)], 1)
    return out.astype(np.float32).reshape(-1, 16)


def _tissue_first(labels: np.ndarray, tissue: Optional[int]) -> np.ndarray:
    key = (labels != tissue) if tissue is not None else np.zeros(len(labels), bool)
    return np.argsort(key, kind="stable")


def _check_method(ff: FeatureFile, method: str) -> None:
    if method not in ff.methods:
        raise FeatureFileError(f"{ff.path}: no method {method!r}; the file has {ff.methods}")


def export_captioning(path: str, method: str, out: str, frame_format: str = "frame{:03d}",
                      index_name: str = "index.json", progress: bool = True) -> List[dict]:
    """Write per-frame ``<video>/<frame>_node_features.npy`` and the JSON index; returns it."""
    index = []
    with FeatureFile(path) as ff:
        _check_method(ff, method)
        writable_dir(out)
        classes = ff.classes
        tissue = classes.index("tissue") if "tissue" in classes else None
        total = ff.num_frames()
        with tqdm(total=total, desc=f"captioning {method}", unit="frame",
                  disable=None if progress else True) as bar:
            for v in ff:
                os.makedirs(os.path.join(out, v.name), exist_ok=True)
                for frame, rows in v.frames(method):
                    name = frame_format.format(frame)
                    order = _tissue_first(rows["label"], tissue)
                    np.save(os.path.join(out, v.name, f"{name}_node_features.npy"),
                            rows["features"][order].astype(np.float32))
                    index.append({"id_path": f"{v.name}/{name}", "caption": ""})
                    bar.update()
    with open(os.path.join(out, index_name), "w") as f:
        json.dump(index, f, indent=1)
    return index


def export_interaction(path: str, out: str, methods: Optional[Sequence[str]] = None,
                       frame_format: str = "frame{:03d}", progress: bool = True) -> int:
    """Write per-frame interaction HDF5 files; returns how many were written."""
    written = 0
    with FeatureFile(path) as ff:
        methods = list(methods or ff.methods)
        for m in methods:
            _check_method(ff, m)
        writable_dir(out)
        cmap = interaction_class_map(ff.classes)
        tissue = ff.classes.index("tissue") if "tissue" in ff.classes else None
        size = ff.attrs.get("input_size")
        if not size:
            raise FeatureFileError(f"{path}: no input_size attribute; the pair encoding needs "
                                   f"the frame size")
        if len(size) != 2:
            raise FeatureFileError(f"{path}: a file of {len(size)}D boxes (task "
                                   f"{ff.attrs.get('task')}); the interaction model's 16-d pair "
                                   f"encoding is defined for 2D frames only")
        with tqdm(total=ff.num_frames() * len(methods), desc="interaction", unit="frame",
                  disable=None if progress else True) as bar:
            for v in ff:
                for m in methods:
                    d = os.path.join(out, v.name, "vsgat", m)
                    os.makedirs(d, exist_ok=True)
                    for frame, rows in v.frames(m):
                        order = _tissue_first(rows["label"], tissue)
                        order = order[cmap[rows["label"][order]] >= 0]   # drop unmapped classes
                        boxes = rows["box"][order].astype(np.float32)
                        name = frame_format.format(frame)
                        with h5py.File(os.path.join(d, f"{name}_features.hdf5"), "w") as h:
                            h["img_name"] = f"{name}.png"
                            h["node_num"] = np.int64(len(order))
                            h["classes"] = cmap[rows["label"][order]]
                            h["boxes"] = boxes
                            h["node_features"] = rows["features"][order].astype(np.float32)
                            h["spatial_features"] = pair_spatial_features(boxes, size)
                        written += 1
                        bar.update()
    return written
