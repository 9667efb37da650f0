"""pytorch-grad-cam's own tests, run with its CAM classes imported from gcfeat.cam.compat.

Vendored and adapted from jacobgil/pytorch-grad-cam (commit 084273b, ``tests/``), MIT License,
Copyright (c) 2021 Jacob Gildenblat. Adaptations: the CAM classes come from
``gcfeat.cam.compat``; torchvision models are built with random weights (``weights=None``)
where the originals ask for ``weights="DEFAULT"`` (no downloads here); the example photo
``examples/both.png`` is replaced by a fixed random image of the same kind (uint8 HxWx3, BGR),
since the tests only check shapes and memory; models are built once per file; the memory loop
runs 20 calls at 112x112 instead of 100 at 224x224; ScoreCAM, listed twice in the original
parameter list, runs once, as its own test function (``test_scorecam_can_run``) whose vgg11
cases are marked ``slow`` (about a minute each on one CPU thread).

Run here (gcfeat has the method):
- ``test_run_all_models.py::test_all_cam_models_can_run``: GradCAM, ScoreCAM,
  GradCAMPlusPlus, XGradCAM, EigenCAM, LayerCAM, on resnet18 (``layer4[-1]``, ``layer4[-2]``)
  and vgg11 (``features[-1]``), both sizes, both target choices, eigen_smooth on / off.
- ``test_one_channel.py``: GradCAM on a one-channel ResNet18.
- ``test_context_release.py``: GradCAM in a loop of ``with`` blocks, memory bounded.

Not run (gcfeat lacks the method or the object under test):
- AblationCAM, EigenGradCAM, FullGrad, KPCA_CAM, SegEigenCAM (``test_run_all_models``) and
  ShapleyCAM (``test_context_release``): methods gcfeat does not implement;
- ``test_refine_cam.py``: RefineCAM and the ARCC metric (not in gcfeat);
- ``test_svd_no_side_effect.py``: pytorch-grad-cam's numpy SVD helpers (gcfeat's projection is
  :func:`gcfeat.cam.smooth.eigen_projection`, a torch function that never writes its input);
- ``test_fasterrcnn_target_device.py``: ``FasterRCNNBoxScoreTarget`` (detection outputs);
- ``test_context_release_cuda.py``: needs CUDA.
"""

import functools

import cv2
import numpy as np
import psutil
import pytest
import torch
import torchvision
from pytorch_grad_cam.utils.image import preprocess_image

from gcfeat.cam.compat import (
    ClassifierOutputTarget,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)

torch.manual_seed(0)


@pytest.fixture
def numpy_image():
    return np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)


@functools.cache
def _model(name):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


@pytest.mark.parametrize(
    "cnn_model,target_layer_names",
    [
        ("resnet18", ["layer4[-1]", "layer4[-2]"]),
        pytest.param("vgg11", ["features[-1]"], marks=pytest.mark.slow),  # 132M-parameter head
    ],
)
@pytest.mark.parametrize("batch_size,width,height", [(2, 32, 32), (1, 32, 40)])
@pytest.mark.parametrize("target_category", [None, 100])
@pytest.mark.parametrize("aug_smooth", [False])
@pytest.mark.parametrize("eigen_smooth", [True, False])
@pytest.mark.parametrize("cam_method", [GradCAM, GradCAMPlusPlus, XGradCAM, EigenCAM, LayerCAM])
def test_all_cam_models_can_run(
    numpy_image,
    batch_size,
    width,
    height,
    cnn_model,
    target_layer_names,
    cam_method,
    target_category,
    aug_smooth,
    eigen_smooth,
):
    img = cv2.resize(numpy_image, (width, height))
    input_tensor = preprocess_image(img)
    input_tensor = input_tensor.repeat(batch_size, 1, 1, 1)

    model = _model(cnn_model)
    target_layers = []
    for layer in target_layer_names:
        target_layers.append(eval(f"model.{layer}"))

    cam = cam_method(model=model, target_layers=target_layers)
    cam.batch_size = 4
    if target_category is None:
        targets = None
    else:
        targets = [ClassifierOutputTarget(target_category) for _ in range(batch_size)]

    grayscale_cam = cam(
        input_tensor=input_tensor, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth
    )
    assert grayscale_cam.shape[0] == input_tensor.shape[0]
    assert grayscale_cam.shape[1:] == input_tensor.shape[2:]


@pytest.mark.parametrize(
    "cnn_model,target_layer_names",
    [
        ("resnet18", ["layer4[-1]", "layer4[-2]"]),
        # about a minute per case on one CPU thread (1,024 masked forwards through vgg11's
        # 25088x4096 head): marked slow
        pytest.param("vgg11", ["features[-1]"], marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("batch_size,width,height", [(2, 32, 32), (1, 32, 40)])
@pytest.mark.parametrize("target_category", [None, 100])
@pytest.mark.parametrize("aug_smooth", [False])
@pytest.mark.parametrize("eigen_smooth", [True, False])
@pytest.mark.parametrize("cam_method", [ScoreCAM])
def test_scorecam_can_run(
    numpy_image,
    batch_size,
    width,
    height,
    cnn_model,
    target_layer_names,
    cam_method,
    target_category,
    aug_smooth,
    eigen_smooth,
):
    img = cv2.resize(numpy_image, (width, height))
    input_tensor = preprocess_image(img)
    input_tensor = input_tensor.repeat(batch_size, 1, 1, 1)

    model = _model(cnn_model)
    target_layers = []
    for layer in target_layer_names:
        target_layers.append(eval(f"model.{layer}"))

    cam = cam_method(model=model, target_layers=target_layers)
    cam.batch_size = 4
    if target_category is None:
        targets = None
    else:
        targets = [ClassifierOutputTarget(target_category) for _ in range(batch_size)]

    grayscale_cam = cam(
        input_tensor=input_tensor, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth
    )
    assert grayscale_cam.shape[0] == input_tensor.shape[0]
    assert grayscale_cam.shape[1:] == input_tensor.shape[2:]


@pytest.mark.parametrize("cam_method", [GradCAM])
def test_memory_usage_in_loop_one_channel(numpy_image, cam_method):
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    target_layers = [model.layer4]
    gray_img = numpy_image[:, :, 0]
    input_tensor = torch.from_numpy(np.float32(gray_img)).unsqueeze(0).unsqueeze(0)
    input_tensor = input_tensor.repeat(16, 1, 1, 1)
    targets = None
    with cam_method(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
        assert grayscale_cam.shape == (16, *gray_img.shape)


@pytest.mark.parametrize("cnn_model,target_layer_names", [("resnet18", ["layer4[-1]"])])
@pytest.mark.parametrize("batch_size,width,height", [(1, 112, 112)])
@pytest.mark.parametrize("target_category", [100])
@pytest.mark.parametrize("aug_smooth", [False])
@pytest.mark.parametrize("eigen_smooth", [False])
@pytest.mark.parametrize("cam_method", [GradCAM])
def test_memory_usage_in_loop(
    numpy_image,
    batch_size,
    width,
    height,
    cnn_model,
    target_layer_names,
    cam_method,
    target_category,
    aug_smooth,
    eigen_smooth,
):
    img = cv2.resize(numpy_image, (width, height))
    input_tensor = preprocess_image(img)
    input_tensor = input_tensor.repeat(batch_size, 1, 1, 1)
    model = _model(cnn_model)
    target_layers = []
    for layer in target_layer_names:
        target_layers.append(eval(f"model.{layer}"))
    targets = [ClassifierOutputTarget(target_category) for _ in range(batch_size)]
    initial_memory = 0
    for i in range(20):
        with cam_method(model=model, target_layers=target_layers) as cam:
            grayscale_cam = cam(
                input_tensor=input_tensor,  # noqa: F841 (as in the original)
                targets=targets,
                aug_smooth=aug_smooth,
                eigen_smooth=eigen_smooth,
            )

            if i == 0:
                initial_memory = psutil.virtual_memory()[2]
        assert psutil.virtual_memory()[2] <= initial_memory * 1.5
