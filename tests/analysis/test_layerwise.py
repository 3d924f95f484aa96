"""Layer-wise label variation and leave-one-out k-NN decisions against dense NumPy references."""
import numpy as np
import pytest
import torch

from geomlat import label_variation, latent_graph
from geomlat.analysis import decision_consistency, knn_decisions, layer_label_variation

from reference import np_lgg


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {"s1": torch.rand(40, 6, generator=g, dtype=torch.float64), "s2": torch.rand(40, 9, generator=g, dtype=torch.float64)}
    y = torch.randint(0, 3, (40,), generator=g)
    return feats, y


@pytest.mark.parametrize("k", [None, 5])
def test_layer_label_variation(k):
    feats, y = data()
    out = layer_label_variation(feats, y, k=k)
    for name, x in feats.items():
        assert out[name] == pytest.approx(float(label_variation(latent_graph(x, k=k), y, normalized=True)))
        A = np_lgg(x.numpy(), k=k)
        diff = y.numpy()[:, None] != y.numpy()[None, :]
        assert out[name] == pytest.approx((A * diff).sum() / A.sum())


def test_knn_decisions_brute_force():
    feats, y = data(1)
    pred = knn_decisions(feats["s1"], y, 4)
    A = np_lgg(feats["s1"].numpy(), k=4)
    for i in range(40):
        votes = [sum(A[i, j] for j in range(40) if y[j] == c) for c in range(3)]
        assert int(pred[i]) == int(np.argmax(votes))
    # well separated classes: decisions equal the labels
    centers = torch.eye(3) * 10
    pts = centers[y] + torch.rand(40, 3)
    assert torch.equal(knn_decisions(pts, y, 3), y)


def test_decision_consistency():
    feats, y = data(2)
    same = decision_consistency(feats, feats, [("s1", "s1"), ("s2", "s2")], y, 5)
    assert same == {("s1", "s1"): 1.0, ("s2", "s2"): 1.0}
    cross = decision_consistency(feats, feats, [("s1", "s2")], y, 5)[("s1", "s2")]
    expected = float((knn_decisions(feats["s1"], y, 5) == knn_decisions(feats["s2"], y, 5)).double().mean())
    assert cross == pytest.approx(expected) and cross < 1.0
    with pytest.raises(KeyError, match="unknown layer"):
        decision_consistency(feats, feats, [("s1", "nope")], y, 5)
