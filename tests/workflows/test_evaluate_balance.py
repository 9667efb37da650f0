"""``gcfeat.evaluate``: the class-balanced ``--limit`` subset and localisation over non-empty
ground-truth masks only (a lesion-free prostate slice counts in classification and the curves,
not in pointing game / IoU)."""

import csv
from collections import Counter

import numpy as np
import pytest
import torch

from gcfeat.cli.evaluate import main
from gcfeat.data.subsets import balanced_subset
from gcfeat.metrics.pointing import localisation
from gcfeat.workflows.evaluate import evaluate


def _naive_round_robin(labels, limit, seed):
    """Reference: per class (ascending id) its members in dataset order, or in the order of a
    seeded permutation of the whole dataset; then one of each class per round."""
    n = len(labels)
    perm = (
        list(range(n))
        if seed is None
        else torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    )
    members = {c: [i for i in perm if labels[i] == c] for c in sorted(set(labels))}
    out, r = [], 0
    while len(out) < min(limit, n):
        for c in members:
            if r < len(members[c]) and len(out) < limit:
                out.append(members[c][r])
        r += 1
    return out


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_balanced_subset_equals_round_robin_reference(seed):
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (57,), generator=g)
    labels[labels == 2] = 1  # a class that is absent, ids stay 0, 1, 3
    labels[:3] = 3  # class 3 is rare: it runs out first
    labels[3:][labels[3:] == 3] = 0
    for limit in (0, 1, 5, 8, 20, 57, 100):
        got = balanced_subset(labels, limit, seed=seed).tolist()
        assert got == _naive_round_robin(labels.tolist(), limit, seed), limit


def test_balanced_subset_is_balanced_deterministic_and_not_the_first_n():
    # slice-ordered split as in prostate: 30 negatives, then 6 positives, then 10 negatives
    labels = torch.tensor([0] * 30 + [1] * 6 + [0] * 10)
    a = balanced_subset(labels, 8, seed=0)
    assert torch.equal(a, balanced_subset(labels, 8, seed=0))  # deterministic
    assert Counter(labels[a].tolist()) == {0: 4, 1: 4}  # balanced
    assert len(set(a.tolist())) == 8
    for k in range(1, 9):  # every prefix balanced
        c = Counter(labels[a[:k]].tolist())
        assert abs(c[0] - c[1]) <= 1
    assert labels[:8].sum() == 0  # the first 8: no positive
    # the positives run out: the rest is filled with the other class
    b = balanced_subset(labels, 20, seed=0)
    assert Counter(labels[b].tolist()) == {0: 14, 1: 6}
    # dataset order within each class without a seed; a seed draws other members
    assert balanced_subset(labels, 4, seed=None).tolist() == [0, 30, 1, 31]
    assert not torch.equal(balanced_subset(labels, 8, seed=1), a)
    with pytest.raises(ValueError, match="limit"):
        balanced_subset(labels, -1)


def _naive_localisation(heat, mask, tolerance, threshold):
    hits, ious = [], []
    for h, m in zip(heat.numpy(), mask.numpy()):
        if not m.any():
            continue
        pos = np.unravel_index(int(np.argmax(h)), h.shape)
        near = tuple(slice(max(p - tolerance, 0), p + tolerance + 1) for p in pos)
        hits.append(float(m[near].any()))
        pred = h > threshold
        union = (pred | m).sum()
        ious.append((pred & m).sum() / union if union else 0.0)
    return np.mean(hits), np.mean(ious), len(hits)


@pytest.mark.parametrize("shape, tolerance", [((16, 20), 0), ((16, 20), 2), ((8, 9, 10), 1)])
def test_localisation_skips_empty_masks(shape, tolerance):
    g = torch.Generator().manual_seed(1)
    heat = torch.rand(9, *shape, generator=g)
    mask = torch.rand(9, *shape, generator=g) > 0.8
    mask[[1, 4, 5]] = False  # lesion-free samples
    mask[2] = False
    mask[2].view(-1)[heat[2].argmax()] = True  # a sure hit
    r = localisation(heat, mask, tolerance, 0.6)
    pg, iou, n = _naive_localisation(heat, mask, tolerance, 0.6)
    assert r["pointing_game"]["n"] == r["iou"]["n"] == n == 6
    assert r["pointing_game"]["mean"] == pytest.approx(pg)
    assert r["iou"]["mean"] == pytest.approx(iou, abs=1e-6)
    # counting the empty masks as misses (IoU 0) would give a different, lower figure
    assert r["iou"]["mean"] > iou * 6 / 9
    assert localisation(heat, torch.zeros_like(mask), tolerance) is None


@pytest.fixture
def prostate_eval(tmp_path, monkeypatch):
    """A two-case test split (one case with a lesion, one without), a random ResNet-18
    checkpoint, and the 2D overlay grid captured instead of drawn."""
    from gcfeat.models.task_checkpoint import save_task_checkpoint
    from gcfeat.tasks import get_task

    task = get_task("prostate")
    data = tmp_path / "data"
    task.write_synthetic(data, n_cases=2, shape=(40, 40, 12), seed=0)
    with open(data / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["label"] for r in rows) == ["0", "1"]
    with open(data / "labels.csv", "w", newline="") as f:  # both cases in test
        w = csv.writer(f)
        w.writerow(["case_id", "label", "split"])
        w.writerows([(r["case_id"], r["label"], "test") for r in rows])
    torch.manual_seed(0)
    ckpt = save_task_checkpoint(tmp_path / "ck.pt", task.build_model("resnet18"), task, "resnet18")
    grids = {}
    import gcfeat.viz.montage as montage

    monkeypatch.setattr(
        montage,
        "batch_grid",
        lambda images, heats, titles, path, **kw: grids.setdefault(
            path.name, (images.clone(), heats.clone(), list(titles))
        ),
    )
    return task, data, ckpt, grids


def test_evaluate_limit_is_balanced_and_localises_on_lesion_slices_only(prostate_eval, tmp_path):
    task, data, ckpt, grids = prostate_eval
    ds = task.build_dataset(data, "test")
    labels = torch.stack([ds[i]["label"] for i in range(len(ds))])
    r = evaluate(
        "prostate",
        data,
        ckpt,
        tmp_path / "ev",
        methods=("gradcam",),
        limit=6,
        n_steps=4,
        exports=1,
        progress=False,
    )
    idx = r["samples"]["indices"]
    assert idx == balanced_subset(labels, 6, seed=0).tolist()
    assert list(r["samples"]["per_class"].values()) == [3, 3]
    masks = torch.stack([ds[i]["gt_mask"] for i in idx])
    n_gt = int(masks.flatten(1).any(1).sum())
    assert n_gt == 3 and r["samples"]["with_gt_mask"] == 3
    assert r["faithfulness_setup"]["n"] == 6
    for name in ("gradcam", "random"):
        assert r["faithfulness"][name]["dauc_prob"]["n"] == 6
        assert r["localisation"][name]["pointing_game"]["n"] == 3
        assert r["localisation"][name]["iou"]["n"] == 3

    # per-sample AUCs in evaluation order; the lesion-slice summary is over those samples only
    ps = r["per_sample"]
    assert ps["index"] == idx and ps["has_gt_mask"] == masks.flatten(1).any(1).tolist()
    for name in ("gradcam", "random"):
        v = torch.tensor(ps[name]["dauc_prob"])
        assert len(v) == 6
        assert r["faithfulness"][name]["dauc_prob"]["mean"] == pytest.approx(float(v.mean()))
        sub = r["faithfulness_with_gt_mask"][name]["dauc_prob"]
        assert sub["n"] == 3
        assert sub["mean"] == pytest.approx(float(v[torch.tensor(ps["has_gt_mask"])].mean()))

    # the grid shows the samples with a lesion first; its heatmaps give the same localisation
    # figures by a naive loop over the lesion slices
    images, heats, titles = grids["gradcam_grid.png"]
    assert len(images) == 6
    order = [next(i for i in idx if torch.equal(ds[i]["image"][2], im)) for im in images]
    assert sorted(order) == sorted(idx)
    grid_masks = torch.stack([ds[i]["gt_mask"] for i in order])
    assert grid_masks.flatten(1).any(1).tolist() == [True] * 3 + [False] * 3
    assert all(t.endswith(f"true {task.classes[1]}") for t in titles[:3])
    pg, iou, n = _naive_localisation(heats, grid_masks, 0, 0.5)
    assert n == 3
    assert r["localisation"]["gradcam"]["pointing_game"]["mean"] == pytest.approx(pg)
    assert r["localisation"]["gradcam"]["iou"]["mean"] == pytest.approx(iou, abs=1e-6)
    # the exported case NIfTI is the lesion case's
    lesion_case = ds[order[0]]["video"]
    assert [p.name for p in (tmp_path / "ev" / "volumes").iterdir()] == [f"{lesion_case}_gradcam.nii.gz"]
    md = (tmp_path / "ev" / "summary.md").read_text()
    assert "pointing game (n = 3)" in md and "DAUC / IAUC over all 6" in md
    # prostate deletes to each image's channel means (its lesion is dark: zeros would add one):
    # the random map's DAUC equals a deletion curve towards those means
    assert r["faithfulness_setup"]["deletion_baseline"] == "mean"
    assert "deletion to each image's channel means" in md
    from gcfeat.metrics.faithfulness import deletion, random_saliency
    from gcfeat.tasks import load_task_checkpoint

    model, _ = load_task_checkpoint(ckpt, "prostate")
    x = torch.stack([ds[i]["image"] for i in idx])
    sal = random_saliency((6, *x.shape[2:]), generator=torch.Generator().manual_seed(0))
    means = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    d = deletion(model, x, sal, labels[idx], baseline=means, n_steps=4, activation="softmax")
    np.testing.assert_allclose(ps["random"]["dauc_prob"], d.auc.numpy(), atol=1e-5)
    assert "over the 3 samples with a ground-truth mask only" in md


def test_deletion_target():
    from gcfeat.workflows.evaluate import deletion_target

    x = torch.rand(2, 3, 5, 6, 4)
    m = deletion_target(x, "mean", 1.0)
    assert m.shape == x.shape
    torch.testing.assert_close(m[1, 2, 0, 0, 0], x[1, 2].mean())
    torch.testing.assert_close(m[1, 2, 4, 5, 3], x[1, 2].mean())
    assert not deletion_target(x, "zeros", 1.0).any()
    with pytest.raises(ValueError, match="deletion baseline"):
        deletion_target(x, "noise", 1.0)


def test_evaluate_cli_sample_seed(prostate_eval, tmp_path, capsys):
    task, data, ckpt, _ = prostate_eval
    assert (
        main(
            [
                "--task",
                "prostate",
                "--data",
                str(data),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "cli"),
                "--limit",
                "4",
                "--n-steps",
                "2",
                "--exports",
                "0",
                "--sample-seed",
                "-1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pointing game (n = 2)" in out
    import json

    r = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    labels = torch.stack([task.build_dataset(data, "test")[i]["label"] for i in range(r["n"])])
    assert r["samples"]["indices"] == balanced_subset(labels, 4, seed=None).tolist()


def test_evaluate_layer_option(prostate_eval, tmp_path, capsys):
    """--layer moves the CAM target: layer3 maps differ from the default layer4 ones, and an
    unknown module is a clear error (exit 2)."""
    task, data, ckpt, _ = prostate_eval
    kw = dict(methods=("gradcam",), limit=2, n_steps=2, exports=0, progress=False)
    r4 = evaluate("prostate", data, ckpt, tmp_path / "l4", **kw)
    r3 = evaluate("prostate", data, ckpt, tmp_path / "l3", layer="layer3", **kw)
    assert r3["cam_layer"] == "layer3" and r4["cam_layer"] == "default"
    assert r3["per_sample"]["gradcam"] != r4["per_sample"]["gradcam"]
    assert r3["per_sample"]["random"] == r4["per_sample"]["random"]
    assert (
        main(
            [
                "--task",
                "prostate",
                "--data",
                str(data),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "bad"),
                "--layer",
                "layer9",
                "--limit",
                "2",
            ]
        )
        == 2
    )
    assert "--layer 'layer9'" in capsys.readouterr().err
