"""Extract: a task's dataset through the CAM pass, boxes and the M1 / M2 / M3 extractors into
the HDF5 feature file (``gcfeat extract``). The dataset -> file loop is
:func:`gcfeat.extract.extract_dataset` / :func:`gcfeat.extract.pipeline.extract_distributed`;
this module picks the data, model and settings of a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from torch.utils.data import ConcatDataset

from gcfeat.boxes.calibration import ThresholdCalibration
from gcfeat.data import build_dataset, detect_layout
from gcfeat.errors import GcfeatError
from gcfeat.extract.pipeline import dist_env, extract_distributed, file_sha256
from gcfeat.extract.recipe import get_recipe
from gcfeat.models import load_checkpoint
from gcfeat.tasks import Task, get_task

__all__ = [
    "ExtractError",
    "ExtractResult",
    "load_surgical",
    "load_task",
    "extract",
    "class_thresholds_from_file",
]


class ExtractError(GcfeatError):
    """A user-caused problem with the extract command's data, split or options."""


@dataclass
class ExtractResult:
    """What :func:`extract` returns: ``stats`` (frames, skipped, rows per method, frames_per_s),
    ``rank`` / ``world`` of a torchrun run and the output path ``out``."""

    stats: dict[str, Any]
    rank: int
    world: int
    out: str


def load_surgical(
    data,
    checkpoint,
    *,
    split: str = "all",
    layout: str = "auto",
    fps: float = 1.0,
    boxes: str = "cam",
    recipe: str = "default",
):
    """``(dataset, model, info, fps)`` of a box-ground-truth (surgical) run; frames are
    prepared as ``recipe`` says (the paper's extraction normalisation and PIL resizing)."""
    model, info = load_checkpoint(checkpoint)
    size = (int(info.input_size[0]), int(info.input_size[1])) if info.input_size else (256, 320)
    kw: dict[str, Any] = dict(mean=info.mean, std=info.std) if info.mean else {}
    if recipe != "default":
        kw.update(get_recipe(recipe).dataset_kwargs())
    layout_name = detect_layout(data) if layout == "auto" else layout
    if layout_name == "cholec80":
        kw["fps"] = fps
    dataset = build_dataset(data, layout_name, split=split, size=size, with_gt=boxes == "gt", **kw)
    if info.input_size is None:
        info.input_size = size
    return dataset, model, info, (fps if layout_name == "cholec80" else None)


def load_task(task: str | Task, data, checkpoint, *, split: str = "all", boxes: str = "cam"):
    """``(dataset, model, info, task)`` of a mask-ground-truth task run (``info``: classes,
    arch, input size)."""
    task = get_task(task)
    if boxes == "gt":
        raise ExtractError(
            f"--boxes gt: the {task.name} data has masks, not annotated boxes; use --boxes cam"
        )
    model, meta = task.load_checkpoint(checkpoint)
    splits = list(task.splits) if split == "all" else [split]
    if split != "all" and split not in task.splits:
        raise ExtractError(f"--split {split}: {task.name} has {list(task.splits)} (or all)")
    parts = [task.build_dataset(data, s) for s in splits]
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    info = SimpleNamespace(
        classes=list(meta.get("classes", task.classes)),
        arch=meta.get("arch", ""),
        mean=None,
        std=None,
        input_size=list(meta.get("input_size") or task.input_size),
    )
    return dataset, model, info, task


def class_thresholds_from_file(path, classes, box_maps: str | None = None) -> tuple[list[float], str]:
    """``(per-class T in the order of classes, box maps)`` from a thresholds JSON file
    (:class:`~gcfeat.boxes.calibration.ThresholdCalibration`, written by ``tune
    --calibrate-split``). The file's classes must name the checkpoint's; ``box_maps`` None takes
    the file's (``meta.box_maps``, default ``"cam"``), a different explicit one is an error (T
    calibrated on other maps does not transfer)."""
    cal = ThresholdCalibration.load(path)
    classes = list(classes)
    if list(cal.class_names) != classes:
        raise ExtractError(
            f"--thresholds {path}: classes {cal.class_names}, expected the checkpoint's {classes}"
        )
    made_on = cal.meta.get("box_maps", "cam")
    if made_on not in ("cam", "fused"):
        raise ExtractError(
            f"--thresholds {path}: calibrated on the {made_on!r} maps "
            f"(meta.box_maps); extract cuts boxes from 'cam' or 'fused' maps only"
        )
    if box_maps is not None and box_maps != made_on:
        raise ExtractError(
            f"--thresholds {path}: calibrated on the {made_on!r} maps "
            f"(meta.box_maps), --box-maps {box_maps!r} asks for other maps; "
            f"expected --box-maps {made_on} or no --box-maps"
        )
    return [float(t) for t in cal.per_channel()], made_on


def extract(
    task: str | Task,
    data,
    checkpoint,
    out: str,
    *,
    split: str = "all",
    data_layout: str = "auto",
    fps: float | None = 1.0,
    boxes: str = "cam",
    crop_size=None,
    recipe: str = "default",
    thresholds_file=None,
    box_maps: str | None = None,
    **options: Any,
) -> ExtractResult:
    """Features of ``task``'s ``data`` with ``checkpoint`` into ``out`` (resumed when it
    exists; sharded by video under torchrun). ``data_layout``: the surgical folder layout
    (auto, miccai18, cholec80). ``crop_size`` defaults to 224x224 for surgical
    and the input size for the other tasks; ``thresholds_file``: per-class box T (and the box
    maps they were calibrated on) from ``tune --calibrate-split``
    (:func:`class_thresholds_from_file`); ``box_maps``: ``"cam"`` (default) or ``"fused"``;
    ``options`` go to :func:`gcfeat.extract.pipeline.extract_distributed` (methods,
    threshold, layout, ...)."""
    t = get_task(task)
    if recipe != "default" and t.name != "surgical":
        raise ExtractError(
            f"--recipe {recipe}: the original's rules are for the surgical "
            f"task; {t.name} runs with --recipe default"
        )
    if t.ground_truth == "boxes":
        dataset, model, info, fps = load_surgical(
            data,
            checkpoint,
            split=split,
            layout=data_layout,
            fps=1.0 if fps is None else fps,
            boxes=boxes,
            recipe=recipe,
        )
        activation, crop = "sigmoid", crop_size or (224, 224)
    else:
        dataset, model, info, t = load_task(t, data, checkpoint, split=split, boxes=boxes)
        fps, activation = None, t.activation
        crop = crop_size or tuple(info.input_size)
    if len(crop) != len(info.input_size):
        raise ExtractError(
            f"--crop-size {'x'.join(map(str, crop))}: the inputs have {len(info.input_size)} spatial dims"
        )
    if thresholds_file is not None:
        options["class_thresholds"], box_maps = class_thresholds_from_file(
            thresholds_file, info.classes, box_maps
        )
    if box_maps not in (None, "cam", "fused"):
        raise ExtractError(f"--box-maps {box_maps!r}: expected 'cam' or 'fused'")
    options["box_maps"] = box_maps or "cam"
    rank, world, _ = dist_env()
    stats = extract_distributed(
        dataset,
        model,
        info,
        out,
        fps=fps,
        crop_size=crop,
        checkpoint_sha256=file_sha256(checkpoint),
        task=t.name,
        activation=activation,
        boxes=boxes,
        recipe=recipe,
        **options,
    )
    return ExtractResult(stats=stats, rank=rank, world=world, out=out)
