"""Errors a user meets in Python (issue 12): wrong labels in Distiller, a tensor given to to_pygsp, and
(B, T, H) inputs to latent_graph (flattened by default, with a one-time warning, or reduced with ``reduce=``)."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from geomlat import graphs, latent_graph, to_dense, to_pygsp, to_scipy
from geomlat.losses import GKD, HintonKD
from geomlat.objectives import Distiller


# ----------------------------------------------------------------------------- Distiller labels
class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(6, width)
        self.relu = nn.ReLU()
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.relu(self.fc(x)))


@pytest.mark.parametrize("terms", ["gkd", "kd"])
def test_distiller_names_labels_of_wrong_length(terms):
    torch.manual_seed(0)
    teacher, student = Net(8), Net(4)
    spec = {"gkd": (GKD(), 1.0)} if terms == "gkd" else {"kd": (HintonKD(), 1.0)}
    dist = Distiller(student, teacher, spec, pairs=[("relu", "relu")] if terms == "gkd" else ())
    x = torch.randn(20, 6)
    # the issue: torch's "Expected input batch_size (20) to match target batch_size (10)", no labels named
    with pytest.raises(ValueError, match=r"labels y have shape \(10,\) but the batch x has 20 samples.*expected y of shape \(20,\)"):
        dist(x, torch.randint(0, 3, (10,)))
    with pytest.raises(ValueError, match=r"labels y have shape \(20, 1\)"):
        dist(x, torch.randint(0, 3, (20, 1)))
    with pytest.raises(TypeError, match="integer class indices, got dtype torch.float32"):
        dist(x, torch.zeros(20))
    with pytest.raises(TypeError, match="labels y must be a torch.Tensor"):
        dist(x, [0] * 20)
    # right labels: same task loss as the direct cross-entropy
    y = torch.randint(0, 3, (20,))
    logits, losses = dist(x, y)
    assert losses["task"].item() == pytest.approx(nn.functional.cross_entropy(student(x), y).item(), rel=1e-6)


# ----------------------------------------------------------------------------- to_pygsp / to_scipy
@pytest.mark.parametrize("func", [to_pygsp, to_scipy])
def test_interop_rejects_non_graphs_naming_them(func):
    x = torch.rand(8, 16)
    with pytest.raises(TypeError, match=r"expects an LGG: a torch_geometric.data.Data with edge_index.*got a torch.Tensor of shape \(8, 16\)"):
        func(x)
    with pytest.raises(TypeError, match=r"got a numpy.ndarray of shape \(3, 3\)"):
        func(np.eye(3))
    with pytest.raises(TypeError, match="got a Data without edge_index"):
        func(type(latent_graph(x))())
    # the advice in the message works: the graph built from the same features converts, weights intact
    g = latent_graph(x, k=3)
    assert np.allclose(to_scipy(g).toarray(), to_dense(g).double().numpy())
    assert to_pygsp(g).N == 8


# ----------------------------------------------------------------------------- latent_graph(reduce=)
def same_graph(g1, g2):
    return torch.equal(g1.edge_index, g2.edge_index) and torch.allclose(g1.edge_weight, g2.edge_weight)


def test_reduce_none_flattens_all_but_batch():
    torch.manual_seed(1)
    x = torch.randn(10, 4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = latent_graph(x, k=3)
    assert same_graph(g, latent_graph(x.reshape(10, 24), k=3))


@pytest.mark.parametrize("shape", [(10, 4, 6), (10, 3, 2, 5)])
def test_reduce_mean_is_token_mean(shape):
    torch.manual_seed(2)
    x = torch.randn(*shape, dtype=torch.float64)
    g = latent_graph(x, k=3, reduce="mean")
    # independent: average the tokens one by one
    tokens = x.reshape(shape[0], -1, shape[-1])
    mean = sum(tokens[:, t] for t in range(tokens.shape[1])) / tokens.shape[1]
    assert same_graph(g, latent_graph(mean, k=3))
    assert not same_graph(g, latent_graph(x.flatten(1), k=3))


def test_reduce_first_is_cls_token():
    torch.manual_seed(3)
    x = torch.randn(10, 4, 6, dtype=torch.float64)
    g = latent_graph(x, k=3, reduce="first")
    assert same_graph(g, latent_graph(x[:, 0, :].clone(), k=3))
    # gradients reach only the first token
    x.requires_grad_(True)
    latent_graph(x, k=3, kernel="rbf", reduce="first").edge_weight.sum().backward()
    assert x.grad[:, 1:].abs().sum() == 0 and x.grad[:, 0].abs().sum() > 0


def test_reduce_errors():
    with pytest.raises(ValueError, match=r"unknown reduce 'max'; expected one of .*'mean'"):
        latent_graph(torch.randn(6, 3, 4), reduce="max")
    with pytest.raises(ValueError, match=r"reduce='mean' needs token features .*got shape \(6, 4\)"):
        latent_graph(torch.randn(6, 4), reduce="mean")


def test_sequence_flatten_warns():
    x = torch.randn(8, 5, 3)
    with pytest.warns(UserWarning, match=r"latent_graph: x: the 3-D input of shape \(8, 5, 3\) is flattened to "
                      r"\(8, 15\).*attention_mask=.*reduce='flatten'"):
        latent_graph(x, k=2)
    # no warning for the inputs whose flattening is not in question
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        latent_graph(torch.randn(8, 6), k=2)
        latent_graph(torch.rand(8, 2, 3, 3), k=2)  # (B, C, H, W) maps
        latent_graph(x, k=2, reduce="mean")
        latent_graph(x, k=2, reduce="flatten")
        latent_graph(x.flatten(1), k=2)
