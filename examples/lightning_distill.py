"""
Distillation with PyTorch Lightning
===================================

Distil a small MLP from a bigger one on the scikit-learn digits with PyTorch Lightning and geomlat
(GKD + Hinton KD), logging per-layer geometry with ``GeometryMonitor`` to a CSV file. No download; ~20 s on
CPU::

    pip install -e ".[lightning]"
    python examples/lightning_distill.py   # metrics in lightning_logs/distill/version_*/metrics.csv
"""
import os

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from torch import nn

from geomlat.objectives import Supervised
from geomlat.integrations.lightning import GeometryMonitor, ObjectiveModule
from geomlat.losses import GKD, HintonKD
from geomlat.objectives import Distiller, Supervised

x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True)
val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[1400:], y[1400:]), batch_size=256)


def mlp(width):
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, 10))


LOGS = os.environ.get("GEOMLAT_EXAMPLE_LOGS", "lightning_logs")  # the docs build writes them to a temporary folder


def trainer(name, callbacks=()):
    return pl.Trainer(max_epochs=5, logger=pl.loggers.CSVLogger(LOGS, name=name), callbacks=list(callbacks),
                      enable_checkpointing=False, enable_progress_bar=False)


teacher, student = mlp(128), mlp(32)
trainer("teacher").fit(ObjectiveModule(Supervised(teacher), lr=0.1), train, val)

# the distillation itself: a geomlat Distiller in an ObjectiveModule, geometry logged every epoch
distiller = Distiller(student, teacher, {"gkd": (GKD(), 25.0), "kd": (HintonKD(T=4.0), 1.0)}, pairs=[("3", "3")])
monitor = GeometryMonitor((x[1400:1500], y[1400:1500]), ["model.1", "model.3", "model.4"],
                          teacher=teacher, teacher_layers=["1", "3", "4"], k=10)
trainer("distill", [monitor]).fit(ObjectiveModule(distiller, lr=0.01), train, val)
print({k: round(v, 4) for k, v in monitor.history[-1].items()})

# %%
# The geometry the monitor logged: label variation of the student's layers, epoch by epoch.
fig, ax = plt.subplots(figsize=(5, 3))
for layer in ["model.1", "model.3", "model.4"]:
    key = f"geom/label_variation/{layer}"
    ax.plot([h[key] for h in monitor.history if key in h], marker="o", label=layer)
ax.set(xlabel="epoch", ylabel="normalized label variation", title="student layers during distillation")
ax.legend()
fig.tight_layout()
