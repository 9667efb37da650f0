"""A corpus of bad inputs, tried as users would: every command and the Python API.

Each command case asserts exit code 2, no traceback on stderr, a message naming the offender
(file or argument), and that every file the run was given (data, checkpoints, existing outputs)
is byte-identical afterwards. Commands run in-process through ``gcfeat.__main__.main``; the
cases that need real DataLoader worker processes (errors raised inside a worker) run as
``python -m gcfeat``. Fixtures come from the synthetic generators at tiny sizes, built once.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gcfeat.__main__ import main as gcfeat_main
from gcfeat.cam import GradCAM
from gcfeat.cam.base import CAMError
from gcfeat.data import (
    SURGICAL_CLASSES,
    SURGICAL_MEAN,
    SURGICAL_STD,
    build_dataset,
    make_loader,
    write_cholec80,
    write_miccai18,
)
from gcfeat.data.errors import DataError
from gcfeat.data.mri_synthetic import write_alzheimer, write_organ3d, write_prostate
from gcfeat.data.prostate import ProstateSlices
from gcfeat.errors import GcfeatError, GcfeatWarning
from gcfeat.extract.pipeline import extract_dataset
from gcfeat.io import FeatureWriter, SettingsMismatch
from gcfeat.io import paths as out_paths
from gcfeat.models import CheckpointError, build_classifier, load_checkpoint, save_checkpoint
from gcfeat.models.task_checkpoint import save_task_checkpoint
from gcfeat.tasks import get_task

SIZE = (32, 40)
ROOT = Path(__file__).resolve().parents[2]
PNG_SIG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------ fixtures


def _nifti_edit(path: Path, fn) -> None:
    import nibabel as nib

    img = nib.load(str(path))
    data = fn(np.asarray(img.dataobj).astype(np.float32))
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


def _save_surgical(path, model, classes, **kw):
    save_checkpoint(
        path,
        model,
        classes=classes,
        arch="resnet18",
        input_size=SIZE,
        mean=kw.get("mean", SURGICAL_MEAN),
        std=kw.get("std", SURGICAL_STD),
        **{k: v for k, v in kw.items() if k not in ("mean", "std")},
    )


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """The shared world: data sets, checkpoints (good and broken) and a feature file."""
    r = tmp_path_factory.mktemp("corpus")
    write_miccai18(r / "miccai", num_videos=2, num_frames=4, size=SIZE, seed=0, progress=False)
    write_cholec80(r / "cholec", num_videos=1, num_frames=50, size=SIZE, seed=1, progress=False)
    torch.manual_seed(0)
    model = build_classifier("resnet18", len(SURGICAL_CLASSES)).eval()
    _save_surgical(r / "ck.pt", model, SURGICAL_CLASSES)
    raw = (r / "ck.pt").read_bytes()
    (r / "ck_trunc.pt").write_bytes(raw[: len(raw) // 3])
    (r / "ck_empty.pt").write_bytes(b"")
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, r / "ck_code.pt")
    five = build_classifier("resnet18", 5)
    _save_surgical(r / "ck5.pt", five, [f"tool{i}" for i in range(5)])
    nan = build_classifier("resnet18", len(SURGICAL_CLASSES))
    with torch.no_grad():
        nan.layer3[0].conv1.weight[0, 0, 0, 0] = float("nan")
    _save_surgical(r / "ck_nan.pt", nan, SURGICAL_CLASSES)
    _save_surgical(r / "ck_std0.pt", model, SURGICAL_CLASSES, std=(0.2, 0.0, 0.2))
    torch.manual_seed(1)
    _save_surgical(r / "ck_other.pt", build_classifier("resnet18", len(SURGICAL_CLASSES)), SURGICAL_CLASSES)

    write_organ3d(r / "organ3d", n_train=4, n_val=4, n_test=4, size=28, seed=0)
    t = get_task("organ3d")
    torch.manual_seed(0)
    save_task_checkpoint(r / "o3.pt", t.build_model("resnet3d_18_slim"), t, "resnet3d_18_slim")
    blob = torch.load(r / "o3.pt", weights_only=True)
    blob5 = dict(
        blob,
        classes=blob["classes"][:5],
        state_dict={k: (v[:5] if k.startswith("fc.") else v) for k, v in blob["state_dict"].items()},
    )
    torch.save(blob5, r / "o3_5.pt")
    sd = {k: v.clone() for k, v in blob["state_dict"].items()}
    sd["fc.weight"][3, 7] = float("inf")
    torch.save(dict(blob, state_dict=sd), r / "o3_inf.pt")
    raw = (r / "o3.pt").read_bytes()
    (r / "o3_trunc.pt").write_bytes(raw[: len(raw) // 2])
    (r / "o3_empty.pt").write_bytes(b"")
    torch.save(dict(blob, meta=argparse.Namespace(x=1)), r / "o3_code.pt")

    write_prostate(r / "prostate", n_cases=6, shape=(32, 32, 6), seed=0)
    tp = get_task("prostate")
    save_task_checkpoint(r / "pr.pt", tp.build_model("resnet18"), tp, "resnet18", input_size=(32, 32))
    write_alzheimer(r / "alz", n_train=8, n_test=4, seed=0)
    ta = get_task("alzheimer")
    save_task_checkpoint(r / "alz.pt", ta.build_model(), ta, ta.default_arch)

    # a feature file of the MICCAI frames, gzip-compressed (the settings a rerun must match)
    assert (
        gcfeat_main(
            [
                "extract",
                "--data",
                str(r / "miccai"),
                "--checkpoint",
                str(r / "ck.pt"),
                "--methods",
                "m2",
                "m3",
                "--pooling",
                "32x4x4",
                "--workers",
                "0",
                "--batch-size",
                "4",
                "--no-progress",
                "--compression",
                "gzip",
                "--out",
                str(r / "feats_gz.h5"),
            ]
        )
        == 0
    )
    shutil.copy(r / "feats_gz.h5", r / "feats_gz_copy.h5")
    return r


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def digest(path: Path):
    """sha256 of a file, of every file under a folder (with names), None when absent."""
    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@dataclass
class Case:
    argv: list  # gcfeat command line (without the program name)
    offender: str  # what stderr must name (a file name or the argument)
    keep: list = field(default_factory=list)  # paths that must stay byte-identical
    process: bool = False  # run as `python -m gcfeat` (DataLoader worker processes)
    also: str = ""  # a second substring stderr must hold


def run_case(c: Case, capsys):
    before = {str(p): digest(p) for p in c.keep}
    if c.process:
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        r = subprocess.run(
            [sys.executable, "-m", "gcfeat", *map(str, c.argv)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        rc, err = r.returncode, r.stderr
    else:
        capsys.readouterr()
        try:
            rc = gcfeat_main([str(a) for a in c.argv])
        except SystemExit as e:  # argparse: usage + error, exit 2
            rc = e.code
        err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}, stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert c.offender in err, f"{c.offender!r} not named in:\n{err[-2000:]}"
    assert c.also in err, f"{c.also!r} not in:\n{err[-2000:]}"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert errors, err[-2000:]
    after = {str(p): digest(p) for p in c.keep}
    assert after == before, "a file the run refused to use was changed"
    return err


def readonly(path: Path, monkeypatch) -> Path:
    """``path`` made read-only. Root ignores permission bits, so for root the writability
    probe of :mod:`gcfeat.io.paths` is given the bits as any other user would meet them."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    if os.geteuid() == 0:
        real = out_paths._writable

        def as_user(folder: Path) -> bool:
            return real(folder) and bool(folder.stat().st_mode & 0o200)

        monkeypatch.setattr(out_paths, "_writable", as_user)
    return path


# ---------------------------------------------------------------------------- command cases


def _surgical(w, *extra):
    return ["--data", w / "miccai", "--checkpoint", w / "ck.pt", *extra]


def _extract(w, out, *extra, data=None, ck=None):
    return [
        "extract",
        "--data",
        data or w / "miccai",
        "--checkpoint",
        ck or w / "ck.pt",
        "--methods",
        "m2",
        "m3",
        "--pooling",
        "32x4x4",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--no-progress",
        "--out",
        out,
        *extra,
    ]


def _annotation(w, tmp, text):
    d = copy_tree(w / "miccai", tmp / "miccai")
    ann = next((d / "annotation_tool" / "train").glob("seq_*.txt"))
    ann.write_text(text(ann.read_text()))
    return d, ann


def _flag(text):  # the first tool flag of the first row becomes 2
    lines = text.splitlines()
    row = lines[1].split()
    row[1] = "2"
    return "\n".join([lines[0], " ".join(row), *lines[2:]]) + "\n"


def _png(w, tmp, data: bytes | None):
    d = copy_tree(w / "miccai", tmp / "miccai")
    png = sorted((d / "seq_1" / "left_frames").glob("*.png"))[2]
    raw = png.read_bytes()
    png.write_bytes(raw[: len(raw) // 2] if data is None else data)
    return d, png


def _o3_data(w, tmp, *, masks=None, images=None):
    d = copy_tree(w / "organ3d", tmp / "organ3d")
    for name, cut in (("organmnist3d_masks.npz", masks), ("organmnist3d.npz", images)):
        if cut:
            raw = (d / name).read_bytes()
            (d / name).write_bytes(raw[: int(len(raw) * cut)])
    return d


def _cholec_flag(w, tmp):
    d = copy_tree(w / "cholec", tmp / "cholec")
    ann = next((d / "tool_annotations").glob("*.txt"))
    lines = ann.read_text().splitlines()
    row = lines[1].split("\t")
    row[3] = "3"
    ann.write_text("\n".join([lines[0], "\t".join(row), *lines[2:]]) + "\n")
    return d, ann


def _resume_other_classes(w, tmp):
    out = tmp / "ckpts"
    out.mkdir()
    five = build_classifier("resnet18", 5)
    _save_surgical(
        out / "miccai18_resnet18_last.pt",
        five,
        [f"tool{i}" for i in range(5)],
        epoch=1,
        extra={"train_state": {"history": [], "best_map": 0.0, "best_epoch": 1, "best_ap": []}},
    )
    return out


def _prostate_nan(w, tmp):
    d = copy_tree(w / "prostate", tmp / "prostate")
    case = next(p for p in sorted(d.iterdir()) if p.is_dir())
    _nifti_edit(case / f"{case.name}_t2w.nii.gz", lambda a: np.full_like(a, np.nan))
    return d, case.name


def _feature_file(w, tmp, name="feats_gz.h5"):
    f = tmp / name
    shutil.copy(w / name, f)
    return f


CASES = {
    # --- data.synthetic (gcfeat synth)
    "synth-bad-size": lambda w, t, m: Case(
        ["synth", "--layout", "miccai18", "--out", t / "s", "--size", "0x10"], "0x10"
    ),
    "synth-out-is-file": lambda w, t, m: Case(
        [
            "synth",
            "--layout",
            "miccai18",
            "--out",
            w / "ck_empty.pt",
            "--videos",
            "1",
            "--frames",
            "2",
            "--size",
            "32x40",
        ],
        "ck_empty.pt",
        keep=[w / "ck_empty.pt"],
    ),
    # --- train
    "train-data-missing": lambda w, t, m: Case(
        ["train", "--data", t / "nowhere", "--arch", "resnet18", "--size", "32x40"], "nowhere"
    ),
    "train-annotation-blank": lambda w, t, m: (
        lambda d, a: Case(
            ["train", "--data", d, "--arch", "resnet18", "--size", "32x40", "--out", t / "ck"],
            a.name,
            keep=[d],
            also="blank",
        )
    )(*_annotation(w, t, lambda s: "\n \n\n")),
    "train-miccai-flag-2": lambda w, t, m: (
        lambda d, a: Case(
            ["train", "--data", d, "--arch", "resnet18", "--size", "32x40", "--out", t / "ck"],
            a.name,
            keep=[d],
            also="line 2",
        )
    )(*_annotation(w, t, _flag)),
    "train-cholec80-flag-3": lambda w, t, m: (
        lambda d, a: Case(
            ["train", "--data", d, "--arch", "resnet18", "--size", "32x40", "--out", t / "ck"],
            a.name,
            keep=[d],
            also="line 2",
        )
    )(*_cholec_flag(w, t)),
    "train-resume-other-classes": lambda w, t, m: (
        lambda out: Case(
            [
                "train",
                "--data",
                w / "miccai",
                "--arch",
                "resnet18",
                "--size",
                "32x40",
                "--epochs",
                "1",
                "--out",
                out,
                "--resume",
                "--workers",
                "0",
                "--quiet",
            ],
            "miccai18_resnet18_last.pt",
            keep=[out, w / "miccai"],
            also="11 classes",
        )
    )(_resume_other_classes(w, t)),
    "train-organ3d-truncated-images": lambda w, t, m: (
        lambda d: Case(
            ["train", "--task", "organ3d", "--data", d, "--epochs", "1", "--out", t / "ck"],
            "organmnist3d.npz",
            keep=[d],
        )
    )(_o3_data(w, t, images=0.5)),
    "train-organ3d-size-option": lambda w, t, m: Case(
        ["train", "--task", "organ3d", "--data", w / "organ3d", "--size", "64x64"], "--size"
    ),
    # --- bbox
    "bbox-bidx-range": lambda w, t, m: Case(
        ["bbox", *_surgical(w), "--bidx", "999", "--out", t / "f.png"], "999", keep=[w / "miccai"]
    ),
    "bbox-unknown-class": lambda w, t, m: Case(
        ["bbox", *_surgical(w), "--bidx", "0", "--tclass", "laser", "--out", t / "f.png"], "laser"
    ),
    "bbox-empty-checkpoint": lambda w, t, m: Case(
        [
            "bbox",
            "--data",
            w / "miccai",
            "--checkpoint",
            w / "ck_empty.pt",
            "--bidx",
            "0",
            "--out",
            t / "f.png",
        ],
        "ck_empty.pt",
        keep=[w / "ck_empty.pt"],
    ),
    # passes only with the MRI checkpoint loader of this branch (gcfeat.tasks.train)
    "bbox-organ3d-truncated-checkpoint": lambda w, t, m: Case(
        [
            "bbox",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_trunc.pt",
            "--bidx",
            "0",
            "--out",
            t / "f.png",
        ],
        "o3_trunc.pt",
        keep=[w / "o3_trunc.pt"],
    ),
    # --- tune
    "tune-threshold-range": lambda w, t, m: Case(
        ["tune", *_surgical(w), "--thresholds", "0.5:1.5:0.5", "--out", t / "tu"], "1.5"
    ),
    "tune-checkpoint-5-classes": lambda w, t, m: Case(
        ["tune", "--data", w / "miccai", "--checkpoint", w / "ck5.pt", "--out", t / "tu"],
        "ck5.pt",
        keep=[w / "ck5.pt"],
        also="11 classes",
    ),
    "tune-nan-weights": lambda w, t, m: Case(
        ["tune", "--data", w / "miccai", "--checkpoint", w / "ck_nan.pt", "--out", t / "tu"],
        "ck_nan.pt",
        keep=[w / "ck_nan.pt"],
        also="layer3.0.conv1.weight",
    ),
    "tune-pickled-code": lambda w, t, m: Case(
        ["tune", "--data", w / "miccai", "--checkpoint", w / "ck_code.pt", "--out", t / "tu"],
        "ck_code.pt",
        keep=[w / "ck_code.pt"],
        also="Namespace",
    ),
    "tune-truncated-checkpoint": lambda w, t, m: Case(
        ["tune", "--data", w / "miccai", "--checkpoint", w / "ck_trunc.pt", "--out", t / "tu"],
        "ck_trunc.pt",
        keep=[w / "ck_trunc.pt"],
    ),
    "tune-out-is-file": lambda w, t, m: Case(
        ["tune", *_surgical(w), "--out", w / "ck_empty.pt"], "ck_empty.pt", keep=[w / "ck_empty.pt"]
    ),
    "tune-out-readonly": lambda w, t, m: Case(
        ["tune", *_surgical(w), "--out", readonly(t / "ro", m) / "tu"],
        "ro",
        keep=[t / "ro"],
        also="not writable",
    ),
    "tune-organ3d-checkpoint-5-classes": lambda w, t, m: Case(
        [
            "tune",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_5.pt",
            "--out",
            t / "tu",
        ],
        "o3_5.pt",
        keep=[w / "o3_5.pt"],
        also="11 classes",
    ),
    "tune-prostate-given-organ3d-checkpoint": lambda w, t, m: Case(
        [
            "tune",
            "--task",
            "prostate",
            "--data",
            w / "prostate",
            "--checkpoint",
            w / "o3.pt",
            "--out",
            t / "tu",
        ],
        "o3.pt",
        keep=[w / "o3.pt"],
        also="organ3d",
    ),
    # --- extract
    # worker processes forked from this one (their own stderr is not captured here) ...
    "extract-png-garbage-workers": lambda w, t, m: (
        lambda d, p: Case(
            [*_extract(w, t / "f.h5", data=d)[:-2], "--workers", "2", "--out", t / "f.h5"],
            p.name,
            keep=[d],
            also="PNG",
        )
    )(*_png(w, t, b"not a png at all")),
    "extract-png-empty-workers": lambda w, t, m: (
        lambda d, p: Case(
            [*_extract(w, t / "f.h5", data=d)[:-2], "--workers", "2", "--out", t / "f.h5"],
            p.name,
            keep=[d],
            also="empty",
        )
    )(*_png(w, t, b"")),
    # ... and a real `python -m gcfeat extract` whose whole stderr is read
    "extract-png-truncated-workers": lambda w, t, m: (
        lambda d, p: Case(
            [*_extract(w, t / "f.h5", data=d)[:-2], "--workers", "2", "--out", t / "f.h5"],
            p.name,
            keep=[d],
            process=True,
            also="truncated",
        )
    )(*_png(w, t, None)),
    "extract-pooling-syntax": lambda w, t, m: Case(
        _extract(w, t / "f.h5", "--pooling", "512xfoo"), "--pooling"
    ),
    "extract-pooling-divisor": lambda w, t, m: Case(
        _extract(w, t / "f.h5", "--pooling", "7x3x3"), "(7, 3, 3)"
    ),
    "extract-append-gzip-other-settings": lambda w, t, m: (
        lambda f: Case(
            _extract(w, f, "--threshold", "0.6", "--compression", "gzip"), f.name, keep=[f], also="threshold"
        )
    )(_feature_file(w, t)),
    "extract-append-other-checkpoint": lambda w, t, m: (
        lambda f: Case(
            _extract(w, f, "--compression", "gzip", ck=w / "ck_other.pt"), f.name, keep=[f], also="checkpoint"
        )
    )(_feature_file(w, t)),
    "extract-out-is-folder": lambda w, t, m: Case(
        _extract(w, w / "miccai"), "miccai", keep=[w / "miccai"], also="folder"
    ),
    "extract-out-readonly": lambda w, t, m: Case(
        _extract(w, readonly(t / "ro", m) / "f.h5"), "ro", keep=[t / "ro"], also="not writable"
    ),
    "extract-threshold-range": lambda w, t, m: Case(_extract(w, t / "f.h5", "--threshold", "1.5"), "1.5"),
    "extract-checkpoint-std-zero": lambda w, t, m: Case(
        _extract(w, t / "f.h5", ck=w / "ck_std0.pt"), "ck_std0.pt", keep=[w / "ck_std0.pt"], also="std > 0"
    ),
    "extract-organ3d-inf-weights": lambda w, t, m: Case(
        [
            "extract",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_inf.pt",
            "--workers",
            "0",
            "--no-progress",
            "--out",
            t / "f.h5",
        ],
        "o3_inf.pt",
        keep=[w / "o3_inf.pt"],
        also="fc.weight",
    ),
    "extract-organ3d-truncated-masks": lambda w, t, m: (
        lambda d: Case(
            [
                "extract",
                "--task",
                "organ3d",
                "--data",
                d,
                "--checkpoint",
                w / "o3.pt",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                t / "f.h5",
            ],
            "organmnist3d_masks.npz",
            keep=[d],
        )
    )(_o3_data(w, t, masks=0.6)),
    "extract-prostate-nan-volume": lambda w, t, m: (
        lambda d, case: Case(
            [
                "extract",
                "--task",
                "prostate",
                "--data",
                d,
                "--checkpoint",
                w / "pr.pt",
                "--split",
                "all",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                t / "f.h5",
            ],
            case,
            keep=[d],
            also="NaN or inf",
        )
    )(*_prostate_nan(w, t)),
    # --- export
    "export-features-missing": lambda w, t, m: Case(
        ["export", "captioning", "--data", w / "miccai", t / "none.h5", "--method", "m2", "--out", t / "cap"],
        "none.h5",
    ),
    "export-features-not-hdf5": lambda w, t, m: Case(
        [
            "export",
            "captioning",
            "--data",
            w / "miccai",
            w / "ck_trunc.pt",
            "--method",
            "m2",
            "--out",
            t / "cap",
        ],
        "ck_trunc.pt",
        keep=[w / "ck_trunc.pt"],
    ),
    "export-unknown-method": lambda w, t, m: Case(
        [
            "export",
            "captioning",
            "--data",
            w / "miccai",
            w / "feats_gz_copy.h5",
            "--method",
            "m1",
            "--out",
            t / "c",
        ],
        "m1",
        keep=[w / "feats_gz_copy.h5"],
    ),
    "export-out-is-file": lambda w, t, m: Case(
        [
            "export",
            "captioning",
            "--data",
            w / "miccai",
            w / "feats_gz_copy.h5",
            "--method",
            "m2",
            "--out",
            w / "ck_empty.pt",
        ],
        "ck_empty.pt",
        keep=[w / "ck_empty.pt", w / "feats_gz_copy.h5"],
    ),
    "export-interaction-out-is-file": lambda w, t, m: Case(
        ["export", "interaction", "--data", w / "miccai", w / "feats_gz_copy.h5", "--out", w / "ck_empty.pt"],
        "ck_empty.pt",
        keep=[w / "ck_empty.pt", w / "feats_gz_copy.h5"],
    ),
    "export-out-readonly": lambda w, t, m: Case(
        [
            "export",
            "captioning",
            "--data",
            w / "miccai",
            w / "feats_gz_copy.h5",
            "--method",
            "m2",
            "--out",
            readonly(t / "ro", m) / "cap",
        ],
        "ro",
        keep=[t / "ro", w / "feats_gz_copy.h5"],
        also="not writable",
    ),
    # --- evaluate (MRI checkpoints: passes with the MRI loader of this branch)
    "evaluate-empty-checkpoint": lambda w, t, m: Case(
        [
            "evaluate",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_empty.pt",
            "--out",
            t / "ev",
        ],
        "o3_empty.pt",
        keep=[w / "o3_empty.pt"],
    ),
    "evaluate-truncated-checkpoint": lambda w, t, m: Case(
        [
            "evaluate",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_trunc.pt",
            "--out",
            t / "ev",
        ],
        "o3_trunc.pt",
        keep=[w / "o3_trunc.pt"],
    ),
    "evaluate-pickled-code": lambda w, t, m: Case(
        [
            "evaluate",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_code.pt",
            "--out",
            t / "ev",
        ],
        "o3_code.pt",
        keep=[w / "o3_code.pt"],
        also="Namespace",
    ),
    "evaluate-checkpoint-5-classes": lambda w, t, m: Case(
        [
            "evaluate",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3_5.pt",
            "--out",
            t / "ev",
        ],
        "o3_5.pt",
        keep=[w / "o3_5.pt"],
        also="11 classes",
    ),
    "evaluate-alzheimer-truncated-masks": lambda w, t, m: (
        lambda d: Case(
            [
                "evaluate",
                "--task",
                "alzheimer",
                "--data",
                d,
                "--checkpoint",
                w / "alz.pt",
                "--out",
                t / "ev",
                "--limit",
                "2",
            ],
            "test_masks.npz",
            keep=[d],
        )
    )(_truncate(copy_tree(w / "alz", t / "alz"), "test_masks.npz")),
    "evaluate-out-is-file": lambda w, t, m: Case(
        [
            "evaluate",
            "--task",
            "organ3d",
            "--data",
            w / "organ3d",
            "--checkpoint",
            w / "o3.pt",
            "--out",
            w / "ck_empty.pt",
        ],
        "ck_empty.pt",
        keep=[w / "ck_empty.pt"],
    ),
    # --- demo
    # any torchvision / timm classifier is a demo arch now: a name that is none of them
    "demo-arch": lambda w, t, m: Case(["demo", "--arch", "resnet_101x", "--out", t / "d"], "resnet_101x"),
    # passes only after the merge: demo's CLI goes through the one GcfeatError error path
    "demo-out-is-file": lambda w, t, m: Case(
        [
            "demo",
            "--out",
            w / "ck_empty.pt",
            "--videos",
            "2",
            "--frames",
            "2",
            "--epochs",
            "0",
            "--no-progress",
        ],
        "ck_empty.pt",
        keep=[w / "ck_empty.pt"],
    ),
    # --- the command itself
    "unknown-command": lambda w, t, m: Case(["detect", "--data", "x"], "detect"),
}


def _truncate(d: Path, name: str) -> Path:
    raw = (d / name).read_bytes()
    (d / name).write_bytes(raw[: len(raw) // 2])
    return d


@pytest.mark.parametrize("name", sorted(CASES))
def test_command_refuses_bad_input(name, w, tmp_path, monkeypatch, capsys):
    run_case(CASES[name](w, tmp_path, monkeypatch), capsys)


# ------------------------------------------------------------------------------- Python API


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_classifier("resnet18", 4).eval()


@pytest.mark.parametrize("closed_form", ["auto", False])
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_cam_names_nonfinite_input(net, closed_form, bad):
    x = torch.randn(3, 3, 32, 32)
    x[1, 0, 4, 4] = float(bad)
    with pytest.raises(CAMError, match=r"x: NaN or inf in 1 of 3 images \(batch rows 1\)"):
        GradCAM(net, [net.layer4], closed_form=closed_form)(x)


@pytest.mark.parametrize("closed_form", ["auto", False])
def test_cam_names_nonfinite_weights(closed_form):
    m = build_classifier("resnet18", 4).eval()
    with torch.no_grad():
        m.fc.weight[0, 0] = float("nan")
    with pytest.raises(CAMError, match="logits.*NaN or inf.*weights"):
        GradCAM(m, [m.layer4], closed_form=closed_form)(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize(
    "shape, says",
    [
        ((0, 3, 32, 32), "empty input"),
        ((2, 1, 32, 32), "takes 3 channels"),
        ((2, 3, 8, 32, 32), "takes 3 channels in 2D"),
    ],
)
@pytest.mark.parametrize("closed_form", ["auto", False])
def test_cam_names_bad_shape(net, shape, says, closed_form):
    with pytest.raises(CAMError, match=says):
        GradCAM(net, [net.layer4], closed_form=closed_form)(torch.randn(shape))


def test_worker_error_is_the_original_one_line_message(w, tmp_path):
    d, png = _png(w, tmp_path, b"")
    ds = build_dataset(d, "miccai18", split="all", size=SIZE, with_gt=False)
    batches = iter(make_loader(ds, batch_size=2, num_workers=2))
    with pytest.raises(DataError) as e:
        for _ in batches:
            pass
    batches._shutdown_workers()  # now, not in a later garbage collection (join timeouts)
    msg = str(e.value)
    assert png.name in msg and "empty file" in msg
    assert "\n" not in msg and "Traceback" not in msg and "DataLoader worker" not in msg
    assert "Traceback" in e.value.worker_traceback  # kept for --debug
    # and the form torch uses for exception types with a `message` field
    again = DataError(
        message=f"Caught DataError in DataLoader worker process 1.\nOriginal {e.value.worker_traceback}"
    )
    assert str(again) == msg


def test_load_checkpoint_names_nonfinite_tensor(w):
    with pytest.raises(CheckpointError, match=r"ck_nan\.pt.*layer3\.0\.conv1\.weight \(1 of"):
        load_checkpoint(w / "ck_nan.pt")


def test_refused_append_leaves_gzip_file_identical(w, tmp_path):
    f = _feature_file(w, tmp_path)
    before = digest(f)
    with h5py.File(f, "r") as h:
        attrs = {k: h.attrs[k] for k in h.attrs}
    attrs["thresholds"] = '{"threshold": 0.9}'
    with pytest.raises(SettingsMismatch, match=f.name):
        FeatureWriter(f, attrs, {"m2": 512, "m3": 512}, 11, compression="gzip")
    assert digest(f) == before


def test_pipeline_names_video_and_frame_of_nonfinite_input(w, tmp_path):
    model, info = load_checkpoint(w / "ck.pt")
    ds = build_dataset(w / "miccai", "miccai18", split="all", size=SIZE, with_gt=False)

    class Poisoned(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            s = ds[i]
            if i == 5:
                s["image"] = s["image"].clone()
                s["image"][0, 0, 0] = float("nan")
            return s

    bad = ds[5]
    with pytest.raises(DataError, match=f"{bad['video']} frame {bad['frame_index']}: .*NaN"):
        extract_dataset(
            Poisoned(),
            model,
            info,
            out=str(tmp_path / "f.h5"),
            batch_size=2,
            num_workers=0,
            progress=False,
            layout=(32, 4, 4),
        )


def test_prostate_positive_case_without_lesion_is_a_counted_warning(w, tmp_path):
    d = copy_tree(w / "prostate", tmp_path / "prostate")
    rows = [ln.split(",") for ln in (d / "labels.csv").read_text().splitlines()[1:]]
    case, _, split = next(r for r in rows if r[1] == "1")
    _nifti_edit(d / case / f"{case}_lesion.nii.gz", np.zeros_like)
    with pytest.warns(GcfeatWarning, match=rf"1 of \d+ '{split}' cases labelled 1.*{case}"):
        ds = ProstateSlices(d, split, size=32)
    assert ds.positive_without_lesion == [case]
    assert not bool((ds.labels[[c == case for c in ds.cases]] == 1).any())
    with warnings.catch_warnings():  # the unedited set: no warning
        warnings.simplefilter("error", GcfeatWarning)
        ProstateSlices(w / "prostate", split, size=32)


@pytest.mark.parametrize(
    "text, says",
    [
        ("\n\n  \n", "only blank lines"),
        ("frame t1 t2 t3 t4 t5 t6 t7 t8\n0 1 0 -1 0 0 0 0 0\n", "line 2: tool flag '-1'"),
        ("frame t1 t2 t3 t4 t5 t6 t7 t8\n0 1 0 0.5 0 0 0 0 0\n", "line 2: tool flag '0.5'"),
        ("frame t1 t2 t3 t4 t5 t6 t7 t8\n\n0 1 0 0 0 0 0 0 0\n1 0 0 0 0 0 0 0 x\n", "line 4: non-numeric"),
    ],
)
def test_annotation_reader_refuses(tmp_path, text, says):
    from gcfeat.data.miccai18 import read_tool_annotation

    f = tmp_path / "seq_3.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=rf"seq_3\.txt.*{says}"):
        read_tool_annotation(f)


def test_every_user_error_is_a_gcfeat_error():
    for cls in (CAMError, CheckpointError, DataError, SettingsMismatch, out_paths.OutputError):
        assert issubclass(cls, GcfeatError) and issubclass(cls, ValueError)
