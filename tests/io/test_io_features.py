"""FeatureWriter / FeatureFile: round trip, resume trimming, settings check, SIGKILL, merge."""

import os
import random
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from gcfeat.io import FeatureFile, FeatureFileError, FeatureWriter, SettingsMismatch, merge_feature_files

ATTRS = {
    "classes": ["a", "b", "c"],
    "thresholds": {"box": 0.3, "pred": 0.5},
    "architecture": "resnet18",
    "checkpoint_sha256": "00ff",
    "input_size": [64, 80],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.2, 0.2, 0.2],
    "layout": [512, 1, 1],
    "methods": {"m2": {}, "m3": {}},
}
DIMS = {"m2": 6, "m3": 5}

# A deterministic stream of batches: frame f of video v has (f % 3) rows in m2, 1 row in m3.
STREAM = [(v, f) for v in ("seq_1", "seq_2", "seq_5") for f in range(0, 2 * 37, 2)]


def batch(items):
    """Batch of (video, frame) -> writer arguments, values a function of (video, frame)."""
    videos = [v for v, _ in items]
    fi = np.array([f for _, f in items])
    vid = np.array([int(v.split("_")[1]) for v in videos])
    cp = (np.stack([vid, fi, fi * 0.5], 1) / 100).astype(np.float32)
    feats = {}
    for m, per in (("m2", lambda f: f % 3), ("m3", lambda f: 1)):
        frame = np.array([i for i, f in enumerate(fi) for _ in range(per(f))], dtype=np.int64)
        k = np.array([j for f in fi for j in range(per(f))], dtype=np.int64)
        base = vid[frame] * 1000.0 + fi[frame] + k / 10
        feats[m] = SimpleNamespace(
            frame=frame,
            label=k,
            box=np.stack([base, base + 1, base + 2, base + 3], 1),
            score=base / 1e4,
            features=base[:, None] + np.arange(DIMS[m])[None],
            empty=(k == 1),
        )
    return videos, fi, cp, feats


def write_stream(path, bs, resume=True, limit=None, stream=STREAM, report=False):
    with FeatureWriter(path, ATTRS, DIMS, 3, compression="gzip", resume=resume) as w:
        todo = [(v, f) for v, f in stream if f not in w.done(v)][:limit]
        for i in range(0, len(todo), bs):
            w.write(*batch(todo[i : i + bs]))
            if report:
                print(i, flush=True)


def check_complete(path, items=STREAM):
    """Every frame exactly once, every value equal to what the stream defines."""
    with FeatureFile(path) as ff:
        got = [(v.name, int(f)) for v in ff for f in v.frame_index]
        assert sorted(got) == sorted(items)
        for v in ff:
            vids, fi, cp, feats = batch([(v.name, int(f)) for f in v.frame_index])
            np.testing.assert_array_equal(v.class_prob, cp)
            for m in ("m2", "m3"):
                r = v.rows(m)
                for key in ("frame", "label", "box", "score", "features", "empty"):
                    np.testing.assert_allclose(
                        r[key], getattr(feats[m], key), rtol=1e-6, err_msg=f"{v.name} {m} {key}"
                    )


def test_round_trip_and_views(tmp_path):
    p = tmp_path / "f.h5"
    write_stream(p, bs=7)
    check_complete(p)
    with FeatureFile(p) as ff:
        assert ff.attrs["classes"] == ["a", "b", "c"] and ff.attrs["input_size"] == [64, 80]
        assert "gcfeat_version" in ff.attrs and "created" in ff.attrs
        assert "/<video>/frame_index" in ff.attrs["format"]
        v = ff["seq_2"]
        fr = v.frame(5)  # frame number 10: 10 % 3 = 1 row in m2
        assert fr["frame_index"] == 10
        assert fr["m2"]["features"].shape == (1, 6) and fr["m3"]["label"].tolist() == [0]
        assert fr["m2"]["features"][0, 0] == 2000 + 10
        df = ff.to_dataframe("m2")
        assert len(df) == sum(f % 3 for _, f in STREAM)
        assert set(df.columns) >= {"video", "frame_index", "class", "x1", "score"}
        assert ff.to_dataframe(features=True).filter(like="f").shape[1] >= 5
        assert "3 videos" in ff.summary()
        h5 = ff.h5
        assert h5["seq_1/m2/features"].chunks is not None
        assert h5["seq_1/m2/features"].compression == "gzip"


def test_resume_trims_uncommitted_rows(tmp_path):
    p = tmp_path / "f.h5"
    write_stream(p, bs=10, limit=30)
    # a batch whose rows were written but whose frame_index never was (killed mid-batch)
    with h5py.File(p, "a") as h:
        for m in ("m2", "m3"):
            for k in ("frame", "label", "score", "empty"):
                h[f"seq_1/{m}/{k}"].resize(h[f"seq_1/{m}/{k}"].shape[0] + 2, 0)
            h[f"seq_1/{m}/frame"][-2:] = [30, 31]
            for k in ("box", "features"):
                h[f"seq_1/{m}/{k}"].resize(h[f"seq_1/{m}/{k}"].shape[0] + 2, 0)
        h["seq_1/class_prob"].resize(33, 0)
    with FeatureFile(p) as ff:  # readers already ignore rows past the committed frames
        assert ff["seq_1"].rows("m2")["frame"].max() < 30
    write_stream(p, bs=10)
    check_complete(p)


def test_refuses_different_settings(tmp_path):
    p = tmp_path / "f.h5"
    write_stream(p, bs=10, limit=10)
    other = dict(ATTRS, checkpoint_sha256="beef", thresholds={"box": 0.4, "pred": 0.5})
    with pytest.raises(SettingsMismatch) as e:
        FeatureWriter(p, other, DIMS, 3)
    assert "checkpoint_sha256" in str(e.value) and "thresholds" in str(e.value)
    assert "input_size" not in str(e.value)
    with pytest.raises(FeatureFileError, match="exists"):
        FeatureWriter(p, ATTRS, DIMS, 3, resume=False)
    with FeatureWriter(p, ATTRS, DIMS, 3) as w:  # same settings: appending is fine
        with pytest.raises(FeatureFileError, match="already written"):
            w.write(*batch(STREAM[:2]))


def test_merge_shards(tmp_path):
    a, b, out = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "out.h5"
    half = [s for s in STREAM if s[0] == "seq_2"]
    with FeatureWriter(a, ATTRS, DIMS, 3) as w:
        rest = [s for s in STREAM if s not in half]
        for i in range(0, len(rest), 9):
            w.write(*batch(rest[i : i + 9]))
    with FeatureWriter(b, ATTRS, DIMS, 3) as w:
        w.write(*batch(half))
    merge_feature_files([str(a), str(b)], out, chunk_frames=5)
    check_complete(out)
    with pytest.raises(FeatureFileError, match="already written"):
        merge_feature_files([str(b)], out)


# a longer stream with wide rows, so that a kill often lands inside a write or a flush
LONG = [(v, f) for v in ("seq_1", "seq_2", "seq_5") for f in range(400)]
WRITER = """
import sys
sys.path.insert(0, {tests!r})
import test_io_features as t
t.DIMS.update(m2=512, m3=256)
t.write_stream({path!r}, bs=6, stream=t.LONG, report=True)
"""


def test_sigkill_at_random_moments_leaves_whole_batches(tmp_path, monkeypatch):
    """Kill a writing process with SIGKILL at random moments, several times; the file always
    opens, holds a prefix of the stream made of whole batches, and the final resume completes
    it with every frame exactly once and the right values."""
    monkeypatch.setitem(DIMS, "m2", 512)
    monkeypatch.setitem(DIMS, "m3", 256)
    p = tmp_path / "f.h5"
    rng = random.Random(0)
    script = WRITER.format(tests=os.path.dirname(__file__), path=str(p))
    kills, n = 0, 0
    for attempt in range(6):
        before = n
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(rng.randint(1, 4)):  # some batches committed by this process ...
            if not proc.stdout.readline():
                break
        time.sleep(rng.uniform(0.0, 0.05))  # ... then a random moment
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        proc.stdout.close()
        with FeatureFile(p) as ff:  # opens; whole batches; a stream prefix
            got = [(v.name, int(f)) for v in ff for f in v.frame_index]
            n = len(got)
            assert n == len(LONG) or (n - before) % 6 == 0
            assert sorted(got) == sorted(LONG[:n])
            assert n > before
        if n == len(LONG):
            break
    assert kills >= 3
    write_stream(p, bs=50, stream=LONG)
    check_complete(p, LONG)
