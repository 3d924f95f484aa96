"""Reruns never return stale results: a run folder records what made it (objective, model, TrainConfig, record),
a finished run loads its final weights into the model it is given, and anything different is refused in one
line naming the folder and the first field that differs (geomlat.engine.run_folder)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from geomlat.engine import evaluate_accuracy, load_checkpoint, read_json, train, write_json
from geomlat.engine.run_folder import RunFolderMismatch, first_difference, fingerprint
from geomlat.losses import HintonKD
from geomlat.objectives import Distiller, Supervised

from test_engine import make_model, make_splits, small_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def distiller(weight: float = 1.0, T: float = 4.0, seed: int = 0) -> Distiller:
    return Distiller(make_model(seed), make_model(seed=7), {"kd": (HintonKD(T=T), weight)})


def test_finished_run_gives_its_final_weights_to_the_model(tmp_path):
    """Fails on the old engine: the rerun returned final.json and left the given model untrained."""
    splits, cfg = make_splits(), small_config(epochs=3)
    first = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    model = make_model(seed=11)  # another initialization: everything must come from the run folder
    again = train(Supervised(model), splits, cfg, tmp_path / "r", progress=False)
    assert again == first
    # the model now is the one the metrics describe: its test error, measured here, is the recorded one
    assert 1.0 - evaluate_accuracy(model, splits.test) == pytest.approx(first["test_error"], abs=1e-12)
    stored = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["objective"]
    assert all(torch.equal(stored[f"model.{k}"], v) for k, v in model.state_dict().items())


def test_other_term_weight_is_refused_instead_of_stale_metrics(tmp_path):
    """Fails on the old engine: a Distiller with another term weight got the first run's metrics."""
    splits, cfg = make_splits(), small_config(epochs=2)
    train(distiller(weight=1.0), splits, cfg, tmp_path / "kd", progress=False)
    before = (tmp_path / "kd" / "final.json").read_text()
    with pytest.raises(RunFolderMismatch) as info:
        train(distiller(weight=2.0), splits, cfg, tmp_path / "kd", progress=False)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "kd") in message and "delete the folder" in message
    assert info.value.field == "fingerprint.objective.modules..options.weights.kd"
    assert "is 1.0 there, 2.0 now" in message
    with pytest.raises(RunFolderMismatch, match=r"terms\.kd\.options\.T is 4\.0 there, 2\.0 now"):
        train(distiller(T=2.0), splits, cfg, tmp_path / "kd", progress=False)
    assert (tmp_path / "kd" / "final.json").read_text() == before  # nothing touched
    # the same objective again is accepted (and gets the trained student)
    assert train(distiller(weight=1.0), splits, cfg, tmp_path / "kd", progress=False) == read_json(tmp_path / "kd" / "final.json")


def test_model_shapes_and_objective_class_are_recorded(tmp_path):
    splits, cfg = make_splits(), small_config(epochs=1)
    train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    torch.manual_seed(0)
    wider = nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
    with pytest.raises(RunFolderMismatch, match=r"fingerprint\.model\.parameters\.0\.weight is \[16, 6\] there, \[32, 6\] now"):
        train(Supervised(wider), splits, cfg, tmp_path / "r", progress=False)
    with pytest.raises(RunFolderMismatch, match=r"label_smoothing is 0\.0 there, 0\.1 now"):
        train(Supervised(make_model(), label_smoothing=0.1), splits, cfg, tmp_path / "r", progress=False)
    recorded = read_json(tmp_path / "r" / "config.json")["fingerprint"]
    assert recorded["objective"]["class"] == "geomlat.objectives.Supervised"
    assert recorded["model"]["parameters"]["4.bias"] == [3]


class _Stop(Exception):
    pass


def test_unfinished_run_is_not_resumed_with_another_objective(tmp_path):
    splits, cfg = make_splits(), small_config(epochs=3)
    calls = []

    def stop(model):
        calls.append(1)
        if len(calls) == 8:  # in epoch 2 (6 steps per epoch)
            raise _Stop

    with pytest.raises(_Stop):
        train(distiller(weight=1.0), splits, cfg, tmp_path / "cut", progress=False, after_step=stop)
    ckpt = (tmp_path / "cut" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunFolderMismatch, match="weights.kd is 1.0 there, 0.5 now"):
        train(distiller(weight=0.5), splits, cfg, tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / "checkpoint.pt").read_bytes() == ckpt
    resumed = train(distiller(weight=1.0), splits, cfg, tmp_path / "cut", progress=False)
    assert resumed["epochs"] == 3


def test_folder_without_fingerprint_is_accepted_once_and_then_checked(tmp_path, capsys):
    """Folders written before fingerprints: accepted with a note, the fingerprint recorded, later calls checked."""
    splits, cfg = make_splits(), small_config(epochs=1)
    first = train(Supervised(make_model()), splits, cfg, tmp_path / "old", progress=False)
    config_path = tmp_path / "old" / "config.json"
    legacy = {k: v for k, v in read_json(config_path).items() if k != "fingerprint"}
    write_json(config_path, legacy)
    capsys.readouterr()
    assert train(Supervised(make_model()), splits, cfg, tmp_path / "old", progress=False) == first
    err = capsys.readouterr().err
    assert "predates run fingerprints" in err and len(err.strip().splitlines()) == 1
    assert read_json(config_path)["fingerprint"] == fingerprint(Supervised(make_model()))
    with pytest.raises(RunFolderMismatch, match="label_smoothing"):
        train(Supervised(make_model(), label_smoothing=0.2), splits, cfg, tmp_path / "old", progress=False)


def test_final_json_without_checkpoint_is_trained_again(tmp_path, capsys):
    splits, cfg = make_splits(), small_config(epochs=1)
    first = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    (tmp_path / "r" / "checkpoint.pt").unlink()
    model = make_model()
    again = train(Supervised(model), splits, cfg, tmp_path / "r", progress=False)
    assert "weights are lost" in capsys.readouterr().err
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_first_difference_order_and_missing_fields():
    old = {"train": {"epochs": 2, "lr": 0.1}, "fingerprint": {"a": [1, 2], "b": {"c": 1}}}
    assert first_difference(old, json.loads(json.dumps(old))) is None
    assert first_difference(old, {**old, "train": {"epochs": 3, "lr": 0.2}}) == ("train.epochs", 2, 3)
    assert first_difference(old, {**old, "fingerprint": {"a": [1, 2], "b": {"c": 1, "d": 0}}}) == ("fingerprint.b.d", None, 0)
    assert first_difference(old, {"train": old["train"]}) == ("fingerprint.a", [1, 2], None)


def test_fingerprint_is_stable_and_json():
    a, b = fingerprint(distiller()), fingerprint(distiller())
    assert a == b == json.loads(json.dumps(a))
    assert a["objective"]["modules"]["teacher"]["class"] == "torch.nn.modules.container.Sequential"
    assert "options" not in a["objective"]["modules"]["teacher"]  # frozen teacher: class and shapes only
    assert not any(path.startswith(("model.", "teacher.")) for path in a["objective"]["modules"])
