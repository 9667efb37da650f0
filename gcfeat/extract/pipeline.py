"""Dataset -> HDF5 feature file: one CAM pass per batch feeds boxes and every extractor.

Per batch of frames (decoded by DataLoader workers):

1. ONE ``GradCAM(model, [model.layer4]).explain(x, extra_layers=(layer2, layer3))``: logits,
   heatmaps (input and layer4 resolution), layer4 activations, layer2 / layer3 maps. For a
   ResNet head Grad-CAM is CAM (closed form), so this is one forward and no backward;
2. boxes: ``heatmap_to_boxes(heatmap, T, probs=sigmoid(logits), pred_threshold, tissue:
   "union")``;
3. extractors (M1 crops re-run the backbone on all crops of the batch at once; M2 / M3 reuse
   the maps);
4. :class:`~gcfeat.io.features.FeatureWriter` appends and commits the batch.

Frames already in the output file are skipped (resume); for the datasets of
:mod:`gcfeat.data` they are removed before decoding. Under ``torchrun`` (``WORLD_SIZE > 1``)
videos are sharded across ranks (balanced by frame count); rank ``r`` writes
``<out>.rank<r>.h5``; after a barrier rank 0 copies the shards into ``<out>`` (a plain copy
through the writer, so the final file is self-contained and resumable) and removes them.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import time
import zlib
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, IterableDataset, Subset
from tqdm import tqdm

from gcfeat.io.features import FeatureWriter, merge_feature_files

from .base import Extractor, layer_channels
from .crop import CropExtractor
from .heatmap import HeatmapExtractor
from .pooling import Layout, LayoutError
from .roi import AREA_THRESHOLDS, RoiExtractor

METHODS = ("m1", "m2", "m3")


def file_sha256(path: str, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def build_extractors(model, methods: Sequence[str], *, threshold: float = 0.3,
                     pred_threshold: float = 0.5, layout: Layout = (512, 1, 1),
                     weighting: str = "heat", crop_size: Tuple[int, int] = (224, 224),
                     crop_batch_size: int = 64,
                     area_thresholds: Sequence[float] = AREA_THRESHOLDS,
                     single_layer: Optional[str] = None) -> List[Extractor]:
    """Extractors for method names ``m1`` / ``m2`` / ``m3`` (in that order)."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods: got {list(methods)}, expected some of {METHODS}")
    make = {
        "m1": lambda: CropExtractor(model, crop_size, layout, crop_batch_size),
        "m2": lambda: RoiExtractor(area_thresholds, single_layer, layout),
        "m3": lambda: HeatmapExtractor(threshold, weighting, pred_threshold, layout),
    }
    return [make[m]() for m in METHODS if m in methods]


def check_layout(layout: Layout, channels: Dict[str, int], methods: Sequence[str],
                 single_layer: Optional[str] = None) -> None:
    """Raise ``LayoutError`` unless ``p0`` divides the channels of every map a method pools."""
    if layout is None:
        return
    used = set()
    if "m1" in methods or "m3" in methods:
        used.add("layer4")
    if "m2" in methods:
        used.update([single_layer] if single_layer else ["layer2", "layer3", "layer4"])
    bad = {n: channels[n] for n in sorted(used) if channels[n] % layout[0]}
    if bad:
        raise LayoutError(f"pooling layout {layout}: p0={layout[0]} does not divide the "
                          f"channels of {bad}; choose a layout whose first number divides "
                          f"them (e.g. 32x4x4), or m2's --single-layer")


# ------------------------------------------------------------------------ dataset helpers
def frame_table(dataset) -> Optional[List[Tuple[str, int]]]:
    """``(video, frame_index)`` of every item without decoding, when the dataset tells."""
    if isinstance(dataset, Subset):
        inner = frame_table(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    items = getattr(dataset, "items", None)
    if items is not None and not isinstance(dataset, IterableDataset):       # Miccai18Dataset
        return [(str(it[0]), int(it[1])) for it in items]
    videos = getattr(dataset, "videos", None)
    if _video_dicts(videos):                                                  # Cholec80Dataset
        return [(v["name"], int(f)) for v in videos for f in v["frames"]]
    return None


def _video_dicts(videos) -> bool:
    return isinstance(videos, list) and all(isinstance(v, dict) and "name" in v and "frames" in v
                                            for v in videos)


def restrict(dataset, keep: Callable[[str, int], bool]):
    """The dataset limited to the frames where ``keep(video, frame)``, or None if the dataset
    does not expose its frames (then the pipeline filters after loading)."""
    videos = getattr(dataset, "videos", None)
    if isinstance(dataset, IterableDataset):
        if not _video_dicts(videos):
            return None
        ds = copy.copy(dataset)
        ds.videos = []
        for v in videos:
            sel = [keep(v["name"], int(f)) for f in v["frames"]]
            if any(sel):
                v = dict(v)
                for key in ("frames", "labels"):
                    if key in v:
                        v[key] = v[key][sel]
                ds.videos.append(v)
        return ds
    table = frame_table(dataset)
    if table is None:
        return None
    return Subset(dataset, [i for i, (v, f) in enumerate(table) if keep(v, f)])


def shard_videos(counts: Dict[str, int], world_size: int) -> List[List[str]]:
    """Videos per rank: longest first onto the least loaded rank (deterministic)."""
    load = [0] * world_size
    out: List[List[str]] = [[] for _ in range(world_size)]
    for name in sorted(counts, key=lambda n: (-counts[n], n)):
        r = load.index(min(load))
        out[r].append(name)
        load[r] += counts[name]
    return out


def _video_rank(video: str, world_size: int) -> int:
    return zlib.crc32(video.encode()) % world_size


# ------------------------------------------------------------------------------ pipeline
def extraction_attrs(info, extractors: Sequence[Extractor], *, threshold: float,
                     pred_threshold: float, layout: Layout, min_area: float,
                     checkpoint_sha256: str = "", fps: Optional[float] = None) -> dict:
    """Root attributes (the settings a resumed run must match)."""
    return {
        "classes": list(info.classes),
        "thresholds": {"box": float(threshold), "pred": float(pred_threshold),
                       "min_area": float(min_area)},
        "architecture": getattr(info, "arch", ""),
        "checkpoint_sha256": checkpoint_sha256,
        "input_size": list(info.input_size) if info.input_size else None,
        "mean": list(info.mean) if info.mean else None,
        "std": list(info.std) if info.std else None,
        "layout": list(layout) if layout else "raw",
        "methods": {e.name: e.settings() for e in extractors},
        "fps": fps,
    }


def extract_dataset(dataset, model, info, methods: Sequence[str] = ("m2", "m3"),
                    threshold: float = 0.3, out: str = "feats.h5", batch_size: int = 32,
                    device: str = "cpu", fps: Optional[float] = None, num_workers: int = 2,
                    compression: Optional[str] = None, resume: bool = True,
                    progress: bool = True, *, pred_threshold: float = 0.5,
                    layout: Layout = (512, 1, 1), weighting: str = "heat",
                    crop_size: Tuple[int, int] = (224, 224), crop_batch_size: int = 64,
                    area_thresholds: Sequence[float] = AREA_THRESHOLDS,
                    single_layer: Optional[str] = None, min_area: float = 25,
                    amp: Optional[str] = None, channels_last: bool = False,
                    checkpoint_sha256: str = "", rank: int = 0, world_size: int = 1,
                    skip: Optional[Callable[[str, int], bool]] = None) -> dict:
    """Extract object-level features of every frame of ``dataset`` into the HDF5 file ``out``.

    Args:
        dataset: a gcfeat surgical Dataset (items: the sample dicts of docs/DESIGN.md).
        model: the classifier (torchvision ResNet), ``info``: its ``CheckpointInfo``
            (``classes``, ``arch``, ``input_size``, ``mean``, ``std``).
        methods: some of ``"m1"``, ``"m2"``, ``"m3"``.
        threshold: box / mask threshold T; ``pred_threshold``: class score needed for a map.
        out: the HDF5 file (created or resumed).
        fps: recorded in the attributes (sampling is the dataset's option).
        compression: ``None`` / ``"gzip"`` / ``"lzf"`` (applied when the run completes).
        amp: ``None`` or ``"bf16"`` (autocast; features are written as float32).
        channels_last: run the backbone in channels-last memory format.
        rank, world_size: this process's shard (videos balanced by frame count).
        skip: extra ``(video, frame) -> bool`` of frames not to extract.

    Returns:
        ``{"frames", "rows": {method: n}, "seconds", "frames_per_s", "skipped"}``.
    """
    from gcfeat.boxes import heatmap_to_boxes
    from gcfeat.cam import GradCAM
    from gcfeat.data import make_loader

    device = torch.device(device)
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    extractors = build_extractors(model, methods, threshold=threshold,
                                  pred_threshold=pred_threshold, layout=layout,
                                  weighting=weighting, crop_size=crop_size,
                                  crop_batch_size=crop_batch_size,
                                  area_thresholds=area_thresholds, single_layer=single_layer)
    channels = layer_channels(model)
    check_layout(layout, channels, methods, single_layer)   # before any file is created
    dims = {e.name: e.output_dim(channels) for e in extractors}
    attrs = extraction_attrs(info, extractors, threshold=threshold,
                             pred_threshold=pred_threshold, layout=layout, min_area=min_area,
                             checkpoint_sha256=checkpoint_sha256, fps=fps)
    classes = list(info.classes)
    tissue = classes.index("tissue") if "tissue" in classes else None
    class_modes = {tissue: "union"} if tissue is not None else None
    amp_ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp == "bf16" \
        else contextlib.nullcontext
    if amp not in (None, "bf16"):
        raise ValueError(f"amp: got {amp!r}, expected None or 'bf16'")

    open_writer = lambda resume_: FeatureWriter(out, attrs, dims, len(classes),  # noqa: E731
                                                compression=compression, resume=resume_)
    writer = open_writer(resume)
    stats = {"frames": 0, "rows": {m: 0 for m in dims}, "skipped": 0}
    t0 = time.perf_counter()
    try:
        table = frame_table(dataset)
        if world_size > 1 and table is not None:
            counts: Dict[str, int] = {}
            for v, _ in table:
                counts[v] = counts.get(v, 0) + 1
            mine = set(shard_videos(counts, world_size)[rank])
            in_shard = lambda v: v in mine                               # noqa: E731
        else:
            in_shard = lambda v: world_size == 1 or _video_rank(v, world_size) == rank  # noqa
        done = {}

        def keep(v: str, f: int) -> bool:
            if v not in done:
                done[v] = set(writer.done(v))
            return in_shard(v) and f not in done[v] and not (skip and skip(v, f))

        todo = restrict(dataset, keep)
        total = None
        if todo is not None:
            t = frame_table(todo)
            total = len(t) if t is not None else None
            stats["skipped"] = (len(table) - total) if table is not None and total is not None \
                else 0
            dataset, post_filter = todo, False
        else:
            post_filter = True
        if total == 0:
            writer.close(finalize=True)
            return _finish(stats, t0)
    finally:
        writer.close(finalize=False)
    # DataLoader workers are forked when iteration starts: they must not inherit the open
    # HDF5 file (a killed run would leave its lock held by orphaned workers), so the writer is
    # closed while they start and reopened (a resume of what was just checked) afterwards.
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False,
                         num_workers=num_workers, pin_memory=device.type == "cuda")
    batches = iter(loader)
    writer = open_writer(True)
    with writer:
        cam = GradCAM(model, [model.layer4])
        bar = tqdm(total=total, unit="frame", desc=f"extract{'' if world_size == 1 else rank}",
                   disable=None if progress else True, dynamic_ncols=True)
        with bar:
            for batch in batches:
                videos = list(batch["video"])
                frames = [int(f) for f in batch["frame_index"]]
                x = batch["image"]
                if post_filter:
                    sel = [i for i, (v, f) in enumerate(zip(videos, frames)) if keep(v, f)]
                    stats["skipped"] += len(videos) - len(sel)
                    if not sel:
                        continue
                    x = x[sel]
                    videos = [videos[i] for i in sel]
                    frames = [frames[i] for i in sel]
                x = x.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with amp_ctx():
                    res = cam.explain(x, extra_layers=(model.layer2, model.layer3))
                    probs = res.logits.float().sigmoid()
                    boxes = heatmap_to_boxes(res.heatmap.float(), threshold, min_area=min_area,
                                             class_modes=class_modes, probs=probs,
                                             pred_threshold=pred_threshold,
                                             classes=res.classes)
                    feats = {e.name: e(x, res, boxes, probs).float() for e in extractors}
                writer.write(videos, frames, probs, feats)
                stats["frames"] += len(videos)
                for m, f in feats.items():
                    stats["rows"][m] += len(f)
                bar.update(len(videos))
    return _finish(stats, t0)


def _finish(stats: dict, t0: float) -> dict:
    stats["seconds"] = time.perf_counter() - t0
    stats["frames_per_s"] = stats["frames"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    return stats


# ------------------------------------------------------------------------------ torchrun
def dist_env() -> Tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (1 process: 0, 1, 0)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def shard_path(out: str, rank: int) -> str:
    return f"{out}.rank{rank}.h5"


def extract_distributed(dataset, model, info, out: str, *, device: str = "cpu",
                        compression: Optional[str] = None, **kwargs) -> dict:
    """:func:`extract_dataset` under torchrun: shard, write ``<out>.rank<r>.h5``, join.

    Uses the gloo backend on CPU and nccl on CUDA (each rank on ``cuda:LOCAL_RANK``). Frames
    already in ``out`` (an earlier run) are skipped; the shards are joined into ``out`` by rank
    0 after a barrier and removed. With ``WORLD_SIZE`` 1 this is :func:`extract_dataset`.
    """
    import torch.distributed as dist

    rank, world, local = dist_env()
    if world == 1:
        return extract_dataset(dataset, model, info, out=out, device=device,
                               compression=compression, **kwargs)
    if torch.device(device).type == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    own = not dist.is_initialized()
    if own:   # extraction is long and ranks finish at different times: a long barrier timeout
        dist.init_process_group(backend, timeout=timedelta(hours=48))
    try:
        skip = None
        if os.path.exists(out):     # frames of an earlier, joined run
            from gcfeat.io.features import FeatureFile
            with FeatureFile(out) as ff:
                done = {v: set(ff[v].frame_index.tolist()) for v in ff.videos}
            skip = lambda v, f: f in done.get(v, ())                      # noqa: E731
        stats = extract_dataset(dataset, model, info, out=shard_path(out, rank), device=device,
                                compression=None, rank=rank, world_size=world, skip=skip,
                                **kwargs)
        dist.barrier()
        if rank == 0:
            shards = [shard_path(out, r) for r in range(world) if os.path.exists(shard_path(out, r))]
            if shards:
                merge_feature_files(shards, out, compression=compression)
                for s in shards:
                    os.remove(s)
        dist.barrier()
    finally:
        if own:
            dist.destroy_process_group()
    return stats
