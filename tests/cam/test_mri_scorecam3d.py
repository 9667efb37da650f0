"""3D Score-CAM (gcfeat.cam.ScoreCAM, scoring="paper") equals a per-channel reference loop,
and the organ3d task's model + Grad-CAM / Score-CAM run on a synthetic volume."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def reference_scorecam(model, layer, x, k):
    """Plain loops: one masked forward per image and channel, class ``k``'s softmax score."""
    acts = []
    h = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    act = acts[0]
    out = []
    for b in range(x.shape[0]):
        w = torch.zeros(act.shape[1])
        for c in range(act.shape[1]):
            a = act[b, c]
            if a.max() == a.min():
                continue  # the authors' code skips constant channels
            up = F.interpolate(a[None, None], size=x.shape[2:], mode="trilinear", align_corners=False)[0, 0]
            up = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad():
                w[c] = model(x[b : b + 1] * up).softmax(-1)[0, k]
        m = torch.relu((w[:, None, None, None] * act[b]).sum(0))
        m = (m - m.min()) / (m.max() - m.min() + 1e-7)
        m = F.interpolate(m[None, None], size=x.shape[2:], mode="trilinear", align_corners=False)[0, 0]
        out.append((m - m.min()) / (m.max() - m.min() + 1e-7))
    return torch.stack(out)


class Tiny3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3, 4)))


def test_scorecam3d_equals_per_channel_loop():
    from gcfeat.cam import ScoreCAM

    torch.manual_seed(0)
    model = Tiny3d().eval()
    x = torch.rand(2, 1, 8, 10, 6)
    heat = ScoreCAM(model, [model.conv], scoring="paper", batch_size=5)(x, classes=[0, 2])
    assert heat.shape == (2, 2, 8, 10, 6)
    for j, k in enumerate((0, 2)):
        torch.testing.assert_close(
            heat[:, j], reference_scorecam(model, model.conv, x, k), atol=2e-5, rtol=1e-4
        )


def test_organ3d_task_model_and_cams(tmp_path):
    from gcfeat.cam import GradCAM
    from gcfeat.tasks import get_task

    task = get_task("organ3d")
    task.write_synthetic(tmp_path, n_train=11, n_val=0, n_test=0)
    ds = task.build_dataset(tmp_path, "train")
    model = task.build_model().eval()
    x = torch.stack([ds[i]["image"] for i in range(2)])
    assert model(x).shape == (2, 11)
    # Score-CAM on the full model (512 masked forwards per volume) is measured by
    # benchmarks/scorecam3d_speed.py; here Grad-CAM checks the task's target layer in 3D.
    h = GradCAM(model, [task.target_layer(model)])(x, classes=[3])
    assert h.shape == (2, 1, 28, 28, 28) and h.min() >= 0 and h.max() <= 1
