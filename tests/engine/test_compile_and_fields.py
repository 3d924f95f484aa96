"""TrainConfig(compile=True) (the step's forward through torch.compile) gives the eager numbers, and the torch-free
list of TrainConfig fields that study specs are checked with (geomlat.engine.config.TRAIN_FIELDS) is TrainConfig's."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from geomlat.engine import TrainConfig, evaluate_accuracy, load_checkpoint, train
from geomlat.objectives import Supervised
from geomlat.engine.config import TRAIN_FIELDS
from geomlat.engine.precision import PRECISIONS
from geomlat.studies.spec import SpecError, check_train_tables, train_values

from test_engine import make_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # no dropout: compiled random numbers differ from eager ones
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_compiled_training_matches_eager(tmp_path):
    torch._dynamo.reset()
    splits = make_splits(augment=False)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=1)
    eager = train(Supervised(_mlp()), splits, cfg, tmp_path / "eager", progress=False)
    model = _mlp()
    compiled = train(Supervised(model), splits, dataclasses.replace(cfg, compile=True), tmp_path / "compiled", progress=False)
    for key in ("loss", "task", "train_acc", "test_error"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key
    a = load_checkpoint(tmp_path / "eager" / "checkpoint.pt")["objective"]
    b = load_checkpoint(tmp_path / "compiled" / "checkpoint.pt")["objective"]
    assert a.keys() == b.keys()  # objective.model stays the uncompiled module: same state dict keys
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    assert type(model).__name__ == "Sequential"  # the caller's model is not replaced by an OptimizedModule
    assert 1.0 - evaluate_accuracy(model, splits.test) == pytest.approx(compiled["test_error"], abs=1e-12)


def test_torch_free_field_list_is_trainconfig():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(TRAIN_FIELDS) == set(fields) - {"seed"}
    assert TRAIN_FIELDS["precision"][1] == tuple(PRECISIONS)
    for name, (kind, _) in TRAIN_FIELDS.items():  # the default of each field passes its own check
        default = fields[name].default
        if default is None:
            continue
        value = list(default) if kind == "numbers" else default
        assert train_values({name: value}, "train") == {name: tuple(default) if kind == "numbers" else default}


def test_train_tables_are_checked_at_any_depth_but_not_in_tune():
    with pytest.raises(SpecError, match=r"^methods\.a\.train\.epoch: unknown field"):
        check_train_tables({"train": {"epochs": 2}, "methods": {"a": {"train": {"epoch": 1}}}})
    with pytest.raises(SpecError, match=r"^train\.seed: the seed of a run comes from the study's `seeds`"):
        check_train_tables({"train": {"seed": 1}})
    with pytest.raises(SpecError, match=r"^train\.compile: expected true or false"):
        check_train_tables({"train": {"compile": "yes"}})
    check_train_tables({"train": {"compile": True}, "tune": {"grid": {"train": {"weight_decay": [1e-4, 5e-4]}}}})
