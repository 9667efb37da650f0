"""Any backbone end to end: `gcfeat train --arch` of a non-ResNet on a tiny synthetic MICCAI set,
its checkpoint rebuilt from the stored ClassifierSpec, then tune / bbox / extract (--levels)
unchanged; a timm model's checkpoint through extract."""

import json

import pytest
import torch

from gcfeat.cli import bbox as bbox_cli
from gcfeat.cli import extract as extract_cli
from gcfeat.cli import train as train_cli
from gcfeat.cli import tune as tune_cli
from gcfeat.cli.synthetic import main as synth
from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
from gcfeat.io import FeatureFile
from gcfeat.models import (
    CheckpointError,
    ClassifierSpec,
    build_classifier_with_spec,
    find_levels,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

ARCH = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """1 epoch of MobileNetV3-S through the train CLI on 2 videos x 4 frames at 64x80."""
    root = tmp_path_factory.mktemp("any_backbone")
    assert (
        synth(
            [
                "--layout",
                "miccai18",
                "--out",
                str(root / "data"),
                "--videos",
                "2",
                "--frames",
                "4",
                "--size",
                "64x80",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            train_cli.main(
                [
                    "--data",
                    str(root / "data"),
                    "--arch",
                    ARCH,
                    "--size",
                    "64x80",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "4",
                    "--workers",
                    "0",
                    "--dropout",
                    "0.1",
                    "--out",
                    str(root / "ck"),
                    "--name",
                    "tiny",
                    "--quiet",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(n)
    return root


def test_checkpoint_stores_the_spec_and_rebuilds_identical_weights(trained):
    path = trained / "ck" / "tiny_best.pt"
    raw = read_checkpoint(path)
    spec = ClassifierSpec.from_dict(raw["spec"])
    assert (spec.arch, spec.num_classes, spec.head, spec.dropout) == (ARCH, 11, "classifier.3", 0.1)
    rng = torch.get_rng_state()
    model, info = load_checkpoint(path)
    assert torch.equal(rng, torch.get_rng_state())  # rebuilding leaves the caller's RNG
    assert type(model).__name__ == "MobileNetV3" and info.arch == ARCH and info.spec == spec
    assert info.input_size == (64, 80) and info.classes == SURGICAL_CLASSES
    state = model.state_dict()
    assert state.keys() == raw["state_dict"].keys()
    assert all(torch.equal(state[k], raw["state_dict"][k]) for k in state)
    assert not model.training


def test_tune_and_bbox_run_on_the_last_feature_level(trained, capsys, tmp_path, one_thread):
    ck, data = str(trained / "ck" / "tiny_best.pt"), str(trained / "data")
    model, _ = load_checkpoint(ck)
    last = find_levels(model, input_shape=(3, 64, 80))[-1].name
    assert last.startswith("features.")
    assert (
        tune_cli.main(
            [
                "--data",
                data,
                "--checkpoint",
                ck,
                "--out",
                str(tmp_path / "tune"),
                "--thresholds",
                "0.2:0.6:0.2",
            ]
        )
        == 0
    )
    rec = json.loads((tmp_path / "tune" / "tune_recommendation.json").read_text())
    assert rec["settings"]["layer"] == last and rec["settings"]["arch"] == ARCH
    out = tmp_path / "fig.png"
    assert bbox_cli.main(["--data", data, "--checkpoint", ck, "--bidx", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 0 and f"wrote {out}" in printed and "boxes drawn" in printed


def test_extract_default_and_named_levels(trained, tmp_path, one_thread):
    ck, data = str(trained / "ck" / "tiny_best.pt"), str(trained / "data")
    common = [
        "--data",
        data,
        "--checkpoint",
        ck,
        "--methods",
        "m1",
        "m2",
        "m3",
        "--threshold",
        "0.2",
        "--pred-threshold",
        "0",
        "--crop-size",
        "32x32",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert extract_cli.main(common + ["--out", str(tmp_path / "auto.h5")]) == 0
    model, _ = load_checkpoint(ck)
    auto = [lv.name for lv in find_levels(model, input_shape=(3, 64, 80))]
    with FeatureFile(tmp_path / "auto.h5") as ff:
        m = ff.attrs["methods"]
        assert m["m2"]["levels"] == auto and m["m1"]["layer"] == auto[-1]
        rows = sum(len(v.rows("m2")["label"]) for v in ff)
    assert rows > 0  # every class is predicted at T_pred 0
    named = auto[:-1]  # the user's levels: one fewer, coarsest last
    assert (
        extract_cli.main(
            common
            + [
                "--out",
                str(tmp_path / "named.h5"),
                "--levels",
                *named,
                "--pooling",
                "raw",
                "--single-layer",
                named[-1],
            ]
        )
        == 0
    )
    with FeatureFile(tmp_path / "named.h5") as ff:
        m = ff.attrs["methods"]
        assert m["m2"]["levels"] == named and m["m1"]["layer"] == named[-1]
        ch = find_levels(model, named, input_shape=(3, 64, 80))[-1].channels
        video = next(iter(ff))
        assert video.rows("m3")["features"].shape[1] == ch  # raw: the map's channels


def test_timm_checkpoint_round_trip_and_extract(tmp_path, one_thread):
    pytest.importorskip("timm")
    arch = "timm:convnext_atto"
    torch.manual_seed(0)
    model, spec = build_classifier_with_spec(arch, len(SURGICAL_CLASSES))
    path = save_checkpoint(
        tmp_path / "timm.pt",
        model,
        classes=SURGICAL_CLASSES,
        arch=arch,
        input_size=(64, 80),
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
        spec=spec,
    )
    loaded, info = load_checkpoint(path)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert (
        synth(
            [
                "--layout",
                "miccai18",
                "--out",
                str(tmp_path / "data"),
                "--videos",
                "2",
                "--frames",
                "2",
                "--size",
                "64x80",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert (
        extract_cli.main(
            [
                "--data",
                str(tmp_path / "data"),
                "--checkpoint",
                str(path),
                "--methods",
                "m2",
                "m3",
                "--threshold",
                "0.2",
                "--pred-threshold",
                "0",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                str(tmp_path / "f.h5"),
            ]
        )
        == 0
    )
    with FeatureFile(tmp_path / "f.h5") as ff:
        assert ff.attrs["methods"]["m2"]["levels"] == ["stages.1", "stages.2", "stages.3"]
        assert ff.attrs["architecture"] == arch


def test_spec_errors_name_the_file(tmp_path):
    model, spec = build_classifier_with_spec(ARCH, 11)
    path = save_checkpoint(
        tmp_path / "b.pt",
        model,
        classes=SURGICAL_CLASSES,
        arch=ARCH,
        input_size=(64, 80),
        mean=None,
        std=None,
        spec=spec,
    )
    raw = read_checkpoint(path)
    raw["state_dict"].pop("features.0.0.weight")
    torch.save(raw, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c\.pt.*features\.0\.0\.weight"):
        load_checkpoint(tmp_path / "c.pt")
    raw["spec"]["num_classes"] = 5
    torch.save(raw, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match=r"d\.pt.*5 classes.*classifier\.3"):
        load_checkpoint(tmp_path / "d.pt")
    with pytest.raises(SystemExit) as e:  # a usage error, exit 2
        train_cli.main(["--data", str(tmp_path), "--arch", "not_a_net"])
    assert e.value.code == 2
