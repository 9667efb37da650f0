"""A tiny run directory, as a demo writes it, for the report tests.

Two synthetic MICCAI 2018 videos at 64x80 (seq_1 is the validation split: 6 frames), a random
ResNet18 checkpoint, M2 + M3 features of the validation frames, a threshold study (CSV + JSON
+ one PNG) and ``summary.json`` whose paths are relative to the folder the "demo" ran in
(``runs/tiny``), so the report must find them inside the run directory.
"""

import json
import os

import cv2
import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

VAL_FRAMES = 6
THRESHOLD = 0.3


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, build_dataset
    from gcfeat.data.synthetic import write_miccai18
    from gcfeat.extract import extract_dataset
    from gcfeat.models import build_classifier, load_checkpoint, save_checkpoint

    run = tmp_path_factory.mktemp("tiny") / "run"
    write_miccai18(run / "data", num_videos=2, num_frames=VAL_FRAMES, size=(64, 80), seed=3, progress=False)
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=len(SURGICAL_CLASSES))
    save_checkpoint(
        run / "ck.pt",
        model,
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=(64, 80),
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    model, info = load_checkpoint(run / "ck.pt")
    val = build_dataset(
        run / "data", layout="miccai18", split="val", size=(64, 80), mean=SURGICAL_MEAN, std=SURGICAL_STD
    )
    extract_dataset(
        val,
        model.eval(),
        info,
        methods=["m2", "m3"],
        threshold=THRESHOLD,
        layout=(32, 4, 4),
        out=str(run / "features.h5"),
        batch_size=8,
        num_workers=0,
        progress=False,
    )
    tune = run / "tune"
    tune.mkdir()
    rows = [
        "threshold,class_id,class_name,mean_iou,hit_rate,precision,recall,f1,pointing_game,boxes_per_frame"
    ]
    for t in (0.2, 0.3, 0.4):
        rows.append(f"{t},0,bipolar_forceps,{t / 2:g},0.25,0.5,0.25,0.333,0.5,1.5")
        rows.append(f"{t},-1,all_instruments,{t / 3:g},0.125,0.4,0.2,0.267,0.6,2.5")
    (tune / "tune_thresholds.csv").write_text("\n".join(rows) + "\n")
    rec = {
        "metric": "mean_iou",
        "per_class": {
            "bipolar_forceps": {
                "class_id": 0,
                "threshold": 0.4,
                "mean_iou": 0.2,
                "hit_rate": 0.25,
                "precision": 0.5,
                "recall": 0.25,
            }
        },
        "overall": {
            "name": "all_instruments",
            "threshold": 0.4,
            "mean_iou": 0.1333,
            "hit_rate": 0.125,
            "pointing_game": 0.6,
        },
    }
    (tune / "tune_recommendation.json").write_text(json.dumps(rec))
    cv2.imwrite(str(tune / "tune_curves.png"), np.full((40, 60, 3), 200, np.uint8))
    ap = [0.9, 0.8, None, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 1.0]
    summary = {
        "out": "runs/tiny",
        "data": "runs/tiny/data",
        "checkpoint": "runs/tiny/ck.pt",
        "features": "runs/tiny/features.h5",
        "size": [64, 80],
        "arch": "resnet18",
        "epochs": 1,
        "seed": 0,
        "val_mAP": 0.55,
        "best_epoch": 1,
        "per_class_ap": ap,
        "best_threshold": 0.4,
        "best_mean_iou": 0.1333,
        "seconds": {"data": 1.0, "train": 2.0},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run
