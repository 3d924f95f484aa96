"""
Spectral analysis of an LGG with PyGSP
======================================

Labels as graph signals: the one-hot label signals of a batch on its latent geometry graph, their energy per
graph frequency (the graph Fourier transform, through PyGSP), and a low-pass filtered label signal. Labels that
are smooth on the graph keep their energy in the lowest frequencies. A few seconds.
"""
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

from geomlat import latent_graph, to_pygsp
from geomlat.analysis import fourier_basis, label_spectrum, lowpass

x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x[:300] / 16.0, dtype=torch.float32), torch.tensor(y[:300])
shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]

g = latent_graph(x, k=10, kernel="cosine")
G = to_pygsp(g)   # a pygsp.graphs.Graph: any PyGSP filter or plot applies
print(f"PyGSP graph: {G.N} vertices, {G.Ne} edges, connected: {G.is_connected()}")

# %%
# Cumulative label energy over the graph frequencies: the true labels against shuffled ones.
e, _ = fourier_basis(g, normalized=True)
fig, ax = plt.subplots(figsize=(5, 3))
for labels, name in [(y, "digit labels"), (shuffled, "shuffled labels")]:
    energy = label_spectrum(g, labels, normalized=True)
    ax.plot(e.numpy(), (energy.cumsum(0) / energy.sum()).numpy(), label=name)
ax.set(xlabel="graph frequency (normalized Laplacian eigenvalue)", ylabel="cumulative label energy")
ax.legend()
fig.tight_layout()

# %%
# A heat-kernel low-pass of the one-hot signal of class 0: the filtered signal stays high on the class and
# spreads only along the graph's edges.
signal = (y == 0).double()
smooth = lowpass(g, signal, tau=5.0, normalized=True)
fig, ax = plt.subplots(figsize=(5, 3))
order = torch.argsort(y, stable=True)
ax.plot(signal[order].numpy(), label="one-hot class 0", lw=1)
ax.plot(smooth[order].numpy(), label="heat low-pass, tau = 5", lw=1)
ax.set(xlabel="sample (sorted by class)", ylabel="signal")
ax.legend()
fig.tight_layout()
