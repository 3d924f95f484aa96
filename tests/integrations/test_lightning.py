"""geomlat.integrations.lightning with the real `lightning` package (issue 14): Trainer.fit on CPU on the
scikit-learn digits, the GeometryMonitor's metrics read back from the CSVLogger's file and compared with a
direct dense computation on the same probe batch after training."""
import csv
import math

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from geomlat import LatentCapture, latent_adjacency  # noqa: E402
from geomlat.objectives import Supervised  # noqa: E402
from geomlat.integrations.lightning import GeometryMonitor, ObjectiveModule  # noqa: E402
from geomlat.losses import GKD, HintonKD  # noqa: E402
from geomlat.objectives import Distiller, Supervised  # noqa: E402
from geomlat.nnk import nnk_interpolation  # noqa: E402


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    train, probe = order[:320], order[320:380]
    return (x[train], y[train]), (x[probe], y[probe])


def _mlp(width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, 10))


def _trainer(tmp_path, name, callbacks=(), epochs=2):
    logger = pl.loggers.CSVLogger(tmp_path, name=name)
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger, callbacks=list(callbacks),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, deterministic=True), logger


def _rows(logger):
    with open(f"{logger.log_dir}/metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _dense_metrics(feats, y, k, nnk_k):
    """Label variation, LGG distances and NNK error from dense adjacencies (not the callback's code path)."""
    out, prev = {}, None
    diff = (y[:, None] != y[None, :]).double()
    for name, f in feats.items():
        a, _ = latent_adjacency(f.double(), k=k)
        out[("lv", name)] = float((a * diff).sum() / a.sum())
        a_sym, _ = latent_adjacency(f.double(), k=k, normalize="sym")
        if prev is not None:
            out[("prev", name)] = float(torch.linalg.matrix_norm(a_sym - prev))
        out[("nnk", name)] = nnk_interpolation(f, y, nnk_k, kernel="cosine")[1]  # NNK: cosine for any sign (PSD)
        prev = a_sym
    return out


def test_monitor_logs_through_csv_logger_and_matches_a_direct_computation(tmp_path):
    (xt, yt), (xp, yp) = _digits()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    # teacher: trained by Lightning too (2 epochs of cross-entropy)
    teacher = _mlp(64, seed=1)
    trainer, _ = _trainer(tmp_path, "teacher")
    trainer.fit(ObjectiveModule(Supervised(teacher), lr=0.1), loader)

    student = _mlp(32, seed=2)
    distiller = Distiller(student, teacher, {"gkd": (GKD(), 25.0), "kd": (HintonKD(T=4.0), 1.0)}, pairs=[("3", "3")])
    module = ObjectiveModule(distiller, lr=0.1)
    layers = ["model.1", "model.3", "model.4"]
    monitor = GeometryMonitor((xp, yp), layers, k=8, nnk_k=8, teacher=teacher, teacher_layers=["1", "3", "4"])
    trainer, logger = _trainer(tmp_path, "student", [monitor])
    trainer.fit(module, loader)

    rows = _rows(logger)
    geom = [r for r in rows if r.get("geom/label_variation/model.1")]
    assert [int(r["epoch"]) for r in geom] == [0, 1]
    assert [r for r in rows if r.get("train/gkd")] and all(math.isfinite(float(r["train/gkd"])) for r in rows if r.get("train/gkd"))
    last = geom[-1]
    assert "geom/lgg_distance_prev/model.1" not in last or last["geom/lgg_distance_prev/model.1"] == ""

    # direct computation on the same probe batch with the trained student
    student.eval()
    with torch.no_grad(), LatentCapture(student, ["1", "3", "4"]) as s_feats, LatentCapture(teacher, ["1", "3", "4"]) as t_feats:
        student(xp)
        teacher(xp)
    feats = {f"model.{n}": s_feats[n] for n in ["1", "3", "4"]}
    want = _dense_metrics(feats, yp, k=8, nnk_k=8)
    for name in layers:
        assert float(last[f"geom/label_variation/{name}"]) == pytest.approx(want[("lv", name)], rel=1e-5)
        assert float(last[f"geom/nnk_loo_error/{name}"]) == pytest.approx(want[("nnk", name)], abs=1e-6)
        if ("prev", name) in want:
            assert float(last[f"geom/lgg_distance_prev/{name}"]) == pytest.approx(want[("prev", name)], rel=1e-5)
        t_name = name.split(".")[1]
        a_s, _ = latent_adjacency(feats[name].double(), k=8, normalize="sym")
        a_t, _ = latent_adjacency(t_feats[t_name].double(), k=8, normalize="sym")
        assert float(last[f"geom/lgg_distance_teacher/{name}"]) == pytest.approx(float(torch.linalg.matrix_norm(a_s - a_t)), rel=1e-5)
    # training moved the student: the first epoch's values differ from the last's
    assert geom[0]["geom/lgg_distance_teacher/model.3"] != last["geom/lgg_distance_teacher/model.3"]
    # the callback's history holds the same values, and the model was put back in train mode
    assert monitor.history[-1]["geom/label_variation/model.4"] == pytest.approx(float(last["geom/label_variation/model.4"]), rel=1e-6)
    # a measurement leaves the modes as they were (student training, frozen teacher in eval)
    module.train()
    again = monitor.measure(module)
    assert module.training and student.training and not teacher.training
    assert again["geom/label_variation/model.4"] == pytest.approx(want[("lv", "model.4")], rel=1e-5)


def test_monitor_every_n_steps_writes_to_the_loggers(tmp_path):
    (xt, yt), (xp, yp) = _digits()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=64)
    model = _mlp(32, seed=3)
    monitor = GeometryMonitor((xp, yp), ["model.1", "model.3"], every_n_steps=3, nnk_k=5)
    trainer, logger = _trainer(tmp_path, "steps", [monitor], epochs=1)
    trainer.fit(ObjectiveModule(Supervised(model)), loader)
    rows = [r for r in _rows(logger) if r.get("geom/label_variation/model.3")]
    assert [int(r["step"]) for r in rows] == [3]  # 5 steps in the epoch: measured after the 3rd
    assert [h["step"] for h in monitor.history] == [3]
    assert float(rows[0]["geom/nnk_loo_error/model.3"]) == pytest.approx(monitor.history[0]["geom/nnk_loo_error/model.3"])


def test_monitor_bad_arguments():
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    with pytest.raises(ValueError, match="teacher and teacher_layers"):
        GeometryMonitor((x, y), ["a"], teacher=nn.Linear(4, 4))
    with pytest.raises(ValueError, match="one name per layer"):
        GeometryMonitor((x, y), ["a", "b"], teacher=nn.Linear(4, 4), teacher_layers=["c"], nnk_k=4)
    with pytest.raises(ValueError, match="must be smaller"):
        GeometryMonitor((x, y), ["a"], nnk_k=12)
    with pytest.raises(ValueError, match="unknown graph distance"):
        GeometryMonitor((x, y), ["a"], nnk_k=4, distance="l7")
    with pytest.raises(ValueError, match="every_n_epochs"):
        GeometryMonitor((x, y), ["a"], nnk_k=4, every_n_epochs=0)
    with pytest.raises(TypeError, match="probe must be a pair"):
        GeometryMonitor(x, ["a"])


def test_monitor_misspelled_layer_fails_at_fit_start(tmp_path):
    (xt, yt), (xp, yp) = _digits()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=64)
    model = _mlp(32, seed=3)
    before = [p.detach().clone() for p in model.parameters()]
    monitor = GeometryMonitor((xp, yp), ["model.1", "model.33"], nnk_k=5)
    trainer, _ = _trainer(tmp_path, "typo", [monitor], epochs=1)
    with pytest.raises(ValueError, match=r"unknown layers \['model.33'\].*valid names: \[.*'model.3'"):
        trainer.fit(ObjectiveModule(Supervised(model)), loader)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no step was trained
    teacher_monitor = GeometryMonitor((xp, yp), ["model.1"], nnk_k=5, teacher=_mlp(32, 4), teacher_layers=["9"])
    trainer, _ = _trainer(tmp_path, "typo_t", [teacher_monitor], epochs=1)
    with pytest.raises(ValueError, match=r"unknown teacher_layers \['9'\] in the teacher"):
        trainer.fit(ObjectiveModule(Supervised(model)), loader)


class _TokenModel(nn.Module):
    """A tiny token model called as model(input_ids=..., attention_mask=...) -> (B, T, H) states."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 6)
        self.mix = nn.Linear(6, 6)

    def forward(self, input_ids, attention_mask):
        return self.mix(self.embed(input_ids))


def test_monitor_mapping_probe_ignores_padding():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 20, (12, 5), generator=g)
    lengths = torch.randint(1, 6, (12,), generator=g)
    mask = (torch.arange(5)[None] < lengths[:, None]).long()
    y = torch.arange(12) % 3
    model = _TokenModel()
    padded_ids = torch.cat([ids, torch.randint(1, 20, (12, 3), generator=g)], 1)  # 3 more positions, mask 0
    padded_mask = torch.cat([mask, torch.zeros(12, 3, dtype=torch.long)], 1)
    short = GeometryMonitor(({"input_ids": ids, "attention_mask": mask}, y), ["embed", "mix"], k=4, nnk_k=4)
    long = GeometryMonitor(({"input_ids": padded_ids, "attention_mask": padded_mask}, y), ["embed", "mix"], k=4, nnk_k=4)
    a, b = short.measure(model), long.measure(model)
    assert a.keys() == b.keys() and all(a[key] == pytest.approx(b[key], abs=1e-6) for key in a)
    # independently: the label variation of the LGG of the masked means
    states = model(ids, mask).detach()
    pooled = torch.stack([states[i, : int(lengths[i])].mean(0) for i in range(12)]).double()
    adj, _ = latent_adjacency(pooled, k=4)
    want = float((adj * (y[:, None] != y[None, :])).sum() / adj.sum())
    assert a["geom/label_variation/mix"] == pytest.approx(want, rel=1e-5)
