"""Mixed precision in the engine (issue 14): TrainConfig.precision, autocast, the fp16 GradScaler (skipped
steps counted, its state in the checkpoint for exact resume), the interval NaN check, and the quick GKD
and robust studies' methods trained under CPU bf16 autocast against float32 over seeds."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geomlat.data import load_dataset
from geomlat.engine import TrainConfig, load_checkpoint, train
from geomlat.engine.precision import make_grad_scaler
from geomlat.engine.step import FINITE_CHECK_EVERY, train_step
from geomlat.losses import GKD, HintonKD
from geomlat.objectives import Distiller, SmoothnessObjective, Supervised
from geomlat.models import build_model
from geomlat.studies import distill as distill_kind
from geomlat.studies import robust as robust_kind
from geomlat.studies.runner import load_spec
from geomlat.studies.spec import SpecError


# ------------------------------------------------------------------ configuration
def test_precision_values_validated():
    assert TrainConfig().precision == "32"
    for p in ("32", "bf16-mixed", "16-mixed"):
        assert TrainConfig(precision=p).precision == p
    for bad in ("bf16", "16", 16, "fp32", None):
        with pytest.raises(ValueError, match="precision must be one of.*bf16-mixed"):
            TrainConfig(precision=bad)


def test_spec_sets_precision_and_rejects_unknown():
    from geomlat.cli import parse_set

    spec = load_spec("gkd", "quick", overrides=parse_set('train.precision="bf16-mixed"'))
    assert spec["student"]["train"]["precision"] == "bf16-mixed" == spec["teacher"]["train"]["precision"]
    spec = load_spec("robust", "quick", overrides={"train": {"precision": "16-mixed"}})
    assert spec["methods"]["regularizer"]["train"]["precision"] == "16-mixed"
    with pytest.raises(SpecError, match=r"^train.precision: unknown value 'half'"):
        load_spec("embed", "quick", overrides={"train": {"precision": "half"}})


def test_run_recorded_before_precision_existed_still_resumes(tmp_path):
    """config.json of a run made before the precision field: the missing field means "32"."""
    splits = _tiny_splits()
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    torch.manual_seed(0)
    train(Supervised(_mlp()), splits, dataclasses.replace(config, epochs=1), tmp_path / "a", progress=False)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    del cfg["train"]["precision"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "a" / "final.json").unlink()
    with pytest.raises(ValueError, match="epochs"):  # still compared field by field
        train(Supervised(_mlp()), splits, config, tmp_path / "a", progress=False)
    one = dataclasses.replace(config, epochs=1)
    assert train(Supervised(_mlp()), splits, one, tmp_path / "a", progress=False)["epochs"] == 1
    with pytest.raises(ValueError, match="train.precision is '32' there, 'bf16-mixed' now"):
        train(Supervised(_mlp()), splits, dataclasses.replace(one, precision="bf16-mixed"), tmp_path / "a", progress=False)


# ------------------------------------------------------------------ small problems
def _mlp(width: int = 32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(40, width), nn.ReLU(), nn.Linear(width, 10))


@functools.lru_cache(maxsize=None)
def _tiny_splits(n_train: int = 256, n_test: int = 128):
    return load_dataset("mnist1d", train_size=n_train, test_size=n_test)


# ------------------------------------------------------------------ the step under autocast
def test_bf16_forward_runs_under_autocast_and_losses_in_float32():
    """The objective's forward sees autocast (half outputs); the summed loss and the terms are float32 and
    the parameters and gradients stay float32."""
    torch.manual_seed(0)
    teacher, student = build_model("conv1d", width=16), build_model("conv1d", width=8)
    objective = Distiller(student, teacher, {"gkd": (GKD(), 5.0), "hinton": (HintonKD(), 0.9)},
                          pairs=[("stage2", "stage2"), ("stage3", "stage3")])
    x, y = torch.randn(32, 1, 40), torch.arange(32) % 10
    seen = {}
    hook = student.fc.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    out, losses, total, skipped = train_step(objective, x, y, opt, precision="bf16-mixed")
    hook.remove()
    assert seen["dtype"] == torch.bfloat16 and out.dtype == torch.bfloat16
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in losses.values())
    assert not skipped and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params)
    # the loss terms are those of float32 on the (rounded) half features: within bf16 rounding of float32
    ref = objective(x, y)[1]
    for name in ("task", "gkd", "hinton"):
        assert float(losses[name]) == pytest.approx(float(ref[name]), rel=0.02), name
    assert total == pytest.approx(sum(float(v) for v in losses.values()), rel=1e-6)


def test_fp16_scaler_counts_skipped_steps_and_keeps_weights(tmp_path):
    """A huge initial loss scale overflows the fp16-scaled gradients: GradScaler skips those steps (weights
    unchanged), halves the scale each time, and the records count the skipped steps."""
    splits = _tiny_splits()
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # float32 grads overflow to inf at this scale
    x, y = splits.train.tensors[0][:32], splits.train.tensors[1][:32]
    _, _, _, skipped = train_step(Supervised(model), x, y, opt, precision="16-mixed", scaler=scaler)
    assert skipped and scaler.get_scale() == 2.0**119
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a sane scale: the step is taken and the weights move
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    _, _, _, skipped = train_step(Supervised(model), x, y, opt, precision="16-mixed", scaler=scaler)
    assert not skipped and not torch.equal(before["1.weight"], model.state_dict()["1.weight"])
    with pytest.raises(ValueError, match="GradScaler"):
        train_step(Supervised(model), x, y, opt, precision="16-mixed")

    # through train(): the engine's scaler starts at 2^16; with the loss multiplied by 2^12 the scaled
    # gradient of the logits (~2^28 / B) overflows float16 (max 65504 < 2^16) until the scale has been
    # halved several times; then the steps are taken -> 0 < skipped_steps < steps, recorded per epoch
    class Large(Supervised):
        def forward(self, x, y):
            out, losses = super().forward(x, y)
            return out, {"task": losses["task"] * 2.0**12}

    config = TrainConfig(epochs=2, batch_size=32, lr=1e-9, precision="16-mixed")
    final = train(Large(_mlp()), splits, config, tmp_path / "fp16", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["skipped_steps"] >= 3 and final["skipped_steps"] == sum(l["skipped_steps"] for l in lines)
    assert final["skipped_steps"] < sum(l["steps"] for l in lines)  # later steps are taken
    ckpt = load_checkpoint(tmp_path / "fp16" / "checkpoint.pt")
    assert ckpt["scaler"]["scale"] == 2.0 ** (16 - final["skipped_steps"])  # halved once per skipped step
    # float32 / bf16 runs record no skipped_steps (there is no scaler)
    final32 = train(Supervised(_mlp()), splits, TrainConfig(epochs=1, batch_size=32), tmp_path / "fp32", progress=False)
    assert "skipped_steps" not in final32 and "scaler" not in load_checkpoint(tmp_path / "fp32" / "checkpoint.pt")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_resume_is_exact(tmp_path, precision):
    """Killed after epoch 1 and resumed (the scaler state from the checkpoint) == uninterrupted, bitwise."""
    splits = _tiny_splits()
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, precision=precision, milestones=(0.5,))
    full = train(Supervised(_mlp()), splits, config, tmp_path / "full", progress=False)
    run = tmp_path / "resumed"  # stopped by an exception in the evaluation of epoch 2, then rerun
    model = _mlp()
    with pytest.raises(KeyboardInterrupt):
        def stop_after_first_epoch(m, s, _count=[0]):
            _count[0] += 1
            if _count[0] > 1:
                raise KeyboardInterrupt
            return {"test_error": 0.5}
        train(Supervised(model), splits, config, run, progress=False, evaluate=stop_after_first_epoch)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    resumed = train(Supervised(_mlp(seed=5)), splits, config, run, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(run / "checkpoint.pt")
    assert all(torch.equal(a["objective"][k], b["objective"][k]) for k in a["objective"])
    assert resumed["loss"] == full["loss"]
    if precision == "16-mixed":
        assert a["scaler"] == b["scaler"]


# ------------------------------------------------------------------ NaN losses, checked at intervals
class _NaNAt(nn.Module):
    """Wraps an objective; the loss of call ``at`` (1-based) is multiplied by NaN (NaN gradients too)."""

    def __init__(self, inner: nn.Module, at: int):
        super().__init__()
        self.inner, self.model, self.at, self.calls = inner, inner.model, at, 0

    def forward(self, x, y):
        self.calls += 1
        out, losses = self.inner(x, y)
        if self.calls == self.at:
            losses = {k: v * float("nan") for k, v in losses.items()}
        return out, losses


@pytest.mark.parametrize("at", [3, FINITE_CHECK_EVERY + 2])
def test_nan_loss_reported_with_its_step(tmp_path, at):
    """No host sync per step, but a NaN loss still stops the run with its epoch, step and terms, before the
    epoch's checkpoint: the NaN weights it leaves make the next steps' label-variation input checks fail too
    (deferred, recorded on the device), and the engine reports the earliest failure: the NaN loss."""
    from geomlat.objectives import LabelVariationObjective

    splits = _tiny_splits(n_train=2048)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.01)
    objective = _NaNAt(LabelVariationObjective(_mlp()), at=64 + at)  # 64 steps per epoch: epoch 2, step `at`
    with pytest.raises(FloatingPointError, match=rf"non-finite loss at epoch 2, step {at}: .*label_variation.*nan") as info:
        train(objective, splits, config, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1  # epoch 2 never saved
    # a NaN that breaks nothing else is caught at the next check (Supervised: CE of NaN logits is NaN)
    objective = _NaNAt(Supervised(_mlp()), at=at)
    with pytest.raises(FloatingPointError, match=rf"epoch 1, step {at}: .*task"):
        train(objective, splits, config, tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2" / "checkpoint.pt").exists()


# ------------------------------------------------------------------ bf16 vs float32 on the quick studies
SEEDS = (0, 1, 2)


def _within_seed_noise(errors: dict[str, list[float]], n_test: int) -> tuple[float, float]:
    """(|mean bf16 - mean float32|, tolerance). Seed noise sigma: the spread (sample stdev) of the float32
    errors over the seeds, floored at the binomial stdev sqrt(p (1 - p) / n_test) of one test error (three
    seeds can agree by chance). The difference of two means of n independent draws has stdev
    sigma * sqrt(2 / n); the tolerance is 3 of those (bf16 and float32 runs are even paired by seed)."""
    e32, e16 = errors["32"], errors["bf16-mixed"]
    p = statistics.mean(e32)
    sigma = max(statistics.stdev(e32), math.sqrt(max(p * (1 - p), 1e-4) / n_test))
    return abs(statistics.mean(e16) - p), 3 * sigma * math.sqrt(2 / len(e32))


@functools.lru_cache(maxsize=None)
def _gkd_setup():
    spec = load_spec("gkd", "quick")
    splits = load_dataset("mnist1d", train_size=1000, test_size=500)
    torch.manual_seed(0)
    teacher = build_model(spec["teacher"]["model"], **spec["teacher"]["kwargs"])
    config = TrainConfig.from_dict({**spec["teacher"]["train"], "epochs": 6, "seed": 0})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        train(Supervised(teacher), splits, config, tmp, progress=False)
    return spec, splits, teacher.eval()


@pytest.mark.parametrize("method", ["baseline", "hinton", "gkd"])
def test_gkd_quick_methods_bf16_match_float32(tmp_path, method):
    """The quick GKD study's students (MNIST-1D subset, conv1d width 8, its own weights and terms) for a
    few epochs: bf16-mixed test errors equal float32's within seed noise."""
    spec, splits, teacher = _gkd_setup()
    errors, losses = {"32": [], "bf16-mixed": []}, {"32": [], "bf16-mixed": []}
    for precision in errors:
        for seed in SEEDS:
            torch.manual_seed(seed)
            student = build_model(spec["student"]["model"], **spec["student"]["kwargs"])
            objective = distill_kind.make_objective(spec["methods"][method], student, teacher, splits.train.tensors[0][:4])
            config = TrainConfig.from_dict({**spec["student"]["train"], "epochs": 4, "seed": seed, "precision": precision})
            final = train(objective, splits, config, tmp_path / f"{precision}_{seed}", progress=False)
            errors[precision].append(final["test_error"])
            losses[precision].append(final["loss"])
    assert losses["32"] != losses["bf16-mixed"]  # bf16 really ran (rounded activations)
    assert max(errors["32"]) < 0.75  # it learned (chance: 0.9; 4 epochs on 1,000 MNIST-1D signals: ~0.5-0.6)
    diff, tol = _within_seed_noise(errors, len(splits.test))
    assert diff <= tol, (errors, tol)


@pytest.mark.parametrize("method, epochs", [("baseline", 4), ("regularizer", 8)])
def test_robust_quick_methods_bf16_match_float32(tmp_path, method, epochs):
    """The quick robust study's baseline and label-variation regularizer (digits, SmallCNN width 16)."""
    spec = load_spec("robust", "quick")
    splits = load_dataset("digits", test_size=500)
    errors, losses = {"32": [], "bf16-mixed": []}, {"32": [], "bf16-mixed": []}
    for precision in errors:
        for seed in SEEDS:
            torch.manual_seed(seed)
            model = robust_kind.build(spec["model"])
            objective = robust_kind.make_objective(spec["methods"][method], model, seed)
            config = TrainConfig.from_dict({**spec["methods"][method]["train"], "epochs": epochs, "seed": seed, "precision": precision})
            final = train(objective, splits, config, tmp_path / f"{precision}_{seed}", progress=False)
            errors[precision].append(final["test_error"])
            losses[precision].append(final["loss"])
    assert losses["32"] != losses["bf16-mixed"]
    assert max(errors["32"]) < 0.75  # it learned (chance: 0.9)
    diff, tol = _within_seed_noise(errors, len(splits.test))
    assert diff <= tol, (errors, tol)
