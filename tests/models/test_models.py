"""gcfeat.models.resnet: architectures, heads, local ImageNet weights, never a download."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet34

from gcfeat.models import ARCHS, CheckpointError, build_classifier, describe_state_dict, head_linear


@pytest.mark.parametrize("arch,width", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_architectures_shapes_and_names(arch, width):
    model = build_classifier(arch, num_classes=5).eval()
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == width
    for name in ("layer2", "layer3", "layer4", "fc"):
        assert isinstance(getattr(model, name), nn.Module)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 80)).shape == (2, 5)
    assert describe_state_dict(model.state_dict())["arch"] == arch


def test_dropout_head_keys_and_eval_equivalence():
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=4, dropout=0.2)
    assert isinstance(model.fc, nn.Sequential)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.2
    keys = set(model.state_dict())
    assert {"fc.1.weight", "fc.1.bias"} <= keys and "fc.weight" not in keys
    assert head_linear(model) is model.fc[1]
    model.eval()
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        feats = torch.flatten(
            model.avgpool(
                model.layer4(
                    model.layer3(
                        model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))
                    )
                )
            ),
            1,
        )
        assert torch.allclose(model(x), model.fc[1](feats), atol=1e-6)


def test_norm_none_and_in_channels():
    model = build_classifier("resnet18", num_classes=2, in_channels=1, norm="none").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.conv1.in_channels == 1
    assert not any("bn" in k for k in model.state_dict())
    with torch.no_grad():
        out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    desc = describe_state_dict(model.state_dict())
    assert desc["norm"] == "none" and desc["in_channels"] == 1


def test_never_downloads(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("build_classifier tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    for arch in ARCHS:
        build_classifier(arch, num_classes=3)


@pytest.fixture(scope="module")
def imagenet18(tmp_path_factory):
    torch.manual_seed(1)
    ref = resnet18(weights=None)  # stands in for torchvision's resnet18-f37072fd.pth
    path = tmp_path_factory.mktemp("imagenet") / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    return ref.state_dict(), path


def test_local_imagenet_weights_skip_fc(imagenet18):
    ref, path = imagenet18
    model = build_classifier("resnet18", num_classes=3, weights=path)
    own = model.state_dict()
    for k, v in ref.items():
        if k.startswith("fc."):
            continue
        assert torch.equal(own[k], v), k
    assert own["fc.weight"].shape == (3, 512)


def test_local_imagenet_weights_keep_fc_when_it_fits(imagenet18):
    ref, path = imagenet18
    model = build_classifier("resnet18", num_classes=1000, dropout=0.5, weights=path)
    assert torch.equal(model.fc[1].weight, ref["fc.weight"])
    plain = build_classifier("resnet18", num_classes=1000, weights=path)
    assert torch.equal(plain.fc.bias, ref["fc.bias"])


def test_local_imagenet_weights_other_channels_and_no_norm(imagenet18):
    ref, path = imagenet18
    model = build_classifier("resnet18", num_classes=2, weights=path, in_channels=1, norm="none")
    expected = ref["conv1.weight"].mean(1, keepdim=True) * 3.0
    assert torch.allclose(model.conv1.weight, expected)
    assert torch.equal(model.layer3[0].conv2.weight, ref["layer3.0.conv2.weight"])


def test_imagenet_weights_of_another_arch_are_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"holds resnet34 weights, asked for resnet18"):
        build_classifier("resnet18", num_classes=3, weights=path)
    with pytest.raises(CheckpointError, match="no such file"):
        build_classifier("resnet18", weights=tmp_path / "missing.pth")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"arch": "notanet"}, "arch='notanet'"),  # resnet101 now builds (models.zoo)
        ({"norm": "group"}, "norm='group'"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"dropout": 1.5}, "dropout=1.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_classifier(**kwargs)
