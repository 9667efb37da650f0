"""Synthetic endoscopic scenes with exact ground truth, written in the real dataset layouts.

A stand-in for MICCAI 2018 / Cholec80 that anyone can generate in seconds: a pinkish tissue
texture with darker vessels, specular highlights and vignetting, and 0-3 instruments per frame
from the 11-class list (tissue is always present). Each instrument class has its own look,
learnable by a small CNN: a saturated shaft colour with class-coloured bands along the whole
shaft, and a class-specific tip (jaws, blades, hook, probe head, bag...):

====  =========================  ================  ==========================
 id   class                      shaft / bands     tip
====  =========================  ================  ==========================
  0   bipolar_forceps            blue / white      two slender light-blue jaws
  1   prograsp_forceps           green / black     two broad fenestrated jaws
  2   large_needle_driver        yellow / black    blunt grey block + needle
  3   monopolar_curved_scissors  cyan / navy       two curved copper blades
  4   ultrasound_probe           violet / white    large dark oval head
  5   suction                    orange / white    straight tube + ring
  6   clip_applier               teal / yellow     two prongs + gold clip
  7   stapler                    navy / cyan       long dark jaw + cartridge
  8   hook                       lime / black      black sheath + L-hook
  9   specimen_bag               silver / blue     large pale bag
====  =========================  ================  ==========================

Instruments enter from the frame border (the shaft always runs out of the frame), move
smoothly (tip position and angle interpolated between random key poses), open and close their
jaws, and occlude each other (random depth order). Everything is a pure function of the seed
(``numpy.random.Generator``, no global RNG); ``generate_video(seed, n)[i]`` renders frame ``i``
on demand.

Ground truth per frame (:class:`SceneFrame`): multi-hot ``labels (11,)``; per present class the
*visible* mask (what occluders leave) and its exact extent as a box ``(x1, y1, x2, y2)``,
exclusive end, frame pixels. An instrument whose visible area is below ``min_visible`` pixels
is left out of labels, masks and boxes (labels never claim an invisible tool). Tissue is always
labelled; its box is the whole frame and its mask the visible tissue.

Layouts written (``python -m gcfeat.data.synthetic --help``):

* **MICCAI 2018** (:func:`write_miccai18`; reader :class:`gcfeat.data.Miccai18Dataset`)::

    dataset.json                          layout, classes, size, seed, generator version, splits
    seq_N/left_frames/frameNNN.png        RGB frames, numbered from 000
    annotation_tool/<split>/seq_N.txt     tool presence: header + one row per frame
    gt_bbox/seq_N.txt                     boxes: frame name + x1,y1,x2,y2 per class (all 11)
    groundtruth/seq_N/frameNNN.json       per-frame labels, boxes and RLE masks
    seq_N/xml/frameNNN.xml                scene graph: objects (kidney = tissue first, boxes
                                          inclusive), 13-action interactions, caption
    seq_N/annotations/frameNNN.png        label mask, uint8: 0 tissue, c + 1 instrument c

  Sequences 1, 5 and 16 are validation, the others training (the EndoVis18 split); when none
  of them exists the last sequence is validation. File formats: :mod:`gcfeat.data.miccai18`
  and :mod:`gcfeat.data.groundtruth`. The scene graphs (:mod:`gcfeat.data.scene_graph`) are
  templated from the exact ground truth (:func:`~gcfeat.data.scene_graph.template_scene_graph`):
  hook and specimen_bag, which the real format has no name for, are left out of them; frames
  where no tool acts get no caption. They and the label masks are additions: frames, labels and
  boxes are the same as without them. ``test_videos=N`` (``--test-videos N``) adds N held-out
  sequences after them (``seq_<videos+1>`` ...), listed under ``annotation_tool/test/`` and in
  ``dataset.json``'s ``splits["test"]``: the class queue runs through the videos in order, so
  the first ``videos`` sequences are the same with or without them.

* **Cholec80** (:func:`write_cholec80`; reader :class:`gcfeat.data.Cholec80Dataset`)::

    dataset.json
    videos/videoNN.mp4                    25 fps, MPEG-4 part 2 ('mp4v')
    tool_annotations/videoNN-tool.txt     tab separated, one row every 25 frames (1 fps)
    groundtruth/videoNN/frameNNNNNN.json  ground truth of the annotated frames

  Only the 7 classes with a Cholec80 column are drawn (``CHOLEC80_TO_SURGICAL``): Grasper ->
  prograsp_forceps, Bipolar -> bipolar_forceps, Hook -> hook, Scissors ->
  monopolar_curved_scissors, Clipper -> clip_applier, Irrigator -> suction, SpecimenBag ->
  specimen_bag; large_needle_driver, ultrasound_probe and stapler never appear. Instruments
  appear and leave only half-way between two annotated frames and move slowly, so each 1 fps
  row describes the whole second around its frame.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .classes import CHOLEC80_TO_SURGICAL, INSTRUMENTS, SURGICAL_CLASSES, TISSUE
from .errors import make_dir
from .groundtruth import mask_box, write_frame_gt
from .scene_graph import template_scene_graph, write_scene_graph
from .transforms import parse_size

GENERATOR_VERSION = 1
CHOLEC80_FPS = 25
#: Classes the Cholec80 writer draws (those with a Cholec80 tool column).
CHOLEC80_CLASSES: tuple[int, ...] = tuple(
    sorted(SURGICAL_CLASSES.index(v) for v in CHOLEC80_TO_SURGICAL.values())
)


@dataclass
class SceneFrame:
    """One generated frame and its exact ground truth.

    ``image``: uint8 ``(H, W, 3)`` RGB. ``labels``: uint8 ``(11,)`` multi-hot over
    ``SURGICAL_CLASSES``. ``masks``: class -> bool ``(H, W)`` visible pixels. ``boxes``: class ->
    ``(x1, y1, x2, y2)`` exclusive end, the exact extent of the mask (tissue: whole frame).
    """

    image: np.ndarray
    labels: np.ndarray
    masks: dict[int, np.ndarray]
    boxes: dict[int, tuple[int, int, int, int]]
    frame_index: int = 0


# ----------------------------------------------------------------------------------------------
# Instrument looks. Geometry is in "shaft widths" w, in a local frame at the tip base B:
# x forward along the shaft direction, y to its left.

_LOOKS: dict[int, dict] = {
    0: dict(shaft=(30, 80, 255), band=(255, 255, 255), tip=(150, 205, 255), period=2.2, width=(0.065, 0.08)),
    1: dict(shaft=(20, 185, 60), band=(15, 15, 15), tip=(160, 255, 130), period=1.6, width=(0.075, 0.09)),
    2: dict(shaft=(250, 220, 20), band=(30, 30, 30), tip=(165, 165, 170), period=3.0, width=(0.075, 0.09)),
    3: dict(shaft=(20, 220, 235), band=(10, 40, 120), tip=(205, 120, 45), period=2.0, width=(0.07, 0.085)),
    4: dict(shaft=(140, 55, 230), band=(255, 255, 255), tip=(65, 65, 80), period=3.5, width=(0.08, 0.095)),
    5: dict(shaft=(255, 130, 0), band=(255, 255, 255), tip=(255, 195, 100), period=1.4, width=(0.06, 0.07)),
    6: dict(shaft=(0, 130, 110), band=(250, 220, 20), tip=(150, 150, 150), period=2.6, width=(0.07, 0.085)),
    7: dict(shaft=(25, 30, 130), band=(40, 230, 255), tip=(45, 45, 60), period=1.8, width=(0.085, 0.10)),
    8: dict(shaft=(170, 250, 50), band=(10, 10, 10), tip=(215, 215, 215), period=2.4, width=(0.06, 0.07)),
    9: dict(shaft=(200, 200, 210), band=(30, 60, 230), tip=(225, 240, 228), period=3.2, width=(0.06, 0.07)),
}
#: How far each tip reaches beyond B, in shaft widths.
_TIP_LEN = {0: 2.3, 1: 1.75, 2: 2.05, 3: 2.2, 4: 2.5, 5: 2.9, 6: 1.95, 7: 3.0, 8: 1.95, 9: 3.8}
_WRIST = (55, 55, 60)
_GOLD = (235, 185, 40)
_SILVER = (240, 240, 240)
_CARTRIDGE = (205, 210, 255)


def _rot(pts: np.ndarray, ang: float) -> np.ndarray:
    c, s = math.cos(ang), math.sin(ang)
    return pts @ np.array([[c, s], [-s, c]], np.float64)


def _arc(cx, cy, rx, ry, t0, t1, n=12) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _tip_prims(cls: int, jaw: float) -> list[tuple]:
    """Tip primitives in local units: ("poly", [pts...], colour) or ("line", [pts], colour, thick).

    ``jaw`` in [0, 1] opens jaws and blades.
    """
    tip = _LOOKS[cls]["tip"]
    A = np.array
    if cls == 0:  # bipolar forceps: two slender tapered jaws
        j = A([(0, -0.12), (2.2, -0.05), (2.3, 0), (2.2, 0.05), (0, 0.12)], float)
        a = 0.10 + 0.22 * jaw
        return [("poly", [_rot(j, a) + (0, 0.2), _rot(j, -a) - (0, 0.2)], tip)]
    if cls == 1:  # prograsp: two broad jaws with a dark window
        j = A([(0, -0.24), (1.4, -0.24), (1.65, 0), (1.4, 0.24), (0, 0.24)], float)
        win = A([(0.45, -0.09), (1.15, -0.09), (1.15, 0.09), (0.45, 0.09)], float)
        a = 0.06 + 0.28 * jaw
        return [
            ("poly", [_rot(j, a) + (0, 0.26), _rot(j, -a) - (0, 0.26)], tip),
            ("poly", [_rot(win, a) + (0, 0.26), _rot(win, -a) - (0, 0.26)], (40, 60, 40)),
        ]
    if cls == 2:  # needle driver: blunt block holding a curved needle
        block = A([(0, -0.5), (1.1, -0.42), (1.35, 0), (1.1, 0.42), (0, 0.5)], float)
        return [
            ("poly", [block], tip),
            ("line", [_arc(1.2, 0.75, 0.8, 0.75, -math.pi / 2, math.pi / 2)], _SILVER, 0.14),
        ]
    if cls == 3:  # curved scissors: two copper blades curving to one side
        t = np.linspace(0, 1, 8)
        blade = np.stack([2.0 * t, 0.5 * t * t], 1)
        a = 0.04 + 0.22 * jaw
        return [("line", [_rot(blade, a)], tip, 0.32), ("line", [_rot(blade, -a)], tip, 0.32)]
    if cls == 4:  # ultrasound probe: large oval head with a lighter transducer face
        head = _arc(1.25, 0, 1.25, 0.8, 0, 2 * math.pi, 20)
        face = A([(0.6, -0.35), (1.9, -0.35), (1.9, 0.35), (0.6, 0.35)], float)
        return [("poly", [head], tip), ("poly", [face], (150, 150, 175))]
    if cls == 5:  # suction: straight tube ending in a ring
        tube = A([(0, -0.3), (2.2, -0.3), (2.2, 0.3), (0, 0.3)], float)
        return [("poly", [tube], tip), ("ring", [_arc(2.45, 0, 0.42, 0.42, 0, 2 * math.pi, 16)], tip, 0.22)]
    if cls == 6:  # clip applier: two prongs holding a gold clip
        s = 0.28 + 0.14 * jaw
        return [
            ("line", [A([(0, s), (1.55, s)], float), A([(0, -s), (1.55, -s)], float)], tip, 0.26),
            ("line", [A([(1.35, -s), (1.85, 0), (1.35, s)], float)], _GOLD, 0.2),
        ]
    if cls == 7:  # stapler: long dark jaw with a light cartridge stripe
        jawp = A([(0, -0.62), (2.7, -0.62), (3.0, -0.3), (3.0, 0.3), (2.7, 0.62), (0, 0.62)], float)
        cart = A([(0.2, -0.16), (2.6, -0.16), (2.6, 0.16), (0.2, 0.16)], float)
        return [("poly", [jawp], tip), ("poly", [cart], _CARTRIDGE)]
    if cls == 8:  # hook: black sheath, then an L-shaped electrode
        sheath = A([(0, -0.32), (0.7, -0.32), (0.7, 0.32), (0, 0.32)], float)
        return [
            ("poly", [sheath], (20, 20, 20)),
            ("line", [A([(0.6, 0), (1.8, 0), (1.8, 0.8)], float)], tip, 0.3),
        ]
    if cls == 9:  # specimen bag: a pale pear-shaped bag at the end of a thin shaft
        t = np.linspace(0, 2 * math.pi, 20)
        bag = np.stack([1.9 + 1.9 * np.cos(t), 1.3 * np.sin(t) * (0.75 + 0.25 * np.cos(t))], 1)
        rim = A([(0, -0.45), (0.35, -0.45), (0.35, 0.45), (0, 0.45)], float)
        return [("poly", [bag], tip), ("poly", [rim], _LOOKS[9]["band"])]
    raise ValueError(f"class {cls}: not an instrument class")


def _instrument_prims(
    cls: int, base: np.ndarray, theta: float, w: float, jaw: float, reach: float
) -> list[tuple]:
    """Primitives in frame pixels: (kind, [pts (n, 2) float], colour, thickness_px, in_mask)."""
    look = _LOOKS[cls]
    d = np.array([math.cos(theta), math.sin(theta)])
    p = np.array([-d[1], d[0]])

    def to_img(local: np.ndarray) -> np.ndarray:
        return base + local[:, :1] * (w * d) + local[:, 1:2] * (w * p)

    out = []
    # The shaft runs from far outside the frame (behind B) to the wrist.
    far = reach / w
    shaft = np.array([(-far, -0.5), (0, -0.5), (0, 0.5), (-far, 0.5)])
    out.append(("poly", [to_img(shaft)], look["shaft"], 0, True))
    period = look["period"]
    starts = 0.9 + period * np.arange(int(far / period))
    bands = [to_img(np.array([(-a, -0.5), (-a - 0.55, -0.5), (-a - 0.55, 0.5), (-a, 0.5)])) for a in starts]
    if bands:
        out.append(("poly", bands, look["band"], 0, True))
    if w >= 6:  # a lengthwise highlight inside the shaft: a rounded, metallic look
        hl = np.array([(-far, -0.32), (-0.5, -0.32), (-0.5, -0.14), (-far, -0.14)])
        shade = tuple(int(min(255, c * 0.55 + 115)) for c in look["shaft"])
        out.append(("poly", [to_img(hl)], shade, 0, False))
    wrist = np.array([(-0.55, -0.56), (0.05, -0.56), (0.05, 0.56), (-0.55, 0.56)])
    out.append(("poly", [to_img(wrist)], _WRIST, 0, True))
    for prim in _tip_prims(cls, jaw):
        kind, pts, colour = prim[:3]
        thick = max(1, int(round(prim[3] * w))) if len(prim) > 3 else 0
        out.append((kind, [to_img(q) for q in pts], colour, thick, True))
    return out


def _draw(canvas: np.ndarray, prim: tuple, colour) -> None:
    kind, pts, _, thick, _ = prim
    pts = [np.round(q * 16).astype(np.int32) for q in pts]  # 4 fractional bits
    if kind == "poly":
        cv2.fillPoly(canvas, pts, colour, cv2.LINE_8, 4)
    else:
        cv2.polylines(canvas, pts, kind == "ring", colour, thick, cv2.LINE_8, 4)


# ----------------------------------------------------------------------------------------------
# Motion plan


@dataclass
class _Track:
    cls: int
    start: int
    end: int  # exclusive
    z: float  # drawing order: larger is nearer the camera
    width: float  # shaft width, px
    key_frames: np.ndarray  # (k,) int
    key_base: np.ndarray  # (k, 2) tip base B, px
    key_theta: np.ndarray  # (k,) shaft direction, rad (unwrapped)
    jaw_period: float
    jaw_phase: float

    def pose(self, f: int) -> tuple[np.ndarray, float, float]:
        base, theta = _spline(self.key_frames, self.key_base, self.key_theta[:, None], f=f)
        jaw = 0.5 + 0.5 * math.sin(2 * math.pi * f / self.jaw_period + self.jaw_phase)
        return base, float(theta[0]), jaw


def _spline(key_frames: np.ndarray, *values: np.ndarray, f: float) -> list[np.ndarray]:
    """Catmull-Rom interpolation of ``(k, d)`` key values at frame f: smooth, and moving at
    every frame (no stops at the key poses, unlike smoothstep)."""
    k = len(key_frames)
    i = min(max(int(np.searchsorted(key_frames, f, side="right")) - 1, 0), k - 2)
    u = min(max((f - key_frames[i]) / max(key_frames[i + 1] - key_frames[i], 1), 0.0), 1.0)
    u2, u3 = u * u, u * u * u
    w = (-0.5 * u3 + u2 - 0.5 * u, 1.5 * u3 - 2.5 * u2 + 1, -1.5 * u3 + 2 * u2 + 0.5 * u, 0.5 * u3 - 0.5 * u2)
    idx = [max(i - 1, 0), i, i + 1, min(i + 2, k - 1)]
    return [sum(wj * v[j] for wj, j in zip(w, idx)) for v in values]


def _border_point(s: float, H: int, W: int) -> tuple[np.ndarray, float]:
    """Point at perimeter position ``s`` and the angle of the inward normal there."""
    if s < W:
        return np.array([s, 0.0]), math.pi / 2
    s -= W
    if s < H:
        return np.array([float(W), s]), math.pi
    s -= H
    if s < W:
        return np.array([W - s, float(H)]), -math.pi / 2
    s -= W
    return np.array([0.0, H - s]), 0.0


def _sample_pose(
    rng: np.random.Generator, H: int, W: int, w: float, tip_len: float, prev: tuple[float, float] | None
) -> tuple[float, np.ndarray, float]:
    """A key pose ``(s, B, theta)``: shaft entering at border position s, tip inside the frame.

    Visible length (border to tip end) is 35-70% of the diagonal where the frame allows it.
    ``prev = (s, theta)`` keeps the new pose near the previous one (smooth motion).
    """
    per = 2.0 * (H + W)
    diag = math.hypot(H, W)
    margin = 0.03 * min(H, W)
    for attempt in range(200):
        shrink = attempt / 200.0  # relax the length if the frame is tight
        if prev is None:
            s = rng.uniform(0, per)
        else:
            s = (prev[0] + rng.uniform(-0.1, 0.1) * per) % per
        point, normal = _border_point(s, H, W)
        theta = normal + rng.uniform(-0.95, 0.95)
        if prev is not None:
            dtheta = (theta - prev[1] + math.pi) % (2 * math.pi) - math.pi
            if abs(dtheta) > 0.8:
                continue
            theta = prev[1] + dtheta
        frac = rng.uniform(0.35 * (1 - shrink), 0.7 * (1 - shrink))
        d = np.array([math.cos(theta), math.sin(theta)])
        end = point + frac * diag * d
        base = end - tip_len * w * d
        lo, hi = np.array([margin, margin]), np.array([W - margin, H - margin])
        if (
            np.all(end >= lo)
            and np.all(end <= hi)
            and np.all(base >= lo)
            and np.all(base <= hi)
            and frac * diag > (tip_len + 1) * w
        ):
            return s, base, theta
    # A frame too small for the constraints: park the tool in the centre, entering from below.
    return (prev[0] if prev else 0.0), np.array([W / 2, H / 2]), -math.pi / 2


# ----------------------------------------------------------------------------------------------
# Background


def _make_background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """Tissue texture, vessels and specular highlights, uint8 (H, W, 3) RGB."""
    tex = np.zeros((H, W), np.float32)
    for cells, amp in ((3, 1.0), (9, 0.5), (30, 0.22)):
        ch = max(2, round(cells * H / W))
        small = rng.standard_normal((ch + 1, cells + 1)).astype(np.float32)
        tex += amp * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    tex /= np.abs(tex).max() + 1e-6
    base = np.array([196, 92, 98], np.float32) + rng.uniform(-14, 14, 3).astype(np.float32)
    light = np.array([236, 158, 150], np.float32)
    dark = np.array([128, 38, 52], np.float32)
    t = tex[..., None]
    img = base + np.clip(t, 0, None) * (light - base) * 0.7 + np.clip(-t, 0, None) * (dark - base) * 0.7
    img = np.clip(img, 0, 255).astype(np.uint8)

    diag = math.hypot(H, W)
    for _ in range(int(rng.integers(5, 10))):  # vessels: random-walk curves, some branching
        pt = rng.uniform((0, 0), (W, H))
        ang = rng.uniform(0, 2 * math.pi)
        thick = int(rng.integers(1, max(2, round(0.014 * H)) + 1))
        pts = [pt]
        for _ in range(int(rng.integers(10, 24))):
            ang += rng.normal(0, 0.3)
            pt = pt + 0.035 * diag * np.array([math.cos(ang), math.sin(ang)])
            pts.append(pt)
        colour = tuple(int(v) for v in np.array([120, 22, 42]) + rng.integers(-15, 15, 3))
        cv2.polylines(
            img, [np.round(np.array(pts) * 16).astype(np.int32)], False, colour, thick, cv2.LINE_AA, 4
        )
        if thick > 1 and rng.random() < 0.6:
            k = int(rng.integers(1, len(pts)))
            sub, a = [pts[k]], ang + rng.choice([-1.0, 1.0])
            for _ in range(int(rng.integers(4, 10))):
                a += rng.normal(0, 0.3)
                sub.append(sub[-1] + 0.03 * diag * np.array([math.cos(a), math.sin(a)]))
            cv2.polylines(
                img, [np.round(np.array(sub) * 16).astype(np.int32)], False, colour, thick - 1, cv2.LINE_AA, 4
            )
    img = cv2.GaussianBlur(img, (0, 0), max(0.6, 0.004 * H))
    for _ in range(int(rng.integers(4, 11))):  # specular highlights: small white blobs
        r = max(1.0, rng.uniform(0.004, 0.014) * H)
        centre = tuple(int(v) for v in rng.uniform((0, 0), (W, H)))
        axes = (int(round(r)), max(1, int(round(r * rng.uniform(0.4, 1.0)))))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, (255, 250, 246), -1, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 0.5)


def _vignette(H: int, W: int, strength: float) -> np.ndarray:
    y = (np.arange(H, dtype=np.float32) - (H - 1) / 2) / (H / 2)
    x = (np.arange(W, dtype=np.float32) - (W - 1) / 2) / (W / 2)
    r2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0  # 1 at the corners
    v = 1.0 - strength * r2**1.2
    return np.repeat(np.round(255 * v)[..., None], 3, 2).astype(np.uint8)


# ----------------------------------------------------------------------------------------------


def _as_class_ids(classes: Sequence[int | str]) -> tuple[int, ...]:
    ids = []
    for c in classes:
        i = SURGICAL_CLASSES.index(c) if isinstance(c, str) and c in SURGICAL_CLASSES else c
        if not isinstance(i, (int, np.integer)) or i not in INSTRUMENTS:
            raise ValueError(
                f"classes: {c!r} is not an instrument class; expected ids "
                f"{INSTRUMENTS} or names {SURGICAL_CLASSES[:TISSUE]}"
            )
        ids.append(int(i))
    if not ids:
        raise ValueError("classes: empty; expected at least one instrument class")
    return tuple(sorted(set(ids)))


class SyntheticVideo(Sequence[SceneFrame]):
    """A synthetic video: ``len(video)`` frames, ``video[i]`` renders frame i (a SceneFrame).

    Everything random is drawn up front from ``seed`` (an int or a sequence of ints), so frames
    can be rendered in any order and the same seed gives identical arrays.

    Args:
        seed: seed of the ``numpy.random.Generator``.
        num_frames: number of frames.
        size: ``(H, W)`` of the frames.
        classes: instrument classes that may appear (ids or names); each video cycles through
            a shuffled list of them, so they appear about equally often.
        max_instruments: at most this many instruments at once (0-3).
        min_visible: instruments with fewer visible pixels are left out of the ground truth
            (at least 1: an instrument with no visible pixel is never labelled).
        motion_period: frames between key poses (smaller = faster motion).
        segment: instruments enter and leave only at frames ``k * segment - segment // 2``
            (Cholec80: 25, so presence is constant within +-12 frames of each 1 fps row).
        track_length: ``(min, max)`` frames an instrument stays.
        noise: amplitude of the per-frame sensor noise in grey levels (0 = none).
        class_queue: a list shared by the videos of a dataset: classes are taken from its
            front (refilled with shuffled permutations of ``classes``) and what is left goes
            on to the next video, so classes stay balanced across short videos too. The
            writers pass one; a video then depends on the videos planned before it.
    """

    def __init__(
        self,
        seed: int | Sequence[int],
        num_frames: int,
        size: tuple[int, int] = (256, 320),
        classes: Sequence[int | str] = INSTRUMENTS,
        *,
        max_instruments: int = 3,
        min_visible: int = 30,
        motion_period: int = 8,
        segment: int = 1,
        track_length: tuple[int, int] = (10, 40),
        noise: int = 4,
        class_queue: list[int] | None = None,
    ):
        if num_frames < 0:
            raise ValueError(f"num_frames={num_frames}: expected >= 0")
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 16:
            raise ValueError(f"size={size}: expected at least 16 x 16 pixels")
        if not 0 <= max_instruments <= 3:
            raise ValueError(f"max_instruments={max_instruments}: expected 0..3")
        self.num_frames = int(num_frames)
        self.classes = _as_class_ids(classes)
        self.min_visible = max(1, int(min_visible))
        self.segment = max(1, int(segment))
        rng = np.random.default_rng(seed)
        H, W = self.size
        self._margin = m = max(2, int(0.06 * H))
        self._background = _make_background(rng, H + 2 * m, W + 2 * m)
        self._vignette = _vignette(H, W, float(rng.uniform(0.35, 0.55)))
        # Sensor noise: one field added, another subtracted, cycling so neighbours differ.
        self._noise = [rng.integers(0, int(noise) + 1, (H, W, 3), dtype=np.uint8) for _ in range(5)]
        # Camera drift: the view is a crop of a larger background moving between key offsets.
        ck = np.arange(0, self.num_frames + 2 * motion_period, 2 * motion_period)
        self._cam_frames = ck
        self._cam_offsets = rng.uniform(0, 2 * m, (len(ck), 2))
        self._cam_gain = rng.uniform(0.92, 1.08, len(ck))
        queue = class_queue if class_queue is not None else []
        queue[:] = [c for c in queue if c in self.classes]
        self._tracks = self._plan(rng, max_instruments, motion_period, track_length, queue)

    # -- planning -------------------------------------------------------------------------
    def _boundary(self, b: int) -> int:
        seg = self.segment
        f = b if seg == 1 else b * seg - seg // 2
        return int(min(max(f, 0), self.num_frames))

    def _plan(self, rng, max_instruments, motion_period, track_length, queue) -> list[_Track]:
        seg = self.segment
        lo = max(1, math.ceil(track_length[0] / seg))
        hi = max(lo, track_length[1] // seg)
        n_units = math.ceil((self.num_frames + seg // 2) / seg) + 1 if seg > 1 else self.num_frames
        tracks: list[_Track] = []
        H, W = self.size
        for occupancy in (0.7, 0.5, 0.3)[:max_instruments]:
            mean_len = (lo + hi) / 2
            mean_gap = mean_len * (1 - occupancy) / occupancy
            b = 0 if rng.random() < occupancy else int(rng.integers(0, 2 * mean_gap + 1))
            while b < n_units:
                length = int(rng.integers(lo, hi + 1))
                start, end = self._boundary(b), self._boundary(b + length)
                if end > start:
                    busy = {t.cls for t in tracks if t.start < end and start < t.end}
                    cls = self._next_class(rng, queue, busy)
                    if cls is not None:
                        tracks.append(self._track(rng, cls, start, end, motion_period))
                b += length + int(rng.integers(0, int(2 * mean_gap) + 1))
        return tracks

    def _next_class(self, rng, queue: list[int], busy: set[int]) -> int | None:
        if busy.issuperset(self.classes):
            return None
        while True:
            for i, c in enumerate(queue):
                if c not in busy:
                    return queue.pop(i)
            queue.extend(int(c) for c in rng.permutation(self.classes))

    def _track(self, rng, cls, start, end, motion_period) -> _Track:
        H, W = self.size
        look = _LOOKS[cls]
        w = float(rng.uniform(*look["width"]) * H)
        frames, bases, thetas = [start], [], []
        f = start
        while f < end - 1:
            f += max(1, int(round(motion_period * rng.uniform(0.7, 1.3))))
            frames.append(f)
        if len(frames) == 1:
            frames.append(start + 1)
        prev = None
        for _ in frames:
            s, base, theta = _sample_pose(rng, H, W, w, _TIP_LEN[cls], prev)
            prev = (s, theta)
            bases.append(base)
            thetas.append(theta)
        return _Track(
            cls=cls,
            start=start,
            end=end,
            z=float(rng.random()),
            width=w,
            key_frames=np.array(frames),
            key_base=np.array(bases),
            key_theta=np.array(thetas),
            jaw_period=float(rng.uniform(1.5, 3.0) * motion_period),
            jaw_phase=float(rng.uniform(0, 2 * math.pi)),
        )

    # -- rendering ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[SceneFrame]:
        for i in range(self.num_frames):
            yield self[i]

    def __getitem__(self, f: int) -> SceneFrame:  # type: ignore[override]
        if isinstance(f, slice):
            return [self[i] for i in range(*f.indices(self.num_frames))]  # type: ignore[return-value]
        f = int(f)
        if f < 0:
            f += self.num_frames
        if not 0 <= f < self.num_frames:
            raise IndexError(f"frame {f} out of range for a video of {self.num_frames} frames")
        H, W = self.size
        # Camera: smooth drift of the crop window and of the brightness.
        offset, gain = _spline(self._cam_frames, self._cam_offsets, self._cam_gain[:, None], f=f)
        ox, oy = np.clip(np.round(offset), 0, 2 * self._margin).astype(int)
        gain = gain[0]
        image = cv2.convertScaleAbs(self._background[oy : oy + H, ox : ox + W], alpha=float(gain))
        ids = np.zeros((H, W), np.uint8)  # class + 1 of the nearest instrument
        reach = 1.2 * math.hypot(H, W)
        active = sorted((t for t in self._tracks if t.start <= f < t.end), key=lambda t: t.z)
        for t in active:
            base, theta, jaw = t.pose(f)
            for prim in _instrument_prims(t.cls, base, theta, t.width, jaw, reach):
                _draw(image, prim, prim[2])
                if prim[4]:
                    _draw(ids, prim, t.cls + 1)
        image = cv2.multiply(image, self._vignette, scale=1 / 255)
        image = cv2.add(image, self._noise[f % 5])
        image = cv2.subtract(image, self._noise[(f + 2) % 5])

        labels = np.zeros(len(SURGICAL_CLASSES), np.uint8)
        masks: dict[int, np.ndarray] = {}
        boxes: dict[int, tuple[int, int, int, int]] = {}
        for t in active:
            m = ids == t.cls + 1
            if np.count_nonzero(m) >= self.min_visible:
                labels[t.cls] = 1
                masks[t.cls] = m
                boxes[t.cls] = mask_box(m)
        labels[TISSUE] = 1
        masks[TISSUE] = ids == 0
        boxes[TISSUE] = (0, 0, W, H)
        return SceneFrame(image=image, labels=labels, masks=masks, boxes=boxes, frame_index=f)


def generate_video(
    seed: int | Sequence[int],
    num_frames: int,
    size: tuple[int, int] = (256, 320),
    classes: Sequence[int | str] = INSTRUMENTS,
    **kwargs,
) -> SyntheticVideo:
    """A deterministic synthetic video; iterate it or index it for :class:`SceneFrame` s.

    >>> video = generate_video(seed=0, num_frames=8, size=(64, 80))
    >>> frame = video[3]
    >>> frame.image.shape, frame.labels.shape
    ((64, 80, 3), (11,))

    Keyword arguments go to :class:`SyntheticVideo`.
    """
    return SyntheticVideo(seed, num_frames, size, classes, **kwargs)


def dataset_videos(
    layout: str,
    num_videos: int,
    num_frames: int,
    size: tuple[int, int] = (256, 320),
    seed: int = 0,
    classes: Sequence[int | str] | None = None,
    **scene_kwargs,
) -> Iterator[tuple[str, SyntheticVideo]]:
    """Yield ``(name, video)`` exactly as :func:`write_miccai18` / :func:`write_cholec80` make
    them ("seq_1", ... or "video01", ...): the same seeds, scene settings and shared class queue.

    Videos are planned lazily, in order (the class queue runs through them).
    """
    if layout == "miccai18":
        kwargs: dict = {}
        classes = INSTRUMENTS if classes is None else classes
        names = [f"seq_{n}" for n in range(1, num_videos + 1)]
    elif layout == "cholec80":
        kwargs = dict(segment=CHOLEC80_FPS, motion_period=60, track_length=(50, 200))
        classes = CHOLEC80_CLASSES if classes is None else classes
        names = [f"video{n:02d}" for n in range(1, num_videos + 1)]
    else:
        raise ValueError(f"layout={layout!r}: expected 'miccai18' or 'cholec80'")
    kwargs.update(scene_kwargs)
    queue: list[int] = []  # one class queue: balanced across the videos
    for n, name in enumerate(names, 1):
        yield name, generate_video((seed, n), num_frames, size, classes, class_queue=queue, **kwargs)


# ----------------------------------------------------------------------------------------------
# Writers


def _write_png(path: Path, image: np.ndarray) -> None:
    """RGB ``(H, W, 3)`` or single-channel ``(H, W)`` uint8; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(
        str(path), image[..., ::-1] if image.ndim == 3 else image, [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ):
        raise OSError(f"{path}: could not write the PNG")


def label_mask(frame: SceneFrame) -> np.ndarray:
    """uint8 ``(H, W)`` segmentation labels of a frame: 0 tissue, ``c + 1`` where instrument
    ``c`` is visible (the masks do not overlap: each holds the visible pixels)."""
    out = np.zeros(frame.image.shape[:2], np.uint8)
    for c, m in frame.masks.items():
        if c != TISSUE:
            out[m] = c + 1
    return out


def _write_dataset_json(root: Path, doc: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(doc, indent=2) + "\n")


def _summary(root: Path, layout: str, counts: Counter, n_frames: int, splits: dict) -> dict:
    return {
        "root": str(root),
        "layout": layout,
        "frames": n_frames,
        "splits": splits,
        "class_frames": {SURGICAL_CLASSES[c]: counts.get(c, 0) for c in range(len(SURGICAL_CLASSES))},
    }


def write_miccai18(
    out_dir: os.PathLike | str,
    num_videos: int = 4,
    num_frames: int = 100,
    size: tuple[int, int] = (256, 320),
    seed: int = 0,
    *,
    classes: Sequence[int | str] = INSTRUMENTS,
    progress: bool = True,
    test_videos: int = 0,
    **scene_kwargs,
) -> dict:
    """Write ``num_videos`` synthetic sequences in the MICCAI 2018 layout under ``out_dir``.

    Sequence ``seq_N`` is generated from seed ``(seed, N)`` (and the class queue the sequences
    share, see :class:`SyntheticVideo`). ``test_videos`` more sequences (numbers
    ``num_videos + 1`` ...) form a held-out ``test`` split; the first ``num_videos`` are the same
    with or without them. Returns a summary dict: root, frames written, splits ``{"train":
    [...], "val": [...]}`` (+ ``"test"`` when ``test_videos``) and frames per class.
    """
    from .miccai18 import miccai18_splits, write_gt_bbox, write_tool_annotation

    root = Path(out_dir)
    size = parse_size(size)
    if num_videos < 1 or num_frames < 1 or test_videos < 0:
        raise ValueError(
            f"num_videos={num_videos}, num_frames={num_frames}, test_videos="
            f"{test_videos}: expected >= 1, >= 1 and >= 0"
        )
    numbers = list(range(1, num_videos + 1 + test_videos))
    split_of = miccai18_splits(numbers[:num_videos])
    split_of.update({n: "test" for n in numbers[num_videos:]})
    split_names = ("train", "val", "test") if test_videos else ("train", "val")
    digits = max(3, len(str(num_frames - 1)))
    counts: Counter = Counter()
    bar = tqdm(
        total=len(numbers) * num_frames, desc="miccai18", unit="frame", disable=None if progress else True
    )
    videos = dataset_videos("miccai18", len(numbers), num_frames, size, seed, classes, **scene_kwargs)
    make_dir(root, "the output folder")
    for split in split_names:  # each exists even when it holds no sequence
        (root / "annotation_tool" / split).mkdir(parents=True, exist_ok=True)
    for n, (seq, video) in zip(numbers, videos):
        frames_dir = root / seq / "left_frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        labels, box_rows = [], []
        for f, frame in enumerate(video):
            name = f"frame{f:0{digits}d}"
            _write_png(frames_dir / f"{name}.png", frame.image)
            write_frame_gt(
                root / "groundtruth" / seq / f"{name}.json",
                labels=frame.labels,
                boxes=frame.boxes,
                masks=frame.masks,
                size=size,
                video=seq,
                frame_index=f,
                image=f"{seq}/left_frames/{name}.png",
            )
            write_scene_graph(
                root / seq / "xml" / f"{name}.xml", template_scene_graph(frame.boxes, f, size, f"{name}.png")
            )
            _write_png(root / seq / "annotations" / f"{name}.png", label_mask(frame))
            labels.append(frame.labels)
            box_rows.append((f"{name}.png", frame.boxes))
            counts.update(np.flatnonzero(frame.labels).tolist())
            bar.update()
        write_tool_annotation(
            root / "annotation_tool" / split_of[n] / f"{seq}.txt",
            list(range(num_frames)),
            np.stack(labels),
            digits=digits,
        )
        write_gt_bbox(root / "gt_bbox" / f"{seq}.txt", box_rows)
    bar.close()
    splits = {s: [f"seq_{n}" for n in numbers if split_of[n] == s] for s in split_names}
    _write_dataset_json(
        root,
        {
            "layout": "miccai18",
            "classes": list(SURGICAL_CLASSES),
            "size": list(size),
            "seed": seed,
            "generator": "gcfeat.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "videos": [f"seq_{n}" for n in numbers],
            "frames_per_video": num_frames,
            "splits": splits,
            "drawn_classes": [SURGICAL_CLASSES[c] for c in _as_class_ids(classes)],
            "scene_kwargs": scene_kwargs,
        },
    )
    return _summary(root, "miccai18", counts, len(numbers) * num_frames, splits)


def write_cholec80(
    out_dir: os.PathLike | str,
    num_videos: int = 4,
    num_frames: int = 250,
    size: tuple[int, int] = (256, 320),
    seed: int = 0,
    *,
    progress: bool = True,
    **scene_kwargs,
) -> dict:
    """Write ``num_videos`` synthetic videos in the Cholec80 layout under ``out_dir``.

    Videos are 25 fps mp4 ('mp4v'); tool rows every 25 frames; ground truth for the annotated
    frames only. Only the Cholec80-mapped classes are drawn; instruments change only half-way
    between annotated frames (``segment=25``) and move slowly (``motion_period=60``); keyword
    arguments override these scene settings (:class:`SyntheticVideo`).
    """
    from .cholec80 import cholec80_splits, write_tool_annotation

    root = Path(out_dir)
    size = parse_size(size)
    H, W = size
    if num_videos < 1 or num_frames < 1:
        raise ValueError(f"num_videos={num_videos}, num_frames={num_frames}: expected >= 1 each")
    numbers = list(range(1, num_videos + 1))
    names = [f"video{n:02d}" for n in numbers]
    make_dir(root, "the output folder")
    (root / "videos").mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    n_annotated = 0
    bar = tqdm(
        total=num_videos * num_frames, desc="cholec80", unit="frame", disable=None if progress else True
    )
    for name, video in dataset_videos("cholec80", num_videos, num_frames, size, seed, **scene_kwargs):
        path = root / "videos" / f"{name}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CHOLEC80_FPS, (W, H))
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV could not open an 'mp4v' video writer (FFmpeg missing?)")
        rows, labels = [], []
        try:
            for f, frame in enumerate(video):
                writer.write(np.ascontiguousarray(frame.image[..., ::-1]))
                if f % CHOLEC80_FPS == 0:
                    write_frame_gt(
                        root / "groundtruth" / name / f"frame{f:06d}.json",
                        labels=frame.labels,
                        boxes=frame.boxes,
                        masks=frame.masks,
                        size=size,
                        video=name,
                        frame_index=f,
                        image=f"videos/{name}.mp4",
                    )
                    rows.append(f)
                    labels.append(frame.labels)
                    counts.update(np.flatnonzero(frame.labels).tolist())
                bar.update()
        finally:
            writer.release()
        write_tool_annotation(root / "tool_annotations" / f"{name}-tool.txt", rows, np.stack(labels))
        n_annotated += len(rows)
    bar.close()
    splits = cholec80_splits(numbers)
    splits = {s: [f"video{n:02d}" for n in v] for s, v in splits.items()}
    _write_dataset_json(
        root,
        {
            "layout": "cholec80",
            "classes": list(SURGICAL_CLASSES),
            "size": list(size),
            "seed": seed,
            "generator": "gcfeat.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "videos": names,
            "frames_per_video": num_frames,
            "fps": CHOLEC80_FPS,
            "annotation_step": CHOLEC80_FPS,
            "splits": splits,
            "drawn_classes": [SURGICAL_CLASSES[c] for c in CHOLEC80_CLASSES],
            "scene_kwargs": scene_kwargs,
        },
    )
    return _summary(root, "cholec80", counts, n_annotated, splits)


if __name__ == "__main__":  # `python -m gcfeat.data.synthetic`: the CLI is gcfeat.cli.synthetic
    from gcfeat.cli.synthetic import main

    raise SystemExit(main())
