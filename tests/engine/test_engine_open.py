"""Tests of the open engine (issue 13, point 4): optimizers and lr schedules from TrainConfig, gradient
clipping, any map-style Dataset through a DataLoader, the epoch given to hooks, no frozen teacher in
checkpoints, deferred input checks (no host read per step), exact resume of all of these, and the plain
PyTorch loop of examples/plain_loop.py."""
from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils._python_dispatch import TorchDispatchMode

from geomlat._checks import check_features, check_labels
from geomlat.checks import deferred_value_checks
from geomlat.engine import TrainConfig, load_checkpoint, load_trained_model, lr_factor, train
from geomlat.objectives import Supervised
from geomlat.engine.step import FINITE_CHECK_EVERY, train_step
from geomlat import latent_graph
from geomlat.losses import GKD, HintonKD, RKDAngle, RKDDistance, SimilarityPreserving, SmoothnessRegularizer
from geomlat.objectives import Distiller, Supervised
from geomlat.studies.common import train_config_from_fields
from geomlat.studies.spec import SpecError

from test_engine import _Boom, make_model, make_splits, numbers, small_config, state_equal

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ListDataset(Dataset):
    """A map-style dataset that is not a TensorDataset (no ``.tensors``): forces the DataLoader path."""

    def __init__(self, tds):
        self.x, self.y = tds.tensors

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def as_loader_splits(splits):
    from types import SimpleNamespace

    return SimpleNamespace(**{**vars(splits), "train": ListDataset(splits.train)})


def lines(run_dir):
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def strip(ls):
    return [{k: v for k, v in line.items() if "seconds" not in k} for line in ls]


def interrupt_and_resume(make_objective, splits, cfg, tmp_path, die_at_step: int):
    """(uninterrupted final, resumed final); checks the weights and metrics.jsonl are bitwise equal."""
    ref = train(make_objective(), splits, cfg, tmp_path / "ref", progress=False)
    steps = []

    def interrupt(model):
        steps.append(1)
        if len(steps) == die_at_step:
            raise _Boom

    with pytest.raises(_Boom):
        train(make_objective(), splits, cfg, tmp_path / "cut", progress=False, after_step=interrupt)
    assert 0 < load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] < cfg.epochs
    resumed = train(make_objective(seed=123), splits, cfg, tmp_path / "cut", progress=False)
    assert numbers(resumed) == numbers(ref)
    assert state_equal(load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["objective"],
                       load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["objective"])
    assert strip(lines(tmp_path / "cut")) == strip(lines(tmp_path / "ref"))
    return ref, resumed


# ---------------------------------------------------------------- config: optimizer, schedule, validation
def test_config_validation_names_the_field():
    for kw, match in [({"optimizer": "adam"}, "optimizer must be one of"), ({"scheduler": "step"}, "scheduler must be one of"),
                      ({"warmup_epochs": 4}, "warmup_epochs .* smaller than epochs"), ({"warmup_epochs": -1}, "warmup_epochs"),
                      ({"clip_grad_norm": 0.0}, "clip_grad_norm"), ({"clip_grad_norm": float("inf")}, "clip_grad_norm"),
                      ({"optimizer": "adamw", "nesterov": True}, "nesterov is an SGD option"),
                      ({"betas": (0.9,)}, "betas"), ({"betas": (0.9, 1.0)}, "betas"), ({"num_workers": -1}, "num_workers"),
                      ({"pin_memory": 1}, "pin_memory")]:
        with pytest.raises(ValueError, match=match):
            small_config(**kw)
    # the study specs accept the new fields, and name a bad one
    cfg = train_config_from_fields({"optimizer": "adamw", "scheduler": "cosine", "warmup_epochs": 2, "epochs": 10,
                                    "clip_grad_norm": 1.5, "betas": [0.8, 0.99]}, "methods.x.train")
    assert (cfg.optimizer, cfg.scheduler, cfg.warmup_epochs, cfg.clip_grad_norm, cfg.betas) == ("adamw", "cosine", 2, 1.5, (0.8, 0.99))
    with pytest.raises(SpecError, match="methods.x.train.optimizer"):
        train_config_from_fields({"optimizer": "rmsprop"}, "methods.x.train")
    # the defaults are today's recipe: SGD + MultiStepLR without warm-up or clipping
    d = TrainConfig()
    assert (d.optimizer, d.scheduler, d.warmup_epochs, d.clip_grad_norm) == ("sgd", "multistep", 0, None)


@pytest.mark.parametrize("scheduler,warmup", [("multistep", 0), ("multistep", 2), ("cosine", 0), ("cosine", 3), ("constant", 2)])
def test_lr_per_epoch_matches_pytorch_schedulers(scheduler, warmup):
    """lr_factor against PyTorch's own schedulers stepped epoch by epoch: LinearLR(1/(w+1) -> 1 over w
    epochs) chained with MultiStepLR, or followed (SequentialLR) by CosineAnnealingLR over the remaining epochs."""
    cfg = TrainConfig(epochs=10, lr=0.1, scheduler=scheduler, warmup_epochs=warmup)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    S = torch.optim.lr_scheduler
    warm = S.LinearLR(opt, start_factor=1 / (warmup + 1), total_iters=warmup) if warmup else None
    if scheduler == "multistep":
        main = S.MultiStepLR(opt, milestones=cfg.milestone_epochs(), gamma=cfg.lr_gamma)
        ref = S.ChainedScheduler([warm, main]) if warm else main
    elif scheduler == "cosine":
        main = S.CosineAnnealingLR(opt, T_max=cfg.epochs - warmup)
        ref = S.SequentialLR(opt, [warm, main], milestones=[warmup]) if warm else main
    else:
        ref = warm
    expected = []
    for _ in range(cfg.epochs):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    got = [cfg.lr * lr_factor(cfg, e) for e in range(cfg.epochs)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if warmup:
        assert got[0] == pytest.approx(cfg.lr / (warmup + 1)) and got[0] < got[warmup - 1] < cfg.lr


def test_engine_records_the_schedule_and_builds_adamw(tmp_path):
    splits = make_splits()
    cfg = small_config(epochs=5, optimizer="adamw", lr=0.01, betas=(0.8, 0.95), weight_decay=0.01,
                       scheduler="cosine", warmup_epochs=2, limit_batches=1, eval_every=5)
    train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    assert [line["lr"] for line in lines(tmp_path / "r")] == pytest.approx([cfg.lr * lr_factor(cfg, e) for e in range(5)])
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["optimizer"]
    assert state["param_groups"][0]["betas"] == (0.8, 0.95) or list(state["param_groups"][0]["betas"]) == [0.8, 0.95]
    assert "exp_avg_sq" in state["state"][0]  # AdamW's state, not SGD's momentum buffer
    # one engine step == one step of torch.optim.AdamW by hand on the same batch (no augmentation, dropout off)
    splits = make_splits(augment=False)
    model = nn.Sequential(nn.Linear(6, 3))
    ref = nn.Sequential(nn.Linear(6, 3))
    ref.load_state_dict(model.state_dict())
    cfg1 = small_config(epochs=1, optimizer="adamw", lr=0.01, betas=(0.8, 0.95), weight_decay=0.01, limit_batches=1)
    train(Supervised(model), splits, cfg1, tmp_path / "one", progress=False)
    from geomlat.engine.batches import epoch_batches

    idx = epoch_batches(len(splits.train), cfg1, 0)[0]
    x, y = splits.train.tensors[0][idx], splits.train.tensors[1][idx]
    opt = torch.optim.AdamW(ref.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.01)
    nn.functional.cross_entropy(ref(x), y).backward()
    opt.step()
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


# ---------------------------------------------------------------- gradient clipping
@pytest.mark.parametrize("precision", ["32", "16-mixed"])
def test_clip_grad_norm_clips_the_true_gradient(precision):
    """SGD lr 1, no momentum: the update is -grad, so its norm is the clipped gradient's. Under the fp16
    GradScaler (scale 2^10) the gradients are unscaled before clipping: the update norm is the clip value,
    not clip / scale; and an unclipped step equals the plain gradient (cross-check by autograd)."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(16, 6) * 3, torch.arange(16) % 3
    w0 = [p.detach().clone() for p in model.parameters()]
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if precision == "16-mixed" else None
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    clip = float(norm) / 4
    *_, skipped = train_step(Supervised(model), x, y, opt, precision=precision, scaler=scaler, clip_grad_norm=clip)
    assert not skipped
    delta = [w - p.detach() for w, p in zip(w0, model.parameters())]
    assert float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta))) == pytest.approx(clip, rel=2e-2 if scaler else 1e-5)
    cos = sum((d.double() * g.double()).sum() for d, g in zip(delta, grads)) / (clip * norm)
    assert float(cos) == pytest.approx(1.0, abs=2e-2 if scaler else 1e-5)  # the same direction
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainConfig(clip_grad_norm=-1)


def test_clip_in_the_engine_changes_the_run(tmp_path):
    splits = make_splits()
    a = train(Supervised(make_model()), splits, small_config(epochs=1), tmp_path / "a", progress=False)
    b = train(Supervised(make_model()), splits, small_config(epochs=1, clip_grad_norm=1e-3), tmp_path / "b", progress=False)
    assert a["loss"] != b["loss"]


# ---------------------------------------------------------------- DataLoader path
def test_dataloader_path_gives_the_fast_path_numbers(tmp_path):
    """A map-style Dataset (not a TensorDataset) is read through a DataLoader at the same seeded batches:
    bitwise the numbers of the in-memory path, with worker processes too."""
    splits = make_splits()
    cfg = small_config(epochs=2)
    fast = train(Supervised(make_model()), splits, cfg, tmp_path / "fast", progress=False)
    slow = train(Supervised(make_model()), as_loader_splits(splits), cfg, tmp_path / "dl", progress=False)
    assert numbers(slow) == numbers(fast)
    assert state_equal(load_checkpoint(tmp_path / "dl" / "checkpoint.pt")["objective"],
                       load_checkpoint(tmp_path / "fast" / "checkpoint.pt")["objective"])
    # workers and pinned memory change nothing (and may change between a run and its resume)
    workers = train(Supervised(make_model()), as_loader_splits(splits), small_config(epochs=2, num_workers=2, pin_memory=True),
                    tmp_path / "w", progress=False)
    assert numbers(workers) == numbers(fast)


class DictDataset(ListDataset):
    """Hugging Face style items: ``{"input": x, "labels": y}`` (nn.Sequential's forward takes ``input=``)."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"input": x, "labels": y}


class ListItemsWithCollate(ListDataset):
    """Items holding Python lists (as a tokenizer's output before padding), collated by the dataset's own
    ``collate_fn`` attribute (torch's default_collate would turn the lists into lists of tensors)."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"input": x.tolist(), "label": y}

    @staticmethod
    def collate_fn(items):
        return {"input": torch.tensor([item["input"] for item in items]),
                "labels": torch.tensor([item["label"] for item in items])}


@pytest.mark.parametrize("kind", [DictDataset, ListItemsWithCollate])
def test_dict_items_give_the_tensor_dataset_numbers(tmp_path, kind):
    """Mappings with a 'labels' key (Hugging Face's convention; called as model(**inputs)), collated by
    default_collate or by the dataset's collate_fn: bitwise the numbers and weights of the TensorDataset
    path, for training and for evaluate_accuracy / model_outputs / predict (several batches)."""
    from types import SimpleNamespace

    from geomlat.engine import evaluate_accuracy, model_outputs, predict

    splits = make_splits(augment=False)
    cfg = small_config(epochs=2)
    fast = train(Supervised(make_model()), splits, cfg, tmp_path / "fast", progress=False)
    dict_splits = SimpleNamespace(**{**vars(splits), "train": kind(splits.train), "test": kind(splits.test)})
    slow = train(Supervised(make_model()), dict_splits, cfg, tmp_path / "dict", progress=False)
    assert numbers(slow) == numbers(fast)
    assert state_equal(load_checkpoint(tmp_path / "dict" / "checkpoint.pt")["objective"],
                       load_checkpoint(tmp_path / "fast" / "checkpoint.pt")["objective"])
    model = make_model(5)
    assert torch.equal(model_outputs(model, dict_splits.test, batch_size=7), model_outputs(model, splits.test, batch_size=7))
    assert torch.equal(predict(model, dict_splits.test, batch_size=7), predict(model, splits.test, batch_size=7))
    acc = evaluate_accuracy(model, dict_splits.test, batch_size=7)
    assert acc == evaluate_accuracy(model, splits.test, batch_size=7)
    x, y = splits.test.tensors
    model.eval()
    assert acc == pytest.approx(float((model(x).argmax(1) == y).double().mean()), abs=1e-12)


def test_items_without_labels_are_named(tmp_path):
    from geomlat.engine import evaluate_accuracy

    class NoLabels(ListDataset):
        def __getitem__(self, i):
            return {"input": self.x[i]}

    with pytest.raises(ValueError, match="mappings with a 'labels' key.*got keys \\['input'\\]"):
        evaluate_accuracy(make_model(), NoLabels(make_splits().test))
    splits = make_splits()  # with a tensor augmentation
    splits.train = DictDataset(splits.train)
    with pytest.raises(TypeError, match="augments tensor batches.*dict inputs"):
        train(Supervised(make_model()), splits, small_config(epochs=1), tmp_path / "aug", progress=False)


class _RandomTransform(ListDataset):
    """A dataset whose __getitem__ draws random noise from torch's and NumPy's global RNGs (like transforms)."""

    def __getitem__(self, i):
        import numpy as np

        x, y = super().__getitem__(i)
        return x + 0.01 * torch.randn(x.shape) + 0.01 * float(np.random.rand()), y


@pytest.mark.parametrize("optimizer,scheduler,warmup,loader", [
    ("sgd", "multistep", 0, False), ("adamw", "cosine", 1, False), ("sgd", "multistep", 0, True), ("adamw", "cosine", 1, True)])
def test_exact_resume(tmp_path, optimizer, scheduler, warmup, loader):
    splits = make_splits()
    if loader:
        splits = as_loader_splits(splits)
        splits.train = _RandomTransform(make_splits().train)
    cfg = small_config(epochs=4, optimizer=optimizer, scheduler=scheduler, warmup_epochs=warmup,
                       lr=0.01 if optimizer == "adamw" else 0.05, num_workers=1 if loader else 0)
    interrupt_and_resume(lambda seed=0: Supervised(make_model(seed)), splits, cfg, tmp_path, die_at_step=15)


# ---------------------------------------------------------------- hooks get the epoch
def test_hooks_receive_the_epoch(tmp_path):
    splits = make_splits()
    seen, steps = [], []

    def evaluate(model, splits, epoch):
        seen.append(epoch)
        return {"test_error": 0.5}

    def after(model, *, epoch):
        steps.append(epoch)

    train(Supervised(make_model()), splits, small_config(epochs=5, eval_every=2), tmp_path / "a", progress=False,
          evaluate=evaluate, after_step=after)
    assert seen == [2, 4, 5]  # the epochs evaluated (1-based, as in metrics.jsonl)
    assert [line["epoch"] for line in lines(tmp_path / "a") if "test_error" in line] == seen
    assert steps == [e for e in range(1, 6) for _ in range(6)]  # 96 samples / 16: 6 steps per epoch
    # resumed: the hook still gets the true epoch; a hook without `epoch` keeps working
    seen.clear()
    cut = []

    def die(model, epoch):
        if epoch == 3:
            raise _Boom

    with pytest.raises(_Boom):
        train(Supervised(make_model()), splits, small_config(epochs=5), tmp_path / "b", progress=False, after_step=die)
    train(Supervised(make_model()), splits, small_config(epochs=5), tmp_path / "b", progress=False, evaluate=evaluate)
    assert seen == [3, 4, 5]
    train(Supervised(make_model()), splits, small_config(epochs=1), tmp_path / "c", progress=False,
          evaluate=lambda model, s: {"test_error": 0.25}, after_step=lambda model: cut.append(1))
    assert len(cut) == 6


# ---------------------------------------------------------------- no frozen teacher in checkpoints
def _distiller(seed: int = 0):
    teacher = make_model(seed=7)
    return Distiller(make_model(seed), teacher, terms={"gkd": (GKD(k=None), 0.5)}, pairs=[("2", "2")])


def test_checkpoint_holds_no_teacher_and_resume_is_exact(tmp_path):
    splits = make_splits()
    cfg = small_config(epochs=3)
    interrupt_and_resume(_distiller, splits, cfg, tmp_path, die_at_step=8)
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["objective"]
    assert state and not any(k.startswith("teacher.") for k in state)
    assert set(state) == {k for k in _distiller().state_dict() if not k.startswith("teacher.")}
    # the student loads as before
    student = load_trained_model(tmp_path / "cut", make_model(seed=99))
    assert state_equal({f"model.{k}": v for k, v in student.state_dict().items()},
                       {k: v for k, v in state.items() if k.startswith("model.")})


def test_old_checkpoint_with_teacher_still_resumes(tmp_path):
    """A checkpoint written before (teacher included) resumes; its teacher entries are ignored."""
    splits = make_splits()
    cfg = small_config(epochs=2)
    ref = train(_distiller(), splits, cfg, tmp_path / "ref", progress=False)
    steps = []

    def die(model):
        steps.append(1)
        if len(steps) == 7:
            raise _Boom

    with pytest.raises(_Boom):
        train(_distiller(), splits, cfg, tmp_path / "old", progress=False, after_step=die)
    path = tmp_path / "old" / "checkpoint.pt"
    state = load_checkpoint(path)
    teacher = {f"teacher.{k}": v for k, v in make_model(seed=7).state_dict().items()}
    state["objective"] = {**state["objective"], **teacher}
    torch.save(state, path)
    assert numbers(train(_distiller(), splits, cfg, tmp_path / "old", progress=False)) == numbers(ref)


# ---------------------------------------------------------------- deferred input checks
class HostReads(TorchDispatchMode):
    """Counts the operators that read tensor values on the host (.item(), bool(t), int(t), nonzero):
    each is a synchronization on CUDA."""

    OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "repeat_interleave"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ in self.OPS
        return func(*args, **(kwargs or {}))


def test_deferred_checks_raise_the_immediate_message():
    x = torch.randn(8, 5)
    x[2, 1], x[4, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError) as immediate:
        check_features(x, "student feature")
    with deferred_value_checks(verify_on_exit=False) as checks:
        flat = check_features(x, "student feature")  # no error yet
        check_labels(torch.tensor([0, 1, -3, 2, 0, 1, 2, 0]), 8, "y")
        assert flat.shape == (8, 5) and len(checks) == 2
        with pytest.raises(ValueError) as deferred:
            checks.verify()
    assert str(deferred.value) == str(immediate.value) == "student feature contains non-finite values (1 NaN, 1 Inf): cannot build a graph"
    with pytest.raises(ValueError, match="y must be non-negative class indices, got min -3"):
        with deferred_value_checks():  # verified on exit
            check_labels(torch.tensor([0, 1, -3, 2]), 4, "y")
    with deferred_value_checks():
        check_features(torch.randn(4, 3))  # nothing to report
    with pytest.raises(ValueError, match="non-finite"):  # immediate again outside
        check_features(x)


@pytest.mark.parametrize("terms", [
    {"sp": (SimilarityPreserving(), 1.0), "angle": (RKDAngle(), 1.0), "kd": (HintonKD(), 0.5)},
    {"gkd": (GKD(), 5.0), "gkd_inter_knn": (GKD(k=5, mask="inter", power=2), 1.0), "rkd_d": (RKDDistance(), 1.0)},
    {"gkd_paper": (GKD(order="paper", kernel="rbf", k=5), 1.0)},
], ids=["sp-angle-kd", "gkd-rkd_d", "gkd-paper-rbf"])
def test_a_step_under_deferred_checks_reads_nothing_on_the_host(terms):
    """SP, RKD-angle, RKD-distance, KD and GKD terms (inputs checked for NaN/Inf, labels for range, the Gram's
    squared norms for overflow each step): the immediate checks read values on the host, the deferred ones
    none."""
    torch.manual_seed(0)
    objective = Distiller(make_model(0), make_model(7), pairs=[("2", "2")], terms=terms)
    x, y = torch.randn(16, 6), torch.arange(16) % 3
    opt = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.01)
    with HostReads() as immediate:
        train_step(objective, x, y, opt)
    assert immediate.count > 0  # the immediate checks read values (the counter sees them)
    with deferred_value_checks() as checks, HostReads() as deferred:
        train_step(objective, x, y, opt, clip_grad_norm=1.0)
        recorded = len(checks)
    assert deferred.count == 0 and recorded > 0


def test_regularizer_under_deferred_checks_reads_nothing_on_the_host():
    """The label-variation regularizer's full-graph fast path (its row norms tested for overflow): given
    ``num_classes`` it reads nothing on the host (without it, the one-hot labels read ``y.max()`` once), and
    its value does not depend on ``num_classes``."""
    torch.manual_seed(0)
    feats = [torch.relu(torch.randn(16, 6)) for _ in range(3)]
    y = torch.arange(16) % 3
    reg = SmoothnessRegularizer(num_classes=5)
    with HostReads() as immediate:
        value = reg(feats, y)
    assert immediate.count > 0
    assert torch.allclose(value, SmoothnessRegularizer()(feats, y), rtol=1e-6, atol=0)
    with deferred_value_checks(), HostReads() as deferred:
        reg(feats, y)
    assert deferred.count == 0
    with deferred_value_checks(), HostReads() as deferred:
        SmoothnessRegularizer()(feats, y)
    assert deferred.count > 0  # F.one_hot reads the range of y for the number of columns
    with pytest.raises(ValueError, match="num_classes = 2"):
        SmoothnessRegularizer(num_classes=2)(feats, y)


@pytest.mark.parametrize("kind", ["label_variation", "smoothness", "smoothness_global", "pgd"])
def test_objective_steps_under_deferred_checks_read_nothing_on_the_host(kind):
    """The embed (label-variation objective: dense LGG, no edge list) and robust (smoothness regularizer
    with the logits' classes, also wrapped in GlobalBatch; PGD training with deferred image checks) objectives'
    engine steps. The GlobalBatch case read ``y.max()`` on the host before issue 20 (the wrapper lost
    ``num_classes``)."""
    from geomlat.distributed import GlobalBatch
    from geomlat.objectives import LabelVariationObjective, PGDTraining, SmoothnessObjective

    torch.manual_seed(0)
    model = make_model(0)
    if kind == "label_variation":
        objective = LabelVariationObjective(model)
    elif kind == "smoothness":
        objective = SmoothnessObjective(model, ["2", "3"])  # ReLU and dropout outputs (non-negative)
    elif kind == "smoothness_global":
        objective = SmoothnessObjective(model, ["2", "3"], regularizer=GlobalBatch(SmoothnessRegularizer()))
    else:
        objective = PGDTraining(model, eps=0.1, alpha=0.05, steps=2)
    x, y = torch.rand(16, 6), torch.arange(16) % 3
    opt = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.01)
    with deferred_value_checks() as checks, HostReads() as deferred:
        train_step(objective, x, y, opt)
        recorded = len(checks)
    assert deferred.count == 0 and recorded > 0


def test_overflowing_features_under_deferred_checks_raise_a_named_error():
    """Outside deferred checks, features whose squared norms overflow are rescaled exactly (same graph as at
    scale 1); inside, nothing is read on the host and the verification names the overflow."""
    x = torch.rand(20, 8)
    big = x * 1e19  # squared norms ~1e38 * 8: beyond float32's max / 8
    assert torch.allclose(latent_graph(big, k=5, kernel="cosine").edge_weight, latent_graph(x, k=5, kernel="cosine").edge_weight)
    with deferred_value_checks(verify_on_exit=False) as checks:
        latent_graph(x, k=5, kernel="cosine")
        checks.verify()  # in range: nothing to report
        latent_graph(big, k=5, kernel="cosine")
        with pytest.raises(ValueError, match="overflow or underflow"):
            checks.verify()


class _NaNFeatureAt(nn.Module):
    """A Distiller whose student's captured layer gets a NaN at one call: the GKD input check fails there."""

    def __init__(self, at: int):
        super().__init__()
        self.inner, self.at, self.calls = _distiller(), at, 0
        self.model = self.inner.model
        self.model[2].register_forward_hook(self._poison)

    def _poison(self, module, args, out):
        if self.calls == self.at:
            out = out.clone()
            out[0, 0] = float("nan")
            return out

    def forward(self, x, y):
        out = self.inner(x, y)
        self.calls += 1
        return out


def test_engine_reports_a_nan_feature_with_the_immediate_message(tmp_path):
    """The NaN feature of step 4 is reported after the interval check with the message the immediate check
    gives for the same forward (outside the engine), and the step in a note; no checkpoint is written."""
    splits = make_splits(n_train=16 * (FINITE_CHECK_EVERY + 5))
    x, y = splits.train.tensors[0][:16], splits.train.tensors[1][:16]
    with pytest.raises(ValueError, match="non-finite values") as immediate:
        _NaNFeatureAt(0)(x, y)
    at = 3  # 0-based call index: epoch 1, step 4
    with pytest.raises(ValueError) as info:
        train(_NaNFeatureAt(at), splits, small_config(epochs=1, limit_batches=FINITE_CHECK_EVERY + 2), tmp_path / "r",
              progress=False)
    assert str(info.value) == str(immediate.value)
    assert f"epoch 1, step {at + 1}" in " ".join(getattr(info.value, "__notes__", []))
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


# ---------------------------------------------------------------- a user's own loop (examples/plain_loop.py)
def test_plain_loop_example_distills():
    """The example's plain AdamW loop trains a teacher then a GKD student far above chance (10 classes),
    and both loss terms fall."""
    example = runpy.run_path(str(REPO / "examples" / "plain_loop.py"), run_name="plain_loop")
    torch.manual_seed(1)
    result = example["main"](epochs=8, seed=1)
    first, last = result["history"][0], result["history"][-1]
    assert set(first) == {"task", "gkd"}
    assert last["gkd"] < first["gkd"] / 3 and last["task"] < first["task"] / 3
    assert result["teacher_acc"] > 0.85 and result["student_acc"] > 0.8
