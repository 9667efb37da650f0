"""3D Score-CAM cost: all classes vs one class, batched vs one masked forward per channel.

Model: gcfeat's 3D ResNet-18 (11 classes, OrganMNIST3D-sized 1x28^3 input), target ``layer4``
(512 channels; ``--arch resnet3d_18_slim``: 128 channels, for a quick CPU run). Timed in one
process, reported as ratios to the per-channel loop:

* ``loop, 1 class``: the baseline written here: per image and channel, upsample + min-max the
  activation, one forward of the masked volume (batch of 1), keep class k's softmax score;
  with ``--loop-channels N`` only the first N channels are run and the time is scaled to all C
  (the loop's cost is C identical forwards; printed as "scaled", and the batched-vs-loop map
  check is then skipped: ``tests/test_mri_scorecam3d.py`` checks it);
* ``loop, all classes``: the same loop re-run per class, the way a per-target implementation
  pays for K classes; measured on ``--loop-classes`` classes and scaled to K (printed as such);
* ``gcfeat, 1 class`` / ``gcfeat, all classes``: :class:`gcfeat.cam.ScoreCAM` (``scoring="paper"``),
  the masked inputs batched ``--batch-size`` at a time; the masked forwards are shared by all
  classes, so K classes cost about one.

The script also checks that the batched maps equal the loop's (max abs difference).

    python benchmarks/scorecam3d_speed.py --images 1 --threads 2
    python benchmarks/scorecam3d_speed.py --arch resnet3d_18_slim --threads 2   # ~1 min on 2 cores
    python benchmarks/scorecam3d_speed.py --arch resnet3d_18 --threads 2        # ~7 min on 2 cores
    python benchmarks/scorecam3d_speed.py --arch resnet3d_18 --threads 2 --loop-channels 64
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def loop_scorecam(model, layer, x, k, channels=None):
    """Per-channel reference (see module docstring) -> (B, *S) heatmaps of class k; with
    ``channels`` only the first ``channels`` channels are scored (the others weigh 0)."""
    acts = []
    h = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    act = acts[0]
    out = []
    for b in range(x.shape[0]):
        w = torch.zeros(act.shape[1])
        for c in range(act.shape[1] if channels is None else min(channels, act.shape[1])):
            a = act[b, c]
            if a.max() == a.min():
                continue
            up = F.interpolate(a[None, None], size=x.shape[2:], mode="trilinear", align_corners=False)[0, 0]
            up = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad():
                w[c] = model(x[b : b + 1] * up).softmax(-1)[0, k]
        m = torch.relu((w.view(-1, *[1] * (act.dim() - 2)) * act[b]).sum(0))
        m = (m - m.min()) / (m.max() - m.min() + 1e-7)
        m = F.interpolate(m[None, None], size=x.shape[2:], mode="trilinear", align_corners=False)[0, 0]
        out.append((m - m.min()) / (m.max() - m.min() + 1e-7))
    return torch.stack(out)


def timed(fn, repeats=1):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1, help="volumes per call (B)")
    p.add_argument("--size", type=int, default=28, help="volume side (28 or 64)")
    p.add_argument("--batch-size", type=int, default=128, help="masked inputs per forward")
    p.add_argument(
        "--loop-classes", type=int, default=1, help="classes the all-class loop really runs (scaled to 11)"
    )
    p.add_argument(
        "--arch",
        default="resnet3d_18",
        choices=("resnet3d_18", "resnet3d_18_slim"),
        help="organ3d model: resnet3d_18 (layer4 512 channels) or the slim CPU one "
        "(128 channels, ~16x fewer FLOPs)",
    )
    p.add_argument(
        "--loop-channels",
        type=int,
        default=None,
        help="run the per-channel loop on the first N layer4 channels only and scale "
        "its time to all of them (default: all; resnet3d_18's full loop is "
        "~2.5 min per class on 2 cores)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from gcfeat.cam import ScoreCAM
    from gcfeat.models.resnet3d import resnet3d_18
    from gcfeat.tasks import ORGAN3D_ARCHS

    torch.manual_seed(0)
    model = resnet3d_18(num_classes=11, in_channels=1, small_input=True, widths=ORGAN3D_ARCHS[a.arch]).eval()
    x = torch.rand(a.images, 1, a.size, a.size, a.size)
    K = 11
    cam = ScoreCAM(model, [model.layer4], scoring="paper", batch_size=a.batch_size, progress=False)
    t_one, h_one = timed(lambda: cam(x, classes=[3]), a.repeats)
    t_all, h_all = timed(lambda: cam(x), a.repeats)
    C = ORGAN3D_ARCHS[a.arch][-1]
    lc = C if a.loop_channels is None else max(1, min(a.loop_channels, C))
    t_loop, h_loop = timed(lambda: loop_scorecam(model, model.layer4, x, 3, lc), 1)
    n = max(1, min(a.loop_classes, K))
    t_loop_n, _ = (
        timed(lambda: [loop_scorecam(model, model.layer4, x, k, lc) for k in range(n)], 1)
        if n > 1
        else (t_loop, None)
    )
    t_loop_run = t_loop
    t_loop, t_loop_n = t_loop * C / lc, t_loop_n * C / lc
    t_loop_all = t_loop_n / n * K
    diff = float((h_one[:, 0] - h_loop).abs().max()) if lc == C else None
    diff_all = float((h_all[:, 3] - h_one[:, 0]).abs().max())
    print(
        f"3D Score-CAM, {a.arch} layer4 ({ORGAN3D_ARCHS[a.arch][-1]} ch), B={a.images}, "
        f"{a.size}^3, "
        f"threads={torch.get_num_threads()}, batch_size={a.batch_size}"
    )
    print(f"{'variant':<34}{'seconds':>10}{'speed-up vs loop/1':>20}")
    if lc < C:
        print(f"per-channel loop run on {lc} of {C} channels ({t_loop_run:.2f} s), times scaled x{C / lc:g}")
    rows = [
        ("loop, 1 class" + (" (scaled)" if lc < C else ""), t_loop),
        (f"loop, all {K} classes" + (" (scaled)" if n < K or lc < C else ""), t_loop_all),
        ("gcfeat batched, 1 class", t_one),
        (f"gcfeat batched, all {K} classes", t_all),
    ]
    for name, t in rows:
        print(f"{name:<34}{t:>10.2f}{t_loop / t:>20.2f}")
    print(f"all classes / one class: loop {t_loop_all / t_loop:.1f}x, gcfeat {t_all / t_one:.2f}x")
    check = f"{diff:.2e}" if diff is not None else "not checked (partial loop)"
    print(f"max |batched - loop| = {check}; max |all-class map 3 - one-class map| = {diff_all:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
