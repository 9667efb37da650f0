"""The dataset -> HDF5 pipeline: equals the per-batch computation, resumes after SIGKILL, and a
2-rank torchrun dump equals a 1-process dump."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from gcfeat.boxes import heatmap_to_boxes
from gcfeat.cam import GradCAM
from gcfeat.data import (
    SURGICAL_CLASSES,
    SURGICAL_MEAN,
    SURGICAL_STD,
    build_dataset,
    make_loader,
    write_cholec80,
    write_miccai18,
)
from gcfeat.extract import build_extractors
from gcfeat.extract.pipeline import extract_dataset, restrict, shard_videos
from gcfeat.io import FeatureFile, SettingsMismatch
from gcfeat.models import build_classifier, load_checkpoint, save_checkpoint

SIZE = (64, 80)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
OPTS = [
    "--methods",
    "m1",
    "m2",
    "m3",
    "--pooling",
    "32x4x4",
    "--crop-size",
    "32x32",
    "--no-progress",
    "--batch-size",
    "2",
    "--workers",
    "1",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    write_miccai18(d / "miccai", num_videos=2, num_frames=5, size=SIZE, seed=1, progress=False)
    # 3 videos x 8 labelled frames: batches of 2 never span two videos, so a 1-process run, a
    # resumed run and each torchrun rank form the same batches (identical numbers)
    write_cholec80(d / "cholec", num_videos=3, num_frames=200, size=SIZE, seed=2, progress=False)
    torch.manual_seed(0)
    model = build_classifier("resnet18", 11).eval()
    save_checkpoint(
        d / "ck.pt",
        model,
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=SIZE,
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    return d


@pytest.fixture(scope="module")
def clean(setup):
    """A 1-process CLI dump of the Cholec80 set."""
    out = setup / "clean.h5"
    assert (
        run_cli(
            ["--data", str(setup / "cholec"), "--checkpoint", str(setup / "ck.pt"), *OPTS, "--out", str(out)]
        ).wait()
        == 0
    )
    return read_all(out)


def run_cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "gcfeat.extract", *args], env=env, **kw)


def read_all(path):
    """{(video, frame): {method: rows}} of a feature file."""
    out = {}
    with FeatureFile(path) as ff:
        for v in ff:
            cp = v.class_prob
            for i, f in enumerate(v.frame_index):
                key = (v.name, int(f))
                assert key not in out, f"frame {key} twice"
                fr = v.frame(i)
                out[key] = {m: fr[m] for m in ff.methods} | {"class_prob": cp[i]}
    return out


def assert_same(a, b, atol=1e-5):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key]["class_prob"], b[key]["class_prob"], atol=atol)
        for m in ("m1", "m2", "m3"):
            if m not in a[key]:
                continue
            for f in ("label", "box", "empty"):
                np.testing.assert_array_equal(a[key][m][f], b[key][m][f], err_msg=f"{key} {m} {f}")
            for f in ("score", "features"):
                np.testing.assert_allclose(
                    a[key][m][f], b[key][m][f], atol=atol, rtol=1e-4, err_msg=f"{key} {m} {f}"
                )


def test_pipeline_equals_per_batch_computation(setup, tmp_path):
    model, info = load_checkpoint(setup / "ck.pt")
    ds = build_dataset(setup / "miccai", "miccai18", split="all", size=SIZE, with_gt=False)
    out = tmp_path / "f.h5"
    kw = dict(
        methods=("m1", "m2", "m3"),
        threshold=0.3,
        batch_size=4,
        num_workers=0,
        progress=False,
        pred_threshold=0.4,
        layout=(32, 4, 4),
        crop_size=(32, 32),
    )
    stats = extract_dataset(ds, model, info, out=str(out), **kw)
    assert stats["frames"] == len(ds) == 10
    got = read_all(out)
    # the same batches by hand
    cam = GradCAM(model, [model.layer4])
    exts = build_extractors(
        model, ("m1", "m2", "m3"), pred_threshold=0.4, layout=(32, 4, 4), crop_size=(32, 32)
    )
    want = {}
    for batch in make_loader(ds, batch_size=4):
        x = batch["image"]
        res = cam.explain(x, extra_layers=(model.layer2, model.layer3))
        probs = res.logits.sigmoid()
        boxes = heatmap_to_boxes(
            res.heatmap, 0.3, probs=probs, pred_threshold=0.4, class_modes={10: "union"}, classes=res.classes
        )
        feats = {e.name: e(x, res, boxes, probs) for e in exts}
        for b, (v, f) in enumerate(zip(batch["video"], batch["frame_index"])):
            want[(v, int(f))] = {"class_prob": probs[b].numpy()} | {
                m: {
                    k: getattr(F, k)[F.frame == b].numpy()
                    for k in ("label", "box", "score", "features", "empty")
                }
                for m, F in feats.items()
            }
    assert_same(got, want, atol=1e-6)
    assert sum(len(r["m3"]["label"]) for r in got.values()) > 0
    assert sum(len(r["m2"]["label"]) for r in got.values()) > 0
    with FeatureFile(out) as ff:
        assert ff.attrs["architecture"] == "resnet18" and ff.attrs["input_size"] == list(SIZE)
        assert set(ff.attrs["methods"]) == {"m1", "m2", "m3"}
    # a rerun skips everything; other settings refuse to append
    assert extract_dataset(ds, model, info, out=str(out), **kw)["frames"] == 0
    with pytest.raises(SettingsMismatch, match="thresholds"):
        extract_dataset(ds, model, info, out=str(out), **(kw | {"threshold": 0.5}))


def test_restrict_and_shard(setup):
    ds = build_dataset(setup / "cholec", "cholec80", split="all", size=SIZE, with_gt=False)
    r = restrict(ds, lambda v, f: v != "video02" and f > 0)
    assert [v["name"] for v in r.videos] == ["video01", "video03"]
    assert all((v["frames"] > 0).all() for v in r.videos) and len(ds.videos) == 3
    assert shard_videos({"a": 5, "b": 3, "c": 3, "d": 1}, 2) == [["a", "d"], ["b", "c"]]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(setup, clean, tmp_path):
    base = ["--data", str(setup / "cholec"), "--checkpoint", str(setup / "ck.pt"), *OPTS]
    killed = tmp_path / "killed.h5"
    for delay in (0.1,):
        p = run_cli(base + ["--out", str(killed)])
        seen = 0
        deadline = time.time() + 120
        while p.poll() is None and time.time() < deadline:  # wait for a new committed batch
            time.sleep(0.05)
            if killed.exists():
                try:
                    with h5py.File(killed, "r", locking=False) as h:
                        n = sum(h[v]["frame_index"].shape[0] for v in h)
                except Exception:  # caught mid-flush: try again
                    n = 0
                if n > 0:
                    break
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        partial = read_all(killed)  # opens, whole batches only
        assert len(partial) % 2 == 0 and 0 < len(partial) < 24
    assert run_cli(base + ["--out", str(killed)]).wait() == 0
    assert len(clean) == 24
    assert_same(read_all(killed), clean)


@pytest.mark.slow
def test_torchrun_two_ranks_equals_one_process(setup, clean, tmp_path):
    base = ["--data", str(setup / "cholec"), "--checkpoint", str(setup / "ck.pt"), *OPTS]
    two = tmp_path / "two.h5"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            os.path.join(VENV_BIN, "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "gcfeat.extract",
            *base,
            "--out",
            str(two),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[rank 1]" in r.stdout and "[rank 0]" in r.stdout
    assert not any(p.name.startswith("two.h5.rank") for p in tmp_path.iterdir())
    assert_same(read_all(two), clean)
    with FeatureFile(two) as ff:
        assert sorted(ff.videos) == ["video01", "video02", "video03"]
