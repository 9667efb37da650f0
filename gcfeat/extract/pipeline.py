"""Dataset -> HDF5 feature file: one CAM pass per batch feeds boxes and every extractor.

Per batch of frames (decoded by DataLoader workers):

1. ONE ``GradCAM(model, [model.layer4]).explain(x, extra_layers=(layer2, layer3))``: logits,
   heatmaps (input and layer4 resolution), layer4 activations, layer2 / layer3 maps. For a
   ResNet head Grad-CAM is CAM (closed form), so this is one forward and no backward;
2. boxes: ``heatmap_to_boxes(heatmap, T, probs=sigmoid(logits), pred_threshold, tissue:
   "union")``; T is one number or, with ``class_thresholds`` (``extract --thresholds FILE``,
   the per-class T that ``tune --calibrate-split`` writes), one T per class. With
   ``box_maps="fused"`` the CAM pass targets every feature level (layer2..layer4: one forward
   and one batched backward, for the classes that get boxes only) and the boxes of M1 / M2 come
   from the product of the levels' maps (:func:`gcfeat.cam.fusion.fuse_maps`), while M2 / M3
   keep the target level's maps and heatmap, exactly as without it (M3 thresholds them at the
   scalar T);
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeGuard

import torch
from torch.utils.data import IterableDataset, Subset
from tqdm import tqdm

from gcfeat import config
from gcfeat.boxes import Boxes, heatmap_to_boxes
from gcfeat.cam import GradCAM
from gcfeat.cam.fusion import fuse_maps, needed_classes, scatter_classes
from gcfeat.data import make_loader
from gcfeat.data.errors import DataError
from gcfeat.errors import ArgumentError
from gcfeat.io.features import FeatureWriter, merge_feature_files
from gcfeat.models.fusion import fuse_conv_bn
from gcfeat.models.levels import LevelError, probe_shape

from .base import Extractor, feature_levels, layer_channels, level_strides
from .crop import CropExtractor
from .heatmap import HeatmapExtractor
from .pooling import Layout, LayoutError
from .recipe import FrameStatsMaps, Recipe, check_dataset, get_recipe
from .roi import AREA_THRESHOLDS, RoiExtractor

METHODS = ("m1", "m2", "m3")
#: where the boxes of M1 / M2 come from: the CAM heatmaps, or the dataset's annotated boxes
BOX_SOURCES = ("cam", "gt")
#: which maps the CAM boxes are cut from: the target level's heatmap, or the fusion of every
#: feature level's map (the product: the rule that localised best, gcfeat.cam.fusion)
BOX_MAPS = ("cam", "fused")
BOX_FUSION = "product"


def file_sha256(path: str, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def build_extractors(
    model,
    methods: Sequence[str],
    *,
    threshold: float = config.BOX_THRESHOLD,
    pred_threshold: float = config.PRED_THRESHOLD,
    layout: Layout = (512, 1, 1),
    weighting: str = "heat",
    crop_size: tuple[int, ...] = (224, 224),
    crop_batch_size: int = 64,
    area_thresholds: Sequence[float] = AREA_THRESHOLDS,
    single_layer: str | None = None,
    selection: str = "threshold",
    recipe: Recipe | str | None = None,
    stats_model=None,
    levels: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
) -> list[Extractor]:
    """Extractors for method names ``m1`` / ``m2`` / ``m3`` (in that order).

    The maps they read are the model's :func:`~gcfeat.extract.base.feature_levels` (ResNets:
    layer2..layer4; a small CNN: its last conv; any torchvision / timm backbone: its maps at
    strides 8 / 16 / 32, or the ``levels`` named); ``selection`` is M3's class choice
    (``"threshold"`` multi-label, ``"top1"`` single-label). ``recipe`` (see
    :mod:`gcfeat.extract.recipe`); with per-frame BatchNorm maps (``"paper"``) M2 and M3 share
    one :class:`~gcfeat.extract.recipe.FrameStatsMaps` built from ``stats_model`` (the model
    with its BatchNorms, i.e. not BN-folded; default ``model``). ``input_shape``: the level
    probe's ``(C, *spatial)`` (:func:`probe_input`).
    """
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ArgumentError(f"methods: got {list(methods)}, expected some of {METHODS}")
    strides = level_strides(model, levels, input_shape)
    levels = list(feature_levels(model, levels, input_shape))
    recipe = get_recipe(recipe)
    frame_maps = None  # per-frame BatchNorm maps (paper recipe), shared by m2 / m3
    if recipe.bn == "frame" and ("m2" in methods or "m3" in methods):
        frame_maps = FrameStatsMaps(stats_model if stats_model is not None else model, levels)
    make = {
        "m1": lambda: CropExtractor(model, crop_size, layout, crop_batch_size, levels[-1], recipe=recipe),
        "m2": lambda: RoiExtractor(
            area_thresholds, single_layer, layout, levels, strides, recipe=recipe, frame_maps=frame_maps
        ),
        "m3": lambda: HeatmapExtractor(
            threshold,
            weighting,
            pred_threshold,
            layout,
            levels[-1],
            selection,
            recipe=recipe,
            frame_maps=frame_maps,
        ),
    }
    return [make[m]() for m in METHODS if m in methods]


def check_layout(
    layout: Layout, channels: dict[str, int], methods: Sequence[str], single_layer: str | None = None
) -> None:
    """Raise ``LayoutError`` unless ``p0`` divides the channels of every map a method pools.

    ``channels``: ``{level: channels}`` in order of increasing stride (the last is the CAM
    target, pooled by m1 and m3)."""
    if layout is None:
        return
    names = list(channels)
    used = set()
    if "m1" in methods or "m3" in methods:
        used.add(names[-1])
    if "m2" in methods:
        used.update([single_layer] if single_layer else names)
    bad = {n: channels[n] for n in sorted(used) if channels[n] % layout[0]}
    if bad:
        raise LayoutError(
            f"pooling layout {layout}: p0={layout[0]} does not divide the "
            f"channels of {bad}; choose a layout whose first number divides "
            f"them (e.g. 32x4x4), or m2's --single-layer"
        )


def auto_layout(channels: dict[str, int]) -> Layout:
    """The 512-d layout the maps allow: ``(512, 1, 1)`` when 512 divides every level's channels
    (ResNet50), else ``(32, 4, 4)`` (ResNet18/34: layer2 has 128), else ``(p0, 4, 4)`` with
    ``p0`` the largest power of two dividing them all (small / slim models: fewer dims)."""
    widths = list(channels.values())
    for layout in ((512, 1, 1), (32, 4, 4)):
        if all(c % layout[0] == 0 for c in widths):
            return layout
    p0 = 1
    while all(c % (p0 * 2) == 0 for c in widths) and p0 < 32:
        p0 *= 2
    return (p0, 4, 4)


def gt_boxes(batch: dict, device) -> Boxes:
    """The annotated boxes of a batch (``gt_boxes`` / ``gt_labels`` per sample, input pixels)
    as :class:`~gcfeat.boxes.Boxes` with score 1."""
    if "gt_boxes" not in batch or "gt_labels" not in batch:
        raise ArgumentError(
            "boxes='gt': the dataset gives no ground-truth boxes (gt_boxes / "
            "gt_labels); MICCAI 2018 needs gt_bbox/ files or the synthetic "
            "ground truth, and the dataset must be built with with_gt=True"
        )
    labels = [torch.as_tensor(lb, dtype=torch.int64).reshape(-1) for lb in batch["gt_labels"]]
    xyxy = torch.cat([torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in batch["gt_boxes"]])
    frame = torch.cat([torch.full((len(lb),), i, dtype=torch.int64) for i, lb in enumerate(labels)])
    label = torch.cat(labels)
    return Boxes(xyxy.to(device), frame.to(device), label.to(device), torch.ones(len(frame), device=device))


# ------------------------------------------------------------------------ dataset helpers
def frame_table(dataset) -> list[tuple[str, int]] | None:
    """``(video, frame_index)`` of every item without decoding, when the dataset tells."""
    if isinstance(dataset, Subset):
        inner = frame_table(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    items = getattr(dataset, "items", None)
    if items is not None and not isinstance(dataset, IterableDataset):  # Miccai18Dataset
        return [(str(it[0]), int(it[1])) for it in items]
    videos = getattr(dataset, "videos", None)
    if _video_dicts(videos):  # Cholec80Dataset
        return [(v["name"], int(f)) for v in videos for f in v["frames"]]
    return None


def _video_dicts(videos) -> TypeGuard[list[dict]]:
    return isinstance(videos, list) and all(
        isinstance(v, dict) and "name" in v and "frames" in v for v in videos
    )


def restrict(dataset, keep: Callable[[str, int], bool]):
    """The dataset limited to the frames where ``keep(video, frame)``, or None if the dataset
    does not expose its frames (then the pipeline filters after loading)."""
    videos = getattr(dataset, "videos", None)
    if isinstance(dataset, IterableDataset):
        if not _video_dicts(videos):
            return None
        ds: Any = copy.copy(dataset)  # a streamed dataset: its video list is rewritten
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


def shard_videos(counts: dict[str, int], world_size: int) -> list[list[str]]:
    """Videos per rank: longest first onto the least loaded rank (deterministic)."""
    load = [0] * world_size
    out: list[list[str]] = [[] for _ in range(world_size)]
    for name in sorted(counts, key=lambda n: (-counts[n], n)):
        r = load.index(min(load))
        out[r].append(name)
        load[r] += counts[name]
    return out


def _video_rank(video: str, world_size: int) -> int:
    return zlib.crc32(video.encode()) % world_size


# ------------------------------------------------------------------------------ pipeline
def extraction_attrs(
    info,
    extractors: Sequence[Extractor],
    *,
    threshold: float,
    pred_threshold: float,
    layout: Layout,
    min_area: float,
    checkpoint_sha256: str = "",
    fps: float | None = None,
    task: str = "surgical",
    activation: str = "sigmoid",
    boxes: str = "cam",
    recipe: Recipe | None = None,
    class_thresholds: Sequence[float] | None = None,
    box_maps: str = "cam",
    levels: Sequence[str] = (),
) -> dict:
    """Root attributes (the settings a resumed run must match). Surgical files made with CAM
    boxes keep the keys of the first format; other tasks add ``task``, ``activation`` and
    ``spatial_dims``, other box sources ``boxes``; per-class T adds ``thresholds.box_per_class``,
    fused box maps ``box_maps`` (``{"maps", "fusion", "levels"}``)."""
    extra: dict[str, Any] = {}
    if box_maps != "cam":
        extra["box_maps"] = {"maps": box_maps, "fusion": BOX_FUSION, "levels": list(levels)}
    if task != "surgical" or activation != "sigmoid":
        extra.update(
            task=task, activation=activation, spatial_dims=len(info.input_size) if info.input_size else 2
        )
    if boxes != "cam":
        extra["boxes"] = boxes
    recipe = get_recipe(recipe)
    if not recipe.is_default:  # the paper recipe's rules and its normalisation
        extra["recipe"] = recipe.settings()
        if recipe.mean is not None:
            info = copy.copy(info)
            info.mean, info.std = recipe.mean, recipe.std
    return {
        **extra,
        "classes": list(info.classes),
        "thresholds": {
            "box": float(threshold),
            "pred": float(pred_threshold),
            "min_area": float(min_area),
            **({} if class_thresholds is None else {"box_per_class": [float(t) for t in class_thresholds]}),
        },
        "architecture": getattr(info, "arch", ""),
        "checkpoint_sha256": checkpoint_sha256,
        "input_size": list(info.input_size) if info.input_size else None,
        "mean": list(info.mean) if info.mean else None,
        "std": list(info.std) if info.std else None,
        "layout": list(layout) if layout else "raw",
        "methods": {e.name: e.settings() for e in extractors},
        "fps": fps,
    }


@contextlib.contextmanager
def _workers_shut_down(batches):
    """Shut the DataLoader's workers down when the loop ends. After an error raised in a worker
    the iterator sits in a reference cycle with the traceback, and torch's shutdown from a later
    garbage collection waits out its join timeouts (about 5 s per worker)."""
    try:
        yield batches
    finally:
        getattr(batches, "_shutdown_workers", lambda: None)()


def check_finite_frames(x: torch.Tensor, videos: Sequence[str], frames: Sequence[int]) -> None:
    """Raise :class:`DataError` naming the video and frame of every image of ``x (B, C, *S)``
    holding NaN or inf (a float volume with NaN voxels, a zero ``std``), before the CAM pass."""
    bad = (~torch.isfinite(x).flatten(1).all(1)).nonzero().flatten().tolist()
    if bad:
        where = ", ".join(f"{videos[i]} frame {frames[i]}" for i in bad[:4])
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        raise DataError(
            f"{where}{more}: the input image holds NaN or inf after decoding and "
            f"normalisation; expected finite values (check the source file and "
            f"the checkpoint's mean / std)"
        )


@dataclass
class ExtractConfig:
    """The settings of one extraction run: :func:`extract_dataset`'s keywords as one record
    (:func:`run_extraction` takes it). Meanings in :func:`extract_dataset`'s docstring."""

    methods: Sequence[str] = ("m2", "m3")
    threshold: float = config.BOX_THRESHOLD
    out: str = "feats.h5"
    batch_size: int = 32
    device: str = "cpu"
    fps: float | None = None
    num_workers: int = 2
    compression: str | None = None
    resume: bool = True
    progress: bool = True
    pred_threshold: float = config.PRED_THRESHOLD
    layout: Layout | str = (512, 1, 1)
    weighting: str = "heat"
    crop_size: tuple[int, ...] = (224, 224)
    crop_batch_size: int = 64
    area_thresholds: Sequence[float] = AREA_THRESHOLDS
    single_layer: str | None = None
    min_area: float = config.MIN_AREA
    amp: str | None = None
    channels_last: bool = False
    checkpoint_sha256: str = ""
    rank: int = 0
    world_size: int = 1
    skip: Callable[[str, int], bool] | None = None
    task: str = "surgical"
    activation: str = "sigmoid"
    boxes: str = "cam"
    fold_bn: bool = True
    recipe: Recipe | str | None = None
    levels: Sequence[str] | None = None
    class_thresholds: Sequence[float] | None = None
    box_maps: str = "cam"

    def check(self) -> None:
        """Settings are checked before the output file exists: a bad run leaves nothing."""
        for name, value in (("threshold", self.threshold), ("pred_threshold", self.pred_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise ArgumentError(f"{name}: expected a number in [0, 1], got {value}")
        if self.min_area < 0:
            raise ArgumentError(f"min_area: expected >= 0, got {self.min_area}")
        if self.activation not in ("sigmoid", "softmax"):
            raise ArgumentError(f"activation: got {self.activation!r}, expected 'sigmoid' or 'softmax'")
        if self.boxes not in BOX_SOURCES:
            raise ArgumentError(f"boxes: got {self.boxes!r}, expected one of {BOX_SOURCES}")
        if self.box_maps not in BOX_MAPS:
            raise ArgumentError(f"box_maps: got {self.box_maps!r}, expected one of {BOX_MAPS}")
        bad = [t for t in (self.class_thresholds or ()) if not 0.0 <= float(t) <= 1.0]
        if bad:
            raise ArgumentError(f"class_thresholds: {bad} outside [0, 1]")


def extract_dataset(
    dataset,
    model,
    info,
    methods: Sequence[str] = ("m2", "m3"),
    threshold: float = config.BOX_THRESHOLD,
    out: str = "feats.h5",
    batch_size: int = 32,
    device: str = "cpu",
    fps: float | None = None,
    num_workers: int = 2,
    compression: str | None = None,
    resume: bool = True,
    progress: bool = True,
    *,
    pred_threshold: float = config.PRED_THRESHOLD,
    layout: Layout | str = (512, 1, 1),
    weighting: str = "heat",
    crop_size: tuple[int, int] = (224, 224),
    crop_batch_size: int = 64,
    area_thresholds: Sequence[float] = AREA_THRESHOLDS,
    single_layer: str | None = None,
    min_area: float = config.MIN_AREA,
    amp: str | None = None,
    channels_last: bool = False,
    checkpoint_sha256: str = "",
    rank: int = 0,
    world_size: int = 1,
    skip: Callable[[str, int], bool] | None = None,
    task: str = "surgical",
    activation: str = "sigmoid",
    boxes: str = "cam",
    fold_bn: bool = True,
    recipe: Recipe | str | None = None,
    levels: Sequence[str] | None = None,
    class_thresholds: Sequence[float] | None = None,
    box_maps: str = "cam",
) -> dict:
    """Extract object-level features of every frame of ``dataset`` into the HDF5 file ``out``.

    Args:
        dataset: a gcfeat Dataset (items: the sample dicts of docs/DESIGN.md): surgical frames,
            or an MRI task's slices / volumes (``video`` = case or split, ``frame_index`` =
            slice or row).
        model: the classifier (a torchvision ResNet, a 3D ResNet, a small CNN: see
            :func:`~gcfeat.extract.base.feature_levels`), ``info``: its ``CheckpointInfo``
            (``classes``, ``arch``, ``input_size``, ``mean``, ``std``).
        methods: some of ``"m1"``, ``"m2"``, ``"m3"``.
        threshold: box / mask threshold T; ``pred_threshold``: class score needed for a map.
        class_thresholds: one box T per class (``(K,)``, in the checkpoint's class order;
            e.g. :meth:`gcfeat.boxes.calibration.ThresholdCalibration.per_channel`) for the
            boxes of M1 / M2; M3 keeps ``threshold``. Written to the attributes.
        box_maps: ``"cam"`` (boxes from the target level's heatmap) or ``"fused"`` (from the
            product of every feature level's map; M2 / M3 keep their maps). In the attributes.
        out: the HDF5 file (created or resumed).
        fps: recorded in the attributes (sampling is the dataset's option).
        compression: ``None`` / ``"gzip"`` / ``"lzf"`` (applied when the run completes).
        amp: ``None`` or ``"bf16"`` (autocast; features are written as float32).
        channels_last: run the backbone in channels-last memory format.
        rank, world_size: this process's shard (videos balanced by frame count).
        skip: extra ``(video, frame) -> bool`` of frames not to extract.
        task: the task name written to the attributes (``gcfeat.tasks``).
        activation: ``"sigmoid"`` (multi-label: classes above ``pred_threshold`` get maps,
            boxes and m3 rows) or ``"softmax"`` (single-label: each image's top class).
        boxes: ``"cam"`` (boxes from the heatmaps) or ``"gt"`` (the dataset's annotated boxes,
            ``gt_boxes`` / ``gt_labels``, for m1 / m2; m3 keeps the selected classes).
        fold_bn: run an inference copy with the batch norms folded into the convs
            (:func:`gcfeat.models.fusion.fuse_conv_bn`; the model itself is untouched): the same
            numbers up to float rounding, fewer passes over memory.
        recipe: ``"default"`` (gcfeat's rules) or ``"paper"`` (the original scripts' rules,
            :mod:`gcfeat.extract.recipe`; README "Recipes"). ``"paper"`` expects a dataset
            built with ``**get_recipe("paper").dataset_kwargs()`` (extraction normalisation,
            PIL resizing); a dataset that says otherwise is refused.
        levels: module names of the feature maps (increasing stride; the last is the CAM
            target); default :func:`~gcfeat.extract.base.feature_levels`'s choice.

    Returns:
        ``{"frames", "rows": {method: n}, "seconds", "frames_per_s", "skipped"}``.

    The same run with the settings as one :class:`ExtractConfig`: :func:`run_extraction`.
    """
    cfg = ExtractConfig(
        methods=methods,
        threshold=threshold,
        out=out,
        batch_size=batch_size,
        device=device,
        fps=fps,
        num_workers=num_workers,
        compression=compression,
        resume=resume,
        progress=progress,
        pred_threshold=pred_threshold,
        layout=layout,
        weighting=weighting,
        crop_size=crop_size,
        crop_batch_size=crop_batch_size,
        area_thresholds=area_thresholds,
        single_layer=single_layer,
        min_area=min_area,
        amp=amp,
        channels_last=channels_last,
        checkpoint_sha256=checkpoint_sha256,
        rank=rank,
        world_size=world_size,
        skip=skip,
        task=task,
        activation=activation,
        boxes=boxes,
        fold_bn=fold_bn,
        recipe=recipe,
        levels=levels,
        class_thresholds=class_thresholds,
        box_maps=box_maps,
    )
    return run_extraction(dataset, model, info, cfg)


def run_extraction(dataset, model, info, cfg: ExtractConfig) -> dict:
    """:func:`extract_dataset` with its settings as an :class:`ExtractConfig`."""
    cfg.check()
    recipe = get_recipe(cfg.recipe)
    if not recipe.is_default:
        check_dataset(dataset, recipe)
    device = torch.device(cfg.device)
    stats_model = model.to(device).eval()  # per-frame BN maps need the BatchNorms (not folded)
    model, levels, channels, layout = _inference_model(model, cfg, device, probe_input(model, info))
    extractors = build_extractors(
        model,
        cfg.methods,
        threshold=cfg.threshold,
        pred_threshold=cfg.pred_threshold,
        layout=layout,
        weighting=cfg.weighting,
        crop_size=cfg.crop_size,
        crop_batch_size=cfg.crop_batch_size,
        area_thresholds=cfg.area_thresholds,
        single_layer=cfg.single_layer,
        selection="threshold" if cfg.activation == "sigmoid" else "top1",
        recipe=recipe,
        stats_model=stats_model,
        levels=cfg.levels,
        input_shape=probe_input(model, info),
    )
    check_layout(layout, channels, cfg.methods, cfg.single_layer)  # before any file is created
    dims = {e.name: e.output_dim(channels) for e in extractors}
    attrs = extraction_attrs(
        info,
        extractors,
        threshold=cfg.threshold,
        pred_threshold=cfg.pred_threshold,
        layout=layout,
        min_area=cfg.min_area,
        checkpoint_sha256=cfg.checkpoint_sha256,
        fps=cfg.fps,
        task=cfg.task,
        activation=cfg.activation,
        boxes=cfg.boxes,
        recipe=recipe,
        class_thresholds=cfg.class_thresholds,
        box_maps=cfg.box_maps,
        levels=list(levels),
    )
    classes = list(info.classes)
    if cfg.class_thresholds is not None and len(cfg.class_thresholds) != len(classes):
        raise ValueError(
            f"class_thresholds: {len(cfg.class_thresholds)} values, expected one per "
            f"class ({len(classes)}: {classes})"
        )
    box_dim = 2 * (len(info.input_size) if info.input_size else 2)
    if cfg.amp not in (None, "bf16"):
        raise ArgumentError(f"amp: got {cfg.amp!r}, expected None or 'bf16'")

    open_writer = lambda resume_: FeatureWriter(  # noqa: E731
        cfg.out,
        attrs,
        dims,
        len(classes),
        compression=cfg.compression,
        resume=resume_,
        box_dim=box_dim,
    )
    stats = {"frames": 0, "rows": {m: 0 for m in dims}, "skipped": 0}
    t0 = time.perf_counter()
    writer = open_writer(cfg.resume)
    current = {"writer": writer}  # the frame filter asks the open writer what is done
    try:
        plan = _plan(dataset, current, cfg, stats)
        if plan.total == 0:
            writer.close(finalize=True)
            return _finish(stats, t0)
    finally:
        writer.close(finalize=False)
    # DataLoader workers are forked when iteration starts: they must not inherit the open
    # HDF5 file (a killed run would leave its lock held by orphaned workers), so the writer is
    # closed while they start and reopened (a resume of what was just checked) afterwards.
    loader = make_loader(
        plan.dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    writer = current["writer"] = open_writer(True)
    with writer, _workers_shut_down(batches):
        *extra_levels, target = levels.values()
        step = _BatchStep(
            GradCAM(model, [target]), extra_levels, extractors, cfg, device, _class_modes(classes)
        )
        if cfg.box_maps == "fused":
            step.fused_cam = GradCAM(model, [*extra_levels, target])
        bar = tqdm(
            total=plan.total,
            unit="frame",
            desc=f"extract{'' if cfg.world_size == 1 else cfg.rank}",
            disable=None if cfg.progress else True,
            dynamic_ncols=True,
        )
        with bar:
            for batch in batches:
                n = step(batch, writer, stats, plan.keep if plan.post_filter else None)
                if n:
                    bar.update(n)
    return _finish(stats, t0)


def _inference_model(model, cfg: ExtractConfig, device, shape=None):
    """``(model, levels, channels, layout)``: the model on ``device`` in eval mode (channels
    last, BN folded as asked), its feature levels (probed at ``shape``), their channels, the
    resolved layout."""
    model = model.to(device).eval()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.fold_bn:
        model, _ = fuse_conv_bn(model, torch.channels_last if cfg.channels_last else None)
    levels = feature_levels(model, cfg.levels, shape)
    channels = layer_channels(model, levels, shape)
    layout = auto_layout(channels) if cfg.layout == "auto" else cfg.layout
    return model, levels, channels, layout


def probe_input(model, info) -> tuple[int, ...] | None:
    """``(C, *info.input_size)``: the feature-level probe runs at the checkpoint's input size
    (None without one: :func:`gcfeat.models.levels.probe_shape`'s default)."""
    size = getattr(info, "input_size", None)
    try:
        return (probe_shape(model)[0], *(int(s) for s in size)) if size else None
    except LevelError:  # no convolution to tell the channels: the probe's own default
        return None


def _class_modes(classes: Sequence[str]):
    """The surgical tissue class gets one union box."""
    tissue = classes.index("tissue") if "tissue" in classes else None
    return {tissue: "union"} if tissue is not None else None


@dataclass
class _Plan:
    """What is left to extract: the (restricted) dataset, the frame filter, the frame count
    (None: unknown) and whether the filter still runs per batch (datasets that cannot be
    restricted before decoding)."""

    dataset: Any
    keep: Callable[[str, int], bool]
    total: int | None
    post_filter: bool


def _plan(dataset, current: dict, cfg: ExtractConfig, stats: dict) -> _Plan:
    """This rank's shard minus the frames the writer (``current["writer"]``, reopened after
    the DataLoader workers start) already holds and ``cfg.skip``."""
    table = frame_table(dataset)
    rank, world_size = cfg.rank, cfg.world_size
    if world_size > 1 and table is not None:
        counts: dict[str, int] = {}
        for v, _ in table:
            counts[v] = counts.get(v, 0) + 1
        mine = set(shard_videos(counts, world_size)[rank])
        in_shard = lambda v: v in mine  # noqa: E731
    else:
        in_shard = lambda v: world_size == 1 or _video_rank(v, world_size) == rank  # noqa
    done = {}
    skip = cfg.skip

    def keep(v: str, f: int) -> bool:
        if v not in done:
            done[v] = set(current["writer"].done(v))
        return in_shard(v) and f not in done[v] and not (skip and skip(v, f))

    todo = restrict(dataset, keep)
    if todo is None:
        return _Plan(dataset, keep, None, True)
    t = frame_table(todo)
    total = len(t) if t is not None else None
    stats["skipped"] = (len(table) - total) if table is not None and total is not None else 0
    return _Plan(todo, keep, total, False)


class _BatchStep:
    """One batch: CAM pass, boxes, every extractor, written; returns the frames written."""

    def __init__(self, cam, extra_levels, extractors, cfg: ExtractConfig, device, class_modes):
        self.cam, self.extra_levels, self.extractors = cam, extra_levels, extractors
        self.fused_cam: GradCAM | None = None  # every level a target (box_maps="fused"), set by the caller
        self.cfg, self.device, self.class_modes = cfg, device, class_modes
        self.amp_ctx = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if cfg.amp == "bf16"
            else contextlib.nullcontext
        )

    def __call__(self, batch, writer, stats: dict, keep) -> int:
        cfg = self.cfg
        videos = list(batch["video"])
        frames = [int(f) for f in batch["frame_index"]]
        x = batch["image"]
        if keep is not None:
            sel = [i for i, (v, f) in enumerate(zip(videos, frames)) if keep(v, f)]
            stats["skipped"] += len(videos) - len(sel)
            if not sel:
                return 0
            x = x[sel]
            videos = [videos[i] for i in sel]
            frames = [frames[i] for i in sel]
            batch = {
                k: [batch[k][i] for i in sel] for k in ("gt_boxes", "gt_labels", "source_size") if k in batch
            }
        x = x.to(self.device, non_blocking=True)
        check_finite_frames(x, videos, frames)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.amp_ctx():
            res, box_heat = self._explain(x)
            probs, found = self._boxes(res, batch, box_heat)
            feats = {e.name: e(x, res, found, probs).float() for e in self.extractors}
        # source frame size per video: boxes in source pixels (gcfeat.io.features)
        writer.write(videos, frames, probs, feats, source_sizes=batch.get("source_size"))
        stats["frames"] += len(videos)
        for m, f in feats.items():
            stats["rows"][m] += len(f)
        return len(videos)

    def _explain(self, x):
        """``(result, box heatmap)``: the extractors' view (the target level's heatmap,
        activations and the other levels as ``extra``: the same pass with or without fused
        boxes) and the maps the boxes are cut from. Fused: a second call with every level a
        target, for the classes that get boxes only (the others' maps are zeros)."""
        res = self.cam.explain(x, extra_layers=self.extra_levels)
        if self.cfg.box_maps == "cam":
            return res, res.heatmap
        probs, gate = self._gate(res)
        thr = self.cfg.pred_threshold if self.cfg.activation == "sigmoid" else 0.5
        needed = gate > thr
        sel = res.classes.reshape(-1)[needed_classes(needed.cpu())]
        full = self.fused_cam.explain(x, sel.to(x.device))
        heat = fuse_maps(full.layer_heatmaps, x.shape[2:], BOX_FUSION)
        return res, scatter_classes(heat, needed_classes(needed.cpu()), needed.shape[1])

    def _gate(self, res):
        """``(probs, gate)`` ``(B, K)``: sigmoid scores (gate = them) or softmax scores (gate =
        one-hot top class)."""
        logits = res.logits.float()
        if self.cfg.activation == "sigmoid":
            probs = logits.sigmoid()
            return probs, probs
        probs = logits.softmax(1)
        return probs, torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1])

    def _boxes(self, res, batch, box_heat):
        """``(probs (B, K), boxes)``: multi-label boxes for every class above
        ``pred_threshold``, single-label ones for each image's top class only."""
        cfg = self.cfg
        probs, gate = self._gate(res)
        if cfg.boxes == "gt":
            return probs, gt_boxes(batch, self.device)
        T = cfg.threshold
        if cfg.class_thresholds is not None:  # one T per heatmap channel (its class)
            T = torch.as_tensor(cfg.class_thresholds, dtype=torch.float64)[res.classes.cpu().reshape(-1)]
        return probs, heatmap_to_boxes(
            box_heat.float(),
            T,
            min_area=cfg.min_area,
            class_modes=self.class_modes,
            probs=gate,
            pred_threshold=cfg.pred_threshold if cfg.activation == "sigmoid" else 0.5,
            classes=res.classes,
            contours=get_recipe(cfg.recipe).contours,
        )


def _finish(stats: dict, t0: float) -> dict:
    stats["seconds"] = time.perf_counter() - t0
    stats["frames_per_s"] = stats["frames"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    return stats


# ------------------------------------------------------------------------------ torchrun
def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (1 process: 0, 1, 0)."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def shard_path(out: str, rank: int) -> str:
    return f"{out}.rank{rank}.h5"


def extract_distributed(
    dataset, model, info, out: str, *, device: str = "cpu", compression: str | None = None, **kwargs
) -> dict:
    """:func:`extract_dataset` under torchrun: shard, write ``<out>.rank<r>.h5``, join.

    Uses the gloo backend on CPU and nccl on CUDA (each rank on ``cuda:LOCAL_RANK``). Frames
    already in ``out`` (an earlier run) are skipped; the shards are joined into ``out`` by rank
    0 after a barrier and removed. With ``WORLD_SIZE`` 1 this is :func:`extract_dataset`.
    """
    import torch.distributed as dist

    rank, world, local = dist_env()
    if world == 1:
        return extract_dataset(
            dataset, model, info, out=out, device=device, compression=compression, **kwargs
        )
    if torch.device(device).type == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    own = not dist.is_initialized()
    if own:  # extraction is long and ranks finish at different times: a long barrier timeout
        dist.init_process_group(backend, timeout=timedelta(hours=48))
    try:
        skip = None
        if os.path.exists(out):  # frames of an earlier, joined run
            from gcfeat.io.features import FeatureFile

            with FeatureFile(out) as ff:
                done = {v: set(ff[v].frame_index.tolist()) for v in ff.videos}
            skip = lambda v, f: f in done.get(v, ())  # noqa: E731
        stats = extract_dataset(
            dataset,
            model,
            info,
            out=shard_path(out, rank),
            device=device,
            compression=None,
            rank=rank,
            world_size=world,
            skip=skip,
            **kwargs,
        )
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
