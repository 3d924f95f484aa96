"""geomlat.engine.train under DistributedDataParallel on 2 CPU processes (gloo, loopback).

A student distilled with CE + GlobalBatch(GKD()) from a fixed teacher, in float64, on a batch that
splits unevenly across the ranks in the last step of each epoch, with a random augmentation: the 2-process
run must end with the weights and records of the one-process run (computed here, without a process
group), an interrupted 2-process run must resume to the same end, and only rank 0 writes.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from geomlat.distributed import GlobalBatch, launch
from geomlat.engine import TrainConfig, evaluate_accuracy, load_checkpoint, train
from geomlat.distributed import get_world_size, main_process_writes
from geomlat.io import atomic_write_text
from geomlat.engine.batches import epoch_batches
from geomlat.losses import GKD
from geomlat.objectives import Distiller
from geomlat.models import build_model

N_TRAIN = 55  # batches of 16, 16, 16 and 7 (3 + 4 over two ranks... 4 + 3 with tensor_split)
CONFIG = dict(epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=(0.5,), seed=3, device="cpu")


def splits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + 30, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # 3 classes, learnable

    def augment(batch, generator):  # per-sample random noise: needs the same draws on every rank
        return batch + 0.05 * torch.randn(batch.shape, generator=generator, dtype=batch.dtype)

    return SimpleNamespace(train=TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), test=TensorDataset(x[N_TRAIN:], y[N_TRAIN:]),
                           num_classes=3, augment=augment)


class _Samples(torch.utils.data.Dataset):
    """The training set as a map-style Dataset that is not a TensorDataset: the engine's DataLoader path."""

    def __init__(self, tds):
        self.x, self.y = tds.tensors

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def loader_splits():
    s = splits()
    s.train = _Samples(s.train)
    return s


# AdamW, cosine after a linear warm-up, gradient clipping (active: the norm is above 0.5 at first)
OPEN_CONFIG = dict(CONFIG, optimizer="adamw", lr=0.01, scheduler="cosine", warmup_epochs=1, clip_grad_norm=0.5)


def objective():
    torch.manual_seed(1)
    teacher = build_model("mlp", in_features=6, hidden=(10, 10), num_classes=3).double()
    student = build_model("mlp", in_features=6, hidden=(8, 8), num_classes=3).double()
    return Distiller(student, teacher, {"gkd": (GlobalBatch(GKD()), 5.0)}, pairs=[("stage1", "stage1"), ("stage2", "stage2")])


class Stop(Exception):
    pass


def stop_at_second_evaluation():
    calls = []

    def evaluate(model, s):
        calls.append(1)
        if len(calls) == 2:
            raise Stop("interrupted at epoch 2")
        return {"test_error": 1.0 - evaluate_accuracy(model, s.test)}

    return evaluate


def _worker(rank, world, root):
    root = Path(root)
    out = {}
    out["final"] = train(objective(), splits(), TrainConfig(**CONFIG), root / "ddp", progress=False)
    try:
        train(objective(), splits(), TrainConfig(**CONFIG), root / "resumed", evaluate=stop_at_second_evaluation(), progress=False)
        out["stop"] = ""
    except Exception as err:  # Stop on rank 0, a RuntimeError naming it on rank 1
        out["stop"] = f"{type(err).__name__}: {err}"
    out["resumed"] = train(objective(), splits(), TrainConfig(**CONFIG), root / "resumed", progress=False)
    # the DataLoader path (any map-style Dataset) with AdamW + warm-up + cosine + clipping
    out["loader"] = train(objective(), loader_splits(), TrainConfig(**OPEN_CONFIG), root / "ddp_loader", progress=False)
    # a finished run is skipped on every rank alike
    out["skipped"] = train(objective(), splits(), TrainConfig(**CONFIG), root / "ddp", progress=False)
    with main_process_writes():
        atomic_write_text(root / f"written_by_rank{rank}.txt", "x")
    out["world"] = get_world_size()
    return json.loads(json.dumps(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    results = launch(_worker, 2, args=(str(root),), timeout=240)
    single = train(objective(), splits(), TrainConfig(**CONFIG), root / "single", progress=False)
    train(objective(), splits(), TrainConfig(**OPEN_CONFIG), root / "single_open", progress=False)  # in-memory path
    return root, results, single


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")["objective"]


def test_two_processes_train_like_one(runs):
    root, results, single = runs
    assert [r["world"] for r in results] == [2, 2]
    want, got = _weights(root / "single"), _weights(root / "ddp")
    assert want.keys() == got.keys()
    moved = _weights(root / "single")["model.stage1.linear.weight"]
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-9)
    # training changed the weights (the comparison is not between two initializations)
    torch.manual_seed(1)
    objective_0 = objective()
    assert (moved - objective_0.model.stage1.linear.weight.detach()).abs().max() > 1e-3
    # records: the loss terms, accuracy and test error of every epoch are the one-process values
    h_single, h_ddp = _history(root / "single"), _history(root / "ddp")
    assert len(h_ddp) == CONFIG["epochs"] == len(h_single)
    for a, b in zip(h_single, h_ddp):
        assert a["steps"] == b["steps"] == 4
        for key in ("task", "gkd", "loss", "train_acc", "test_error", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    for r in results:  # every rank returns rank 0's final record
        for key in ("task", "gkd", "loss", "train_acc", "test_error", "steps", "epochs", "params"):
            assert r["final"][key] == pytest.approx(single[key], rel=1e-9, abs=1e-12), key


def test_interrupted_run_resumes_to_the_same_end(runs):
    root, results, _ = runs
    assert results[0]["stop"] == "Stop: interrupted at epoch 2"
    assert results[1]["stop"].startswith("RuntimeError: rank 0 failed: Stop: interrupted at epoch 2")
    got, want = _weights(root / "resumed"), _weights(root / "ddp")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14)
    h_res, h_ddp = _history(root / "resumed"), _history(root / "ddp")
    for a, b in zip(h_ddp, h_res):
        for key in ("task", "gkd", "loss", "train_acc", "test_error"):
            assert b[key] == pytest.approx(a[key], rel=1e-12), key
    for r in results:
        assert r["resumed"]["test_error"] == pytest.approx(r["final"]["test_error"], rel=1e-12)
        assert r["skipped"] == r["final"]


def test_only_rank_zero_writes(runs):
    root, _, _ = runs
    assert (root / "written_by_rank0.txt").exists() and not (root / "written_by_rank1.txt").exists()
    for run in ("ddp", "resumed"):
        assert sorted(p.name for p in (root / run).iterdir()) == ["checkpoint.pt", "config.json", "final.json", "metrics.jsonl"]


def test_epoch_batches_keep_two_samples_per_rank():
    config = TrainConfig(epochs=1, batch_size=16)
    one, two = epoch_batches(51, config, 0, world=1), epoch_batches(51, config, 0, world=2)
    assert [len(b) for b in one] == [16, 16, 16, 3]
    assert [len(b) for b in two] == [16, 16, 16]  # 3 samples cannot give 2 to each of 2 ranks
    assert all(torch.equal(a, b) for a, b in zip(one, two))  # the same permutation on any number of ranks
    assert [len(b) for b in epoch_batches(52, config, 0, world=2)] == [16, 16, 16, 4]


def test_two_processes_dataloader_adamw_cosine_clip_train_like_one(runs):
    """2 ranks reading a map-style Dataset through DataLoaders, with AdamW, warm-up + cosine and gradient
    clipping, end with the weights and records of one process reading the TensorDataset in memory."""
    root, results, _ = runs
    want, got = _weights(root / "single_open"), _weights(root / "ddp_loader")
    assert want.keys() == got.keys() and not any(k.startswith("teacher.") for k in got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-9)
    h_single, h_ddp = _history(root / "single_open"), _history(root / "ddp_loader")
    assert [h["lr"] for h in h_ddp] == pytest.approx([h["lr"] for h in h_single]) and h_ddp[0]["lr"] == pytest.approx(0.005)
    for a, b in zip(h_single, h_ddp):
        for key in ("task", "gkd", "loss", "train_acc", "test_error"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
