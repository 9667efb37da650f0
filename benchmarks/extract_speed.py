"""Frames/s of the feature dump against the bare forward and the original per-frame style.

Same synthetic frames for every variant (ResNet50, 11 classes, 256x320, random weights in eval
mode; a random classifier predicts many classes, so this is a busy case for boxes and M1):

* ``bare``: ``model(x)`` on preloaded batches (no decode, no CAM, nothing written), the model
  as given; ``bare_folded``: the same for the inference copy the pipeline runs (batch norms
  folded, channels-last when asked), to separate the pipeline's overhead from that gain;
* ``m2m3``: the whole ``gcfeat.extract`` pipeline with M2 + M3 (decode in DataLoader workers,
  one CAM pass, boxes, features, HDF5 write);
* ``m1m2m3``: the same with M1 (crops re-run through the backbone);
* ``--boxes gt``: M1 / M2 on the frames' annotated boxes (the synthetic ground truth: the box
  count and sizes of a trained model's output, ~2.5 per frame with tissue) instead of the
  random model's CAM boxes;
* ``original``: per frame, per predicted class forward + backward, numpy Grad-CAM, cv2
  contours, per box a crop resized to 224x224 and re-forwarded (the original's M1) and the
  M2 region from three extra backbone runs; timed on ``--original-frames`` frames.

Usage::

    python benchmarks/extract_speed.py --frames 64 --batch-size 16 [--boxes gt] [--device cuda
        --amp bf16 --channels-last] [--no-fold-bn]

Prints one line per variant and round, the ratios of the best rounds, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gcfeat.data import (  # noqa: E402, F401
    SURGICAL_CLASSES,
    SURGICAL_MEAN,
    SURGICAL_STD,
    build_dataset,
    make_loader,
    write_miccai18,
)
from gcfeat.extract.crop import backbone_to  # noqa: E402
from gcfeat.extract.pipeline import extract_dataset  # noqa: E402
from gcfeat.models import build_classifier, load_checkpoint  # noqa: E402
from gcfeat.models.checkpoint import CheckpointInfo  # noqa: E402
from gcfeat.models.fusion import fuse_conv_bn  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward(model, images, batch_size, device, amp, channels_last):
    ctx = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if amp == "bf16"
        else torch.autocast(device.type, enabled=False)
    )
    with torch.inference_mode(), ctx:
        x = images[:batch_size].to(device)
        model(x)  # warm-up
        sync(device)
        t = time.perf_counter()
        for s in range(0, len(images), batch_size):
            x = images[s : s + batch_size].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
        sync(device)
    return len(images) / (time.perf_counter() - t)


def original_style(model, images, device, threshold=0.3, pred_thr=0.5):
    """Per frame: forward, per predicted class backward, numpy CAM, cv2 boxes, per box crop
    + resize + re-forward (M1) and three extra backbone passes for M2's maps."""
    feats = {}
    model.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    t = time.perf_counter()
    mean = np.array(SURGICAL_MEAN, np.float32)[:, None, None]
    std = np.array(SURGICAL_STD, np.float32)[:, None, None]
    for img in images:
        x = img[None].to(device).requires_grad_(False)
        logits = model(x)
        act = feats["a"]
        probs = torch.sigmoid(logits)[0].detach().cpu().numpy()
        raw = img.numpy() * std + mean  # the original cropped the raw frame
        for k in np.flatnonzero(probs > pred_thr):
            model.zero_grad()
            grad = torch.autograd.grad(logits[0, k], act, retain_graph=True)[0]
            a = act[0].detach().cpu().numpy()
            w = grad[0].cpu().numpy().mean(axis=(1, 2))
            cam = np.maximum((w[:, None, None] * a).sum(0), 0)
            cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
            cam = cv2.resize(cam, (img.shape[2], img.shape[1]))
            cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
            mask = (cam > threshold).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                bx, by, bw, bh = cv2.boundingRect(c)
                if bw * bh <= 25:
                    continue
                crop = raw[:, by : by + bh, bx : bx + bw].transpose(1, 2, 0)
                crop = cv2.resize(crop, (224, 224)).transpose(2, 0, 1)
                with torch.no_grad():
                    f = backbone_to(model, torch.from_numpy(np.ascontiguousarray(crop))[None].to(device))
                    f.mean((2, 3)).reshape(512, -1).mean(1).cpu().numpy()  # M1
                    for layer in ("layer2", "layer3", "layer4"):  # M2 maps
                        m = backbone_to(model, x, layer)
                    m[..., by // 32 : (by + bh) // 32 + 1, bx // 32 : (bx + bw) // 32 + 1].mean(
                        (2, 3)
                    ).cpu().numpy()
    sync(device)
    return len(images) / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=64, help="synthetic frames (default 64)")
    p.add_argument(
        "--original-frames", type=int, default=3, help="frames timed in the original style (it is slow)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=("bf16",), default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--size", default="256x320")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of all variants, interleaved; the best of each is reported",
    )
    p.add_argument(
        "--boxes",
        choices=("cam", "gt"),
        default="cam",
        help="M1 / M2 boxes: the CAM's, or the annotated ones (realistic counts)",
    )
    p.add_argument(
        "--no-fold-bn", action="store_true", help="the pipeline runs the model as given (no folded copy)"
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a trained classifier instead of a random ResNet50 (its input size is "
        "used): a trained model predicts few classes per frame, as in real use, "
        "while random weights predict ~10, which inflates M1's crop count",
    )
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.checkpoint:
        model, info = load_checkpoint(args.checkpoint, map_location=device)
        model = model.eval()
        size = tuple(info.input_size)
    else:
        model = build_classifier("resnet50", 11).eval().to(device)
        info = CheckpointInfo(
            path="",
            form="gcfeat",
            arch="resnet50",
            num_classes=11,
            classes=SURGICAL_CLASSES,
            dropout=0.0,
            input_size=size,
            mean=SURGICAL_MEAN,
            std=SURGICAL_STD,
        )
    # 512-d as the original; ResNet18/34's layer2 has 128 channels: (32, 4, 4) is also 512-d
    layout = (512, 1, 1) if info.arch == "resnet50" else (32, 4, 4)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        per = max(1, args.frames // 2)
        write_miccai18(
            os.path.join(tmp, "data"), num_videos=2, num_frames=per, size=size, seed=0, progress=False
        )
        ds = build_dataset(
            os.path.join(tmp, "data"), "miccai18", split="all", size=size, with_gt=args.boxes == "gt"
        )
        images = torch.stack([ds[i]["image"] for i in range(len(ds))])
        res = {
            "device": str(device),
            "frames": len(ds),
            "amp": args.amp,
            "arch": info.arch,
            "size": list(size),
            "checkpoint": args.checkpoint,
            "channels_last": args.channels_last,
            "threads": torch.get_num_threads(),
            "boxes": args.boxes,
            "fold_bn": not args.no_fold_bn,
        }
        # variants interleaved, best of --repeats each: on a shared machine the load drifts,
        # and a ratio of two runs minutes apart measures the drift as much as the code
        folded, _ = fuse_conv_bn(model, torch.channels_last if args.channels_last else None)
        for rep in range(args.repeats):
            fps = bare_forward(model, images, args.batch_size, device, args.amp, args.channels_last)
            res["bare_fps"] = max(res.get("bare_fps", 0.0), fps)
            print(f"bare forward          {fps:8.2f} frames/s", flush=True)
            fps = bare_forward(folded, images, args.batch_size, device, args.amp, args.channels_last)
            res["bare_folded_fps"] = max(res.get("bare_folded_fps", 0.0), fps)
            print(f"bare forward, folded  {fps:8.2f} frames/s", flush=True)
            for name, methods in (("m2m3", ("m2", "m3")), ("m1m2m3", ("m1", "m2", "m3"))):
                out = os.path.join(tmp, f"{name}_{rep}.h5")
                t = time.perf_counter()
                stats = extract_dataset(
                    ds,
                    model,
                    info,
                    methods,
                    0.3,
                    out,
                    args.batch_size,
                    str(device),
                    num_workers=args.workers,
                    progress=False,
                    amp=args.amp,
                    channels_last=args.channels_last,
                    layout=layout,
                    boxes=args.boxes,
                    fold_bn=not args.no_fold_bn,
                )
                sync(device)
                fps = stats["frames"] / (time.perf_counter() - t)
                res[f"{name}_fps"] = max(res.get(f"{name}_fps", 0.0), fps)
                res[f"{name}_rows"] = stats["rows"]
                print(f"extract {name:<13} {fps:8.2f} frames/s  rows {stats['rows']}", flush=True)
        res["original_fps"] = original_style(model, images[: args.original_frames], device)
        print(f"original style        {res['original_fps']:8.3f} frames/s", flush=True)
    res["m2m3_vs_bare"] = res["m2m3_fps"] / res["bare_fps"]
    res["m1m2m3_vs_bare"] = res["m1m2m3_fps"] / res["bare_fps"]
    res["m2m3_vs_original"] = res["m2m3_fps"] / res["original_fps"]
    res["m2m3_vs_bare_folded"] = res["m2m3_fps"] / res["bare_folded_fps"]
    res["m1m2m3_vs_bare_folded"] = res["m1m2m3_fps"] / res["bare_folded_fps"]
    print(
        f"M2+M3 / bare forward     {res['m2m3_vs_bare']:.2f}x  (target >= 0.8); "
        f"{res['m2m3_vs_bare_folded']:.2f}x of the folded copy's forward"
    )
    print(
        f"M1+M2+M3 / bare forward  {res['m1m2m3_vs_bare']:.2f}x  (target >= 0.4); "
        f"{res['m1m2m3_vs_bare_folded']:.2f}x of the folded copy's forward"
    )
    print(f"M2+M3 / original style   {res['m2m3_vs_original']:.1f}x  (target >= 30)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
