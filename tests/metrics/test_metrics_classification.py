"""gcfeat.metrics.classification against naive reference loops and scikit-learn."""

import math

import numpy as np
import pytest
import torch

from gcfeat.metrics import (
    accuracy,
    ap_table,
    average_precision,
    binary_metrics,
    confusion_matrix,
    mean_average_precision,
    multiclass_metrics,
    precision_recall,
    roc_auc,
    roc_auc_per_class,
)


def naive_ap(scores, targets):
    """AP = sum over distinct thresholds t (high to low) of (R(t) - R(prev)) * P(t)."""
    p = targets.sum()
    if p == 0:
        return math.nan
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        chosen = scores >= t
        tp = (targets[chosen] == 1).sum()
        recall, precision = tp / p, tp / chosen.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def naive_auc(scores, targets):
    """P(score of a random positive > score of a random negative), ties count 1/2."""
    pos, neg = scores[targets == 1], scores[targets == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


@pytest.fixture
def multilabel():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(60, 5)).astype(np.float64)  # many ties
    scores[:, 2] = rng.random(60)  # no ties
    targets = (rng.random((60, 5)) < 0.35).astype(np.float64)
    targets[:, 4] = 0  # no positives
    return scores, targets


def test_average_precision_matches_naive_reference(multilabel):
    scores, targets = multilabel
    ap = average_precision(scores, targets)
    assert isinstance(ap, np.ndarray) and ap.shape == (5,)
    for k in range(4):
        assert ap[k] == pytest.approx(naive_ap(scores[:, k], targets[:, k]), abs=1e-12)
    assert math.isnan(ap[4])
    assert mean_average_precision(scores, targets) == pytest.approx(np.mean(ap[:4]))


def test_average_precision_matches_sklearn(multilabel):
    metrics = pytest.importorskip("sklearn.metrics")  # a dependency of grad-cam (test extra)
    scores, targets = multilabel
    ap = average_precision(torch.from_numpy(scores).float(), torch.from_numpy(targets))
    assert isinstance(ap, torch.Tensor) and ap.dtype == torch.float64
    for k in range(4):
        assert float(ap[k]) == pytest.approx(
            metrics.average_precision_score(targets[:, k], scores[:, k]), abs=1e-6
        )


def test_average_precision_known_values():
    # ranking: pos, neg, pos -> precision 1 at recall 1/2, 2/3 at recall 1 -> AP = 5/6
    assert float(average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 0, 1]))) == pytest.approx(
        5 / 6
    )
    # all tied: one threshold, precision = prevalence
    assert float(average_precision(torch.ones(4), torch.tensor([1, 0, 0, 1]))) == pytest.approx(0.5)
    perfect = average_precision(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.eye(2))
    assert torch.equal(perfect, torch.ones(2, dtype=torch.float64))
    assert math.isnan(mean_average_precision(torch.rand(3, 2), torch.zeros(3, 2)))
    with pytest.raises(ValueError, match=r"scores \(3, 2\) and targets \(3, 3\)"):
        average_precision(torch.rand(3, 2), torch.zeros(3, 3))


def test_roc_auc_matches_naive_and_sklearn(multilabel):
    scores, targets = multilabel
    auc = roc_auc_per_class(scores, targets)
    for k in range(4):
        assert auc[k] == pytest.approx(naive_auc(scores[:, k], targets[:, k]), abs=1e-12)
    assert math.isnan(auc[4])
    metrics = pytest.importorskip("sklearn.metrics")
    assert roc_auc(scores[:, 0], targets[:, 0]) == pytest.approx(
        metrics.roc_auc_score(targets[:, 0], scores[:, 0])
    )
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=80)
    labels = rng.integers(0, 4, size=80)
    assert roc_auc(probs, labels) == pytest.approx(
        metrics.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    two = np.stack([1 - probs[:, 0], probs[:, 0]], 1)
    binary = (labels == 0).astype(int)
    assert roc_auc(two, binary) == pytest.approx(metrics.roc_auc_score(binary, probs[:, 0]))


def test_binary_and_multiclass_metrics_match_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    probs = rng.random(50)
    y = rng.integers(0, 2, 50)
    m = binary_metrics(torch.from_numpy(probs), torch.from_numpy(y), threshold=0.4)
    pred = (probs > 0.4).astype(int)
    assert m["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(metrics.precision_score(y, pred))
    assert m["recall"] == pytest.approx(metrics.recall_score(y, pred))
    assert m["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, probs))

    scores = rng.random((70, 3))
    scores /= scores.sum(1, keepdims=True)
    labels = rng.integers(0, 3, 70)
    m = multiclass_metrics(scores, labels)
    pred = scores.argmax(1)
    assert m["accuracy"] == pytest.approx(metrics.accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(metrics.precision_score(labels, pred, average="macro"))
    assert m["recall"] == pytest.approx(metrics.recall_score(labels, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores, multi_class="ovr"))
    assert np.array_equal(confusion_matrix(scores, labels), metrics.confusion_matrix(labels, pred))


def test_small_exact_cases():
    preds = torch.tensor([1, 1, 0, 0, 1])
    target = torch.tensor([1, 0, 0, 1, 1])
    assert accuracy(preds, target) == pytest.approx(3 / 5)
    assert precision_recall(preds, target) == pytest.approx((2 / 3, 2 / 3))
    assert precision_recall(torch.zeros(4), torch.tensor([0, 1, 0, 1])) == (0.0, 0.0)  # nothing predicted
    assert confusion_matrix(preds, target).tolist() == [[1, 1], [1, 2]]
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert math.isnan(roc_auc(torch.rand(4), torch.ones(4)))
    with pytest.raises(ValueError, match="average='micro'"):
        precision_recall(preds, target, average="micro")


def test_ap_table():
    text = ap_table(
        torch.tensor([0.5, float("nan"), 1.0], dtype=torch.float64),
        ["grasper", "hook", "tissue"],
        title="validation",
    )
    lines = text.splitlines()
    assert lines[0] == "validation"
    assert any(line.startswith("grasper") and line.endswith("0.500") for line in lines)
    assert any(line.startswith("hook") and line.endswith("-") for line in lines)
    assert (
        lines[-1].startswith("mAP") and "0.750" in lines[-1] and "(2/3 classes with positives)" in lines[-1]
    )
    with pytest.raises(ValueError, match="2 AP values for 3 class names"):
        ap_table([0.1, 0.2], ["a", "b", "c"])
