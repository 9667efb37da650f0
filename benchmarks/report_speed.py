"""Speed of the HTML report (``gcfeat.report.build_run_report``) against its floor.

The floor (``baseline``) is what any gallery of those frames must do: decode the sampled frames
and run the checkpoint's forward over them (batches of 32, ``torch.no_grad``). ``report`` is the
whole page: the CAM pass (same forward, Grad-CAM in closed form), boxes, one JPEG per frame and
per shown class, the tables and the feature-file summary. Interleaved rounds, median, ratio
report / baseline; the last line is one JSON object.

    .venv/bin/python benchmarks/report_speed.py --run runs/demo --threads 1
    .venv/bin/python benchmarks/report_speed.py --synthetic 300     # no run needed: a random
                                                                    # ResNet18 on 300 frames
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, collate
from gcfeat.models import build_classifier, load_checkpoint, save_checkpoint
from gcfeat.report import build_run_report
from gcfeat.report.gallery import sample_indices
from gcfeat.tasks import get_task


def synthetic_run(root: Path, frames: int) -> Path:
    """A run directory with ``frames`` validation frames (two videos), a random ResNet18 and
    ``summary.json``: enough for the gallery, the costly part."""
    from gcfeat.data.synthetic import write_miccai18

    per = (frames + 1) // 2
    write_miccai18(
        root / "data", num_videos=5, num_frames=per, size=(128, 160), seed=0, progress=False
    )  # seq_1 and seq_5 are validation
    torch.manual_seed(0)
    save_checkpoint(
        root / "ck.pt",
        build_classifier("resnet18", num_classes=11),
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=(128, 160),
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    (root / "summary.json").write_text(
        json.dumps({"data": str(root / "data"), "checkpoint": str(root / "ck.pt"), "best_threshold": 0.5})
    )
    return root


def baseline(run: Path, max_frames: int, seed: int) -> int:
    """Decode the report's frames and run the model's forward over them."""
    s = json.loads((run / "summary.json").read_text())
    model, info = load_checkpoint(s["checkpoint"])
    ds = get_task("surgical").build_dataset(
        s["data"], "val", size=info.input_size, mean=info.mean, std=info.std
    )
    idx = sample_indices(len(ds), max_frames, seed)
    with torch.no_grad():
        for b in DataLoader(Subset(ds, idx), batch_size=32, collate_fn=collate):
            model.eval()(b["image"])
    return len(idx)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="build a run of N validation frames with a random model instead",
    )
    p.add_argument("--max-frames", type=int, default=300, help="gallery frames (default 300)")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds after a warm-up (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="gcfeat-report-bench-"))
    run = synthetic_run(tmp / "run", a.synthetic) if a.synthetic else Path(a.run)
    if not (run / "summary.json").is_file():
        print(f"error: {run}: no summary.json (run scripts/demo, or pass --synthetic 300)", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"baseline": [], "report": []}
    frames = 0
    for r in range(a.repeats + 1):
        for name in times:
            t0 = time.perf_counter()
            if name == "baseline":
                frames = baseline(run, a.max_frames, 0)
            else:
                res = build_run_report(run, out=tmp / "report.html", max_frames=a.max_frames, progress=False)
            if r:  # round 0 warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{frames} frames, {res.images} image files, torch threads {torch.get_num_threads()}")
    for k, v in med.items():
        print(f"  {k:<9} {v:6.2f} s  {frames / v:7.1f} frames/s")
    ratio = med["report"] / med["baseline"]
    print(f"  report / baseline time: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "frames": frames,
                "images": res.images,
                "baseline_s": round(med["baseline"], 3),
                "report_s": round(med["report"], 3),
                "ratio": round(ratio, 3),
                "threads": torch.get_num_threads(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
