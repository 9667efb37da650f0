"""Faithfulness and sanity of saliency maps for any task: the stages ``gcfeat evaluate`` adds
(:func:`check_maps`), and the surgical evaluation (:func:`evaluate_surgical`).

For images ``x (B, C, *S)``, one explained class per image and one map per image and method:

* **ROAD** (Rong et al., ICML 2022; :func:`gcfeat.metrics.faithfulness.road`): remove a fraction
  p of the pixels most (MoRF) / least (LeRF) relevant first, fill them by noisy linear
  imputation, score the class (probability); per method the mean over images and fractions of
  MoRF (lower = more faithful), LeRF (higher) and ``(LeRF - MoRF) / 2``;
* **Average Drop / Increase in Confidence** (Chattopadhay et al., WACV 2018;
  :func:`~gcfeat.metrics.faithfulness.confidence_change`): the class probability on the image
  weighted by its map;
* **sanity** (:mod:`gcfeat.metrics.sanity`): cascading randomisation (Adebayo et al., NeurIPS
  2018; the model's layers re-initialised from the logits down on a deep copy, Spearman / SSIM
  of each step's maps with the trained model's) and the random-logit test (Sixt et al., ICML
  2020: the map of a random other class). The verdict says plainly when the maps do NOT change
  (mean Spearman above 0.5 after a randomisation step).

A seeded random map (at the CAM's grid, :func:`gcfeat.cam.baselines.random_maps`) goes through
ROAD and the confidence figures as the baseline. Everything is batched (ROAD: all (image,
fraction) pairs of a chunk in one imputation solve and one forward). Writes
``map_checks.json``, ``map_checks.csv`` (one row per method) and ``map_checks.png`` (ROAD
curves, sanity curves).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gcfeat import config
from gcfeat.cam import get_method
from gcfeat.cam.baselines import random_maps
from gcfeat.config import METHOD_NAMES
from gcfeat.data import TISSUE
from gcfeat.errors import GcfeatError
from gcfeat.metrics.faithfulness import confidence_change, road
from gcfeat.metrics.sanity import cam_map_fn, cascading_randomization, random_logit_test
from gcfeat.viz.plots import plot_map_checks
from gcfeat.workflows.tune import load_dataset, load_model, make_cam

__all__ = [
    "MapChecks",
    "check_maps",
    "evaluate_surgical",
    "module_name",
    "ROAD_FRACTIONS",
    "SANITY_THRESHOLD",
]

#: ROAD removal fractions of the evaluate stage (pytorch-grad-cam's ROAD uses 10..90 %).
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: A randomisation step whose maps keep a mean Spearman above this has not changed them.
SANITY_THRESHOLD = 0.5


class MapCheckError(GcfeatError):
    """A user-caused problem with the map checks' inputs."""


@dataclass
class MapChecks:
    """The figures of :func:`check_maps` (``to_dict`` = ``map_checks.json``).

    Attributes:
        road: per map name ``{"morf", "lerf", "combined", "fractions", "morf_curve",
            "lerf_curve", "base", "n"}`` (means over images; curves per fraction);
        confidence: per map name ``{"average_drop", "increase_in_confidence", "n"}`` (%);
        sanity: per CAM method ``{"steps", "spearman", "ssim" (mean per step), "unchanged"
            (steps whose maps did not change), "passes", "verdict", "random_logit_spearman",
            "random_logit_ssim", "n"}``;
        settings, files.
    """

    road: dict[str, dict]
    confidence: dict[str, dict]
    sanity: dict[str, dict]
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, NaN as None (strict JSON)."""
        return _nan_to_none({k: getattr(self, k) for k in self.__dataclass_fields__})

    def table(self) -> pd.DataFrame:
        """One row per map: ROAD, confidence and the sanity verdict (NaN where not run)."""
        rows = []
        for name in dict.fromkeys([*self.road, *self.confidence, *self.sanity]):
            r, c, s = self.road.get(name, {}), self.confidence.get(name, {}), self.sanity.get(name, {})
            rows.append(
                {
                    "map": name,
                    "road_morf": r.get("morf"),
                    "road_lerf": r.get("lerf"),
                    "road_combined": r.get("combined"),
                    "average_drop": c.get("average_drop"),
                    "increase_in_confidence": c.get("increase_in_confidence"),
                    "sanity_passes": s.get("passes"),
                    "sanity_min_spearman": min(s["spearman"]) if s.get("spearman") else None,
                    "random_logit_spearman": s.get("random_logit_spearman"),
                }
            )
        return pd.DataFrame(rows)

    def verdicts(self) -> list[str]:
        """One plain sentence per sanity-checked method."""
        return [f"{m}: {s['verdict']}" for m, s in self.sanity.items()]


def _nan_to_none(o):
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return None if isinstance(o, float) and o != o else o


def module_name(model, module) -> str:
    """The dotted name of ``module`` inside ``model``."""
    for name, m in model.named_modules():
        if m is module:
            return name
    raise MapCheckError("the CAM target layer is not a submodule of the model")


def _nanmean(v: torch.Tensor) -> float:
    v = v.double()
    ok = ~torch.isnan(v)
    return float(v[ok].mean()) if bool(ok.any()) else float("nan")


def check_maps(
    model,
    images: torch.Tensor,
    classes: torch.Tensor,
    maps: dict[str, torch.Tensor],
    *,
    target_layer: str,
    activation: str = "softmax",
    methods: Sequence[str] = (),
    fractions: Sequence[float] = ROAD_FRACTIONS,
    sanity: bool = True,
    sanity_layers: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    out: str | Path | None = None,
) -> MapChecks:
    """ROAD, confidence change and sanity of ``maps`` (module docstring).

    Args:
        model: the classifier, eval mode (a deep copy is randomised; the model is untouched).
        images: ``(B, C, *S)``; classes: ``(B,)`` the class each map explains.
        maps: ``{name: (B, *S)}`` in [0, 1] (CAM methods by their ``--method`` name; others,
            e.g. ``"random"``, get ROAD and confidence only).
        target_layer: the CAM target module's name (``"layer4"``, ``"layer4.1"``).
        activation: ``"softmax"`` (single-label) or ``"sigmoid"`` (multi-label).
        methods: the CAM methods of ``maps`` to sanity-check (default: none).
        fractions: ROAD removal fractions; batch_size: (image, fraction) pairs per solve.
        sanity_layers: randomisation order (default: the model's children, top first).
        out: folder for ``map_checks.json`` / ``.csv`` / ``.png`` (None: write nothing).
    """
    classes = torch.as_tensor(classes).long().reshape(-1)
    road_out, conf_out, san_out = {}, {}, {}
    for name, sal in maps.items():
        sal = sal.float()
        r = road(
            model,
            images,
            sal,
            classes,
            percentages=fractions,
            activation=activation,
            seed=seed,
            batch_size=batch_size,
        )
        assert r.morf is not None and r.lerf is not None  # road's default orders compute both
        road_out[name] = {
            "morf": float(r.morf_mean.mean()),
            "lerf": float(r.lerf_mean.mean()),
            "combined": float(r.combined.mean()),
            "fractions": list(map(float, fractions)),
            "morf_curve": r.morf.mean(0).tolist(),
            "lerf_curve": r.lerf.mean(0).tolist(),
            "base": float(r.base.mean()),
            "n": len(classes),
        }
        c = confidence_change(model, images, sal, classes, activation=activation)
        conf_out[name] = {
            "average_drop": c.average_drop,
            "increase_in_confidence": c.increase_in_confidence,
            "n": len(classes),
        }
    if sanity:
        for m in methods:
            san_out[m] = _sanity(model, images, classes, m, target_layer, sanity_layers, seed)
    result = MapChecks(
        road_out,
        conf_out,
        san_out,
        settings={
            "n": len(classes),
            "fractions": list(map(float, fractions)),
            "activation": activation,
            "target_layer": target_layer,
            "sanity_threshold": SANITY_THRESHOLD,
            "seed": seed,
            "imputation": "noisy linear (ROAD)",
            "confidence_baseline": 0.0,
        },
    )
    if out is not None:
        result.files = write_map_checks(result, out)
    return result


def _sanity(model, images, classes, method: str, layer: str, layers, seed: int) -> dict:
    key = METHOD_NAMES.get(method.lower(), method)
    kw = {"progress": False} if key == "scorecam" else {}
    fn = cam_map_fn(get_method(key), [layer], **kw)
    casc = cascading_randomization(model, images, classes, fn, layers=layers, seed=seed)
    logit = random_logit_test(model, images, classes, fn, _num_outputs(model, images), seed=seed)
    sp, ss = casc.mean()
    valid = (~torch.isnan(casc.spearman)).sum(1)  # (S,) images with a non-constant pair
    sp = torch.where(valid > 0, sp, torch.full_like(sp, float("nan")))
    bad = [st for st, v in zip(casc.steps, sp.tolist()) if v > SANITY_THRESHOLD]
    if not bool((valid > 0).any()):
        verdict = (
            "cannot tell: the maps are constant (e.g. all zero) for every image, before or "
            "after randomisation"
        )
    elif bad:
        verdict = (
            f"the maps do NOT change when the model is randomised: mean Spearman > "
            f"{SANITY_THRESHOLD} after re-initialising {', '.join(bad)}"
        )
    else:
        verdict = (
            "the maps change as the model is randomised (mean Spearman <= "
            f"{SANITY_THRESHOLD} from the first step on)"
        )
    return {
        "steps": casc.steps,
        "spearman": sp.tolist(),
        "ssim": ss.tolist(),
        "unchanged": bad,
        "passes": bool((valid > 0).any()) and not bad,
        "verdict": verdict,
        "images_compared": valid.tolist(),
        "random_logit_spearman": _nanmean(logit.spearman),
        "random_logit_ssim": _nanmean(logit.ssim),
        "n": len(classes),
    }


@torch.no_grad()
def _num_outputs(model, images) -> int:
    return int(model(images[:1]).shape[1])


def write_map_checks(result: MapChecks, out: str | Path) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "map_checks.json"), "csv": str(out / "map_checks.csv")}
    result.table().to_csv(files["csv"], index=False, float_format="%.6g")
    files["figure"] = str(plot_map_checks(result.road, result.sanity, out / "map_checks.png"))
    result.files = files
    Path(files["json"]).write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return files


def surgical_samples(dataset, model, n: int, device: str = "cpu", seed: int = 0):
    """``(images (n, 3, H, W), classes (n,))``: frames with an instrument, each with its
    highest-scoring ground-truth instrument (the class explained), seeded choice of frames."""
    labels = torch.as_tensor(dataset.labels)[:, :TISSUE]
    rows = torch.nonzero(labels.sum(1) > 0).flatten()
    if len(rows) == 0:
        raise MapCheckError("data: no frame with an instrument in this split")
    g = torch.Generator().manual_seed(seed)
    rows = rows[torch.randperm(len(rows), generator=g)[:n]].sort().values
    x = torch.stack([dataset[int(i)]["image"] for i in rows]).to(device)
    with torch.no_grad():
        logits = model(x).float()
    present = labels[rows].bool().to(device)
    cls = torch.where(present, logits[:, :TISSUE], torch.full_like(logits[:, :TISSUE], -torch.inf)).argmax(1)
    return x, cls


def evaluate_surgical(
    data,
    checkpoint,
    out,
    *,
    methods: Sequence[str] = (config.CAM_METHOD,),
    split: str = "val",
    limit: int = 16,
    layer: str = "layer4",
    fractions: Sequence[float] = ROAD_FRACTIONS,
    sanity: bool = True,
    road: bool = True,
    seed: int = 0,
    device: str = "cpu",
) -> MapChecks:
    """The map checks of the surgical task: ``limit`` frames of ``split`` with an instrument
    (seeded), each explaining its highest-scoring ground-truth instrument (sigmoid scores),
    CAMs of ``methods`` on ``layer`` beside a random map at the same grid; ``road`` / ``sanity``
    False skip those stages."""
    model, info = load_model(checkpoint, device)
    ds = load_dataset(data, info, split=split)
    x, cls = surgical_samples(ds, model, limit, device, seed)
    maps = {}
    grid = None
    for m in methods:
        res = make_cam(model, m, layer).explain(x, cls[:, None])
        maps[m] = res.heatmap[:, 0]
        grid = tuple(res.layer_heatmaps[0].shape[2:])
    maps["random"] = random_maps((len(x), 1, *x.shape[2:]), seed=seed, cells=grid, device=x.device)[:, 0]
    return check_maps(
        model,
        x,
        cls,
        maps if road else {},
        target_layer=layer,
        activation="sigmoid",
        methods=list(methods),
        fractions=fractions,
        sanity=sanity,
        seed=seed,
        out=out,
    )
