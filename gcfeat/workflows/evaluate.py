"""Evaluate a task's classifier and its CAMs (`gcfeat evaluate --task organ3d ...`, CLI
:mod:`gcfeat.cli.evaluate`).

For a trained checkpoint (:mod:`gcfeat.workflows.train`) on one split it reports

* classification: accuracy, macro precision / recall, ROC AUC (binary: of the positive class);
* localisation of each CAM method against the planted ground truth (``gt_mask``): the pointing
  game (the CAM's arg-max voxel lies in the mask, optionally dilated by ``--tolerance``) and the
  IoU of ``heat > --iou-threshold`` with the mask, over the samples whose mask is non-empty
  only (a lesion-free prostate slice has an empty mask: it counts in classification and the
  curves, not here); each figure records how many samples it is over (``n``);
* faithfulness: deletion (to a baseline: zeros, or for prostate each image's channel means, see
  :data:`DELETION_BASELINES`) / insertion (from a Gaussian-blurred copy) AUC, per sample,
  mean +- population std, scored by class probability and by 0/1 correctness from the same
  forwards, for every CAM method AND for a uniform random saliency map (the baseline); the
  per-sample AUCs are kept (``per_sample``), and when only some samples have a mask (prostate)
  the AUCs are also summarised over those (``faithfulness_with_gt_mask``);
* ``--limit N`` evaluates the CAMs on a deterministic class-balanced subset of N samples
  (:func:`balanced_subset`: round-robin over the true classes, each class's samples in a
  ``--sample-seed`` permutation of dataset order), not on the first N, which in a
  slice-ordered split can all be lesion-free;
* exports for ``--exports`` samples, those with a ground-truth mask first: 3D -> CAM NIfTI
  (with the image) + ``.mha`` + interactive HTML + PNG montage; 2D -> an overlay grid with
  predicted / true labels (prostate also writes the slices' CAM pasted back onto the case's grid
  as NIfTI with the case affine); curve figures (per-method mean curves, the exported samples'
  curves with AUC in the title).

* ROAD (MoRF / LeRF, noisy linear imputation), Average Drop / Increase in Confidence for every
  CAM method and the random map, and the sanity stage (cascading randomisation + random-logit
  test) for the gradient CAM methods (``sanity_methods``; Score-CAM only when named: its masked
  forwards per step are costly), all on the same samples, batched
  (:mod:`gcfeat.workflows.map_checks`: ``map_checks.json`` / ``.csv`` / ``.png``; in
  ``metrics.json`` as ``map_checks``). ``road=False`` / ``sanity=False`` skip them.

The CAM explains the TRUE class by default (``--target pred`` for the predicted one); the same
class is scored by the curves. Results: ``<out>/metrics.json`` and ``<out>/summary.md``.

Example::

    python -m gcfeat.evaluate --task organ3d --data data/organ3d \\
        --checkpoint runs/organ3d/organ3d_resnet3d_18_best.pt --method gradcam scorecam \\
        --out runs/organ3d/eval
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gcfeat.cam import get_method
from gcfeat.data.medical import save_nifti, write_mha
from gcfeat.data.prostate import paste_slices
from gcfeat.data.subsets import balanced_subset
from gcfeat.io.paths import writable_dir
from gcfeat.metrics.classification import binary_metrics, multiclass_metrics
from gcfeat.metrics.faithfulness import deletion, gaussian_blur, insertion, random_saliency
from gcfeat.metrics.pointing import localisation, mask_iou, pointing_game, summary_stats
from gcfeat.tasks import get_task
from gcfeat.training.single_label import collate, predict
from gcfeat.viz import montage  # module attribute lookups: tests patch montage.batch_grid
from gcfeat.viz.volume import write_volume_html
from gcfeat.workflows.map_checks import ROAD_FRACTIONS, check_maps, module_name

__all__ = [
    "EvaluationResult",
    "evaluate",
    "summary_markdown",
    "deletion_target",
    "DELETION_BASELINES",
    # re-exported stage helpers (they moved to gcfeat.metrics.pointing / gcfeat.data)
    "balanced_subset",
    "pointing_game",
    "mask_iou",
    "localisation",
]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured (also ``<out>/metrics.json``, :meth:`to_dict`):
    ``classification`` (accuracy, precision, recall, ROC AUC over all samples), ``samples``
    (the --limit subset), ``localisation`` / ``faithfulness`` per method (``{"mean", "std",
    "n"}`` stats), ``faithfulness_with_gt_mask`` (prostate: the lesion slices apart; None when
    absent), ``per_sample`` AUCs, ``seconds``. ``r["classification"]`` reads a field."""

    task: str
    split: str
    checkpoint: str
    arch: str
    n: int
    classification: dict[str, float]
    samples: dict[str, Any]
    faithfulness_setup: dict[str, Any]
    cam_layer: str
    localisation: dict[str, Any]
    faithfulness: dict[str, Any]
    per_sample: dict[str, Any]
    seconds: float
    faithfulness_with_gt_mask: dict[str, Any] | None = None
    map_checks: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k in self}

    def __contains__(self, key: str) -> bool:
        return key in self.__dataclass_fields__ and (
            key not in ("faithfulness_with_gt_mask", "map_checks") or getattr(self, key) is not None
        )

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def _metrics(task, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    probs = logits.softmax(1)
    if task.kind == "binary":
        return binary_metrics(probs[:, 1], labels)
    return multiclass_metrics(probs, labels)


#: What deleted pixels become, per task (default "zeros"). The prostate lesion is DARK in ADC
#: and T2W: deleting to 0 paints lesion-like darkness wherever it deletes, so a positive slice
#: stays positive whatever the order (measured: DAUC 0.998-0.9995 for Grad-CAM, Score-CAM and
#: a random map alike); each image's per-channel mean removes the lesion without adding one.
DELETION_BASELINES = ("zeros", "mean", "blur")


def deletion_target(x: torch.Tensor, baseline: str, blur_sigma: float) -> torch.Tensor:
    """What deletion moves ``x (B, C, *S)`` towards: zeros, each image's per-channel mean over
    all spatial dims, or the blurred copy insertion starts from."""
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.flatten(2).mean(-1).reshape(*x.shape[:2], *([1] * (x.dim() - 2))).expand_as(x)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    raise ValueError(f"deletion baseline: got {baseline!r}, expected one of {DELETION_BASELINES}")


def evaluate(
    task_name: str,
    data,
    checkpoint,
    out,
    *,
    methods=("gradcam",),
    split="test",
    limit: int | None = None,
    target: str = "true",
    n_steps: int = 129,
    blur_sigma: float | None = None,
    batch_size: int = 64,
    cam_batch: int = 8,
    scorecam_batch: int = 128,
    tolerance: int = 0,
    iou_threshold: float = 0.5,
    exports: int = 4,
    seed: int = 0,
    sample_seed: int | None = 0,
    deletion_baseline: str | None = None,
    layer: str | None = None,
    progress: bool = True,
    road: bool = True,
    sanity: bool = True,
    sanity_methods: list[str] | None = None,
    road_fractions=ROAD_FRACTIONS,
) -> EvaluationResult:
    """Run the evaluation (see the module docstring) and write ``metrics.json`` / ``summary.md``.

    ``limit`` samples (all when ``None``) come from :func:`balanced_subset` seeded by
    ``sample_seed``; ``seed`` seeds the random-saliency baseline. ``blur_sigma`` defaults to a
    tenth of the input's side (28^3 -> 2.8, 128^2 -> 12.8). ``deletion_baseline`` (``zeros``,
    ``mean``, ``blur``) defaults to the task's (:attr:`Task.deletion_baseline <gcfeat.tasks.Task>`).
    ``layer`` names the CAM target module (e.g. ``"layer3"`` for a finer map; default the task's
    target layer). ``road`` / ``sanity``: the map checks (module docstring); ``sanity_methods``
    default: the gradient methods of ``methods`` (not scorecam).
    """
    task = get_task(task_name)
    out = writable_dir(out)
    model, info = task.load_checkpoint(checkpoint)
    model.eval()
    ds = task.build_dataset(data, split)
    t0 = time.perf_counter()
    logits, labels = predict(model, ds, progress=progress)
    result = {
        "task": task.name,
        "split": split,
        "checkpoint": str(checkpoint),
        "arch": info["arch"],
        "n": len(ds),
        "classification": _metrics(task, logits, labels),
    }
    preds = logits.argmax(1)

    chosen = torch.arange(len(ds)) if limit is None else balanced_subset(labels, limit, seed=sample_seed)
    idx = chosen.tolist()
    n = len(idx)
    samples = collate([ds[i] for i in idx])
    x = samples["image"]
    cls = (labels if target == "true" else preds)[chosen]
    gt = samples.get("gt_mask")
    if gt is not None and not torch.is_tensor(gt):
        gt = None  # masks of different shapes: no localisation
    has_gt = gt.flatten(1).any(1) if gt is not None else torch.zeros(n, dtype=torch.bool)
    counts = torch.bincount(labels[chosen], minlength=task.num_classes).tolist()
    result["samples"] = {
        "selection": "all" if limit is None else f"balanced_subset(limit={limit}, seed={sample_seed})",
        "n": n,
        "per_class": dict(zip(task.classes, counts)),
        "with_gt_mask": int(has_gt.sum()),
        "indices": idx,
    }
    side = max(x.shape[2:])
    sigma = blur_sigma if blur_sigma is not None else side / 10
    deletion_baseline = deletion_baseline or task.deletion_baseline
    removed = deletion_target(x, deletion_baseline, sigma)
    result["faithfulness_setup"] = {
        "n": n,
        "n_steps": n_steps,
        "points": n_steps + 1,
        "deletion_baseline": deletion_baseline,
        "insertion_blur_sigma": sigma,
        "target": target,
        "scores": ["prob", "correct"],
    }

    gen = torch.Generator().manual_seed(seed)
    saliency = {"random": random_saliency((n, *x.shape[2:]), generator=gen)}
    cam_target = task.target_layer(model, layer)
    result["cam_layer"] = layer or "default"
    for name in methods:
        kw = {"batch_size": scorecam_batch, "progress": False} if name == "scorecam" else {}
        cam = get_method(name)(model, [cam_target], **kw)
        heats = []
        for lo in tqdm(range(0, n, cam_batch), desc=name, disable=None if progress else True, leave=False):
            heats.append(cam(x[lo : lo + cam_batch], classes=cls[lo : lo + cam_batch, None])[:, 0])
        saliency[name] = torch.cat(heats)

    result["localisation"], result["faithfulness"] = {}, {}
    per_sample: dict[str, Any] = {"index": idx, "class": cls.tolist(), "has_gt_mask": has_gt.tolist()}
    curves_all = {}
    for name, sal in saliency.items():
        loc = localisation(sal, gt, tolerance, iou_threshold) if gt is not None else None
        if loc is not None:
            result["localisation"][name] = loc
        d = deletion(
            model,
            x,
            sal,
            cls,
            baseline=removed,
            n_steps=n_steps,
            score=("prob", "correct"),
            activation=task.activation,
            batch_size=batch_size,
        )
        i = insertion(
            model,
            x,
            sal,
            cls,
            n_steps=n_steps,
            blur_sigma=sigma,
            score=("prob", "correct"),
            activation=task.activation,
            batch_size=batch_size,
        )
        curves_all[name] = (d, i)
        aucs = {
            f"{kind}_{s}": c[s].auc for kind, c in (("dauc", d), ("iauc", i)) for s in ("prob", "correct")
        }
        result["faithfulness"][name] = {k: summary_stats(v) for k, v in aucs.items()}
        if 0 < int(has_gt.sum()) < n:  # e.g. prostate: the lesion slices apart
            result.setdefault("faithfulness_with_gt_mask", {})[name] = {
                k: summary_stats(v[has_gt]) for k, v in aucs.items()
            }
        per_sample[name] = {k: v.tolist() for k, v in aucs.items()}
    result["per_sample"] = per_sample
    if road or sanity:
        sm = [m for m in methods if m != "scorecam"] if sanity_methods is None else sanity_methods
        checks = check_maps(
            model,
            x,
            cls,
            saliency if road else {},
            target_layer=module_name(model, cam_target),
            activation=task.activation,
            methods=sm if sanity else [],
            fractions=road_fractions,
            sanity=sanity,
            seed=seed,
            out=out,
        )
        result["map_checks"] = checks.to_dict()
        for v in checks.verdicts():
            print(f"sanity {v}")
    result["seconds"] = time.perf_counter() - t0
    # figures: samples with a ground-truth mask first (a CAM on a lesion-free slice shows little)
    fig = torch.sort((~has_gt).long(), stable=True).indices
    _figures(
        task,
        ds,
        [idx[i] for i in fig.tolist()],
        x[fig],
        {k: v[fig] for k, v in saliency.items()},
        curves_all,
        fig,
        cls[fig],
        preds[chosen][fig],
        out,
        exports,
    )
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(summary_markdown(result))
    return EvaluationResult(**result)


def _figures(task, ds, idx, x, saliency, curves_all, fig, cls, preds, out: Path, exports: int):
    """Figures of the samples in figure order: ``idx`` (dataset indices), ``x``, ``saliency``,
    ``cls``, ``preds`` are already in it; ``curves_all`` is in evaluation order, ``fig`` maps
    figure position -> evaluation position."""
    d0 = next(iter(curves_all.values()))[0]["prob"]
    for kind, j in (("deletion", 0), ("insertion", 1)):
        montage.plot_curves(
            d0.x,
            {k: v[j]["prob"].scores for k, v in curves_all.items()},
            out / f"{kind}_mean_curves.png",
            kind=kind,
        )
    methods = [m for m in saliency if m != "random"]
    k = min(exports, len(idx))
    for m in methods:
        for e in range(k):
            for kind, j in (("deletion", 0), ("insertion", 1)):
                c = curves_all[m][j]["prob"]
                montage.plot_curve(
                    c.x,
                    c.scores[int(fig[e])],
                    out / "curves" / f"{m}_{e:03d}_{kind}.png",
                    kind=kind,
                    label=f"{m} #{idx[e]} {task.classes[int(cls[e])]}",
                )
    if task.spatial_dims == 3:
        for e in range(k):
            vol = x[e, 0]
            stem = out / "volumes" / f"{idx[e]:04d}"
            save_nifti(f"{stem}_image.nii.gz", vol)
            for m in methods:
                h = saliency[m][e]
                save_nifti(f"{stem}_{m}.nii.gz", h)
                write_mha(f"{stem}_{m}.mha", h)
                title = (
                    f"#{idx[e]} true {task.classes[int(cls[e])]} / pred {task.classes[int(preds[e])]}: {m}"
                )
                write_volume_html(f"{stem}_{m}.html", vol, h, title=title)
                montage.slice_montage(vol, h, f"{stem}_{m}_montage.png", step=2, title=title)
        return
    # two lines: long class names (Very_Mild_Demented) do not run into the next panel
    titles = [
        f"pred {task.classes[int(p)]}\ntrue {task.classes[int(c)]}" for p, c in zip(preds[:16], cls[:16])
    ]
    channel = x.shape[1] - 1  # prostate: T2W is the last channel; grayscale tasks: 0
    sample_masks = [ds[i].get("gt_mask") for i in idx[:16]]
    masks = torch.stack(sample_masks) if all(torch.is_tensor(m) for m in sample_masks) else None
    for m in methods:
        montage.batch_grid(x[:16, channel], saliency[m][:16], titles, out / f"{m}_grid.png", masks=masks)
    if task.name == "prostate" and k:
        for case in list(dict.fromkeys(ds.cases[ds.index[i]] for i in idx))[:k]:
            rows = [i for i in range(len(idx)) if ds.cases[ds.index[idx[i]]] == case]
            z = [int(ds.z[ds.index[idx[i]]]) for i in rows]
            crop = ds.crops[ds.index[idx[rows[0]]]]
            for m in methods:
                vol = paste_slices(saliency[m][rows], z, crop, ds.shapes[case])
                save_nifti(out / "volumes" / f"{case}_{m}.nii.gz", vol, ds.affines[case])


_BASELINE_WORDS = {"zeros": "0", "0.0": "0", "mean": "each image's channel means", "blur": "the blurred copy"}


def map_checks_markdown(mc: dict | None) -> list[str]:
    """ROAD / confidence / sanity lines of the summary (none when the checks did not run)."""
    if not mc:
        return []
    st = mc["settings"]
    lines = [
        "",
        f"ROAD (fractions {st['fractions']}, noisy linear imputation) and Average Drop / "
        f"Increase in Confidence on {st['n']} samples:",
        "",
        "| saliency | ROAD MoRF ↓ | ROAD LeRF ↑ | (LeRF - MoRF) / 2 ↑ | Average Drop % ↓ | "
        "Increase in Confidence % ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in mc["road"].items():
        c = mc["confidence"][name]
        lines.append(
            f"| {name} | {r['morf']:.3f} | {r['lerf']:.3f} | {r['combined']:.3f} | "
            f"{c['average_drop']:.1f} | {c['increase_in_confidence']:.1f} |"
        )
    f2 = lambda v: "n/a" if v is None or v != v else f"{v:.2f}"  # noqa: E731
    for m, s in mc["sanity"].items():
        steps = ", ".join(f"+{a}: {f2(b)}" for a, b in zip(s["steps"], s["spearman"]))
        lines += [
            "",
            f"Sanity, {m} (layer {st['target_layer']}): {s['verdict']}. Mean Spearman "
            f"per randomisation step: {steps}; random-logit test Spearman "
            f"{f2(s['random_logit_spearman'])}.",
        ]
    return lines


def summary_markdown(r: dict[str, Any] | EvaluationResult) -> str:
    """The README-style tables of a result dict or :class:`EvaluationResult` (read by key)."""
    fmt = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}"  # noqa: E731
    lines = [
        f"### {r['task']} ({r['arch']}, {r['split']} split, n = {r['n']})",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in r["classification"].items() if isinstance(v, float)]
    f = r["faithfulness_setup"]
    smp = r.get("samples", {})
    per_class = ", ".join(f"{v} {k}" for k, v in smp.get("per_class", {}).items() if v)
    n_loc = next((v["pointing_game"]["n"] for v in r["localisation"].values()), 0)
    lines += [
        "",
        f"CAM evaluation on {f['n']} samples"
        + (f" ({per_class})" if per_class else "")
        + f"; DAUC / IAUC over all {f['n']} ({f['points']} points per curve, deletion "
        f"to {_BASELINE_WORDS.get(str(f['deletion_baseline']), '0')}, insertion from a "
        f"Gaussian blur sigma {f['insertion_blur_sigma']:.2f}, "
        f"class = {f['target']}); pointing game / IoU over the {n_loc} with a non-empty "
        "ground-truth mask:",
        "",
        f"| saliency | pointing game (n = {n_loc}) | IoU (n = {n_loc}) | DAUC prob ↓ | "
        "IAUC prob ↑ | DAUC 0/1 ↓ | IAUC 0/1 ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in r["faithfulness"].items():
        loc = r["localisation"].get(name)
        pg = f"{loc['pointing_game']['mean']:.3f}" if loc else "-"
        iou = f"{loc['iou']['mean']:.3f}" if loc else "-"
        lines.append(
            f"| {name} | {pg} | {iou} | {fmt(v['dauc_prob'])} | {fmt(v['iauc_prob'])} "
            f"| {fmt(v['dauc_correct'])} | {fmt(v['iauc_correct'])} |"
        )
    lines += map_checks_markdown(r.get("map_checks"))
    gt = r.get("faithfulness_with_gt_mask")
    if gt:
        lines += [
            "",
            f"DAUC / IAUC over the {n_loc} samples with a ground-truth mask only:",
            "",
            "| saliency | DAUC prob ↓ | IAUC prob ↑ | DAUC 0/1 ↓ | IAUC 0/1 ↑ |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {fmt(v['dauc_prob'])} | {fmt(v['iauc_prob'])} | "
            f"{fmt(v['dauc_correct'])} | {fmt(v['iauc_correct'])} |"
            for name, v in gt.items()
        ]
    return "\n".join(lines) + "\n"
