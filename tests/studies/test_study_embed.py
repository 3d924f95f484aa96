"""The `embed` study kind: spec validation, a tiny quick run checked against independent recomputations,
and a one-batch smoke run of the paper profile on a tiny synthetic CIFAR-10 folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geomlat.classifiers import NearestClassMean, embed
from geomlat.data import load_dataset
from geomlat.data.cifar import write_cifar_folder
from geomlat.engine.io import load_checkpoint
from geomlat.models import build_model
from geomlat.robustness import corruption_errors
from geomlat.studies import SpecError, load_spec, run_study
from geomlat.studies.spec import find_spec_file, read_spec_file

TINY = {
    "train": {"epochs": 2, "limit_batches": 3, "batch_size": 32},
    "corruptions": {"names": ["impulse_noise", "frost"], "severities": [2, 5], "samples": 40},
    "figure": {"epochs": [0, 1, 2], "samples": 50},
}


def _raw():
    return read_spec_file(find_spec_file("embed"))


@pytest.mark.parametrize(
    "override, path",
    [
        ({"methods": {"lv": {"loss": "triplet"}}}, "methods.lv.loss"),
        ({"methods": {"ce": {"kwargs": {"k": 3}}}}, "methods.ce.kwargs"),
        ({"methods": {"lv": {"kwargs": {"kernel": "cosine"}}}}, "methods.lv"),  # signed outputs: cosine fails
        ({"methods": {"lv": {"kwargs": {"sigma": -1.0}}}}, "methods.lv"),
        ({"methods": {"lv_2d": {"out_dim": 0}}}, "methods.lv_2d.out_dim"),
        ({"classifiers": ["knn", "svm"]}, "classifiers[1]"),
        ({"baseline": "lv"}, "baseline"),
        ({"figure": {"methods": ["ce"]}}, "figure.methods[0]"),
        ({"figure": {"methods": ["lv_3d"]}}, "figure.methods[0]"),
        ({"figure": {"epochs": [0, 1000]}}, "figure.epochs[1]"),
        ({"knn_k": 0}, "knn_k"),
        ({"data": {"name": "mnist1d"}}, "data.name"),
        ({"model": {"model": "transformer"}}, "model.model"),
    ],
)
def test_spec_errors_name_the_field(override, path):
    with pytest.raises(SpecError) as err:
        load_spec(_raw(), "quick", overrides=override)
    assert err.value.path == path or err.value.path.startswith(path), str(err.value)


def test_tiny_quick_run(tmp_path):
    summary = run_study("embed", "quick", out_root=tmp_path, seeds=[0], overrides=TINY, progress=False, log=lambda s: None)
    runs = tmp_path / "runs" / "embed" / "quick"
    rows = {(r["method"], r["classifier"]): r for r in summary["rows"]}
    # argmax only for cross-entropy methods; 4 classifiers x 2 CE methods + 3 x 2 LV methods
    assert len(rows) == 14 and ("lv", "argmax") not in rows and ("ce_2d", "argmax") in rows
    assert rows[("ce", "knn")]["mce"] == pytest.approx(100.0)
    # NCM clean error of the 2-D label-variation embedding, recomputed from the checkpoint
    splits = load_dataset("digits", seed=0)
    model = build_model("small_cnn", width=16, out_dim=2)
    state = load_checkpoint(runs / "lv_2d_s0" / "checkpoint.pt")["objective"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    x_tr, y_tr = splits.train.tensors
    x_te, y_te = splits.test.tensors
    ncm = NearestClassMean().fit(embed(model, x_tr), y_tr)
    assert rows[("lv_2d", "ncm")]["clean"] == pytest.approx(ncm.error(embed(model, x_te), y_te), abs=1e-9)
    # the 2-D CE model has a bottleneck head in its checkpoint
    assert "head.weight" in load_checkpoint(runs / "ce_2d_s0" / "checkpoint.pt")["objective"]
    # mCE from the stored tables with the library
    ev = {m: json.loads((runs / f"{m}_s0" / "eval.json").read_text()) for m in ("ce", "lv")}
    ces = corruption_errors(ev["lv"]["corruptions"]["logreg"], ev["ce"]["corruptions"]["logreg"])
    assert rows[("lv", "logreg")]["mce"] == pytest.approx(np.mean(list(ces.values())))
    # embeddings for Figure A1: before training (= the seeded initial model) and after each listed epoch
    e0 = load_checkpoint(runs / "lv_2d_s0" / "embeddings" / "epoch_0.pt")["embedding"]
    torch.manual_seed(0)
    init = build_model("small_cnn", width=16, out_dim=2)
    from geomlat.studies.common import subset

    x_fig, _ = subset(splits.train, 50, 2)
    assert torch.allclose(e0, embed(init, x_fig), atol=1e-6)
    e2 = load_checkpoint(runs / "lv_2d_s0" / "embeddings" / "epoch_2.pt")["embedding"]
    assert torch.allclose(e2, embed(model, x_fig), atol=1e-5)  # last epoch = the final model
    assert (runs / "ce_2d_s0" / "embeddings" / "epoch_1.pt").exists()
    assert not (runs / "ce_s0" / "embeddings").exists()
    assert (tmp_path / "figures" / "embed" / "embeddings_2d.png").stat().st_size > 1000
    assert "approximations" in (tmp_path / "results" / "embed" / "table.md").read_text()


def test_paper_profile_one_batch_smoke(tmp_path):
    write_cifar_folder(tmp_path / "data" / "cifar-10-batches-py", n_train_per_batch=4, n_test=10)
    overrides = {
        "threads": 1,
        "train": {"epochs": 1, "limit_batches": 1, "batch_size": 8, "device": "cpu"},
        "corruptions": {"names": ["fog"], "severities": [1], "samples": 10},
        "figure": {"epochs": [0, 1], "samples": 10},
        "knn_k": 1,
    }
    summary = run_study("embed", "paper", data_dir=str(tmp_path / "data"), out_root=tmp_path, seeds=[0],
                        overrides=overrides, progress=False, log=lambda s: None)
    assert {r["method"] for r in summary["rows"]} == {"ce", "lv", "ce_2d", "lv_2d"}
    cfg = json.loads((tmp_path / "runs" / "embed" / "paper" / "lv_s0" / "config.json").read_text())
    assert cfg["model"]["model"] == "resnet18" and cfg["loss"] == "label_variation"
    assert (tmp_path / "figures" / "embed" / "embeddings_2d.png").exists()


class _Stop(Exception):
    pass


def test_figure_embeddings_after_a_resume_with_eval_every_2_carry_the_engines_epoch(tmp_path):
    """A run interrupted in its second epoch (eval_every = 2, 3 epochs) and resumed: the embeddings are saved
    after the epochs the engine evaluates (2 and 3), each the model of that epoch. The old hook counted epochs
    from its calls (1 done + 2 = 3 at the engine's epoch 2) and never wrote epoch_2.pt."""
    from geomlat.engine import train
    from geomlat.studies.common import load_splits, subset
    from geomlat.studies.embed.run import build_run, recording_hook

    spec = load_spec(_raw(), "quick", seeds=[0], overrides={"train": {"epochs": 3, "eval_every": 2, "limit_batches": 2, "batch_size": 32},
                                                          "figure": {"epochs": [0, 2, 3]}})
    splits = load_splits(spec["data"], None)
    x_fig, _ = subset(splits.train, 20, 2)
    run_dir = tmp_path / "lv_2d_s0"
    steps = []

    def stop_in_epoch_2(model):
        steps.append(1)
        if len(steps) == 3:  # the first step of the second epoch (2 batches per epoch)
            raise _Stop

    plan = build_run(spec, "lv_2d", 0, splits)
    with pytest.raises(_Stop):
        train(plan.objective, splits, plan.config, run_dir, after_step=stop_in_epoch_2, progress=False, record=plan.record)
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "final.json").exists()
    seen = []
    plan = build_run(spec, "lv_2d", 0, splits)
    hook = recording_hook(plan.evaluate, run_dir, x_fig, [2, 3])

    def evaluate(model, splits_, epoch):
        out = hook(model, splits_, epoch=epoch)
        seen.append((epoch, embed(model, x_fig)))
        return out

    train(plan.objective, splits, plan.config, run_dir, evaluate=evaluate, progress=False, record=plan.record)
    assert [e for e, _ in seen] == [2, 3]
    for epoch, expected in seen:
        stored = load_checkpoint(run_dir / "embeddings" / f"epoch_{epoch}.pt")
        assert stored["epoch"] == epoch and torch.allclose(stored["embedding"], expected)
    assert not torch.allclose(seen[0][1], seen[1][1])  # two different models: epoch 2 is not the final one
