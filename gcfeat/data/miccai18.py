"""MICCAI 2018 (EndoVis18 robotic scene segmentation) layout: files and the torch Dataset.

Layout under ``root``::

    seq_N/left_frames/frameNNN.png       frames (real data: 1280 x 1024)
    annotation_tool/train/seq_N.txt      tool presence of the training sequences
    annotation_tool/val/seq_N.txt        ... and of the validation sequences (1, 5, 16)
    gt_bbox/seq_N.txt                    optional ground-truth boxes
    groundtruth/seq_N/frameNNN.json      optional per-frame ground truth (gcfeat.data.groundtruth)
    seq_N/xml/frameNNN.xml               optional scene graphs: objects, interactions, caption
                                         (gcfeat.data.scene_graph)
    seq_N/annotations/frameNNN.png       optional label masks (read by the interaction model)

**Tool-presence file** ``annotation_tool/<split>/seq_N.txt``: whitespace (or comma) separated,
one header line, then one row per frame: the frame (``0``, ``12``, ``frame012`` or
``frame012.png``: its number is what counts) and one 0/1 flag per tool column. The header's
tool columns are matched by name against ``SURGICAL_CLASSES`` (gcfeat writes the 10 instrument
names, in class order); an original header with 8 tool columns of any names (``frame t1 ... t8``)
maps positionally to ``MICCAI18_TOOLS`` (classes 0-7; hook and specimen_bag are 0). Tissue is
always labelled present. Example::

    frame bipolar_forceps prograsp_forceps ... specimen_bag
    frame000 1 0 0 0 0 0 0 0 0 0

**Box file** ``gt_bbox/seq_N.txt``: one line per frame, the frame file name then, per class in
``SURGICAL_CLASSES`` order, ``x1,y1,x2,y2`` in frame pixels (exclusive end), all zeros when the
class is absent; fields separated by spaces (commas and spaces are interchangeable when read).
gcfeat writes all 11 classes (tissue last, box = whole frame); a line with 8 groups (the
original 8 tools) or 10 groups maps onto the first 8 / 10 classes; a line with 9 groups (the
original files: 8 tools then tissue, groups separated by ``", "``) maps groups 0-7 onto classes
0-7 and group 8 onto tissue. Example::

    frame000.png 0,0,0,0 12,40,118,131 0,0,0,0 ... 0,0,320,256
    frame000, 0,0,0,0, 12,40,118,131, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,1280,1024

Split: sequences 1, 5 and 16 are validation, the others training; a synthetic dataset in which
none of these numbers exists puts its last sequence in validation (:func:`miccai18_splits`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import MICCAI18_TOOLS, SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, TISSUE
from .errors import DataError, presence_flags, require_dir, require_file
from .groundtruth import read_frame_gt
from .scene_graph import gcfeat_class, read_sequence
from .transforms import RESIZE_METHODS, parse_size, scale_boxes, to_input

#: EndoVis18 validation sequences.
MICCAI18_VAL_SEQUENCES: tuple[int, ...] = (1, 5, 16)
_SPLITS = ("train", "val", "test", "all")
_SEP = re.compile(r"[\s,]+")


def miccai18_splits(numbers: Iterable[int]) -> dict[int, str]:
    """Sequence number -> "train" | "val": 1, 5, 16 are val; if none exists, the last one is."""
    numbers = sorted(numbers)
    val = [n for n in numbers if n in MICCAI18_VAL_SEQUENCES]
    if not val and len(numbers) > 1:
        val = [numbers[-1]]
    return {n: "val" if n in val else "train" for n in numbers}


def _frame_number(token: str, path, line_no: int) -> int:
    digits = re.findall(r"\d+", Path(token).name)
    if not digits:
        raise DataError(
            f"{path}, line {line_no}: frame {token!r} has no frame number; expected "
            f"e.g. 12, frame012 or frame012.png"
        )
    return int(digits[-1])


def _seq_number(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1


def seq_name(seq: int | str) -> str:
    """``3`` or ``"seq_3"`` -> ``"seq_3"``."""
    return f"seq_{seq}" if isinstance(seq, (int, np.integer)) else str(seq)


def read_tool_annotation(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``annotation_tool/<split>/seq_N.txt`` -> ``(frames (N,) int64, labels (N, 11) uint8)``."""
    require_file(path, "a MICCAI 2018 tool-presence file (header line + one row per frame)")
    numbered = [
        (n, ln) for n, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.strip()
    ]  # blank lines are skipped, line numbers kept
    lines = [ln for _, ln in numbered]
    if not lines:
        raise DataError(
            f"{path}: only blank lines; expected a header line ('frame' + tool names) and one row per frame"
        )
    header = _SEP.split(lines[0].strip())
    names = [h.lower().removeprefix("tool_") for h in header[1:]]
    if names and all(n in SURGICAL_CLASSES for n in names):
        columns = [SURGICAL_CLASSES.index(n) for n in names]
    elif len(names) == len(MICCAI18_TOOLS):
        columns = list(range(len(MICCAI18_TOOLS)))
    else:
        raise DataError(
            f"{path}: header {' '.join(header)!r} has {len(header)} columns; expected "
            f"'frame' + the 8 MICCAI 2018 tools, or 'frame' + class names from "
            f"SURGICAL_CLASSES"
        )
    frames = np.zeros(len(lines) - 1, np.int64)
    labels = np.zeros((len(lines) - 1, len(SURGICAL_CLASSES)), np.uint8)
    for i, (line_no, line) in enumerate(numbered[1:]):
        row = _SEP.split(line.strip())
        if len(row) != len(header):
            raise DataError(
                f"{path}, line {line_no}: {len(row)} columns, expected {len(header)} "
                f"(frame + {len(header) - 1} tools, as in the header)"
            )
        frames[i] = _frame_number(row[0], path, line_no)
        labels[i, columns] = presence_flags(row[1:], path, line_no, line)
    labels[:, TISSUE] = 1
    if len(set(frames.tolist())) != len(frames):
        raise DataError(f"{path}: a frame is listed twice")
    return frames, labels


def write_tool_annotation(
    path: os.PathLike | str, frames: Sequence[int], labels: np.ndarray, digits: int = 3
) -> None:
    """Write a tool-presence file: header with the 10 instrument names, rows ``frameNNN f0 .. f9``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tools = [i for i in range(len(SURGICAL_CLASSES)) if i != TISSUE]
    lines = ["frame " + " ".join(SURGICAL_CLASSES[i] for i in tools)]
    for f, row in zip(frames, labels):
        lines.append(f"frame{f:0{digits}d} " + " ".join(str(int(row[i])) for i in tools))
    path.write_text("\n".join(lines) + "\n")


def read_gt_bbox(path: os.PathLike | str) -> dict[int, dict[int, tuple[int, int, int, int]]]:
    """Read ``gt_bbox/seq_N.txt`` -> ``{frame: {class: (x1, y1, x2, y2)}}`` (absent classes left out)."""
    require_file(path, "a ground-truth box file (frame name + x1,y1,x2,y2 per class)")
    out: dict[int, dict[int, tuple[int, int, int, int]]] = {}
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = _SEP.split(line.strip())
        values = row[1:]
        if len(values) % 4 or len(values) // 4 not in (8, 9, 10, len(SURGICAL_CLASSES)):
            raise DataError(
                f"{path}, line {i + 1}: {len(values)} numbers after the frame name; "
                f"expected 4 per class for 8, 9 (8 tools + tissue), 10 or "
                f"{len(SURGICAL_CLASSES)} classes"
            )
        try:
            v = np.asarray([float(x) for x in values]).reshape(-1, 4)
        except ValueError:
            raise DataError(f"{path}, line {i + 1}: non-numeric box coordinate in {line.strip()!r}") from None
        frame = _frame_number(row[0], path, i + 1)
        # the original's 9 groups: 8 tools, then tissue
        cls = list(range(8)) + [TISSUE] if len(v) == 9 else range(len(v))
        out[frame] = {c: tuple(int(round(x)) for x in b) for c, b in zip(cls, v) if b.any()}
    return out


def write_gt_bbox(path: os.PathLike | str, rows: Iterable[tuple[str, Mapping[int, Sequence[int]]]]) -> None:
    """Write ``gt_bbox/seq_N.txt`` from ``(frame file name, {class: box})`` rows (all 11 classes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, boxes in rows:
        groups = [
            ",".join(str(int(v)) for v in boxes.get(c, (0, 0, 0, 0))) for c in range(len(SURGICAL_CLASSES))
        ]
        lines.append(f"{name} " + " ".join(groups))
    path.write_text("\n".join(lines) + "\n")


def read_png(path: os.PathLike | str) -> np.ndarray:
    """Read a PNG frame as uint8 RGB ``(H, W, 3)``; a missing, empty, truncated or corrupt
    file raises :class:`DataError` naming it."""
    require_file(path, "a PNG image")
    data = np.fromfile(path, np.uint8)
    if data[:8].tobytes() != b"\x89PNG\r\n\x1a\n":
        raise DataError(f"{path}: not a PNG file (bad signature); expected a PNG image")
    if data[-12:].tobytes()[4:8] != b"IEND":
        raise DataError(f"{path}: truncated PNG (no IEND chunk at the end of {data.size} bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: corrupt PNG ({data.size} bytes could not be decoded)")
    return np.ascontiguousarray(image[..., ::-1])


class Miccai18Dataset(Dataset):
    """Frames of the MICCAI 2018 layout with tool labels (and ground-truth boxes when present).

    Items are the sample dicts of docs/DESIGN.md: ``image`` float32 ``(3, H, W)`` normalised,
    ``labels`` float32 ``(11,)``, ``video`` ("seq_3"), ``frame_index`` (the PNG's number), and
    with ``with_gt`` and a ground-truth source: ``gt_boxes`` float32 ``(n, 4)`` in input pixels
    (scaled from the frame size, not rounded), ``gt_labels`` int64 ``(n,)``, sorted by class,
    tissue included. Ground truth comes from ``groundtruth/seq_N/*.json`` if that folder
    exists, else from ``gt_bbox/seq_N.txt``, else from the scene graphs ``seq_N/xml/*.xml``
    (their inclusive boxes made exclusive; kidney -> tissue; names without a gcfeat class left
    out), else the keys are absent. Every item also carries ``source_size``,
    the ``(H, W)`` of the PNG as read (the feature file keeps it per video).

    Args:
        root: dataset folder.
        split: "train", "val", "test" or "all" (the folders under ``annotation_tool``; "all"
            = every one of train / val / test that exists).
        size: model input ``(H, W)``.
        mean, std: normalisation.
        sequences: keep only these sequences (numbers or "seq_N").
        with_gt: add ground-truth boxes.
        transform: optional callable applied to each sample dict.
        resize: frame resizing, ``"area"`` (OpenCV, default) or ``"pil"`` (PIL bilinear, the
            original's; see :func:`~gcfeat.data.transforms.resize_image`).
    """

    def __init__(
        self,
        root: os.PathLike | str,
        split: str = "train",
        size: tuple[int, int] | str = (256, 320),
        mean: Sequence[float] = SURGICAL_MEAN,
        std: Sequence[float] = SURGICAL_STD,
        sequences: Iterable[int | str] | None = None,
        with_gt: bool = True,
        transform: Callable[[dict], dict] | None = None,
        resize: str = "area",
    ):
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize={resize!r}: expected one of {RESIZE_METHODS}")
        self.resize = resize
        self.root = Path(root)
        self.size = parse_size(size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.with_gt = with_gt
        self.transform = transform
        if split not in _SPLITS:
            raise ValueError(f"split={split!r}: expected one of {_SPLITS}")
        self.split = split
        require_dir(self.root, "a MICCAI 2018 dataset (seq_N/left_frames, annotation_tool/<split>)")
        ann_root = self.root / "annotation_tool"
        require_dir(ann_root, "the tool-presence files <split>/seq_N.txt")
        wanted = None if sequences is None else {seq_name(s) for s in sequences}
        files = []
        have = sorted(p.name for p in ann_root.iterdir() if p.is_dir())
        if split == "all" and not {"train", "val"} & set(have):
            raise DataError(f"{ann_root}: no train/ or val/ folder; found {have}")
        for s in ("train", "val", "test") if split == "all" else (split,):
            d = ann_root / s
            if not d.is_dir():
                if split == "all":  # e.g. a copy holding one split only
                    continue
                raise DataError(f"{d}: missing folder for split {s!r}; annotation_tool holds {have}")
            files += [p for p in d.glob("seq_*.txt") if wanted is None or p.stem in wanted]
        files.sort(key=lambda p: _seq_number(p.stem))
        if wanted is not None and (missing := wanted - {p.stem for p in files}):
            raise DataError(f"{ann_root}: no tool annotation for {sorted(missing)} in split {split!r}")
        if not files:
            raise DataError(f"{ann_root}: no seq_N.txt files for split {split!r}")

        self.items: list[tuple[str, int, Path]] = []
        labels = []
        self._gt_json: dict[str, Path] = {}
        self._gt_boxes: dict[str, dict] = {}
        self._gt_xml: dict[str, dict] = {}
        for ann in files:
            seq = ann.stem
            frames, seq_labels = read_tool_annotation(ann)
            frame_dir = self.root / seq / "left_frames"
            require_dir(frame_dir, f"the PNG frames of {seq}")
            present = {_seq_number(p.stem): p for p in frame_dir.glob("*.png")}
            for f in frames.tolist():
                if f not in present:
                    raise DataError(
                        f"{frame_dir}: no PNG for frame {f} listed in {ann} ({len(present)} PNG files there)"
                    )
                self.items.append((seq, f, present[f]))
            labels.append(seq_labels)
            if with_gt:
                if (self.root / "groundtruth" / seq).is_dir():
                    self._gt_json[seq] = self.root / "groundtruth" / seq
                elif (self.root / "gt_bbox" / f"{seq}.txt").is_file():
                    self._gt_boxes[seq] = read_gt_bbox(self.root / "gt_bbox" / f"{seq}.txt")
                elif (self.root / seq / "xml").is_dir():
                    graphs = read_sequence(self.root, seq)
                    self._gt_xml[seq] = {f: g for f, (_, g) in graphs.items()}
        #: All labels, uint8 ``(N, 11)`` (e.g. for class weights or positive counts).
        self.labels = np.concatenate(labels)
        self.sequences = [p.stem for p in files]

    def __len__(self) -> int:
        return len(self.items)

    def _ground_truth(self, seq: str, f: int, png: Path, frame_size: tuple[int, int]):
        if seq in self._gt_json:
            gt = read_frame_gt(self._gt_json[seq] / f"{png.stem}.json", with_masks=False)
            boxes, labels = gt.boxes_array()
            return scale_boxes(boxes, gt.size, self.size), labels
        if seq in self._gt_xml:
            graph = self._gt_xml[seq].get(f)
            found = [] if graph is None else [(gcfeat_class(o.name), o.box_exclusive) for o in graph.objects]
            found = sorted(((c, b) for c, b in found if c is not None), key=lambda cb: cb[0])
            boxes = np.array([b for _, b in found], np.float32).reshape(-1, 4)
            return (scale_boxes(boxes, frame_size, self.size), np.array([c for c, _ in found], np.int64))
        if seq in self._gt_boxes:
            per_class = self._gt_boxes[seq].get(f, {})
            keys = sorted(per_class)
            boxes = np.array([per_class[k] for k in keys], np.float32).reshape(-1, 4)
            return scale_boxes(boxes, frame_size, self.size), np.array(keys, np.int64)
        return None

    def __getitem__(self, i: int) -> dict:
        seq, f, png = self.items[i]
        image = read_png(png)
        sample = {
            "image": to_input(image, self.size, self.mean, self.std, self.resize),
            "labels": torch.from_numpy(self.labels[i].astype(np.float32)),
            "video": seq,
            "frame_index": f,
            "source_size": tuple(image.shape[:2]),
        }
        if self.with_gt:
            gt = self._ground_truth(seq, f, png, image.shape[:2])
            if gt is not None:
                sample["gt_boxes"] = torch.from_numpy(gt[0])
                sample["gt_labels"] = torch.from_numpy(gt[1])
        return self.transform(sample) if self.transform else sample
