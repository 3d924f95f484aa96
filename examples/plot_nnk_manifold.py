"""
NNK graphs and manifold graph metrics
=====================================

NNK (non-negative kernel regression) graphs keep, among each point's k nearest neighbors, only those that are
not explained by closer ones: a sparser, geometry-aware graph. On the scikit-learn digits, compare a k-NN and an
NNK graph, compute the manifold graph metrics (NNK neighbors per point, polytope diameter, local dimension) of
the raw pixels and of a random-feature layer, and the leave-one-out NNK interpolation error. A few seconds.
"""
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

from geomlat import knn_graph, nnk_graph, nnk_interpolation
from geomlat.analysis import ManifoldGraphMetrics

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x[:600] / 16.0, dtype=torch.float32), torch.tensor(y[:600])

k = 15
g_knn = knn_graph(x, k=k, metric="cosine")   # (2, N k) edge list, PyG convention
g_nnk = nnk_graph(x, k=k, kernel="cosine")
print(f"k-NN graph: {g_knn.shape[1] / len(x):.1f} edges per node (one direction); "
      f"NNK graph: {g_nnk.edge_index.shape[1] / len(x):.1f} (both directions counted)")

# %%
# Manifold graph metrics of two representations: the pixels, and random ReLU features of them.
features = {"pixels": x, "random ReLU layer": torch.relu(x @ torch.randn(64, 256))}
metrics = {name: ManifoldGraphMetrics(k=k, kernel="cosine").fit(f) for name, f in features.items()}
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, attr, label in zip(axes, ["n_neighbors_", "diameter_", "local_dim_"],
                           ["NNK neighbors", "polytope diameter", "local dimension"]):
    for name, m in metrics.items():
        ax.hist(getattr(m, attr).float().numpy(), bins=20, alpha=0.6, label=name)
    ax.set(xlabel=label, ylabel="points")
axes[0].legend()
fig.tight_layout()

# %%
# Leave-one-out NNK interpolation: each point's label predicted from its NNK neighbors' labels.
for name, f in features.items():
    _, error = nnk_interpolation(f, y, k=k)
    print(f"{name}: leave-one-out NNK error {error:.3f}")
