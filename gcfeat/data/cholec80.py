"""Cholec80 layout: tool-annotation files and a streaming torch Dataset over the videos.

Layout under ``root``::

    videos/videoNN.mp4                      25 fps
    tool_annotations/videoNN-tool.txt       tool presence at 1 fps
    groundtruth/videoNN/frameNNNNNN.json    optional ground truth of annotated frames
    dataset.json                            optional (synthetic data): {"splits": {...}, ...}

**Tool file**: tab separated, header ``Frame Grasper Bipolar Hook Scissors Clipper Irrigator
SpecimenBag``, then one row per annotated frame (every 25th frame: 0, 25, 50, ...) with 0/1
flags. Columns are matched by name, so their order may differ.

**Mapping to the 11 classes** (``CHOLEC80_TO_SURGICAL``): Grasper -> prograsp_forceps, Bipolar ->
bipolar_forceps, Hook -> hook, Scissors -> monopolar_curved_scissors, Clipper -> clip_applier,
Irrigator -> suction, SpecimenBag -> specimen_bag; tissue is always 1; large_needle_driver,
ultrasound_probe and stapler are always 0.

**Split** (:func:`cholec80_splits`): ``dataset.json``'s ``splits`` when present; otherwise the
usual Cholec80 split (videos 1-40 train, 41-80 val) when any video number exceeds 40; otherwise
the last quarter of the videos (at least one) is validation.

:class:`Cholec80Dataset` decodes the annotated frames straight from the mp4, frame-accurately
(sequential decode, :mod:`gcfeat.data.video`), as an ``IterableDataset`` sharded by video across
DataLoader workers (each worker decodes whole videos while the others prefetch).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .classes import (
    CHOLEC80_TO_SURGICAL,
    CHOLEC80_TOOLS,
    SURGICAL_CLASSES,
    SURGICAL_MEAN,
    SURGICAL_STD,
    TISSUE,
)
from .errors import DataError, presence_flags, require_dir, require_file
from .groundtruth import read_frame_gt
from .transforms import RESIZE_METHODS, parse_size, scale_boxes, to_input
from .video import iter_frames, video_info

_SPLITS = ("train", "val", "test", "all")


def video_name(video: int | str) -> str:
    """``3`` or ``"video03"`` -> ``"video03"``."""
    return f"video{video:02d}" if isinstance(video, (int, np.integer)) else str(video)


def _video_number(name: str) -> int:
    m = re.search(r"(\d+)", name)
    return int(m.group(1)) if m else -1


def cholec80_splits(numbers: Iterable[int]) -> dict[str, list[int]]:
    """Video numbers -> ``{"train": [...], "val": [...]}`` (rule in the module docstring)."""
    numbers = sorted(numbers)
    if numbers and numbers[-1] > 40:
        val = [n for n in numbers if n > 40]
    else:
        val = numbers[len(numbers) - max(1, math.ceil(len(numbers) / 4)) :] if len(numbers) > 1 else []
    return {"train": [n for n in numbers if n not in val], "val": val}


def read_tool_annotation(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``videoNN-tool.txt`` -> ``(frames (N,) int64, labels (N, 11) uint8)``."""
    require_file(path, "a Cholec80 tool file (header 'Frame Grasper ... SpecimenBag' + rows)")
    numbered = [
        (n, ln) for n, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.strip()
    ]  # blank lines are skipped, line numbers kept
    lines = [ln for _, ln in numbered]
    if not lines:
        raise DataError(
            f"{path}: only blank lines; expected the header 'Frame Grasper ... "
            f"SpecimenBag' and one row per annotated frame"
        )
    header = lines[0].split()
    expected = ["Frame", *CHOLEC80_TOOLS]
    if len(header) != len(expected) or {h.lower() for h in header} != {e.lower() for e in expected}:
        raise DataError(
            f"{path}: header {header} ({len(header)} columns); expected the "
            f"{len(expected)} columns {' '.join(expected)}"
        )
    lower = [h.lower() for h in header]
    frame_col = lower.index("frame")
    columns = [
        (lower.index(t.lower()), SURGICAL_CLASSES.index(CHOLEC80_TO_SURGICAL[t])) for t in CHOLEC80_TOOLS
    ]
    frames = np.zeros(len(lines) - 1, np.int64)
    labels = np.zeros((len(lines) - 1, len(SURGICAL_CLASSES)), np.uint8)
    for i, (line_no, line) in enumerate(numbered[1:]):
        row = line.split()
        if len(row) != len(header):
            raise DataError(
                f"{path}, line {line_no}: {len(row)} columns, expected {len(header)} (Frame + 7 tools)"
            )
        try:
            frames[i] = int(row[frame_col])
        except ValueError:
            raise DataError(
                f"{path}, line {line_no}: frame {row[frame_col]!r} in "
                f"{line.strip()!r}; expected a frame number"
            ) from None
        flags = presence_flags([row[col] for col, _ in columns], path, line_no, line)
        labels[i, [cls for _, cls in columns]] = flags
    labels[:, TISSUE] = 1
    return frames, labels


def write_tool_annotation(path: os.PathLike | str, frames: Sequence[int], labels: np.ndarray) -> None:
    """Write a Cholec80 tool file from ``frames (N,)`` and 11-class ``labels (N, 11)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [SURGICAL_CLASSES.index(CHOLEC80_TO_SURGICAL[t]) for t in CHOLEC80_TOOLS]
    lines = ["\t".join(["Frame", *CHOLEC80_TOOLS])]
    for f, row in zip(frames, labels):
        lines.append("\t".join([str(int(f)), *(str(int(row[c])) for c in cols)]))
    path.write_text("\n".join(lines) + "\n")


class Cholec80Dataset(IterableDataset):
    """Annotated frames of Cholec80 videos, decoded from the mp4 files.

    Items are the sample dicts of docs/DESIGN.md (``image``, ``labels``, ``video``
    "video01", ``frame_index`` = frame number in the video, ``source_size`` = the decoded
    frame's ``(H, W)``, and ``gt_boxes``/``gt_labels`` in
    input pixels when ``groundtruth/videoNN`` exists and ``with_gt``). Frames come video by
    video in frame order; with a ``DataLoader(num_workers=n)`` each worker decodes its own
    share of the videos (balanced by frame count), so use a few workers to prefetch.

    Args:
        root: dataset folder.
        videos: keep only these videos (numbers or "videoNN"); overrides ``split``.
        size: model input ``(H, W)``.
        fps: sampling rate of the labelled frames (1 = every annotated frame, 0.5 = every other).
        mean, std: normalisation.
        split: "train", "val" or "all" (see :func:`cholec80_splits`).
        with_gt: add ground-truth boxes when the files exist.
        transform: optional callable applied to each sample dict.
        shuffle: shuffle the order of the videos every epoch (see :meth:`set_epoch`).
        seed: seed of that shuffle.
        resize: frame resizing, ``"area"`` (OpenCV, default) or ``"pil"`` (PIL bilinear, the
            original's; see :func:`~gcfeat.data.transforms.resize_image`).
    """

    def __init__(
        self,
        root: os.PathLike | str,
        videos: Iterable[int | str] | None = None,
        size: tuple[int, int] | str = (256, 320),
        fps: float = 1.0,
        mean: Sequence[float] = SURGICAL_MEAN,
        std: Sequence[float] = SURGICAL_STD,
        split: str = "all",
        with_gt: bool = True,
        transform: Callable[[dict], dict] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        resize: str = "area",
    ):
        super().__init__()
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize={resize!r}: expected one of {RESIZE_METHODS}")
        self.resize = resize
        self.root = Path(root)
        self.size = parse_size(size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.with_gt = with_gt
        self.transform = transform
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        if split not in _SPLITS:
            raise ValueError(f"split={split!r}: expected one of {_SPLITS}")
        if fps <= 0:
            raise ValueError(f"fps={fps}: expected > 0")
        require_dir(self.root, "a Cholec80 dataset (videos/, tool_annotations/)")
        require_dir(self.root / "videos", "the videoNN.mp4 files")
        ann_dir = self.root / "tool_annotations"
        require_dir(ann_dir, "the videoNN-tool.txt files")
        available = {p.name[: -len("-tool.txt")]: p for p in ann_dir.glob("*-tool.txt")}
        if videos is not None:
            names = [video_name(v) for v in videos]
            if missing := [n for n in names if n not in available]:
                raise DataError(f"{ann_dir}: no tool file for {missing}; found {sorted(available)}")
        else:
            names = sorted(available, key=_video_number)
            if split != "all":
                names = [n for n in names if n in set(self._split_names(names, split))]
        if not names:
            raise DataError(f"{ann_dir}: no videoNN-tool.txt files (split {split!r})")

        self.videos: list[dict] = []
        for name in names:
            frames, labels = read_tool_annotation(available[name])
            path = self.root / "videos" / f"{name}.mp4"
            info = video_info(path)  # raises on a missing/empty/corrupt video
            video_fps = info["fps"] if info["fps"] > 0 else 25.0
            ann_step = int(np.diff(frames).min()) if len(frames) > 1 else int(round(video_fps))
            step = int(round(video_fps / fps))
            if step < ann_step:
                raise ValueError(
                    f"fps={fps}: {available[name]} has labels every {ann_step} "
                    f"frames ({video_fps / ann_step:g} fps); expected fps <= that"
                )
            keep = frames % step == 0
            frames, labels = frames[keep], labels[keep]
            if len(frames) and info["frames"] > 0 and frames.max() >= info["frames"]:
                raise DataError(
                    f"{path}: has {info['frames']} frames but {available[name]} labels frame {frames.max()}"
                )
            gt_dir = self.root / "groundtruth" / name
            self.videos.append(
                {
                    "name": name,
                    "path": path,
                    "frames": frames,
                    "labels": labels,
                    "gt_dir": gt_dir if with_gt and gt_dir.is_dir() else None,
                }
            )
        #: All labels in iteration order without shuffle, uint8 ``(N, 11)``.
        self.labels = np.concatenate([v["labels"] for v in self.videos])

    def _split_names(self, names: list[str], split: str) -> list[str]:
        meta = self.root / "dataset.json"
        if meta.is_file():
            try:
                splits = json.loads(meta.read_text()).get("splits")
            except json.JSONDecodeError as e:
                raise DataError(f"{meta}: not valid JSON ({e})") from None
            if splits and split in splits:
                return list(splits[split])
        if split == "test":  # no default test videos: only a dataset.json that lists them
            raise DataError(
                f"{self.root}: split 'test' needs dataset.json with splits['test']; "
                f"found {'no dataset.json' if not meta.is_file() else 'no test list'}"
            )
        by_number = cholec80_splits(_video_number(n) for n in names)[split]
        return [n for n in names if _video_number(n) in by_number]

    def __len__(self) -> int:
        return sum(len(v["frames"]) for v in self.videos)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the video shuffle (call before iterating each epoch)."""
        self.epoch = epoch

    def shards(self, num_workers: int) -> list[list[int]]:
        """Video indices per worker: longest first onto the least loaded worker."""
        order = list(range(len(self.videos)))
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(order).tolist()
        load = [0] * num_workers
        out: list[list[int]] = [[] for _ in range(num_workers)]
        for i in sorted(order, key=lambda i: -len(self.videos[i]["frames"])):
            w = load.index(min(load))
            out[w].append(i)
            load[w] += len(self.videos[i]["frames"])
        rank = {v: k for k, v in enumerate(order)}  # keep the (shuffled) order per worker
        return [sorted(s, key=rank.__getitem__) for s in out]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, n = (0, 1) if info is None else (info.id, info.num_workers)
        for vi in self.shards(n)[wid]:
            v = self.videos[vi]
            rows = {int(f): k for k, f in enumerate(v["frames"])}
            for f, image in iter_frames(v["path"], v["frames"]):
                yield self._sample(v, rows[f], f, image)

    def _sample(self, v: dict, k: int, f: int, image: np.ndarray) -> dict:
        """The sample dict of frame ``f`` (row ``k`` of the annotations) of video ``v`` from
        its decoded RGB ``image``."""
        sample = {
            "image": to_input(image, self.size, self.mean, self.std, self.resize),
            "labels": torch.from_numpy(v["labels"][k].astype(np.float32)),
            "video": v["name"],
            "frame_index": f,
            "source_size": tuple(image.shape[:2]),
        }
        if v["gt_dir"] is not None:
            gt = read_frame_gt(v["gt_dir"] / f"frame{f:06d}.json", with_masks=False)
            boxes, labels = gt.boxes_array()
            sample["gt_boxes"] = torch.from_numpy(scale_boxes(boxes, gt.size, self.size))
            sample["gt_labels"] = torch.from_numpy(labels)
        return self.transform(sample) if self.transform else sample

    def keys(self) -> list[tuple[str, int]]:
        """``(video, frame_index)`` of every item, in the unshuffled iteration order; read from
        the annotations, nothing is decoded."""
        return [(v["name"], int(f)) for v in self.videos for f in v["frames"]]

    def decode(self, keys: Iterable[tuple[str, int]]) -> Cholec80Frames:
        """A few items by key, for indexed access (a report's sample of frames): the frames
        ``keys`` (pairs of :meth:`keys`) decoded once from the mp4 files, one sequential pass
        per video that skips the others (:func:`gcfeat.data.video.iter_frames`). Keys not in
        the dataset raise :class:`DataError`."""
        keys = [(str(v), int(f)) for v, f in keys]
        by_name = {v["name"]: v for v in self.videos}
        known = set(self.keys())
        if bad := [k for k in keys if k not in known]:
            raise DataError(
                f"{self.root}: no annotated frame {bad[0]} (video, frame_index) in "
                f"this split; {len(bad)} of {len(keys)} keys unknown"
            )
        samples: dict[tuple[str, int], dict] = {}
        for name in dict.fromkeys(v for v, _ in keys):
            v = by_name[name]
            rows = {int(f): k for k, f in enumerate(v["frames"])}
            for f, image in iter_frames(v["path"], [f for n, f in keys if n == name]):
                samples[(name, f)] = self._sample(v, rows[f], f, image)
        return Cholec80Frames([samples[k] for k in keys])


class Cholec80Frames(Dataset):
    """Decoded items of a :class:`Cholec80Dataset` held in memory (:meth:`Cholec80Dataset.decode`):
    an indexed Dataset whose ``items`` are the ``(video, frame_index)`` of each sample."""

    def __init__(self, samples: Sequence[dict]):
        self.samples = list(samples)
        self.items = [(s["video"], int(s["frame_index"])) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]
