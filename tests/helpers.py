"""Helpers shared by several test modules (import them as ``from helpers import ...``;
tests/conftest.py puts this folder on ``sys.path``)."""

import torch


def make_tiny_surgical(root, *, frames: int, seed: int, model_seed: int, test_videos: int = 0):
    """A tiny synthetic MICCAI set (2 videos at 64x80) and a random ResNet18 checkpoint under
    ``root``: ``root/data`` (data ``seed``; ``test_videos`` more sequences as the test split) and
    ``root/ck.pt`` (weights from ``model_seed``)."""
    from gcfeat.cli.synthetic import main as synth
    from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
    from gcfeat.models import build_classifier, save_checkpoint

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
                str(frames),
                "--size",
                "64x80",
                "--seed",
                str(seed),
                "--test-videos",
                str(test_videos),
            ]
        )
        == 0
    )
    torch.manual_seed(model_seed)
    model = build_classifier("resnet18", num_classes=len(SURGICAL_CLASSES))
    save_checkpoint(
        root / "ck.pt",
        model,
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=(64, 80),
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    return root
