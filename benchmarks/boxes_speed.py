"""Heatmaps -> boxes: gcfeat's batched `heatmap_to_boxes` vs the original per-map OpenCV loop.

The original (per frame, per class): ``cv2.threshold`` -> ``cv2.findContours`` (external) ->
``cv2.boundingRect`` per contour -> drop ``w * h <= 25`` -> mean heat inside the box; tissue
boxes merged into one. Both run on the same CAM-like heatmaps (bilinear upsampling of random
8x10 maps, min-max per map), T = 0.3, in the same process; best of ``--repeats``.

    .venv/bin/python benchmarks/boxes_speed.py [--frames 64 --classes 11 --size 256x320]

Two cases: every map (B x K), and only predicted classes (``probs > 0.5``, about a third of the
maps, as the pipeline runs). Prints times, ratios and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from gcfeat.boxes import heatmap_to_boxes

TISSUE = 10


def cam_like(B: int, K: int, H: int, W: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B * K, 1, 8, 10, generator=g) ** 2  # a few bright cells, like a CAM
    h = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False).reshape(B, K, H, W)
    lo, hi = h.amin((2, 3), keepdim=True), h.amax((2, 3), keepdim=True)
    return ((h - lo) / (hi - lo)).to(device)


def original_boxes(heat: torch.Tensor, T: float, probs: torch.Tensor | None, min_area: int = 25):
    """The original style: a Python loop over frames and classes, OpenCV per map."""
    out = []
    B, K = heat.shape[:2]
    for b in range(B):
        for k in range(K):
            if probs is not None and not probs[b, k] > 0.5:
                continue
            hm = heat[b, k].cpu().numpy()
            _, th = cv2.threshold(hm, T, 1, cv2.THRESH_BINARY)
            contours, _ = cv2.findContours(th.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            boxes = []
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                if w * h <= min_area:
                    continue
                boxes.append([x, y, x + w, y + h])
            if k == TISSUE and boxes:
                a = np.array(boxes)
                boxes = [[a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max()]]
            for x1, y1, x2, y2 in boxes:
                out.append((b, k, x1, y1, x2, y2, float(hm[y1:y2, x1:x2].mean())))
    return out


def best_of(fn, repeats: int, sync=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--size", default="256x320", help="H x W")
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--device", default="cpu", help="where the heatmaps live (cuda: the original copies each map)"
    )
    args = p.parse_args(argv)
    H, W = (int(v) for v in args.size.lower().split("x"))
    B, K, T = args.frames, args.classes, args.threshold
    heat = cam_like(B, K, H, W, device=args.device)
    probs = torch.rand(B, K, generator=torch.Generator().manual_seed(1)).to(args.device) ** 0.5 * 0.8
    probs[:, TISSUE] = 1.0
    sync = torch.cuda.synchronize if heat.is_cuda else None
    modes = {TISSUE: "union"} if K > TISSUE else None

    results = {
        "frames": B,
        "classes": K,
        "size": [H, W],
        "threshold": T,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    print(f"heatmaps {B} x {K} x {H} x {W} on {args.device}, T={T}, best of {args.repeats}")
    for case, pr in (("all_maps", None), ("predicted_only", probs)):
        n_maps = B * K if pr is None else int((pr > 0.5).sum())
        ref = sorted(original_boxes(heat, T, pr))  # gcfeat sorts by frame, class, x1, y1, ...
        ours = heatmap_to_boxes(heat, T, class_modes=modes, probs=pr)
        t_orig = best_of(lambda: original_boxes(heat, T, pr), args.repeats, sync)
        t_one = best_of(
            lambda: heatmap_to_boxes(heat, T, class_modes=modes, probs=pr, workers=1), args.repeats, sync
        )
        t_par = best_of(lambda: heatmap_to_boxes(heat, T, class_modes=modes, probs=pr), args.repeats, sync)
        # RETR_EXTERNAL misses blobs inside another blob's hole; on these maps there are none
        same = len(ref) == len(ours) and all(
            (r[0], r[1], *r[2:6]) == (f, k, *map(int, bx)) and abs(r[6] - s) < 1e-4
            for r, f, k, bx, s in zip(
                ref, ours.frame.tolist(), ours.label.tolist(), ours.xyxy.tolist(), ours.score.tolist()
            )
        )
        print(f"[{case}] {n_maps} maps, {len(ours)} boxes (original {len(ref)}, identical: {same})")
        print(f"  original per-map loop      {t_orig * 1e3:8.1f} ms  ({n_maps / t_orig:8.0f} maps/s)")
        print(
            f"  gcfeat, 1 thread           {t_one * 1e3:8.1f} ms  ({n_maps / t_one:8.0f} maps/s)  "
            f"x{t_orig / t_one:.2f}"
        )
        print(
            f"  gcfeat, default threads    {t_par * 1e3:8.1f} ms  ({n_maps / t_par:8.0f} maps/s)  "
            f"x{t_orig / t_par:.2f}"
        )
        results[case] = {
            "maps": n_maps,
            "boxes": len(ours),
            "boxes_original": len(ref),
            "identical_boxes": bool(same),
            "original_ms": round(t_orig * 1e3, 2),
            "gcfeat_1thread_ms": round(t_one * 1e3, 2),
            "gcfeat_ms": round(t_par * 1e3, 2),
            "speedup_1thread": round(t_orig / t_one, 3),
            "speedup": round(t_orig / t_par, 3),
        }
    print(json.dumps({"benchmark": "boxes_speed", **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
