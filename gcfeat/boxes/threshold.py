"""Heatmaps -> boxes: threshold, connected blobs, one box per blob (or per class map).

The original surgical code (``utils/bbox_library.py: form_bboxes``) thresholded each predicted
class map with OpenCV (``cv2.threshold(cam, T, 255, THRESH_BINARY)``: pixels strictly above T),
traced it with ``cv2.findContours(thresh, 1, 2)`` (``RETR_LIST``, ``CHAIN_APPROX_SIMPLE``: every
contour, the borders of holes inside a blob included, not only the outer ones), took one
``boundingRect`` per contour, dropped boxes of area ``w * h <= 25``, merged the tissue boxes into
one (``crop_multibbox`` / ``extract_feature_all``) and scored a box by the mean heat inside it.
gcfeat's default keeps one box per blob (its outer border, ``contours="outer"``: a hole is not
an object); ``contours="list"`` is the original's rule (a hole's border adds the box of the
pixels around the hole, when that box is larger than ``min_area``). :func:`heatmap_to_boxes` does the
same for a whole batch at once: the selected maps are stacked into tall images of a few maps
each with a zero row between maps (so no blob can cross from one map into the next), traced with
one OpenCV call per cache-sized chunk, chunks spread over threads (OpenCV releases the GIL), and
the reductions after that (bounding boxes from contour extremes, ``min_area``, modes, sorting)
are vectorised in numpy. Scores come from a float64 integral image: per chunk with OpenCV on the
CPU; on a GPU the maps are thresholded there, only a uint8 mask travels to the host, and the
integral image is built on the device. 3D volumes go through
``scipy.ndimage.label`` (26-connectivity) on the same padded stack. It also fixes the original's
crash when no class is predicted (no box, no error).

Contour tracing dominates and costs OpenCV what it cost the original, so on one CPU thread this
is about as fast as the original loop (0.8-1.1x measured); the gain comes from threads (about 2x
on a 16-core machine) and, for heatmaps on a GPU, from moving a uint8 mask instead of float maps
(about 2.8x). ``benchmarks/boxes_speed.py`` measures it and checks the boxes are identical.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch import Tensor

from gcfeat import config
from gcfeat.errors import GcfeatError

from .structures import Boxes

__all__ = ["heatmap_to_boxes", "BOX_MODES", "CONTOUR_MODES", "HeatmapError"]

#: Contour rules: one box per blob (outer border) / every contour, holes included (RETR_LIST).
CONTOUR_MODES: tuple[str, ...] = ("outer", "list")
#: Box modes: one box per 8-connected blob / the largest blob's box / one box around all blobs.
BOX_MODES: tuple[str, ...] = ("components", "largest", "union")
_MODE_CODE = {m: i for i, m in enumerate(BOX_MODES)}
_CHUNK_PIXELS = 1 << 19  # pixels per worker task (~6 maps of 256 x 320): mask + maps stay in cache
_CPU_FAST_2D = True  # 2D CPU maps: threshold + trace + score in one chunk pass (tests flip it)


class HeatmapError(GcfeatError):
    """A heatmap or threshold argument that :func:`heatmap_to_boxes` cannot use."""


def heatmap_to_boxes(
    heat: Tensor,
    threshold: float | Tensor | Sequence[float] = config.BOX_THRESHOLD,
    *,
    mode: str = config.BOX_MODE,
    min_area: float = config.MIN_AREA,
    class_modes: Mapping[int, str] | None = None,
    probs: Tensor | None = None,
    pred_threshold: float = config.PRED_THRESHOLD,
    classes: Sequence[int] | Tensor | None = None,
    workers: int | None = None,
    contours: str = "outer",
) -> Boxes:
    """Boxes around the pixels of each class heatmap that are strictly above ``threshold``.

    Pixels with ``heat > threshold`` are *on*; on pixels are grouped into blobs by
    8-connectivity in 2D (diagonal neighbours join) and 26-connectivity in 3D. Every blob gets
    its bounding box with exclusive end (``x1, y1, x1 + w, y1 + h``, as the original). Then:

    * ``min_area``: a blob whose **box** area ``w * h`` (3D: ``d * h * w``) is ``<= min_area``
      is dropped, as the original did with its ``w * h <= 25`` rule (box area, not pixel
      count: a thin diagonal blob of 10 pixels has a 100 px box and is kept).
    * ``mode`` (per class map; ``class_modes`` overrides it for some class ids):
      ``"components"`` one box per kept blob; ``"largest"`` only the kept blob with the largest
      box area (ties: the first in sorted order); ``"union"`` one box around all kept blobs (the
      original's tissue rule; the surgical callers pass ``class_modes={TISSUE: "union"}``).
    * ``score`` = mean heat inside the box (every pixel of the box, on or off, as the original).

    A map with nothing above ``threshold`` gives no box (``threshold = 1`` never gives one, and
    with ``threshold = 0`` pixels equal to 0 stay off).

    Args:
        heat: ``(B, K, H, W)`` or ``(B, K, D, H, W)`` float heatmaps in [0, 1], any device.
        threshold: T in [0, 1], or one T per heatmap channel (a ``(K,)`` tensor / sequence,
            e.g. :attr:`gcfeat.boxes.calibration.ThresholdCalibration.per_channel`): channel
            k is cut at ``threshold[k]`` exactly as a scalar call with that T would cut it.
        mode: default box mode, one of :data:`BOX_MODES`.
        min_area: boxes with area ``<= min_area`` pixels are dropped (0 keeps everything).
        class_modes: ``{class id: mode}`` overriding ``mode`` for those classes.
        probs: optional ``(B, K)`` class probabilities aligned with ``heat``'s channels (or
            ``(B, C)`` over all model outputs when ``classes`` picks K of them); only maps with
            ``probs > pred_threshold`` get boxes. ``None``: every map.
        pred_threshold: probability a class must exceed to get boxes.
        classes: ``(K,)`` class id of each heatmap channel (``CAMResult.classes``); default
            ``0..K-1``. Box labels are these ids.
        workers: threads tracing blobs (OpenCV and the integral image release the GIL);
            default ``min(4, os.cpu_count())`` (more threads oversubscribe OpenCV's own pool
            and gained nothing on a 16-core machine); 1 runs inline.
        contours: ``"outer"`` (default) one box per blob, from its outer border; ``"list"``
            (2D only) every contour OpenCV's ``RETR_LIST`` returns, hole borders included,
            each a box of its own (the original's ``findContours(thresh, 1, 2)``).

    Returns:
        :class:`Boxes` on ``heat``'s device: ``xyxy (M, 4)`` (3D ``(M, 6)`` as z1, y1, x1, z2,
        y2, x2), ``frame`` = row b of the batch, ``label`` = class id, ``score``; sorted by frame,
        label, then coordinates in column order.

    Raises:
        HeatmapError: ``heat`` is not 4D/5D; a map to be thresholded (a selected class) holds
            NaN or inf (checked per cache-sized chunk, no extra pass over memory); ``threshold``
            is NaN or outside [0, 1];
            an unknown mode; ``probs`` / ``classes`` of the wrong shape.

    Example:
        >>> heat = torch.zeros(1, 2, 64, 80); heat[0, 1, 10:20, 30:45] = 0.9
        >>> b = heatmap_to_boxes(heat, 0.3)
        >>> b.xyxy.tolist(), b.label.tolist()
        ([[30.0, 10.0, 45.0, 20.0]], [1])
    """
    heat, sel, labels_of_channel, mode_of_channel, thr = _check(
        heat, threshold, mode, min_area, class_modes, probs, pred_threshold, classes
    )
    if contours not in CONTOUR_MODES:
        raise HeatmapError(f"contours: expected one of {CONTOUR_MODES}, got {contours!r}")
    if contours == "list" and heat.ndim != 4:
        raise HeatmapError(f"contours='list' traces 2D maps (B, K, H, W); got shape {tuple(heat.shape)}")
    d = heat.ndim - 2
    # _check made a (K,) tensor of a sequence; nothing can be strictly above 1
    if isinstance(thr, Tensor):
        sel = sel & (thr < 1).to(sel.device)[None]
    b_idx, k_idx = sel.nonzero(as_tuple=True)
    if b_idx.numel() == 0 or (not isinstance(thr, Tensor) and thr >= 1):
        return Boxes.empty(d, heat.device)
    B, K = heat.shape[:2]
    flat = heat.detach().reshape(B * K, *heat.shape[2:])  # a view for contiguous input
    job = _Job(
        flat,
        (b_idx * K + k_idx).cpu().numpy(),
        mode_of_channel[k_idx.cpu()].numpy(),
        thr.to(torch.float32).numpy()[k_idx.cpu().numpy()] if isinstance(thr, Tensor) else thr,
        float(min_area),
        contours == "list",
    )
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    parts = job.run(workers)
    m_idx = np.concatenate([p[0] for p in parts])
    if len(m_idx) == 0:
        return Boxes.empty(d, heat.device)
    xyxy = np.concatenate([p[1] for p in parts]).reshape(-1, 2 * d)
    scores = np.concatenate([p[2] for p in parts]) if parts[0][2] is not None else None
    return _sorted_boxes(
        job, m_idx, xyxy, scores, b_idx.cpu().numpy(), labels_of_channel.numpy()[k_idx.cpu().numpy()]
    )


class _Job:
    """The selected maps of one :func:`heatmap_to_boxes` call, traced in cache-sized chunks.

    ``rows``: the selected maps' rows of ``flat (B*K, *spatial)``, ascending; ``modes``: their
    box mode codes; ``threshold``: a float, or one T per selected map (the maps' dtype, as the
    scalar path compares). ``maps`` is set when the maps were thresholded on their device (the
    scores then come from :func:`box_mean`)."""

    def __init__(
        self,
        flat: Tensor,
        rows: np.ndarray,
        modes: np.ndarray,
        threshold: float | np.ndarray,
        min_area: float,
        holes: bool,
    ):
        self.flat, self.rows, self.modes = flat, rows, modes
        self.threshold, self.min_area, self.holes = threshold, min_area, holes
        self.d = flat.ndim - 1
        self.maps: Tensor | None = None
        step = max(1, _CHUNK_PIXELS // math.prod(flat.shape[1:]))
        self.chunks = [(s, min(s + step, len(rows))) for s in range(0, len(rows), step)]

    def run(self, workers: int) -> list[tuple]:
        """``[(map index, xyxy, scores or None), ...]`` per chunk (threads when > 1 chunk)."""
        task = (
            self._cpu_task()
            if (self.d == 2 and self.flat.device.type == "cpu" and _CPU_FAST_2D)
            else self._device_task()
        )
        try:
            if workers == 1 or len(self.chunks) == 1:
                return [task(c) for c in self.chunks]
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(task, self.chunks))
        except _NonFinite:
            raise _nonfinite_error(self.flat[torch.from_numpy(self.rows)]) from None

    def _cpu_task(self):
        hn, rows, per_class = (
            self.flat.float().contiguous().numpy(),
            self.rows,
            isinstance(self.threshold, np.ndarray),
        )

        def task(c):  # threshold, trace, reduce, score: all in one cache-sized chunk
            s, e = c
            r = rows[s:e]
            h = hn[r[0] : r[-1] + 1] if r[-1] - r[0] + 1 == len(r) else hn[r]  # view when contiguous
            t = self.threshold[s:e, None, None] if per_class else self.threshold
            return _chunk_2d_cpu(h, t, self.modes[s:e], self.min_area, s, self.holes)

        return task

    def _device_task(self):
        # Threshold on the device; only a uint8 mask with one zero row (slice) per map leaves it.
        d, device = self.d, self.flat.device
        maps = self.maps = self.flat[torch.from_numpy(self.rows).to(device)]
        if not bool(torch.isfinite(maps.sum())):
            raise _nonfinite_error(maps)
        if isinstance(self.threshold, np.ndarray):
            t = torch.from_numpy(self.threshold).to(device=device, dtype=maps.dtype)
            on = (maps > t.reshape(-1, *([1] * d))).to(torch.uint8)
        else:
            on = (maps > self.threshold).to(torch.uint8)
        mask = torch.nn.functional.pad(on, (0, 0) * (d - 1) + (0, 1)).cpu().numpy()

        def task(c):
            s, e = c
            m_idx, xyxy = _trace_2d(mask[s:e], self.holes) if d == 2 else _trace_3d(mask[s:e])
            m_idx, xyxy = _reduce_modes(m_idx, xyxy, self.modes[s:e], self.min_area)
            return m_idx + s, xyxy, None

        return task


def _sorted_boxes(
    job: _Job,
    m_idx: np.ndarray,
    xyxy: np.ndarray,
    scores: np.ndarray | None,
    frame_of_map: np.ndarray,
    label_of_map: np.ndarray,
) -> Boxes:
    """The traced boxes as :class:`Boxes`, sorted by frame, label, then coordinates."""
    device, d = job.flat.device, job.d
    # bookkeeping in numpy (tiny arrays; torch CPU ops here would wake its thread pool)
    frame, label = frame_of_map[m_idx], label_of_map[m_idx]
    keys = [xyxy[:, j] for j in reversed(range(2 * d))]  # lexsort: the last key is primary
    order = np.lexsort(keys + [label, frame])
    xyxy_t = torch.from_numpy(xyxy[order].astype(np.float32)).to(device)
    if scores is not None:
        score = torch.from_numpy(scores[order].astype(np.float32)).to(device)
    else:
        assert job.maps is not None  # thresholded on the device: the scores come from the maps
        score = box_mean(job.maps, torch.from_numpy(m_idx[order]).to(device), xyxy_t)
    return Boxes(
        xyxy_t, torch.from_numpy(frame[order]).to(device), torch.from_numpy(label[order]).to(device), score
    )


# --------------------------------------------------------------------------------------------
def _check(heat, threshold, mode, min_area, class_modes, probs, pred_threshold, classes):
    if not isinstance(heat, Tensor):
        heat = torch.as_tensor(np.asarray(heat))
    if heat.ndim not in (4, 5):
        raise HeatmapError(f"heat: expected (B, K, H, W) or (B, K, D, H, W), got shape {tuple(heat.shape)}")
    if not heat.is_floating_point():
        heat = heat.float()
    threshold = _check_threshold(threshold, heat.shape[1])
    if min_area is None or not (float(min_area) >= 0):
        raise HeatmapError(f"min_area: expected a number >= 0, got {min_area!r}")
    B, K = heat.shape[:2]
    if classes is None:
        labels = torch.arange(K)
    else:
        labels = torch.as_tensor(classes, dtype=torch.int64).reshape(-1).cpu()
        if labels.numel() != K:
            raise HeatmapError(
                f"classes: expected {K} class ids (one per heatmap channel), got {labels.numel()}"
            )
    for m in [mode, *(class_modes or {}).values()]:
        if m not in _MODE_CODE:
            raise HeatmapError(f"mode: expected one of {BOX_MODES}, got {m!r}")
    codes = torch.tensor(
        [_MODE_CODE[(class_modes or {}).get(int(c), mode)] for c in labels.tolist()], dtype=torch.int64
    )
    if probs is None:
        sel = torch.ones(B, K, dtype=torch.bool, device=heat.device)
    else:
        p = torch.as_tensor(probs).to(heat.device)
        if p.ndim != 2 or p.shape[0] != B:
            raise HeatmapError(f"probs: expected ({B}, {K}), got {tuple(p.shape)}")
        if p.shape[1] != K:
            if classes is None or int(labels.max()) >= p.shape[1]:
                raise HeatmapError(
                    f"probs: expected ({B}, {K}) (or all outputs with `classes`), got {tuple(p.shape)}"
                )
            p = p[:, labels.to(p.device)]
        sel = p > pred_threshold
    return heat, sel, labels, codes, threshold


def _check_threshold(threshold, K: int) -> float | Tensor:
    """A scalar T stays a float; a sequence / tensor must hold K values: a ``(K,)`` float64
    CPU tensor. Every T must lie in [0, 1] (NaN fails the check)."""
    if isinstance(threshold, (Tensor, np.ndarray, list, tuple)):
        try:
            t = torch.as_tensor(
                np.asarray(threshold.cpu() if isinstance(threshold, Tensor) else threshold, dtype=np.float64)
            )
        except (TypeError, ValueError):
            raise HeatmapError(f"threshold: expected numbers in [0, 1], got {threshold!r}") from None
        if t.ndim == 0:
            threshold = float(t)
        else:
            if t.shape != (K,):
                raise HeatmapError(
                    f"threshold: expected a number or one per heatmap channel "
                    f"({K},), got shape {tuple(t.shape)}"
                )
            if not bool(((t >= 0) & (t <= 1)).all()):
                raise HeatmapError(f"threshold: expected values in [0, 1], got {t.tolist()}")
            return t
    try:
        scalar = float(threshold)
    except (TypeError, ValueError):
        raise HeatmapError(f"threshold: expected a number in [0, 1], got {threshold!r}") from None
    if not (0.0 <= scalar <= 1.0):  # also catches NaN
        raise HeatmapError(f"threshold: expected a number in [0, 1], got {threshold!r}")
    return scalar


def _nonfinite_error(maps: Tensor) -> HeatmapError:
    nan, inf = int(torch.isnan(maps).sum()), int(torch.isinf(maps).sum())
    return HeatmapError(
        f"heat: {nan} NaN and {inf} infinite value(s) in the heatmaps to threshold "
        f"(shape {tuple(maps.shape)}); expected values in [0, 1]"
    )


class _NonFinite(Exception):
    pass


def _chunk_2d_cpu(
    h: np.ndarray,
    threshold: float | np.ndarray,
    modes: np.ndarray,
    min_area: float,
    offset: int,
    holes: bool = False,
):
    """Threshold + trace + reduce + score ``h (C, H, W)`` float32 maps; returns map index
    (global), ``xyxy (n, 4)`` and box sums / areas, i.e. mean heat."""
    c, H, W = h.shape
    if not math.isfinite(cv2.sumElems(h.reshape(c * H, W))[0]):  # the chunk is in cache: cheap
        raise _NonFinite
    mask = np.zeros((c, H + 1, W), dtype=bool)  # one zero row below each map
    np.greater(h, threshold, out=mask[:, :H])
    m_idx, xyxy = _trace_2d(mask.view(np.uint8), holes)
    m_idx, xyxy = _reduce_modes(m_idx, xyxy, modes, min_area)
    if len(m_idx) == 0:
        return m_idx + offset, xyxy, np.zeros(0, np.float32)
    # Box sums from an integral image of the chunk's stacked maps: one GIL-free OpenCV call and
    # a gather, which scales over threads (a per-box ROI sum reads fewer pixels but loops in
    # Python holding the GIL).
    ii = cv2.integral(h.reshape(c * H, W), sdepth=cv2.CV_64F)
    x1, y1, x2, y2 = (xyxy[:, j] for j in range(4))
    y1, y2 = y1 + m_idx * H, y2 + m_idx * H
    total = ii[y2, x2] - ii[y1, x2] - ii[y2, x1] + ii[y1, x1]
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    return m_idx + offset, xyxy, total / np.maximum(area, 1)


def _trace_2d(mask: np.ndarray, holes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """8-connected blobs of ``mask (C, H + 1, W)`` uint8 (last row of each map zero).

    Returns ``map (L,)`` int64 and ``xyxy (L, 4)`` int64 exclusive-end boxes. The outer border
    of every blob is a top-level contour of ``RETR_CCOMP`` (blobs inside another blob's hole
    included, which ``RETR_EXTERNAL`` would miss); its extreme points give the box. With
    ``holes`` every contour of ``RETR_LIST`` gives a box (the original's rule). The zero row
    under each map joins the outer background, so a map's holes are the same as traced alone.
    """
    c, hp, W = mask.shape
    retr = cv2.RETR_LIST if holes else cv2.RETR_CCOMP
    contours, hier = cv2.findContours(mask.reshape(c * hp, W), retr, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    outer = np.ones(len(contours), bool) if holes else hier[0][:, 3] < 0
    lens = np.fromiter((len(x) for x in contours), np.int64, len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    lo = np.minimum.reduceat(pts, starts)[outer]
    hi = np.maximum.reduceat(pts, starts)[outer] + 1
    m = lo[:, 1] // hp
    lo[:, 1] -= m * hp
    hi[:, 1] -= m * hp
    return m, np.concatenate([lo, hi], 1)


def _trace_3d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected blobs of ``mask (C, D + 1, H, W)`` uint8 (last slice of each volume zero).

    Returns ``map (L,)`` and ``zyx zyx (L, 6)`` exclusive-end boxes."""
    from scipy import ndimage

    c, dp, H, W = mask.shape
    lab, n = ndimage.label(mask.reshape(c * dp, H, W), structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 6), np.int64)
    sl = ndimage.find_objects(lab)
    b = np.array([[s.start for s in t] + [s.stop for s in t] for t in sl], dtype=np.int64)
    m = b[:, 0] // dp
    b[:, 0] -= m * dp
    b[:, 3] -= m * dp
    return m, b


def _reduce_modes(m_idx: np.ndarray, xyxy: np.ndarray, modes: np.ndarray, min_area: float):
    """Drop small blobs, then apply each map's mode (codes of :data:`BOX_MODES`), vectorised.

    ``m_idx (L,)`` map of each blob (index into ``modes (C,)``), ``xyxy (L, 2d)``."""
    d = xyxy.shape[1] // 2
    area = np.prod(xyxy[:, d:] - xyxy[:, :d], axis=1)
    keep = area > min_area
    m_idx, xyxy, area = m_idx[keep], xyxy[keep], area[keep]
    if len(m_idx) == 0:
        return m_idx, xyxy
    code = modes[m_idx]
    out_m, out_b = [m_idx[code == 0]], [xyxy[code == 0]]
    lg = np.flatnonzero(code == 1)
    if len(lg):  # per map the largest area; ties -> first in coordinate order
        keys = [xyxy[lg, j] for j in reversed(range(2 * d))]
        order = lg[np.lexsort(keys + [-area[lg], m_idx[lg]])]
        first = np.concatenate([[True], m_idx[order][1:] != m_idx[order][:-1]])
        out_m.append(m_idx[order[first]])
        out_b.append(xyxy[order[first]])
    un = np.flatnonzero(code == 2)
    if len(un):  # per map the box around all kept blobs
        maps, inv = np.unique(m_idx[un], return_inverse=True)
        lo = np.full((len(maps), d), np.iinfo(np.int64).max)
        hi = np.full((len(maps), d), np.iinfo(np.int64).min)
        np.minimum.at(lo, inv, xyxy[un, :d])
        np.maximum.at(hi, inv, xyxy[un, d:])
        out_m.append(maps)
        out_b.append(np.concatenate([lo, hi], 1))
    return np.concatenate(out_m), np.concatenate(out_b)


def box_mean(maps: Tensor, map_idx: Tensor, xyxy: Tensor, chunk: int = 64) -> Tensor:
    """Mean of ``maps[map_idx[i]]`` inside box ``i``, from a float64 integral image (any dims).

    Args:
        maps: ``(N, *S)`` with ``len(S)`` = 2 or 3.
        map_idx: ``(M,)`` int64 row of ``maps`` for each box.
        xyxy: ``(M, 2d)`` exclusive-end boxes in column order (2D x, y; 3D z, y, x).

    Returns:
        ``(M,)`` float32 on ``maps``' device (0 for an empty box).
    """
    d = maps.ndim - 1
    dev = maps.device
    dt = torch.float32 if dev.type == "mps" else torch.float64
    # spatial index order of the box columns: 2D boxes are (x, y) but arrays are (y, x)
    axes = list(range(d)) if d == 3 else [1, 0]
    b = xyxy.long().to(dev)
    out = torch.zeros(len(b), dtype=dt, device=dev)
    for s in range(0, maps.shape[0], chunk):
        e = min(s + chunk, maps.shape[0])
        sel = ((map_idx >= s) & (map_idx < e)).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        ii = torch.nn.functional.pad(maps[s:e].to(dt), (1, 0) * d)
        for ax in range(1, d + 1):
            ii = ii.cumsum(ax)
        total = torch.zeros(sel.numel(), dtype=dt, device=dev)
        for corner in range(1 << d):  # inclusion-exclusion over the 2^d corners
            idx = [map_idx[sel] - s] + [None] * d
            sign = 1
            for j in range(d):  # j-th spatial axis of the array
                col = axes[j]
                hi = (corner >> j) & 1
                idx[j + 1] = b[sel, col + d] if hi else b[sel, col]
                sign = sign if hi else -sign
            total += sign * ii[tuple(idx)]
        out[sel] = total
    area = (b[:, d:] - b[:, :d]).clamp(min=0).prod(1).clamp(min=1)
    return (out / area).float()
