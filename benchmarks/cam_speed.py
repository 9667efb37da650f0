"""CAM engine speed: gcfeat vs a bare forward and vs pytorch-grad-cam, in one process.

Measures frames/s of

* ResNet50, 11 classes, 256x320 frames, batch 8 (``--batch``):
  bare forward (``torch.no_grad``); gcfeat GradCAM all classes (closed form); gcfeat GradCAM
  all classes forced through the general path (one forward + one batched backward);
  pytorch-grad-cam GradCAM all classes (11 calls, one per class);
* ConvNeXt-T and ViT-B/16 (``--backbones``), 11 classes, ``--backbone-batch`` frames at
  ``--backbone-size`` (ViT: square, its ``image_size``), target the last feature level
  (:func:`gcfeat.models.levels.find_levels`: ConvNeXt ``features.7``, ViT the last block's
  ``ln_1`` through its token-grid ``reshape_transform``): bare forward; gcfeat GradCAM all
  classes (no closed form exists for these heads: one forward + one batched backward);
  pytorch-grad-cam GradCAM all classes (one call per class, same reshape_transform);
* ResNet18, 11 classes, ``--score-size`` frames, batch ``--score-batch``, target ``layer4``
  (512 channels -> 512 masked forwards per frame): gcfeat ScoreCAM one class and all classes;
  pytorch-grad-cam ScoreCAM one class.

Measurements are interleaved (round-robin over the methods, ``--repeats`` rounds after one
warm-up) and the median is reported, because other processes share the CPU. Prints a table,
the ratios against the issue's targets, and one JSON line (last line of stdout).

    .venv/bin/python benchmarks/cam_speed.py                 # full run
    .venv/bin/python benchmarks/cam_speed.py --quick         # smoke run (small sizes)
    .venv/bin/python benchmarks/cam_speed.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

import gcfeat.cam as gc

TARGETS = {
    "closed_form_vs_forward": (">=", 0.9),
    "general_vs_pgc_all_classes": (">=", 8.0),
    "scorecam_all_vs_one_time": ("<=", 1.2),
    "scorecam_one_vs_pgc_one": (">=", 2.0),
}
#: per backbone: all-class Grad-CAM / bare forward where a closed form exists (>= 0.8), else
#: gcfeat / pytorch-grad-cam all classes (>= 8)
BACKBONE_ARCHS = ("convnext_tiny", "vit_b_16")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HxW like 256x320, found {text!r}") from e
    return h, w


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, progress: bool
) -> dict[str, float]:
    """Median seconds per call of each function, interleaved round-robin after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in order:
            _sync(device)
            t = time.perf_counter()
            fns[name]()
            _sync(device)
            if r > 0:
                times[name].append(time.perf_counter() - t)
            if progress:
                print(f"  round {r}/{repeats} {name}: {time.perf_counter() - t:.3f} s", flush=True)
    return {k: statistics.median(v) for k, v in times.items()}


def _pgc_gradcam_all(model, layer, x, K):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run():
        with GradCAM(model=model, target_layers=[layer]) as cam:
            return [cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * len(x)) for k in range(K)]

    return run


def _pgc_scorecam_one(model, layer, x, k):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run():
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
            with ScoreCAM(model=model, target_layers=[layer]) as cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * len(x))

    return run


def _pgc_gradcam_all_reshaped(model, layer, x, K, reshape):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run():
        with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            return [cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * len(x)) for k in range(K)]

    return run


def _backbone_times(arch: str, args, device: torch.device, K: int) -> tuple[dict, bool]:
    """Median s/call for one backbone: forward, gcfeat all classes, pgc all classes; and
    whether gcfeat used the closed form."""
    from gcfeat.models import build_classifier, find_levels

    h, w = args.backbone_size
    opts = {"image_size": h} if arch.startswith("vit") else {}
    if opts and h != w:
        raise SystemExit(f"--backbone-size {h}x{w}: {arch} needs a square size")
    model = build_classifier(arch, K, **opts).eval().to(device)
    torch.nn.init.normal_(
        model.get_submodule("heads.head" if opts else "classifier.2").weight, std=0.02
    )  # ViT zero-inits it
    level = find_levels(model)[-1]
    x = torch.rand(args.backbone_batch, 3, h, w, device=device)
    cam = gc.GradCAM(model, [level.module])
    closed = cam._plan().closed_form

    def forward():
        with torch.no_grad():
            return model(x)

    fns = {f"{arch}_forward": forward, f"{arch}_gradcam_all_classes": lambda: cam(x)}
    if not args.skip_pgc:
        fns[f"{arch}_pgc_gradcam_all_classes"] = _pgc_gradcam_all_reshaped(
            model, level.module, x, K, level.reshape
        )
    print(
        f"{arch} {K} classes, target {level.name}, batch {args.backbone_batch}, {h}x{w}, "
        f"closed form {closed}, device {device}, threads {torch.get_num_threads()}",
        flush=True,
    )
    return _timeit(fns, args.repeats, device, args.progress), closed


def _resnet50_times(args, device: torch.device, K: int) -> dict[str, float]:
    """Median s/call of the ResNet50 part: forward, closed form, general path, pgc."""
    r50 = torchvision.models.resnet50(num_classes=K).eval().to(device)
    x = torch.rand(args.batch, 3, *args.size, device=device)
    closed = gc.GradCAM(r50, [r50.layer4])
    general = gc.GradCAM(r50, [r50.layer4], closed_form=False)

    def forward():
        with torch.no_grad():
            return r50(x)

    fns = {
        "forward": forward,
        "gradcam_closed_form": lambda: closed(x),
        "gradcam_general": lambda: general(x),
    }
    if not args.skip_pgc:
        fns["pgc_gradcam_all_classes"] = _pgc_gradcam_all(r50, r50.layer4, x, K)
    print(
        f"ResNet50 {K} classes, batch {args.batch}, {args.size[0]}x{args.size[1]}, "
        f"device {device}, threads {torch.get_num_threads()}",
        flush=True,
    )
    return _timeit(fns, args.repeats, device, args.progress)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Frames/s of gcfeat's CAM engine against a bare forward and "
        "pytorch-grad-cam (see benchmarks/README.md)."
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed rounds after one warm-up; the median is reported (default 3)",
    )
    p.add_argument("--batch", type=int, default=8, help="ResNet50 batch size (default 8)")
    p.add_argument("--size", type=_size, default=(256, 320), help="ResNet50 frame size HxW (default 256x320)")
    p.add_argument("--classes", type=int, default=11, help="number of classes (default 11)")
    p.add_argument("--score-batch", type=int, default=1, help="ScoreCAM batch size (default 1)")
    p.add_argument(
        "--score-size", type=_size, default=(128, 160), help="ScoreCAM frame size HxW (default 128x160)"
    )
    p.add_argument(
        "--score-chunk",
        type=int,
        default=None,
        help="gcfeat ScoreCAM masked inputs per forward (default: ScoreCAM's own, "
        "32 on the CPU, 64 otherwise)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default 0: leave torch's choice; 1 is often faster "
        "on a busy shared machine)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 2, 128x160 ResNet50 frames, 64x80 ScoreCAM frames, "
        "1 repeat, 64x64 backbone frames",
    )
    p.add_argument(
        "--skip-pgc",
        action="store_true",
        help="do not time pytorch-grad-cam (ratios against it are then omitted)",
    )
    p.add_argument(
        "--scorecam-only",
        action="store_true",
        help="time only the ResNet18 Score-CAM part (skip the ResNet50 Grad-CAM part)",
    )
    p.add_argument(
        "--backbones",
        nargs="*",
        default=list(BACKBONE_ARCHS),
        help=f"other backbones to time (default {' '.join(BACKBONE_ARCHS)}; none: skip)",
    )
    p.add_argument(
        "--backbone-batch", type=int, default=2, help="batch size of the backbone part (default 2)"
    )
    p.add_argument(
        "--backbone-size",
        type=_size,
        default=(224, 224),
        help="frame size of the backbone part (default 224x224; ViT: square)",
    )
    p.add_argument(
        "--backbones-only",
        action="store_true",
        help="time only the backbone part (skip ResNet50 and Score-CAM)",
    )
    p.add_argument("--progress", action="store_true", help="print every timing as it happens")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.score_size, args.repeats = 2, (128, 160), (64, 80), 1
        args.backbone_size = (64, 64)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    K = args.classes

    # ---- ResNet50: forward, closed form, general path, pytorch-grad-cam ----------------------
    t50 = {} if args.scorecam_only or args.backbones_only else _resnet50_times(args, device, K)

    # ---- other backbones: ConvNeXt-T, ViT-B/16 -----------------------------------------------
    tbb, closed_bb = {}, {}
    for arch in [] if args.scorecam_only else args.backbones:
        t, closed_bb[arch] = _backbone_times(arch, args, device, K)
        tbb.update(t)

    # ---- ResNet18: Score-CAM -----------------------------------------------------------------
    if args.backbones_only:
        return _report(args, device, K, t50, tbb, {}, closed_bb)
    r18 = torchvision.models.resnet18(num_classes=K).eval().to(device)
    xs = torch.rand(args.score_batch, 3, *args.score_size, device=device)
    score = gc.ScoreCAM(r18, [r18.layer4], batch_size=args.score_chunk)
    fns = {"scorecam_one_class": lambda: score(xs, classes=[0]), "scorecam_all_classes": lambda: score(xs)}
    if not args.skip_pgc:
        fns["pgc_scorecam_one_class"] = _pgc_scorecam_one(r18, r18.layer4, xs, 0)
    print(
        f"ResNet18 {K} classes, ScoreCAM on layer4 (512 channels), batch {args.score_batch},"
        f" {args.score_size[0]}x{args.score_size[1]}, device {device}, "
        f"threads {torch.get_num_threads()}",
        flush=True,
    )
    t18 = _timeit(fns, args.repeats, device, args.progress)
    return _report(args, device, K, t50, tbb, t18, closed_bb)


def _report(args, device, K, t50, tbb, t18, closed_bb) -> int:
    """Table, ratios against the targets, one JSON line."""
    fps = {k: args.batch / v for k, v in t50.items()}
    fps.update({k: args.backbone_batch / v for k, v in tbb.items()})
    fps.update({k: args.score_batch / v for k, v in t18.items()})
    print(f"\n{'measurement':40s} {'frames/s':>10s} {'s/call':>9s}")
    for k, v in {**t50, **tbb, **t18}.items():
        print(f"{k:40s} {fps[k]:10.3f} {v:9.3f}")

    ratios = {}
    targets = dict(TARGETS)
    for arch, closed in closed_bb.items():
        ratios[f"{arch}_gradcam_vs_forward"] = fps[f"{arch}_gradcam_all_classes"] / fps[f"{arch}_forward"]
        if closed:
            targets[f"{arch}_gradcam_vs_forward"] = (">=", 0.8)
        if f"{arch}_pgc_gradcam_all_classes" in fps:
            ratios[f"{arch}_gcfeat_vs_pgc_all_classes"] = (
                fps[f"{arch}_gradcam_all_classes"] / fps[f"{arch}_pgc_gradcam_all_classes"]
            )
            if not closed:
                targets[f"{arch}_gcfeat_vs_pgc_all_classes"] = (">=", 8.0)
    if t18:
        ratios["scorecam_all_vs_one_time"] = t18["scorecam_all_classes"] / t18["scorecam_one_class"]
    if t50:
        ratios["closed_form_vs_forward"] = fps["gradcam_closed_form"] / fps["forward"]
    if not args.skip_pgc:
        if t50:
            ratios["general_vs_pgc_all_classes"] = fps["gradcam_general"] / fps["pgc_gradcam_all_classes"]
    if not args.skip_pgc and t18:
        ratios["scorecam_one_vs_pgc_one"] = fps["scorecam_one_class"] / fps["pgc_scorecam_one_class"]
        ratios["scorecam_all_vs_pgc_one"] = fps["scorecam_all_classes"] / fps["pgc_scorecam_one_class"]
    met = {}
    print(f"\n{'ratio':32s} {'value':>8s}  target")
    for k, v in ratios.items():
        op, target = targets.get(k, (None, None))
        ok = None if op is None else (v >= target if op == ">=" else v <= target)
        met[k] = ok
        tgt = "" if op is None else f"{op} {target}  {'met' if ok else 'NOT met'}"
        print(f"{k:32s} {v:8.2f}  {tgt}")
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "size": list(args.size),
                "classes": K,
                "score_batch": args.score_batch,
                "score_size": list(args.score_size),
                "repeats": args.repeats,
                "backbone_batch": args.backbone_batch,
                "backbone_size": list(args.backbone_size),
                "fps": {k: round(v, 4) for k, v in fps.items()},
                "ratios": {k: round(v, 3) for k, v in ratios.items()},
                "targets_met": met,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
