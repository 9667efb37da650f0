"""Feature levels found by stride (models.levels) and classifiers of any family (models.zoo)."""

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from gcfeat.extract import feature_levels, forward_to, layer_channels
from gcfeat.models import (
    ChannelsLast,
    LevelError,
    TokenGrid,
    ZooError,
    build_classifier,
    build_classifier_with_spec,
    find_levels,
)
from gcfeat.models.resnet import build_classifier as build_resnet
from gcfeat.models.zoo import ClassifierSpec


def test_resnets_keep_their_levels():
    model = tvm.resnet18(num_classes=3)
    assert list(feature_levels(model)) == ["layer2", "layer3", "layer4"]
    assert layer_channels(model) == {"layer2": 128, "layer3": 256, "layer4": 512}
    measured = find_levels(model, ["layer2", "layer3", "layer4"])
    assert [lv.stride for lv in measured] == [8, 16, 32]
    assert [lv.module for lv in measured] == [model.layer2, model.layer3, model.layer4]


def test_named_levels_sorted_by_stride_and_checked():
    model = tvm.convnext_tiny(num_classes=3)
    levels = find_levels(model, ["features.7", "features.5", "features.6"], input_shape=(3, 64, 64))
    assert [lv.name for lv in levels] == ["features.5", "features.6", "features.7"]
    assert [lv.stride for lv in levels] == [16, 32, 32]
    assert [lv.channels for lv in levels] == [384, 768, 768]
    with pytest.raises(LevelError, match="no submodule 'features.9'"):
        find_levels(model, ["features.9"])
    with pytest.raises(LevelError, match="not a map"):
        find_levels(model, ["classifier.2"], input_shape=(3, 64, 64))


def test_forward_to_a_found_level_equals_the_full_forward():
    torch.manual_seed(0)
    model = tvm.efficientnet_b0(num_classes=3).eval()
    level = find_levels(model, input_shape=(3, 64, 64))[1]
    x = torch.randn(2, 3, 64, 64)
    seen = []
    h = level.module.register_forward_hook(lambda m, a, o: seen.append(o.clone()))
    with torch.no_grad():
        model(x)
        h.remove()
        torch.testing.assert_close(forward_to(model, x, level.module), seen[0])


def test_token_transforms():
    t = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 class + 2x2 tokens
    grid = TokenGrid(1)(t)
    assert grid.shape == (2, 3, 2, 2)
    torch.testing.assert_close(grid[:, :, 0, 1], t[:, 2])  # row-major patches
    torch.testing.assert_close(TokenGrid(2, (1, 3))(t)[:, :, 0, 2], t[:, 4])
    with pytest.raises(LevelError, match="square"):
        TokenGrid(0)(t)
    nhwc = torch.randn(2, 4, 5, 3)
    torch.testing.assert_close(ChannelsLast()(nhwc), nhwc.permute(0, 3, 1, 2))


def test_user_levels_on_a_vit_get_the_token_grid():
    model = tvm.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    )
    (lv,) = find_levels(model, ["encoder.layers.encoder_layer_0"])
    assert lv.stride == 8 and lv.channels == 16 and isinstance(lv.reshape, TokenGrid)


def test_timm_levels_come_from_feature_info():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert [lv.name for lv in find_levels(model)] == ["layer2", "layer3", "layer4"]
    assert [lv.stride for lv in find_levels(model)] == [8, 16, 32]


def test_no_levels_is_an_error():
    with pytest.raises(LevelError, match="no feature levels"):
        find_levels(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


# --------------------------------------------------------------------------------------------
# models.zoo


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_resnets_build_as_before(arch):
    torch.manual_seed(0)
    old = build_resnet(arch, 11, dropout=0.2)
    torch.manual_seed(0)
    new, spec = build_classifier_with_spec(arch, 11, dropout=0.2)
    for (k, a), (k2, b) in zip(old.state_dict().items(), new.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert spec.head == "fc" and spec.arch == arch


@pytest.mark.parametrize(
    "arch,options,head",
    [
        ("convnext_tiny", {}, "classifier.2"),
        ("efficientnet_b0", {}, "classifier.1"),
        ("mobilenet_v3_small", {}, "classifier.3"),
        ("densenet121", {}, "classifier"),
        ("regnet_x_400mf", {}, "fc"),
        ("swin_t", {}, "head"),
        ("vit_b_16", {"image_size": 32}, "heads.head"),
    ],
)
def test_torchvision_heads(arch, options, head):
    model, spec = build_classifier_with_spec(arch, 5, dropout=0.1, **options)
    mod = model.get_submodule(head)
    assert isinstance(mod, nn.Sequential) and isinstance(mod[0], nn.Dropout)
    assert mod[1].out_features == 5 and spec.head == head and spec.options == options
    again = ClassifierSpec.from_dict(spec.to_dict()).build()
    assert again.state_dict().keys() == model.state_dict().keys()


def test_timm_arch_and_weights_file(tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model, spec = build_classifier_with_spec("timm:convnext_atto", 4)
    assert spec.head == "head.fc"
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    same = build_classifier("timm:convnext_atto", 4, weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(same.state_dict()[k], v)
    other = build_classifier("timm:convnext_atto", 7, weights=path)  # head not loaded
    assert other.head.fc.out_features == 7
    assert torch.equal(other.stem[0].weight, model.stem[0].weight)


def test_zoo_errors(tmp_path):
    with pytest.raises(ZooError, match="arch='notanet'"):
        build_classifier("notanet", 3)
    with pytest.raises(ZooError, match="in_channels=1"):
        build_classifier("convnext_tiny", 3, in_channels=1)
    path = tmp_path / "w.pt"
    torch.save(tvm.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit a mobilenet_v3_small"):
        build_classifier("mobilenet_v3_small", 3, weights=path)
