"""The threshold study with and without the field's metrics: does scoring cost the sweep?

Today's study (:class:`gcfeat.boxes.evaluate.ThresholdSweep`: boxes at every T, mean best IoU,
hit rate, precision / recall, pointing game) against :class:`gcfeat.metrics.study.
LocalizationStudy`, the same sweep plus COCO AP at every T, MaxBoxAccV2 (GT-known, tau grid =
the T grid), PxAP, the energy-based pointing game and the pointing game with a 15 px
tolerance. Same maps, same process, variants interleaved, median of ``--repeats`` rounds after
one warm-up. Target: the full study within 2x of today's.

Maps: 300 frames x 11 classes at 128x160, CAM-like (random 4x5 cells upsampled bilinearly, a
bump on every GT box, min-max), 1-3 instrument boxes per frame plus the whole-frame tissue box,
probabilities high for the GT classes; fed in batches of ``--batch-size`` as ``tune`` does.

    .venv/bin/python benchmarks/threshold_study_speed.py [--frames 300 --thresholds 0.05:0.95:0.05]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from gcfeat.boxes.evaluate import ThresholdSweep, parse_thresholds
from gcfeat.metrics.study import LocalizationStudy

TISSUE = 10


def synthetic_split(frames: int, K: int, H: int, W: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(frames * K, 1, 4, 5, generator=g) ** 2
    heat = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False).reshape(frames, K, H, W)
    yy, xx = torch.arange(H)[:, None].float(), torch.arange(W)[None].float()
    boxes, labels = [], []
    probs = torch.rand(frames, K, generator=g) * 0.6
    for f in range(frames):
        n = int(torch.randint(1, 4, (1,), generator=g))
        cls = torch.randperm(K - 1, generator=g)[:n]
        xy = torch.stack(
            [torch.randint(0, W - 40, (n,), generator=g), torch.randint(0, H - 30, (n,), generator=g)], 1
        )
        wh = torch.stack(
            [torch.randint(12, 40, (n,), generator=g), torch.randint(8, 30, (n,), generator=g)], 1
        )
        b = torch.cat([xy, xy + wh], 1).float()
        for (x1, y1, x2, y2), c in zip(b.tolist(), cls.tolist()):
            cx, cy, sx, sy = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            heat[f, c] += 1.5 * torch.exp(-(((xx - cx) / sx) ** 2) - ((yy - cy) / sy) ** 2)
        boxes.append(torch.cat([b, torch.tensor([[0.0, 0.0, W, H]])]))
        labels.append(torch.cat([cls, torch.tensor([TISSUE])]))
        probs[f, cls] = 0.9
        probs[f, TISSUE] = 0.99
    flat = heat.flatten(2)
    heat = (
        (flat - flat.amin(-1, keepdim=True)) / (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True))
    ).reshape(heat.shape)
    return heat, probs, boxes, labels


def run(kind: str, thresholds, data, batch: int) -> float:
    heat, probs, boxes, labels = data
    K = heat.shape[1]
    kw = dict(class_modes={TISSUE: "union"}, aggregate={"all_instruments": list(range(K - 1))})
    t0 = time.perf_counter()
    study = (ThresholdSweep if kind == "today" else LocalizationStudy)(thresholds, range(K), **kw)
    for s in range(0, len(heat), batch):
        study.update(heat[s : s + batch], probs[s : s + batch], boxes[s : s + batch], labels[s : s + batch])
    df = study.result()
    if kind != "today":
        study.report()
    assert len(df)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--size", default="128x160", help="HxW (default 128x160)")
    p.add_argument("--thresholds", default="0.05:0.95:0.05", help="the T grid (default 19 values)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    H, W = (int(v) for v in a.size.split("x"))
    T = parse_thresholds(a.thresholds)
    data = synthetic_split(a.frames, a.classes, H, W)
    times = {"today": [], "full": []}
    for r in range(a.repeats + 1):  # round 0 warms up
        for kind in times:
            t = run(kind, T, data, a.batch_size)
            if r:
                times[kind].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["full"] / med["today"]
    print(
        f"{a.frames} frames x {a.classes} classes at {H}x{W}, {len(T)} thresholds, batch {a.batch_size}, "
        f"{a.threads} thread(s), median of {a.repeats}"
    )
    print(f"  today's study (ThresholdSweep)                      {med['today']:7.2f} s")
    print(f"  + COCO AP per T, MaxBoxAccV2, PxAP, pointing games  {med['full']:7.2f} s")
    print(f"  ratio {ratio:.2f}x (target <= 2x)")
    print(
        json.dumps(
            {
                "benchmark": "threshold_study_speed",
                "frames": a.frames,
                "thresholds": len(T),
                "today_s": round(med["today"], 3),
                "full_s": round(med["full"], 3),
                "ratio": round(ratio, 3),
                "threads": a.threads,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
