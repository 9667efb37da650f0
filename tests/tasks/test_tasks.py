"""The task registry, the small CNNs and the task training / checkpoint round trip."""

import pytest
import torch

from gcfeat.models.small_cnn import SMALL_CNNS, BaselineCNN, build_small_cnn
from gcfeat.tasks import TASK_NAMES, get_task


def test_registry_fields():
    for name in TASK_NAMES:
        t = get_task(name)
        assert t.name == name and t.default_arch in t.archs and t.num_classes == len(t.classes)
        assert t.spatial_dims == len(t.input_size)
    assert get_task("organ3d").spatial_dims == 3 and get_task("organ3d").num_classes == 11
    assert get_task("surgical").activation == "sigmoid"
    assert get_task("prostate").activation == "softmax" and get_task("prostate").kind == "binary"
    assert get_task("alzheimer").classes[2] == "Non_Demented"
    with pytest.raises(ValueError, match="unknown"):
        get_task("brain")
    with pytest.raises(ValueError, match="not a alzheimer model"):
        get_task("alzheimer").build_model("resnet50")
    with pytest.raises(ValueError, match="split"):
        get_task("alzheimer").build_dataset("x", "validation")


def test_baseline_cnn_is_the_seed_architecture():
    m = BaselineCNN()
    assert [type(c).__name__ for c in m.children()][:3] == ["Conv2d", "BatchNorm2d", "Conv2d"]
    assert (m.conv1.in_channels, m.conv1.out_channels, m.conv1.kernel_size) == (1, 32, (3, 3))
    assert (m.conv2.in_channels, m.conv2.out_channels) == (32, 64)
    assert m.bn1.num_features == 32
    assert m.fc1.in_features == 64 * 30 * 30 and m.fc1.out_features == 128
    assert (m.fc2.in_features, m.fc2.out_features) == (128, 4)
    assert m.last_conv is m.conv2
    # BN after the first pool: equal to a hand-written forward
    m.eval()
    x = torch.rand(2, 1, 128, 128)
    h = m.bn1(torch.max_pool2d(torch.relu(m.conv1(x)), 2))
    h = torch.max_pool2d(torch.relu(m.conv2(h)), 2)
    torch.testing.assert_close(m(x), m.fc2(m.fc1(h.flatten(1))))


@pytest.mark.parametrize("arch", sorted(SMALL_CNNS))
def test_small_cnn_variants(arch):
    m = build_small_cnn(arch, input_size=64).eval()
    assert m(torch.rand(3, 1, 64, 64)).shape == (3, 4)
    has_drop = any(isinstance(x, torch.nn.Dropout) for x in m.modules())
    assert has_drop == (SMALL_CNNS[arch].get("dropout", 0) > 0)
    assert (m.conv3 is not None) == SMALL_CNNS[arch].get("extra_conv", False)
    assert m.last_conv is (m.conv3 if m.conv3 is not None else m.conv2)


def test_alzheimer_task_train_and_checkpoint_round_trip(tmp_path):
    from gcfeat.cli.task_train import main
    from gcfeat.tasks import load_task_checkpoint
    from gcfeat.training import predict

    data = tmp_path / "alz"
    rc = main(
        [
            "--task",
            "alzheimer",
            "--data",
            str(data),
            "--synthetic",
            "--n",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "ck"),
        ]
    )
    assert rc == 0
    ck = tmp_path / "ck" / "alzheimer_baseline_cnn_best.pt"
    model, info = load_task_checkpoint(ck, "alzheimer")
    assert get_task("alzheimer").load_checkpoint(ck)[1]["arch"] == "baseline_cnn"
    assert info["task"] == "alzheimer" and info["arch"] == "baseline_cnn"
    assert info["classes"][0] == "Mild_Demented" and info["input_size"] == [128, 128]
    task = get_task("alzheimer")
    ds = task.build_dataset(data, "test")
    logits, labels = predict(model, ds, progress=False)
    assert logits.shape == (len(ds), 4) and labels.shape == (len(ds),)
    assert task.target_layer(model) is model.conv2
    with pytest.raises(ValueError, match="expected task 'organ3d'"):
        load_task_checkpoint(ck, "organ3d")


def test_prostate_task_model_and_dataset(tmp_path):
    task = get_task("prostate")
    task.write_synthetic(tmp_path, n_cases=4, shape=(40, 40, 8))
    ds = task.build_dataset(tmp_path, "train", size=64)
    assert ds[0]["image"].shape == (3, 64, 64)
    m = task.build_model("resnet18_nobn_dropout").eval()
    assert m(ds[0]["image"][None]).shape == (1, 2)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert task.target_layer(m) is m.layer4[-1]


def test_surgical_task_wraps_the_surgical_readers(tmp_path):
    task = get_task("surgical")
    task.write_synthetic(tmp_path, num_videos=4, num_frames=2, size=(64, 80), progress=False)
    ds = task.build_dataset(tmp_path, "train", size=(64, 80))
    s = ds[0]
    assert s["image"].shape == (3, 64, 80) and s["labels"].shape == (11,)
    m = task.build_model("resnet18").eval()
    assert m(s["image"][None]).shape == (1, 11) and task.target_layer(m) is m.layer4[-1]


def test_recalibrate_batchnorm_averages_the_batch_statistics():
    from gcfeat.training import collate, recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3),
        torch.nn.BatchNorm3d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    x = torch.rand(12, 1, 6, 6, 6) * 0.1
    model(x[:2])  # materialise the lazy layer
    model[1].reset_running_stats()
    model.eval()
    ds = [{"image": xi, "label": torch.tensor(0)} for xi in x]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    assert recalibrate_batchnorm(model, loader) == 1
    assert not model.training and model[1].momentum == 0.1  # restored
    with torch.no_grad():
        h = model[0](x)  # (12, 4, 4, 4, 4): batches of 4
    per_batch = h.view(3, 4, 4, -1).transpose(1, 2).reshape(3, 4, -1)  # (batch, C, values)
    torch.testing.assert_close(model[1].running_mean, per_batch.mean(2).mean(0))
    torch.testing.assert_close(model[1].running_var, per_batch.var(2, unbiased=True).mean(0))
    assert int(model[1].num_batches_tracked) == 3
    assert recalibrate_batchnorm(torch.nn.Linear(2, 2), loader) == 0
