"""`python -m gcfeat.extract` killed with SIGKILL at random moments, then rerun, gives exactly
the file of an uninterrupted run: Cholec80 mp4 input (frames decoded from the video in a
worker) and an MRI task (organ3d volumes, 3D boxes). After every kill the file opens and holds
whole batches only."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, write_cholec80
from gcfeat.data.mri_synthetic import write_organ3d
from gcfeat.io import FeatureFile
from gcfeat.models import build_classifier, save_checkpoint
from gcfeat.models.task_checkpoint import save_task_checkpoint
from gcfeat.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
BATCH = 2
FIELDS = ("label", "box", "score", "features", "empty")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("killres")
    size = (64, 80)
    # 3 videos x 8 annotated frames (one every 25 of 200): batches of 2 never span two videos
    write_cholec80(d / "cholec", num_videos=3, num_frames=200, size=size, seed=3, progress=False)
    torch.manual_seed(0)
    save_checkpoint(
        d / "ck.pt",
        build_classifier("resnet18", 11).eval(),
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=size,
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    write_organ3d(d / "organ3d", n_train=4, n_val=4, n_test=20, size=28, seed=1)
    t = get_task("organ3d")
    save_task_checkpoint(d / "o3.pt", t.build_model("resnet3d_18_slim"), t, "resnet3d_18_slim")
    common = ["--methods", "m1", "m2", "m3", "--batch-size", str(BATCH), "--no-progress"]
    return {
        "cholec80": [
            "--data",
            str(d / "cholec"),
            "--checkpoint",
            str(d / "ck.pt"),
            *common,
            "--pooling",
            "32x4x4",
            "--crop-size",
            "32x32",
            "--workers",
            "1",
        ],
        "organ3d": [
            "--task",
            "organ3d",
            "--data",
            str(d / "organ3d"),
            "--split",
            "test",
            "--checkpoint",
            str(d / "o3.pt"),
            *common,
            "--workers",
            "1",
        ],
    }


def start(args, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "gcfeat.extract", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def committed(path) -> int:
    """Frames committed so far (0 when the file is absent or caught mid-flush)."""
    try:
        with h5py.File(path, "r", locking=False) as h:
            return sum(h[v]["frame_index"].shape[0] for v in h)
    except (OSError, KeyError):
        return 0


def read_all(path):
    """{(video, frame): {method: {field: array}} | {"class_prob": array}} of a feature file."""
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


def assert_identical(got, want, note):
    assert sorted(got) == sorted(want), note
    for key in want:
        np.testing.assert_array_equal(
            got[key]["class_prob"], want[key]["class_prob"], err_msg=f"{note} {key}"
        )
        for m in ("m1", "m2", "m3"):
            for f in FIELDS:
                np.testing.assert_array_equal(
                    got[key][m][f], want[key][m][f], err_msg=f"{note} {key} {m} {f}"
                )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cholec80", "organ3d"])
def test_sigkill_at_random_moments_then_resume_is_exact(inputs, kind, tmp_path):
    args = inputs[kind]
    clean = tmp_path / "clean.h5"
    p = start(args, clean)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
    want = read_all(clean)
    total = len(want)
    assert total >= 16

    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    note = f"{kind}, seed {seed}"
    killed = tmp_path / "killed.h5"
    kills = 0
    for _ in range(2):
        before = committed(killed)
        p = start(args, killed)
        deadline = time.time() + 240
        # a random moment after this run has committed something new (so every kill lands
        # mid-run, at a different point of the batch cycle)
        while p.poll() is None and committed(killed) <= before and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if p.poll() is not None:  # finished before the kill: nothing left to test
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        partial = read_all(killed)  # opens; holds whole batches only
        # under load the kill can land after the last batch was committed (while the run
        # finalises): the file must then hold every frame, and the resume below still runs
        assert 0 < len(partial) <= total, note
        for v in {k[0] for k in partial}:
            n = sum(1 for k in partial if k[0] == v)
            assert n % BATCH == 0 or n == sum(1 for k in want if k[0] == v), note
        assert_identical(partial, {k: want[k] for k in partial}, note)
    assert kills >= 1, f"{note}: every run finished before it could be killed"
    p = start(args, killed)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
    assert_identical(read_all(killed), want, note)
