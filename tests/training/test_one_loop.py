"""One loop for every task: :func:`gcfeat.training.fit` with the single-label and the
multi-label strategies reproduces, bit for bit, the two loops it replaced (written out here as
they were: ``train_classifier`` of gcfeat.training.single_label and the epoch of the former
``fit``), and ``workflows.train`` seeds before it builds the model."""

import math
import random
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gcfeat.training import collate, fit, recalibrate_batchnorm, single_label_options


class Blobs(Dataset):
    """12x12 one-channel images, 3 classes by where a bright blob sits."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.label = torch.arange(n) % 3
        self.x = torch.rand(n, 1, 12, 12, generator=g) * 0.3
        for i, k in enumerate(self.label.tolist()):
            self.x[i, 0, 4 * k : 4 * k + 4, 4:8] += 1.0

    def __len__(self):
        return len(self.label)

    def __getitem__(self, i):
        k = self.label[i]
        return {"image": self.x[i], "label": k, "labels": nn.functional.one_hot(k, 3).float()}


class Net(nn.Module):
    """conv -> BatchNorm -> dropout -> GAP -> linear (BN and dropout: both RNG and BN paths)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).mean((2, 3)))


def _former_single_label(model, train_set, val_set, *, epochs, lr, batch_size, seed):
    """The former ``train_classifier`` loop (AdamW, cosine, BN recalibration), as it was."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters()], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=gen,
        drop_last=len(train_set) % batch_size == 1,
    )
    history = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in tqdm(loader, disable=True):  # the bar is part of the RNG order
            x, y = batch["image"], batch["label"]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        sched.step()
        recalibrate_batchnorm(model, loader)
        model.eval()
        with torch.no_grad():
            batches = list(tqdm(DataLoader(val_set, batch_size=batch_size, collate_fn=collate), disable=True))
            logits = torch.cat([model(b["image"]).float() for b in batches])
            labels = torch.cat([b["label"] for b in batches])
        history.append(
            {
                "train_loss": total / max(count, 1),
                "val_loss": float(nn.functional.cross_entropy(logits, labels)),
                "val_accuracy": float((logits.argmax(1) == labels).float().mean()),
            }
        )
    return history


def _former_multilabel(model, train_set, val_set, *, epochs, lr, batch_size, seed):
    """The former multi-label ``fit`` epoch (SGD, cosine, re-seeded per epoch, flips)."""
    opt = torch.optim.SGD(list(model.parameters()), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator()
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=gen)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, collate_fn=collate)
    history = []
    for epoch in range(1, epochs + 1):
        random.seed(seed + epoch)
        np.random.seed(seed + epoch)
        torch.manual_seed(seed + epoch)
        gen.manual_seed(seed + epoch)
        model.train()
        total, count = torch.zeros(()), 0
        for batch in tqdm(loader, disable=True):
            x, y = batch["image"], batch["labels"].float()
            if x.shape[0] < 2:
                continue
            flip = torch.rand(x.shape[0]) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            opt.step()
            total += loss.detach() * x.shape[0]
            count += x.shape[0]
        model.eval()
        with torch.no_grad():
            batches = list(tqdm(val_loader, disable=True))
            logits = torch.cat([model(b["image"]).float() for b in batches])
            targets = torch.cat([b["labels"].float() for b in batches])
        sched.step()
        history.append(
            {
                "train_loss": float(total) / max(count, 1),
                "val_loss": float(nn.functional.binary_cross_entropy_with_logits(logits, targets)),
            }
        )
    return history


def _net(seed=3):
    torch.manual_seed(seed)
    return Net()


def test_fit_reproduces_the_former_single_label_loop(tmp_path):
    train_set, val_set = Blobs(22, 0), Blobs(9, 1)  # 22 % 7 == 1: the lone sample is dropped
    ref_model = _net()
    ref = _former_single_label(ref_model, train_set, val_set, epochs=2, lr=0.05, batch_size=7, seed=4)
    task = SimpleNamespace(name="blobs", classes=("top", "middle", "bottom"), mean=None, std=None)
    r = fit(
        _net(),
        train_set,
        val_set,
        **single_label_options(task=task, arch="net", seed=4),
        epochs=2,
        lr=0.05,
        batch_size=7,
        optimizer="adamw",
        device="cpu",
        out_dir=tmp_path,
        progress=False,
        verbose=False,
    )
    for want, got in zip(ref, r.history):
        assert {k: got[k] for k in want} == want  # exactly, not approximately
    state, ref_state = r.model.state_dict(), ref_model.state_dict()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)
    assert r.metric == "val_accuracy" and r.checkpoint.name == "blobs_net_best.pt"


def test_fit_reproduces_the_former_multilabel_loop(tmp_path):
    train_set, val_set = Blobs(20, 0), Blobs(9, 1)
    ref_model = _net()
    ref = _former_multilabel(ref_model, train_set, val_set, epochs=2, lr=0.05, batch_size=6, seed=0)
    r = fit(
        _net(),
        train_set,
        val_set,
        epochs=2,
        lr=0.05,
        batch_size=6,
        optimizer="sgd",
        schedule="cosine",
        augment_flip=True,
        seed=0,
        arch="net",
        device="cpu",
        out_dir=tmp_path,
        progress=False,
        verbose=False,
    )
    for want, got in zip(ref, r.history):
        assert {k: got[k] for k in want} == want
    state, ref_state = r.model.state_dict(), ref_model.state_dict()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)
    assert r.metric == "val_mAP" and not math.isnan(r.best_score)


def test_workflow_train_is_seeded_before_the_model_is_built(tmp_path):
    from gcfeat.models import load_checkpoint  # noqa: F401  (the loader below is the task's)
    from gcfeat.tasks import get_task
    from gcfeat.workflows.train import train

    states = []
    for i, prior in enumerate((1, 2)):
        torch.manual_seed(prior)  # what the process drew before must not matter
        torch.rand(prior)
        out = train(
            "alzheimer",
            tmp_path / "data",
            epochs=1,
            batch_size=8,
            seed=0,
            out=tmp_path / f"ck{i}",
            synthetic=True,
            n=8,
            progress=False,
            say=lambda s: None,
        )
        model, info = get_task("alzheimer").load_checkpoint(out.checkpoint)
        assert info.form == "gcfeat" and info.task == "alzheimer"
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
