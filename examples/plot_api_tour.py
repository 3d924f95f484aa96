"""
The API in a few lines
======================

The front page's API blocks, run on the scikit-learn digits (no download): capture a layer, build its latent
geometry graph (LGG), measure its label variation, compare two layers' graphs, then distil a student with GKD
for two epochs with the engine. About 15 s on a CPU.
"""
import tempfile

import matplotlib.pyplot as plt
import torch

import geomlat
from geomlat import LatentCapture, label_variation, latent_graph, to_dense
from geomlat.data import load_dataset
from geomlat.models import build_model

torch.manual_seed(0)
splits = load_dataset("digits")             # scikit-learn's 8x8 digits, no download
x, y = splits.train.tensors[0][:200], splits.train.tensors[1][:200]   # x: (200, 1, 8, 8), y: (200,)
model = build_model("small_cnn", width=8)   # any nn.Module; its layers are captured by module name

with LatentCapture(model, ["stage2", "stage3"]) as feats:   # forward hooks on named modules
    logits = model(x)                                        # feats["stage3"]: (200, 32, 2, 2)
g = latent_graph(feats["stage3"], k=10, kernel="cosine", normalize="sym")  # a PyG Data
lv = label_variation(g, y, normalized=True)   # share of edge weight joining two classes, differentiable
dist = geomlat.graph_distance(g, latent_graph(feats["stage2"], k=10), "spectral")
G = geomlat.to_pygsp(g)                       # a pygsp.graphs.Graph for spectral analysis
print(f"label variation {lv.item():.3f}, spectral distance {dist.item():.3f}, {G.N} vertices")

# %%
# The LGG as a matrix: samples sorted by class, so that edges inside a class fall in the diagonal blocks
# and the label variation is the weight outside them.
order = torch.argsort(y)
adj = to_dense(g).detach()[order][:, order]
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.imshow(adj, cmap="viridis")
ax.set(title=f"LGG of stage3 (untrained), label variation {lv.item():.2f}", xlabel="sample (by class)",
       ylabel="sample (by class)")
fig.tight_layout()

# %%
# Training with graphs: a teacher by cross-entropy, then a student distilled with GKD and Hinton KD, both
# with the engine (two epochs each here; resumable run folders under a temporary directory).
from geomlat.engine import TrainConfig, train  # noqa: E402
from geomlat.losses import GKD, HintonKD  # noqa: E402
from geomlat.objectives import Distiller, Supervised  # noqa: E402

runs = tempfile.mkdtemp()
config = TrainConfig(epochs=2, batch_size=64, lr=0.05)
teacher, student = build_model("small_cnn", width=16), build_model("small_cnn", width=8)
train(Supervised(teacher), splits, config, f"{runs}/teacher", progress=False)
distiller = Distiller(student, teacher, terms={"gkd": (GKD(), 25.0), "kd": (HintonKD(T=4), 0.9)},
                      pairs=[("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3")])
final = train(distiller, splits, config, f"{runs}/gkd", progress=False)
print("student test error", final["test_error"])

# %%
# Label variation of the trained student's layers falls with depth: its deep layers bring classes together.
with torch.no_grad(), LatentCapture(student.eval(), ["stage1", "stage2", "stage3"]) as feats:
    student(x)
values = {name: label_variation(latent_graph(f, k=10), y, normalized=True).item() for name, f in feats.items()}
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.bar(list(values), list(values.values()), color="#0072B2")
ax.set(ylabel="normalized label variation", title="distilled student, 10-NN LGGs")
fig.tight_layout()
