"""`--task` in the surgical CLIs: `gcfeat.train`, `gcfeat.bbox`, `gcfeat.tune` on tiny synthetic
MRI data (organ3d volumes and prostate slices) with untrained models."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from gcfeat.boxes.masks import mask_boxes
from gcfeat.cli import bbox, train, tune
from gcfeat.models.task_checkpoint import save_task_checkpoint
from gcfeat.tasks import get_task, load_task_checkpoint
from gcfeat.workflows import inspect as inspect_workflow
from gcfeat.workflows import tune as tune_workflow


@pytest.fixture(scope="module")
def organ(tmp_path_factory):
    root = tmp_path_factory.mktemp("organ3d")
    task = get_task("organ3d")
    task.write_synthetic(root / "data", n_train=2, n_val=2, n_test=4, seed=1)
    torch.manual_seed(0)
    save_task_checkpoint(root / "ck.pt", task.build_model("resnet3d_18_slim"), task, "resnet3d_18_slim")
    return root


@pytest.fixture(scope="module")
def prostate(tmp_path_factory):
    root = tmp_path_factory.mktemp("prostate")
    task = get_task("prostate")
    task.write_synthetic(root / "data", n_cases=4, shape=(40, 40, 8), seed=0)
    torch.manual_seed(0)
    save_task_checkpoint(root / "ck.pt", task.build_model("resnet18"), task, "resnet18", input_size=(64, 64))
    ds = task.build_dataset(root / "data", "train", size=64)
    has = [bool(ds[i]["gt_mask"].any()) for i in range(len(ds))]
    assert any(has) and not all(has)  # the split has lesion slices and lesion-free ones
    return root, has.index(True), has.index(False)


def api_heat(task_name, root, split, idx, classes, size=None):
    """The CAM through the public API, independently of the CLI code: ``(heat (n, *S), probs)``."""
    from gcfeat.cam import GradCAM

    task = get_task(task_name)
    model, _ = load_task_checkpoint(root / "ck.pt", task_name)
    ds = task.build_dataset(root / "data", split, **({"size": size} if size else {}))
    x = torch.stack([ds[i]["image"] for i in idx])
    res = GradCAM(model, [model.layer4[-1]]).explain(x, classes)
    return res.heatmap[:, 0], res.logits.softmax(1), [ds[i] for i in idx]


def np_mask_box(mask):
    """Bounding box of a mask by np.nonzero, in box column order (2D x, y; 3D z, y, x)."""
    nz = np.nonzero(np.asarray(mask))
    lo = [int(a.min()) for a in nz]
    hi = [int(a.max()) + 1 for a in nz]
    if len(nz) == 2:
        lo, hi = lo[::-1], hi[::-1]
    return lo + hi


def naive_iou(a, b):
    d = len(a) // 2
    inter = 1.0
    for j in range(d):
        inter *= max(0, min(a[j + d], b[j + d]) - max(a[j], b[j]))
    vol = lambda r: float(np.prod([r[j + d] - r[j] for j in range(d)]))  # noqa: E731
    union = vol(a) + vol(b) - inter
    return inter / union if union > 0 else 0.0


def parse_boxes(text, d):
    pat = r"^\s+(\d+) (\S+)\s+" + r"\s+".join([r"(\d+)"] * (2 * d)) + r"\s+([\d.]+)$"
    return [(int(m[0]), m[1], *map(int, m[2 : 2 + 2 * d]), float(m[-1])) for m in re.findall(pat, text, re.M)]


def nonblank_png(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    return img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.05


# ------------------------------------------------------------------------------------- train
def test_train_task_organ3d_writes_a_checkpoint_that_loads(organ, tmp_path, capsys):
    rc = train.main(
        [
            "--task",
            "organ3d",
            "--data",
            str(organ / "data"),
            "--arch",
            "resnet3d_18_slim",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--lr",
            "0.01",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    ck = tmp_path / "organ3d_resnet3d_18_slim_best.pt"
    assert f"-> {ck}" in capsys.readouterr().out
    model, info = load_task_checkpoint(ck, "organ3d")
    assert info["arch"] == "resnet3d_18_slim" and info["input_size"] == [28, 28, 28]
    assert info["meta"]["lr"] == 0.01 and info["meta"]["seed"] == 3 and info["meta"]["epochs"] == 1
    assert model(torch.rand(1, 1, 28, 28, 28)).shape == (1, 11)


def test_train_task_options_are_handed_over_by_name(monkeypatch, tmp_path, capsys):
    """`gcfeat.train --task <MRI>` hands its options to the one training loop with the
    single-label recipe; unset options take the task's defaults."""
    from types import SimpleNamespace

    from gcfeat.tasks import Task
    from gcfeat.workflows import train as train_workflow

    calls, datasets = [], []

    def fake_fit(model, train_set, val_set, **options):
        calls.append((model, options))
        return SimpleNamespace(checkpoint=tmp_path / "ck.pt", best_score=0.5, history=[])

    def fake_dataset(self, root, split, **kw):
        datasets.append((self.name, split, kw))
        return [None] * 4

    monkeypatch.setattr(train_workflow, "fit", fake_fit)
    monkeypatch.setattr(Task, "build_dataset", fake_dataset)
    threads = torch.get_num_threads()
    rc = train.main(
        [
            "--task",
            "prostate",
            "--data",
            str(tmp_path),
            "--arch",
            "resnet34_nobn",
            "--epochs",
            "2",
            "--lr",
            "0.01",
            "--batch-size",
            "4",
            "--optimizer",
            "sgd",
            "--out",
            str(tmp_path / "o"),
            "--threads",
            "1",
            "--balance",
        ]
    )
    torch.set_num_threads(threads)
    assert rc == 0 and "best validation accuracy 0.5000" in capsys.readouterr().out
    model, o = calls[-1]
    assert {
        k: o[k] for k in ("epochs", "lr", "batch_size", "optimizer", "out_dir", "seed", "arch", "task")
    } == {
        "epochs": 2,
        "lr": 0.01,
        "batch_size": 4,
        "optimizer": "sgd",
        "out_dir": str(tmp_path / "o"),
        "seed": 0,
        "arch": "resnet34_nobn",
        "task": "prostate",
    }
    assert (o["loss"], o["recalibrate_bn"], o["seeding"]) == ("ce", True, "once")
    assert len(model.layer3) == 6 and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )  # resnet34, no BN
    assert datasets[0] == ("prostate", "train", {"balance": True, "seed": 0})
    # unset options stay unset: the task's defaults apply
    assert train.main(["--task", "alzheimer", "--data", str(tmp_path)]) == 0
    d = get_task("alzheimer").defaults
    assert {k: calls[-1][1][k] for k in ("epochs", "lr", "batch_size", "optimizer")} == {
        k: d[k] for k in ("epochs", "lr", "batch_size", "optimizer")
    }
    assert calls[-1][1]["out_dir"] == "checkpoints" and calls[-1][1]["arch"] == "baseline_cnn"


def test_train_surgical_defaults_unchanged():
    from gcfeat.data.classes import SURGICAL_MEAN, SURGICAL_STD

    args = vars(train.parse_args(["--data", "d"]))
    assert args == {
        "task": "surgical",
        "data": "d",
        "layout": "auto",
        "arch": "resnet50",
        "size": (256, 320),
        "epochs": 10,
        "batch_size": 16,
        "lr": 1e-3,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "plateau",
        "augment_flip": False,
        "dropout": 0.0,
        "weights": None,
        "mean": SURGICAL_MEAN,
        "std": SURGICAL_STD,
        "workers": 2,
        "seed": 0,
        "out": "checkpoints",
        "name": None,
        "log": None,
        "resume": False,
        "device": "auto",
        "channels_last": False,
        "quiet": False,
        "threads": None,
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--task", "organ3d", "--size", "64x80"],
            r"--size: applies to --task surgical only, not to --task organ3d",
        ),
        (["--task", "prostate", "--resume", "--quiet"], r"--quiet, --resume: apply to --task surgical only"),
        (["--synthetic"], r"--synthetic: applies to the MRI tasks .* not to --task surgical"),
        (["--task", "organ3d", "--balance"], r"--balance: applies to --task prostate only"),
        (
            ["--task", "alzheimer", "--arch", "resnet50"],
            r"--arch: invalid choice: 'resnet50' for --task alzheimer",
        ),
        (["--arch", "baseline_cnn"], r"--arch: invalid choice: 'baseline_cnn' for --task surgical"),
        (["--task", "organ3d", "--n", "5"], r"--n: .* give --synthetic too"),
        (["--task", "brain"], r"invalid choice: 'brain'"),
    ],
)
def test_train_rejects_options_the_task_does_not_take(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--data", "d", *argv])
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_train_task_data_errors_are_reported(tmp_path, capsys):
    rc = train.main(["--task", "organ3d", "--data", str(tmp_path), "--epochs", "1"])
    assert rc == 2 and "organmnist3d.npz" in capsys.readouterr().err


def test_train_help_explains_the_split(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for s in (
        "--task",
        "surgical only",
        "MRI tasks only",
        "gcfeat.tasks.train",
        "--synthetic",
        "--size",
        "resnet3d_18_slim",
    ):
        assert s in text


# -------------------------------------------------------------------------------------- bbox
def test_bbox_task_organ3d_figure_and_printed_boxes_equal_api(organ, capsys):
    out = organ / "fig3d.png"
    rc = bbox.main(
        [
            "--task",
            "organ3d",
            "--data",
            str(organ / "data"),
            "--checkpoint",
            str(organ / "ck.pt"),
            "--bidx",
            "1",
            "--threshold",
            "0.4",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and nonblank_png(out)
    from gcfeat.boxes import heatmap_to_boxes

    heat, probs, (s,) = api_heat("organ3d", organ, "test", [1], "argmax")
    k = int(probs.argmax())
    b = heatmap_to_boxes(heat[:, None], 0.4, classes=[k], min_area=25)
    assert b.xyxy.shape[1] == 6 and len(b) >= 1
    printed = parse_boxes(text, 3)
    assert [p[:8] for p in printed] == [
        (k, get_task("organ3d").classes[k], *map(int, r)) for r in b.xyxy.tolist()
    ]
    np.testing.assert_allclose([p[8] for p in printed], b.score.tolist(), atol=1.5e-3)
    gt = np_mask_box(s["gt_mask"])
    assert f"z1 y1 x1 z2 y2 x2 = {' '.join(map(str, gt))}" in text
    best = max(naive_iou(gt, r) for r in b.xyxy.tolist())
    iou = float(re.search(r"IoU of the best box with the GT box: ([\d.]+)", text)[1])
    assert abs(iou - best) < 1e-3


def test_bbox_task_prostate_2d_lesion_and_lesion_free(prostate, capsys):
    root, with_gt, without_gt = prostate
    from gcfeat.boxes import heatmap_to_boxes

    out = root / "fig.png"
    rc = bbox.main(
        [
            "--task",
            "prostate",
            "--data",
            str(root / "data"),
            "--checkpoint",
            str(root / "ck.pt"),
            "--split",
            "train",
            "--bidx",
            str(with_gt),
            "--tclass",
            "significant",
            "--threshold",
            "0.5",
            "--min-area",
            "4",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and nonblank_png(out)
    heat, probs, (s,) = api_heat("prostate", root, "train", [with_gt], [1], size=64)
    b = heatmap_to_boxes(heat[:, None], 0.5, classes=[1], min_area=4)
    printed = parse_boxes(text, 2)
    assert [p[:6] for p in printed] == [(1, "significant", *map(int, r)) for r in b.xyxy.tolist()]
    gt = np_mask_box(s["gt_mask"])
    assert f"x1 y1 x2 y2 = {' '.join(map(str, gt))}" in text
    assert f"(p={float(probs[0, 1]):.3f})" in text

    # a lesion-free slice: no ground truth, said in the title and the printout
    r = inspect_workflow.run_task_bbox(
        "prostate", root / "data", root / "ck.pt", without_gt, split="train", out=root / "free.png"
    )
    assert r.gt_box is None and r.iou is None and r.best is None
    assert "no ground truth" in r.title and r.tclass == r.pred and nonblank_png(r.figure)
    assert "ground truth: none" in inspect_workflow.format_task_boxes(r)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tclass", "brain"], r"--tclass 'brain': unknown class.*0 liver.*10 pancreas"),
        (["--tclass", "11"], r"expected an index 0\.\.10"),
        (["--bidx", "4"], r"--bidx 4: the 'test' split of .* has 4 samples; expected 0\.\.3"),
        (["--split", "val", "--bidx", "-1"], r"has 2 samples; expected 0\.\.1"),
        (["--threshold", "1.5"], r"--threshold 1.5"),
        (["--layer", "layer9"], r"--layer 'layer9'"),
        (["--checkpoint", "none.pt"], r"none.pt: no such file; run `scripts/demo --task organ3d`"),
    ],
)
def test_bbox_task_user_errors(organ, argv, message, capsys):
    args = [
        "--task",
        "organ3d",
        "--data",
        str(organ / "data"),
        "--checkpoint",
        str(organ / "ck.pt"),
        "--out",
        str(organ / "x.png"),
    ]
    rc = bbox.main(args + argv)
    assert rc == 2
    assert re.search(message, capsys.readouterr().err)


def test_bbox_task_rejects_surgical_only_options(organ, capsys):
    with pytest.raises(SystemExit) as e:
        bbox.main(["--task", "organ3d", "--data", str(organ / "data"), "--pred-threshold", "0.2"])
    assert e.value.code == 2
    assert (
        "--pred-threshold: applies to --task surgical only, not to --task organ3d" in capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="--task surgical"):
        inspect_workflow.run_task_bbox("surgical")


def test_bbox_surgical_defaults_unchanged():
    assert vars(bbox.parse_args([])) == {
        "task": "surgical",
        "bidx": 0,
        "tclass": "0",
        "threshold": 0.3,
        "pred_threshold": 0.5,
        "data": tune.DEFAULT_DATA,
        "layout": "auto",
        "split": "val",
        "checkpoint": tune.DEFAULT_CHECKPOINT,
        "method": "gradcam",
        "layer": None,  # layer4 / last level
        "mode": "components",
        "min_area": 25,
        "device": "cpu",
        "out": None,
    }


def test_mri_defaults_point_at_the_task_demo():
    a = bbox.parse_args(["--task", "organ3d"])
    assert a.data == "runs/demo_organ3d/data" and a.split == "test" and a.tclass is None
    assert a.checkpoint == "runs/demo_organ3d/organ3d_resnet3d_18_slim_best.pt" and a.layer is None
    t = tune.parse_args(["--task", "prostate"])
    assert t.out == "runs/demo_prostate/tune" and t.target == "true" and t.split == "test"


# -------------------------------------------------------------------------------------- tune
def test_mask_boxes_equal_nonzero_reference():
    g = torch.Generator().manual_seed(0)
    for shape in [(5, 12, 9), (4, 7, 6, 5)]:
        m = torch.rand(shape, generator=g) > 0.93
        m[1] = False  # one empty mask
        boxes, present = mask_boxes(m)
        assert present.tolist() == [bool(x.any()) for x in m]
        for i in range(len(m)):
            ref = np_mask_box(m[i].numpy()) if m[i].any() else [0] * (2 * (m.ndim - 1))
            assert boxes[i].tolist() == ref


def test_tune_task_organ3d_equals_a_per_sample_loop(organ):
    """Batched study (2 + 1 samples) vs a plain loop: CAM per sample, boxes, IoU by hand."""
    from gcfeat.boxes import heatmap_to_boxes

    Ts = [0.2, 0.5]
    table, rec = tune_workflow.run_task_tuning(
        "organ3d",
        organ / "data",
        organ / "ck.pt",
        Ts,
        limit=3,
        batch_size=2,
        mode="components",
        min_area=8,
        progress=False,
    )
    from gcfeat.data.subsets import balanced_subset

    task = get_task("organ3d")
    ds = task.build_dataset(organ / "data", "test")
    # --limit takes a class-balanced subset (as gcfeat.evaluate), in round-robin order
    all_labels = torch.tensor([int(ds[i]["label"]) for i in range(len(ds))])
    chosen = balanced_subset(all_labels, 3, seed=0).tolist()
    assert len(set(all_labels[chosen].tolist())) == 3
    labels = all_labels[chosen].tolist()
    heat, _, samples = api_heat("organ3d", organ, "test", chosen, torch.tensor(labels)[:, None])
    for t in Ts:
        ious, nbox, points = [], [], []
        for i, s in enumerate(samples):
            h = heat[i]
            b = heatmap_to_boxes(h[None, None], t, min_area=8)
            gt = np_mask_box(s["gt_mask"])
            ious.append(max([naive_iou(gt, r) for r in b.xyxy.tolist()], default=0.0))
            nbox.append(len(b))
            z = np.unravel_index(int(h.argmax()), h.shape)
            points.append(bool(s["gt_mask"][z]))
        row = table[(table.threshold == t) & (table.class_name == "all")].iloc[0]
        assert row.n_frames == 3 and row.n_gt == 3
        assert row.mean_iou == pytest.approx(np.mean(ious), abs=1e-5)
        assert row.hit_rate == pytest.approx(np.mean(np.array(ious) >= 0.5))
        assert row.boxes_per_frame == pytest.approx(np.mean(nbox))
        assert row.pointing_game == pytest.approx(np.mean(points))
        for i, k in enumerate(labels):  # per-class rows: the samples of the explained class
            r = table[(table.threshold == t) & (table.class_id == k)].iloc[0]
            own = [j for j, kk in enumerate(labels) if kk == k]
            assert r.n_frames == len(own)
            assert r.mean_iou == pytest.approx(np.mean([ious[j] for j in own]), abs=1e-5)
    assert rec["overall"]["name"] == "all" and rec["settings"]["frames"] == 3
    assert rec["overall"]["threshold"] in Ts


def test_tune_task_cli_prostate_outputs_and_skips_lesion_free(prostate, capsys):
    root, _, _ = prostate
    out = root / "tune"
    rc = tune.main(
        [
            "--task",
            "prostate",
            "--data",
            str(root / "data"),
            "--checkpoint",
            str(root / "ck.pt"),
            "--split",
            "train",
            "--thresholds",
            "0.2:0.6:0.2",
            "--min-area",
            "4",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    ds = get_task("prostate").build_dataset(root / "data", "train", size=64)
    n_gt = sum(bool(ds[i]["gt_mask"].any()) for i in range(len(ds)))
    assert f"{n_gt} of {len(ds)} 'train' samples have a ground-truth mask" in text
    df = pd.read_csv(out / "tune_thresholds.csv")
    assert sorted(df.threshold.unique()) == [0.2, 0.4, 0.6]
    assert {"pointing_game", "pointing_game_box", "mean_iou", "hit_rate"} <= set(df.columns)
    agg = df[df.class_name == "all"]
    assert (agg.n_frames == n_gt).all() and (agg.n_gt == n_gt).all()
    rec = json.loads((out / "tune_recommendation.json").read_text())
    assert rec["settings"]["samples_without_gt"] == len(ds) - n_gt
    assert rec["settings"]["target"] == "true" and rec["overall"]["name"] == "all"
    import matplotlib.image as mpimg

    assert mpimg.imread(out / "tune_curves.png")[..., :3].std() > 0.02
    assert "recommended T overall (all, by mean_iou)" in text


def test_tune_task_errors(organ, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tune.main(["--task", "organ3d", "--pred-threshold", "0.3"])
    assert (
        e.value.code == 2 and "--pred-threshold: applies to --task surgical only" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as e:
        tune.main(["--target", "pred"])
    assert e.value.code == 2 and "--target: applies to the MRI tasks" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--target 'best'"):
        tune_workflow.run_task_tuning("organ3d", organ / "data", organ / "ck.pt", [0.5], target="best")
    no_masks = tmp_path / "no_masks"
    no_masks.mkdir()
    shutil.copy(organ / "data" / "organmnist3d.npz", no_masks)
    rc = tune.main(
        [
            "--task",
            "organ3d",
            "--data",
            str(no_masks),
            "--checkpoint",
            str(organ / "ck.pt"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "carry no ground-truth masks (gt_mask)" in capsys.readouterr().err
    rc = tune.main(
        [
            "--task",
            "organ3d",
            "--data",
            str(organ / "data"),
            "--checkpoint",
            str(organ / "ck.pt"),
            "--thresholds",
            "0.5:2:0.5",
        ]
    )
    assert rc == 2 and "thresholds" in capsys.readouterr().err


def test_tune_surgical_defaults_unchanged():
    assert vars(tune.parse_args([])) == {
        "task": "surgical",
        "data": tune.DEFAULT_DATA,
        "layout": "auto",
        "split": "val",
        "checkpoint": tune.DEFAULT_CHECKPOINT,
        "thresholds": "0.05:0.95:0.05",
        "out": tune.DEFAULT_OUT,
        "batch_size": 8,
        "num_workers": 0,
        "method": "gradcam",
        "layer": None,
        "pred_threshold": 0.5,
        "mode": "components",
        "min_area": 25,
        "metric": "mean_iou",
        "max_frames": None,
        "device": "cpu",
        "limit": None,
        "calibrate_split": None,
        "score_split": None,
        "layers": None,
        "methods": None,
        "min_gt": 10,
    }
    assert tune.parse_args(["--limit", "3"]).max_frames == 3
