"""The main job on the embedded default: `scripts/demo` (or `python -m gcfeat.demo`, CLI
:mod:`gcfeat.cli.demo`); :func:`demo` runs the demo of any task.

Stages, each printed with its time:

1. **data**     synthetic surgical scenes written in the MICCAI 2018 layout (`<out>/data`);
2. **train**    multi-label classifier from scratch, validation mAP + per-class AP;
3. **tune**     the threshold study on the validation split (box IoU vs T, best T);
4. **transfer** the protocol (:mod:`gcfeat.workflows.tune_transfer`): T calibrated on val and
   scored on the held-out test videos, Grad-CAM layer4 and the fused layer2..4 maps beside the
   baselines (Otsu, 20 % of max, random), predicted classes and GT-known; the per-class T of
   the maps chosen on val go to ``<out>/tune_transfer/thresholds.json``;
5. **bbox**     one validation frame: heatmap + predicted and ground-truth boxes (PNG);
6. **extract**  M1 / M2 / M3 features of the validation split into one HDF5 file, boxes at the
   calibrated per-class T from the maps chosen on val (``box_maps``);
7. **export**   the captioning and interaction exports (:mod:`gcfeat.io.exports`);
8. **summary**  `<out>/report.md` (the figures in markdown) and `<out>/summary.json`;
9. **report**   `<out>/report.html` (:mod:`gcfeat.report`: settings, figures, a gallery of the
   300 validation frames with heatmaps and boxes, the feature file), last so that a report
   that fails leaves the run complete.

``summary.json`` keys added by the transfer stage: ``test_frames``; ``transfer`` =
``{"calibrate_split", "score_split", "chosen" (the source chosen on val, e.g.
"gradcam/fused"), "box_maps" ("cam" | "fused", what extract used), "thresholds_file",
"per_class_thresholds" ({class: T}), "csv", "json", "figure", "rows"}``; ``rows`` is a list of
``{"source", "mode" (pred | gt_known), "protocol" (transfer | transfer_per_class | oracle),
"threshold" (null: per class), "mean_iou", "hit_rate", "ap", "ap50", "ap75",
"max_box_acc_v2", "pointing_game", "pointing_game_tol", "energy_pointing_game"}`` on the test
split (instruments). ``--test-videos 0`` skips the stage (extract then uses the val best T).

The defaults are sized to finish in about 6 minutes on 2 CPU cores: 128x160 frames (layer4
is then 4x5 cells, so boxes are coarser than at the original 256x320), 10 videos x 150 frames
(1,200 train / 300 val), ResNet18 for 5 epochs of AdamW with a one-cycle schedule. ResNet50, the
product's default classifier, needs about 4,800 image passes (4 epochs) to pass 0.9 mAP here and
trains about 3x slower per image on a CPU: ``--arch resnet50 --epochs 4 --batch-size 16 --lr 1e-3``
takes about 15 minutes on 2 cores. ``--size 256x320`` is the original resolution (4x the pixels).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from gcfeat import config
from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, TISSUE, build_dataset
from gcfeat.data.synthetic import write_miccai18
from gcfeat.extract.pipeline import extract_dataset
from gcfeat.io import FeatureFile
from gcfeat.io.exports import export_captioning, export_interaction
from gcfeat.io.paths import writable_dir
from gcfeat.models import ARCHS, build_classifier_with_spec, load_checkpoint
from gcfeat.tasks import Task, get_task
from gcfeat.training import fit
from gcfeat.workflows.common import html_report_stage, stage
from gcfeat.workflows.inspect import format_frame_boxes, inspect_frame
from gcfeat.workflows.task_demo import run_task_demo
from gcfeat.workflows.tune import format_summary, run_tuning
from gcfeat.workflows.tune_transfer import FUSED, format_transfer, run_transfer

DEFAULT_OUT = "runs/demo"
DEFAULT_CHECKPOINT_DIR = "checkpoints"


def _dataset_matches(
    root: Path, videos: int, frames: int, size: tuple[int, int], seed: int, test_videos: int = 0
) -> bool:
    meta = root / "dataset.json"
    if not meta.exists():
        return False
    try:
        d = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return (
        d.get("layout") == "miccai18"
        and d.get("seed") == seed
        and (root / "seq_1" / "xml").is_dir()  # older data: no scene graphs
        and list(d.get("size", [])) == list(size)
        and len(d.get("videos", [])) == videos + test_videos
        and len(d.get("splits", {}).get("test", [])) == test_videos
        and d.get("frames_per_video") == frames
    )


def run_demo(
    out: str | Path = DEFAULT_OUT,
    *,
    videos: int = 10,
    frames: int = 150,
    size: Sequence[int] = (128, 160),
    arch: str = "resnet18",
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    checkpoint_dir: str | Path = DEFAULT_CHECKPOINT_DIR,
    methods: Sequence[str] = ("m1", "m2", "m3"),
    thresholds: str = config.THRESHOLD_SWEEP,
    device: str = "cpu",
    skip_train: bool = False,
    workers: int = 0,
    progress: bool = True,
    test_videos: int = 2,
    transfer_layers: Sequence[str] = ("layer4", FUSED),
) -> dict[str, Any]:
    """Run every stage; returns the summary that is also written to ``<out>/summary.json``.
    ``test_videos`` held-out videos (after the ``videos``, which they leave unchanged) feed the
    transfer stage; 0 skips it. ``transfer_layers``: its layer sweep (Grad-CAM)."""
    out = writable_dir(out)  # a file or a read-only folder: an OutputError now
    size = (int(size[0]), int(size[1]))
    run = _SurgicalDemo(
        out,
        videos,
        frames,
        size,
        arch,
        epochs,
        batch_size,
        lr,
        seed,
        Path(checkpoint_dir),
        list(methods),
        thresholds,
        device,
        skip_train,
        workers,
        progress,
        test_videos,
        list(transfer_layers),
    )
    t_all = time.perf_counter()
    torch.manual_seed(seed)
    for key, title, step in (
        ("data", "1/9 data: synthetic surgical scenes, MICCAI 2018 layout", run.data),
        ("train", f"2/9 train: {arch} multi-label classifier, {epochs} epochs", run.train),
        ("tune", "3/9 tune: box quality against ground truth as T varies (val split)", run.tune),
        ("transfer", "4/9 transfer: T calibrated on val, scored on test (layers, baselines)", run.transfer),
        ("bbox", "5/9 bbox: one frame, one class (heatmap + boxes figure)", run.bbox),
        ("extract", f"6/9 extract: {', '.join(methods)} features of the val split -> HDF5", run.extract),
        ("export", "7/9 export: captioning (M2, tissue first) and interaction inputs", run.export),
    ):
        done = stage(title)
        step()
        run.summary["seconds"][key] = done()
    done = stage("8/9 summary: report.md + summary.json")
    run.summary["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    report = run.report()
    run.summary["seconds"]["report"] = done()
    error = html_report_stage(
        "9/9 report: report.html (settings, figures, gallery, features)",
        out,
        run.summary,
        started=t_all,
        progress=progress,
    )
    _print_where(run.summary, report)
    if error is not None:
        raise error
    return run.summary


@dataclass
class _SurgicalDemo:
    """The settings and the state the stages of :func:`run_demo` hand on, one method each."""

    out: Path
    videos: int
    frames: int
    size: tuple[int, int]
    arch: str
    epochs: int
    batch_size: int
    lr: float
    seed: int
    ckpt_dir: Path
    methods: list[str]
    thresholds: str
    device: str
    skip_train: bool
    workers: int
    progress: bool
    test_videos: int = 0
    transfer_layers: list[str] = field(default_factory=lambda: ["layer4", FUSED])
    summary: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # datasets, model, tuning, threshold

    def __post_init__(self):
        self.data_dir = self.out / "data"
        self.name = f"demo_{self.arch}"
        self.checkpoint = self.ckpt_dir / f"{self.name}_best.pt"
        self.summary.update(
            {
                "out": str(self.out),
                "data": str(self.data_dir),
                "checkpoint": str(self.checkpoint),
                "size": list(self.size),
                "arch": self.arch,
                "epochs": self.epochs,
                "seed": self.seed,
                "seconds": {},
            }
        )

    def data(self) -> None:
        data, size = self.data_dir, self.size
        if _dataset_matches(data, self.videos, self.frames, size, self.seed, self.test_videos):
            print(f"reusing {data} (same videos, frames, size and seed)")
        else:
            if data.exists():  # the demo's own folder: stale sequences of another run would be loaded
                import shutil

                print(f"{data} holds another configuration: rewriting it")
                shutil.rmtree(data)
            write_miccai18(
                data,
                num_videos=self.videos,
                num_frames=self.frames,
                size=size,
                seed=self.seed,
                progress=self.progress,
                test_videos=self.test_videos,
            )
        norm = dict(mean=SURGICAL_MEAN, std=SURGICAL_STD)
        train_set = build_dataset(data, layout="miccai18", split="train", size=size, **norm)
        val_set = build_dataset(data, layout="miccai18", split="val", size=size, **norm)
        # map-style datasets (Miccai18Dataset) have __len__; torch's Dataset stub does not declare it
        n_train, n_val = len(cast(Sized, train_set)), len(cast(Sized, val_set))
        n_test = (
            len(cast(Sized, build_dataset(data, layout="miccai18", split="test", size=size, **norm)))
            if self.test_videos
            else 0
        )
        print(
            f"{data}: {n_train} train frames, {n_val} val frames, {n_test} test frames at {size[0]}x{size[1]}"
        )
        self.summary.update(train_frames=n_train, val_frames=n_val, test_frames=n_test)
        self.state.update(train_set=train_set, val_set=val_set)

    def train(self) -> None:
        s, checkpoint = self.summary, self.checkpoint
        if self.skip_train and checkpoint.exists():
            print(f"--skip-train: reusing {checkpoint}")
        else:
            model, spec = build_classifier_with_spec(self.arch, num_classes=len(SURGICAL_CLASSES))
            fit(
                model,
                self.state["train_set"],
                self.state["val_set"],
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                optimizer="adamw",
                schedule="onecycle",
                weight_decay=1e-4,
                num_workers=self.workers,
                device=self.device,
                seed=self.seed,
                out_dir=self.ckpt_dir,
                name=self.name,
                classes=list(SURGICAL_CLASSES),
                arch=self.arch,
                input_size=self.size,
                mean=SURGICAL_MEAN,
                std=SURGICAL_STD,
                augment_flip=True,
                meta={"data": str(self.data_dir), "demo": True},
                log_csv=self.out / "train_log.csv",
                progress=self.progress,
                spec=spec,
            )
            s["train_log"] = str(self.out / "train_log.csv")
        model, info = load_checkpoint(checkpoint, map_location=self.device)
        model.eval()
        meta = dict(info.meta or {})
        s["val_mAP"] = meta.get("best_mAP")
        s["best_epoch"] = meta.get("epoch")
        s["per_class_ap"] = meta.get("per_class_AP")
        print(f"best validation mAP {s['val_mAP']:.3f} (epoch {s['best_epoch']}), checkpoint {checkpoint}")
        self.state.update(model=model, info=info)

    def tune(self) -> None:
        s = self.summary
        tune_dir = self.out / "tune"
        tuning = run_tuning(
            self.data_dir,
            self.checkpoint,
            self.thresholds,
            split="val",
            out=tune_dir,
            device=self.device,
            progress=self.progress,
        )
        rec = tuning.recommendation
        print(format_summary(tuning.table, rec))
        overall = rec.get("overall", {})
        s["best_threshold"] = overall.get("threshold")
        s["best_mean_iou"] = overall.get("mean_iou")
        s["tune_dir"] = str(tune_dir)
        s["cam_layer"] = rec["settings"]["layer"]  # layer4, or a backbone's last level
        self.state.update(
            tuning=tuning,
            threshold=float(s["best_threshold"] if s["best_threshold"] is not None else config.BOX_THRESHOLD),
        )

    def transfer(self) -> None:
        """T calibrated on val, scored on the held-out test videos; the chosen maps' per-class
        T for the extract stage."""
        if not self.test_videos:
            print("--test-videos 0: no test split, no transfer study")
            return
        out = self.out / "tune_transfer"
        result = run_transfer(
            self.data_dir,
            self.checkpoint,
            self.thresholds,
            calibrate_split="val",
            score_split="test",
            layers=self.transfer_layers,
            out=out,
            device=self.device,
            progress=self.progress,
        )
        print(format_transfer(result))
        cal = result.calibrations[result.chosen]
        if cal.meta["box_maps"] not in ("cam", "fused"):  # extract cuts boxes from these two
            print(f"{result.chosen}: extract has no such box maps; it keeps the val best T")
            return
        rows = [
            {
                k: (None if isinstance(v, float) and v != v else v)
                for k, v in r.items()
                if k not in ("method", "layer")
            }
            for r in result.table.to_dict("records")
        ]
        self.summary["transfer"] = {
            "calibrate_split": "val",
            "score_split": "test",
            "chosen": result.chosen,
            "box_maps": cal.meta["box_maps"],
            "thresholds_file": result.files["thresholds"],
            "per_class_thresholds": dict(zip(cal.class_names, cal.per_class)),
            "csv": result.files["csv"],
            "json": result.files["json"],
            "figure": result.files["figure"],
            "rows": rows,
        }
        self.state.update(transfer=result)

    def bbox(self) -> None:
        val_set, threshold = self.state["val_set"], self.state["threshold"]
        labels = val_set.labels if hasattr(val_set, "labels") else None
        bidx, tclass = 0, 0
        if labels is not None:  # a frame with an instrument, so the figure shows something
            inst = np.asarray(labels)[:, :TISSUE]
            rows = np.nonzero(inst.sum(1) > 0)[0]
            if len(rows):
                bidx = int(rows[len(rows) // 2])
                tclass = int(np.nonzero(inst[bidx])[0][0])
        figure = self.out / f"bbox_{bidx}_{SURGICAL_CLASSES[tclass]}.png"
        # T as the figure's title prints it (%g), the value the bbox command would parse
        shown = inspect_frame(
            self.data_dir,
            self.checkpoint,
            bidx,
            tclass=str(tclass),
            threshold=float(f"{threshold:g}"),
            device=self.device,
            out=figure,
        )
        print(format_frame_boxes(shown))
        self.summary["bbox_figure"] = str(figure)

    def extract(self) -> None:
        features = self.out / "features.h5"
        if features.exists():
            features.unlink()  # the demo's settings may differ from the last run's
        # 512-d vectors as the original; ResNet18/34's layer2 has 128 channels, so (512, 1, 1)
        # cannot pool it: use the (32, 4, 4) layout there (also 512-d). Other backbones: the
        # layout their levels' channels allow (auto_layout; ConvNeXt-T 192/384/768: 32x4x4).
        layout = ((512, 1, 1) if self.arch == "resnet50" else (32, 4, 4)) if self.arch in ARCHS else "auto"
        transfer = self.summary.get("transfer")
        calibrated = (
            {}
            if transfer is None
            else dict(
                class_thresholds=list(transfer["per_class_thresholds"].values()),
                box_maps=transfer["box_maps"],
            )
        )
        if transfer is not None:
            print(
                f"boxes: per-class T calibrated on val ({transfer['thresholds_file']}), "
                f"{transfer['box_maps']} maps; M3 at T = {self.state['threshold']}"
            )
        stats = extract_dataset(
            self.state["val_set"],
            self.state["model"],
            self.state["info"],
            methods=list(self.methods),
            threshold=self.state["threshold"],
            **calibrated,
            layout=layout,
            out=str(features),
            batch_size=16,
            device=self.device,
            num_workers=self.workers,
            progress=self.progress,
            checkpoint_sha256=_sha256(self.checkpoint),
        )
        with FeatureFile(features) as ff:
            print(ff.summary())
            rows = {m: int(sum(len(v.rows(m)["label"]) for v in ff if m in v.methods)) for m in ff.methods}
        print(f"{stats.get('frames_per_s', 0):.1f} frames/s end to end (decode, CAM, boxes, features, write)")
        self.summary["features"] = str(features)
        self.summary["feature_rows"] = rows
        self.summary["extract_frames_per_s"] = stats.get("frames_per_s")

    def export(self) -> None:
        cap_dir, int_dir = self.out / "captioning", self.out / "interaction"
        methods, data = self.methods, self.summary["data"]
        cap = export_captioning(
            self.summary["features"],
            "m2" if "m2" in methods else methods[0],
            str(cap_dir),
            progress=self.progress,
            data=data,
        )
        print(cap.summary())
        inter = export_interaction(
            self.summary["features"], str(int_dir), methods, progress=self.progress, data=data
        )
        print(inter.summary())
        self.summary["captioning"] = str(cap_dir)
        self.summary["interaction"] = str(int_dir)
        self.summary["exports"] = {
            "captioning": {
                "frames": cap.frames,
                "train": cap.train,
                "val": cap.val,
                "skipped_no_caption": cap.skipped_no_caption,
            },
            "interaction": {
                "frames": inter.frames,
                "edges": inter.edges,
                "skipped_few_nodes": inter.skipped_few_nodes,
                "skipped_no_xml": inter.skipped_no_xml,
            },
        }

    def report(self) -> Path:
        tuning = self.state["tuning"]
        report = self.out / "report.md"
        report.write_text(
            _report_markdown(self.summary, tuning.table, tuning.recommendation, list(SURGICAL_CLASSES))
        )
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=_jsonable))
        return report


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def _report_markdown(s: dict, table, rec: dict, classes: list[str]) -> str:
    lines = [
        "# gcfeat demo report",
        "",
        f"- data: `{s['data']}` ({s['train_frames']} train / {s['val_frames']} val frames, "
        f"{s['size'][0]}x{s['size'][1]})",
        f"- model: {s['arch']}, {s['epochs']} epochs, checkpoint `{s['checkpoint']}`",
        f"- validation mAP (classes with a positive): **{s['val_mAP']:.3f}**",
        f"- best threshold T = **{s['best_threshold']}**, mean IoU (instruments, Grad-CAM "
        f"{s.get('cam_layer', 'layer4')}) = **{s['best_mean_iou']:.3f}**"
        if s.get("best_mean_iou") is not None
        else "- threshold study: no ground truth",
        f"- features: `{s['features']}` rows per method {s['feature_rows']}",
        f"- figure: `{s['bbox_figure']}`; threshold plots in `{s['tune_dir']}`",
        *(
            [
                f"- exports: captioning `{s['captioning']}` {s['exports']['captioning']}; "
                f"interaction `{s['interaction']}` {s['exports']['interaction']}"
            ]
            if s.get("exports")
            else []
        ),
        f"- total time {s['seconds']['total']} s",
        "- the browsable report, with a gallery of the frames (heatmaps, predicted and "
        "ground-truth boxes): `report.html` beside this file",
        "",
    ]
    ap = s.get("per_class_ap")
    if ap:
        lines += ["## Per-class AP (validation)", "", "| class | AP |", "|---|---|"]
        for c, v in zip(classes, ap):
            lines.append(f"| {c} | {'n/a' if v is None or v != v else f'{v:.3f}'} |")
        lines.append("")
    lines += _transfer_markdown(s)
    per_class = rec.get("per_class") or {}
    if per_class:
        lines += ["## Recommended threshold per class", "", "| class | T | mean IoU |", "|---|---|---|"]
        for c, r in per_class.items():
            miou = r.get("mean_iou")
            lines.append(f"| {c} | {r.get('threshold')} | {'n/a' if miou is None else f'{miou:.3f}'} |")
        lines.append("")
    return "\n".join(lines)


def _transfer_markdown(s: dict) -> list[str]:
    """The transfer table of the report: test figures, T calibrated on val."""
    tr = s.get("transfer")
    if not tr:
        return []
    lines = [
        f"## Boxes on the test videos, T calibrated on val (chosen: {tr['chosen']}, "
        f"extract used the {tr['box_maps']} maps)",
        "",
        "| maps | mode | protocol | T | mean IoU | hit rate | AP50 | mAP@[.5:.95] | MaxBoxAccV2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for r in tr["rows"]:
        T = "per class" if r["threshold"] is None else f"{r['threshold']:.2f}"
        lines.append(
            f"| {r['source']} | {r['mode']} | {r['protocol']} | {T} | {f(r['mean_iou'])} | "
            f"{f(r['hit_rate'])} | {f(r['ap50'])} | {f(r['ap'])} | {f(r['max_box_acc_v2'])} |"
        )
    return lines + [""]


def _print_where(s: dict, report: Path) -> None:
    print("\n=== where everything is ===")
    rows = [
        ("dataset", s["data"]),
        ("checkpoint", s["checkpoint"]),
        ("training log", s.get("train_log", "(reused checkpoint)")),
        ("threshold study", s["tune_dir"]),
        ("transfer study", (s.get("transfer") or {}).get("figure", "(no test split)")),
        ("bbox figure", s["bbox_figure"]),
        ("features (HDF5)", s["features"]),
        ("captioning export", s["captioning"]),
        ("interaction export", s["interaction"]),
        ("summary", f"{report}, {Path(s['out']) / 'summary.json'}"),
        ("report", s.get("report_html") or f"NOT WRITTEN ({s.get('report_html_error')})"),
    ]
    for k, v in rows:
        print(f"  {k:<18} {v}")
    tr = s.get("transfer")
    if tr:
        r = next(
            r
            for r in tr["rows"]
            if r["source"] == tr["chosen"] and r["mode"] == "pred" and r["protocol"] == "transfer_per_class"
        )
        print(
            f"\ntest videos, per-class T calibrated on val, {tr['chosen']}: mean IoU "
            f"{r['mean_iou']:.3f}, AP50 {r['ap50']:.3f}, mAP {r['ap']:.3f}"
        )
    miou = s.get("best_mean_iou")
    print(
        f"\nvalidation mAP {s['val_mAP']:.3f} | best T {s['best_threshold']} "
        f"mean IoU {miou if miou is None else round(miou, 3)} | total {s['seconds']['total']} s"
    )


def demo(task: str | Task = "surgical", out: str | Path | None = None, **kwargs) -> dict[str, Any]:
    """The demo of any task: box-ground-truth tasks (surgical) through :func:`run_demo`, mask
    tasks through :func:`gcfeat.workflows.task_demo.run_task_demo`; returns the summary also
    written to ``<out>/summary.json``."""
    t = get_task(task)
    if t.ground_truth == "boxes":
        return run_demo(DEFAULT_OUT if out is None else out, **kwargs)
    return run_task_demo(t.name, out, **kwargs)
