"""Evaluate a task's classifier and its CAMs: ``python -m gcfeat.evaluate --task organ3d ...``.

For a trained checkpoint (:mod:`gcfeat.tasks.train`) on one split it reports

* classification: accuracy, macro precision / recall, ROC AUC (binary: of the positive class);
* localisation of each CAM method against the planted ground truth (``gt_mask``): the pointing
  game (the CAM's arg-max voxel lies in the mask, optionally dilated by ``--tolerance``) and the
  IoU of ``heat > --iou-threshold`` with the mask; samples without a mask are skipped;
* faithfulness: deletion (to zeros) / insertion (from a Gaussian-blurred copy) AUC, per sample,
  mean +- population std, scored by class probability and by 0/1 correctness from the same
  forwards, for every CAM method AND for a uniform random saliency map (the baseline);
* exports for the first ``--exports`` samples: 3D -> CAM NIfTI (with the image) + ``.mha`` +
  interactive HTML + PNG montage; 2D -> an overlay grid with predicted / true labels (prostate
  also writes the slices' CAM pasted back onto the case's grid as NIfTI with the case affine);
  curve figures (per-method mean curves, first samples' curves with AUC in the title).

The CAM explains the TRUE class by default (``--target pred`` for the predicted one); the same
class is scored by the curves. Results: ``<out>/metrics.json`` and ``<out>/summary.md``.

Example::

    python -m gcfeat.evaluate --task organ3d --data data/organ3d \\
        --checkpoint runs/organ3d/organ3d_resnet3d_18_best.pt --method gradcam scorecam \\
        --out runs/organ3d/eval
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gcfeat.tasks import TASK_NAMES, get_task

__all__ = ["pointing_game", "mask_iou", "evaluate", "main"]


def pointing_game(heat: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Hit (bool ``(B,)``) when the arg-max of ``heat (B, *S)`` lies in ``mask (B, *S)``,
    dilated by ``tolerance`` voxels (a max-pool of the mask, 2D or 3D)."""
    m = mask.float()
    if tolerance > 0:
        pool = F.max_pool3d if m.dim() == 4 else F.max_pool2d
        m = pool(m[:, None], 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0]
    idx = heat.flatten(1).argmax(1)
    return m.flatten(1).gather(1, idx[:, None])[:, 0] > 0


def mask_iou(heat: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU ``(B,)`` of ``heat > threshold`` with ``mask`` over all spatial dims."""
    pred = (heat > threshold).flatten(1)
    gt = mask.bool().flatten(1)
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def _metrics(task, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    from gcfeat.metrics.classification import binary_metrics, multiclass_metrics

    probs = logits.softmax(1)
    if task.kind == "binary":
        return binary_metrics(probs[:, 1], labels)
    return multiclass_metrics(probs, labels)


def _stats(v: torch.Tensor) -> dict:
    from gcfeat.metrics.faithfulness import mean_std

    m, s = mean_std(v)
    return {"mean": m, "std": s, "n": int(v.numel())}


def evaluate(task_name: str, data, checkpoint, out, *, methods=("gradcam",), split="test",
             limit: int | None = None, target: str = "true", n_steps: int = 129,
             blur_sigma: float | None = None, batch_size: int = 64, cam_batch: int = 8,
             scorecam_batch: int = 128, tolerance: int = 0, iou_threshold: float = 0.5,
             exports: int = 4, seed: int = 0, progress: bool = True) -> dict:
    """Run the evaluation (see the module docstring) and write ``metrics.json`` / ``summary.md``.

    ``blur_sigma`` defaults to a tenth of the input's side (28^3 -> 2.8, 128^2 -> 12.8).
    """
    from gcfeat.cam import get_method
    from gcfeat.metrics.faithfulness import deletion, insertion, random_saliency
    from gcfeat.tasks.train import collate, load_task_checkpoint, predict

    task = get_task(task_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_task_checkpoint(checkpoint, task)
    model.eval()
    ds = task.build_dataset(data, split)
    t0 = time.perf_counter()
    logits, labels = predict(model, ds, progress=progress)
    result = {"task": task.name, "split": split, "checkpoint": str(checkpoint),
              "arch": info["arch"], "n": len(ds), "classification": _metrics(task, logits, labels)}
    preds = logits.argmax(1)

    n = len(ds) if limit is None else min(limit, len(ds))
    idx = list(range(n))
    samples = collate([ds[i] for i in idx])
    x = samples["image"]
    cls = labels[:n] if target == "true" else preds[:n]
    gt = samples.get("gt_mask")
    has_gt = None if gt is None or not torch.is_tensor(gt) else gt.flatten(1).any(1)
    side = max(x.shape[2:])
    sigma = blur_sigma if blur_sigma is not None else side / 10
    result["faithfulness_setup"] = {
        "n": n, "n_steps": n_steps, "points": n_steps + 1, "deletion_baseline": 0.0,
        "insertion_blur_sigma": sigma, "target": target, "scores": ["prob", "correct"]}

    gen = torch.Generator().manual_seed(seed)
    saliency = {"random": random_saliency((n, *x.shape[2:]), generator=gen)}
    layer = task.target_layer(model)
    for name in methods:
        kw = {"batch_size": scorecam_batch, "progress": False} if name == "scorecam" else {}
        cam = get_method(name)(model, [layer], **kw)
        heats = []
        for lo in tqdm(range(0, n, cam_batch), desc=name, disable=None if progress else True,
                       leave=False):
            heats.append(cam(x[lo:lo + cam_batch], classes=cls[lo:lo + cam_batch, None])[:, 0])
        saliency[name] = torch.cat(heats)

    result["localisation"], result["faithfulness"] = {}, {}
    curves_all = {}
    for name, sal in saliency.items():
        if has_gt is not None and bool(has_gt.any()):
            sel = has_gt
            hit = pointing_game(sal[sel], gt[sel], tolerance).float()
            iou = mask_iou(sal[sel], gt[sel], iou_threshold)
            result["localisation"][name] = {"pointing_game": _stats(hit), "iou": _stats(iou)}
        d = deletion(model, x, sal, cls, n_steps=n_steps, score=("prob", "correct"),
                     activation=task.activation, batch_size=batch_size)
        i = insertion(model, x, sal, cls, n_steps=n_steps, blur_sigma=sigma,
                      score=("prob", "correct"), activation=task.activation,
                      batch_size=batch_size)
        curves_all[name] = (d, i)
        result["faithfulness"][name] = {
            f"{kind}_{s}": _stats(c[s].auc) for kind, c in (("dauc", d), ("iauc", i))
            for s in ("prob", "correct")}
    result["seconds"] = time.perf_counter() - t0
    _figures(task, ds, idx, x, saliency, curves_all, cls, preds[:n], gt, out, exports)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(summary_markdown(result))
    return result


def _figures(task, ds, idx, x, saliency, curves_all, cls, preds, gt, out: Path, exports: int):
    from gcfeat.viz.montage import batch_grid, plot_curve, plot_curves

    d0 = next(iter(curves_all.values()))[0]["prob"]
    for kind, j in (("deletion", 0), ("insertion", 1)):
        plot_curves(d0.x, {k: v[j]["prob"].scores for k, v in curves_all.items()},
                    out / f"{kind}_mean_curves.png", kind=kind)
    methods = [m for m in saliency if m != "random"]
    k = min(exports, len(idx))
    for m in methods:
        for e in range(k):
            for kind, j in (("deletion", 0), ("insertion", 1)):
                c = curves_all[m][j]["prob"]
                plot_curve(c.x, c.scores[e], out / "curves" / f"{m}_{e:03d}_{kind}.png",
                           kind=kind, label=f"{m} #{idx[e]} {task.classes[int(cls[e])]}")
    if task.spatial_dims == 3:
        from gcfeat.io.medical import save_nifti, write_mha
        from gcfeat.viz.montage import slice_montage
        from gcfeat.viz.volume import write_volume_html

        for e in range(k):
            vol = x[e, 0]
            stem = out / "volumes" / f"{idx[e]:04d}"
            save_nifti(f"{stem}_image.nii.gz", vol)
            for m in methods:
                h = saliency[m][e]
                save_nifti(f"{stem}_{m}.nii.gz", h)
                write_mha(f"{stem}_{m}.mha", h)
                title = (f"#{idx[e]} true {task.classes[int(cls[e])]} / pred "
                         f"{task.classes[int(preds[e])]}: {m}")
                write_volume_html(f"{stem}_{m}.html", vol, h, title=title)
                slice_montage(vol, h, f"{stem}_{m}_montage.png", step=2, title=title)
        return
    titles = [f"pred {task.classes[int(p)]} / true {task.classes[int(c)]}"
              for p, c in zip(preds[:16], cls[:16])]
    channel = x.shape[1] - 1  # prostate: T2W is the last channel; grayscale tasks: 0
    for m in methods:
        batch_grid(x[:16, channel], saliency[m][:16], titles, out / f"{m}_grid.png")
    if task.name == "prostate" and k:
        from gcfeat.data.prostate import paste_slices
        from gcfeat.io.medical import save_nifti

        for case in list(dict.fromkeys(ds.cases[ds.index[i]] for i in idx))[:k]:
            rows = [i for i in range(len(idx)) if ds.cases[ds.index[idx[i]]] == case]
            z = [int(ds.z[ds.index[idx[i]]]) for i in rows]
            crop = ds.crops[ds.index[idx[rows[0]]]]
            for m in methods:
                vol = paste_slices(saliency[m][rows], z, crop, ds.shapes[case])
                save_nifti(out / "volumes" / f"{case}_{m}.nii.gz", vol, ds.affines[case])


def summary_markdown(r: dict) -> str:
    """The README-style tables of a result dict."""
    fmt = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}"  # noqa: E731
    lines = [f"### {r['task']} ({r['arch']}, {r['split']} split, n = {r['n']})", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in r["classification"].items()
              if isinstance(v, float)]
    f = r["faithfulness_setup"]
    lines += ["", f"CAM evaluation on {f['n']} samples ({f['points']} points per curve, deletion "
              f"to 0, insertion from a Gaussian blur sigma {f['insertion_blur_sigma']:.2f}, "
              f"class = {f['target']}):", "",
              "| saliency | pointing game | IoU | DAUC prob ↓ | IAUC prob ↑ | DAUC 0/1 ↓ | "
              "IAUC 0/1 ↑ |", "|---|---|---|---|---|---|---|"]
    for name, v in r["faithfulness"].items():
        loc = r["localisation"].get(name)
        pg = f"{loc['pointing_game']['mean']:.3f}" if loc else "-"
        iou = f"{loc['iou']['mean']:.3f}" if loc else "-"
        lines.append(f"| {name} | {pg} | {iou} | {fmt(v['dauc_prob'])} | {fmt(v['iauc_prob'])} "
                     f"| {fmt(v['dauc_correct'])} | {fmt(v['iauc_correct'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.evaluate",
        description="Classification metrics, CAM localisation (pointing game, IoU vs the "
                    "planted ground truth) and deletion / insertion AUC (with a random-saliency "
                    "baseline) of a task checkpoint; figures and CAM volume exports.")
    p.add_argument("--task", required=True, choices=[t for t in TASK_NAMES if t != "surgical"])
    p.add_argument("--data", required=True, help="dataset folder (organ3d: folder or .npz)")
    p.add_argument("--checkpoint", required=True, help="checkpoint from gcfeat.tasks.train")
    p.add_argument("--method", nargs="+", default=["gradcam"],
                   help="CAM methods (gradcam, scorecam, gradcam++, ...); default gradcam")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--limit", type=int, default=None,
                   help="CAM / faithfulness on the first N samples only (metrics use all)")
    p.add_argument("--target", choices=("true", "pred"), default="true",
                   help="class explained and scored: the true label or the prediction")
    p.add_argument("--n-steps", type=int, default=129, help="curve steps (points = steps + 1)")
    p.add_argument("--blur-sigma", type=float, default=None,
                   help="insertion start blur in pixels (default: side / 10)")
    p.add_argument("--batch-size", type=int, default=65, help="curve steps per forward")
    p.add_argument("--tolerance", type=int, default=0, help="pointing game tolerance (voxels)")
    p.add_argument("--iou-threshold", type=float, default=0.5)
    p.add_argument("--exports", type=int, default=4, help="samples with figures / volume files")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random saliency baseline")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    r = evaluate(a.task, a.data, a.checkpoint, a.out, methods=a.method, split=a.split,
                 limit=a.limit, target=a.target, n_steps=a.n_steps, blur_sigma=a.blur_sigma,
                 batch_size=a.batch_size, tolerance=a.tolerance, iou_threshold=a.iou_threshold,
                 exports=a.exports, seed=a.seed)
    print(summary_markdown(r))
    print(f"wrote {Path(a.out) / 'metrics.json'} ({r['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
