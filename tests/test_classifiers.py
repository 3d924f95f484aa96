"""Classifiers on frozen embeddings vs scikit-learn and hand-made clusters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import TensorDataset

from geomlat.classifiers import (
    KNNClassifier,
    LogisticRegressionClassifier,
    NearestClassMean,
    embed,
    embedding_error,
    embedding_predictor,
)


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(0)
    centers = r.normal(size=(4, 6)) * 2
    labels = np.array([3, 7, 8, 11])  # non-contiguous class ids
    idx = r.integers(0, 4, 300)
    x = centers[idx] + r.normal(size=(300, 6)) * 1.5
    return torch.tensor(x[:200]), torch.tensor(labels[idx[:200]]), torch.tensor(x[200:]), torch.tensor(labels[idx[200:]])


@pytest.mark.parametrize("k", [1, 5, 8])
def test_knn_vs_sklearn(data, k):
    xtr, ytr, xte, yte = data
    ours = KNNClassifier(k=k).fit(xtr, ytr).predict(xte)
    ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(xtr.numpy(), ytr.numpy()).predict(xte.numpy())
    assert np.array_equal(ours.numpy(), ref)
    # cosine metric = euclidean on normalized rows
    cos = KNNClassifier(k=k, metric="cosine").fit(xtr, ytr).predict(xte)
    ref_cos = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(
        F.normalize(xtr, dim=1).numpy(), ytr.numpy()).predict(F.normalize(xte, dim=1).numpy())
    assert np.array_equal(cos.numpy(), ref_cos)


def test_knn_leave_one_out(data):
    xtr, ytr, _, _ = data
    k = 5
    loo = KNNClassifier(k=k).loo_predict(xtr, ytr)
    # independent: sklearn fitted on all points but the one being predicted
    idx = [0, 17, 101, 199]
    for i in idx:
        mask = torch.ones(len(xtr), dtype=torch.bool)
        mask[i] = False
        ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(xtr[mask].numpy(), ytr[mask].numpy())
        assert loo[i].item() == ref.predict(xtr[i:i + 1].numpy())[0]


def test_nearest_class_mean_vs_sklearn(data):
    xtr, ytr, xte, yte = data
    ncm = NearestClassMean().fit(xtr, ytr)
    ref = NearestCentroid().fit(xtr.numpy(), ytr.numpy())
    assert np.array_equal(ncm.predict(xte).numpy(), ref.predict(xte.numpy()))
    np.testing.assert_allclose(ncm.means_.numpy(), ref.centroids_, atol=1e-12)
    # scores are differentiable and rank like the predictions
    e = xte.clone().requires_grad_(True)
    ncm.scores(e).sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()


def test_logistic_regression_vs_sklearn(data):
    xtr, ytr, xte, yte = data
    clf = LogisticRegressionClassifier(C=0.5).fit(xtr, ytr)
    scaler = StandardScaler().fit(xtr.numpy())
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(scaler.transform(xtr.numpy()), ytr.numpy())
    assert np.array_equal(clf.predict(xte).numpy(), ref.predict(scaler.transform(xte.numpy())))
    np.testing.assert_allclose(clf.scores(xte).detach().numpy(), ref.decision_function(scaler.transform(xte.numpy())),
                               atol=1e-8)
    assert clf.error(xte, yte) < 0.3
    # binary case: softmax of [0, z] gives sklearn's probabilities
    mask = ytr < 8
    b = LogisticRegressionClassifier().fit(xtr[mask], ytr[mask])
    refb = LogisticRegression(max_iter=1000).fit(StandardScaler().fit_transform(xtr[mask].numpy()), ytr[mask].numpy())
    zb = StandardScaler().fit(xtr[mask].numpy()).transform(xte.numpy())
    np.testing.assert_allclose(b.scores(xte).softmax(1).detach().numpy(), refb.predict_proba(zb), atol=1e-8)


def test_hand_made_clusters():
    # two tight clusters far apart: every classifier is perfect; a query at a center gets its label
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [10.1, 10.0], [10.0, 10.1]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    q = torch.tensor([[0.05, 0.05], [9.9, 10.2], [4.0, 4.0], [6.0, 6.0]])
    expected = torch.tensor([0, 1, 0, 1])
    for clf in (KNNClassifier(k=3), NearestClassMean(), LogisticRegressionClassifier()):
        assert torch.equal(clf.fit(x, y).predict(q), expected), type(clf).__name__
    # k-NN vote: 2 of 3 neighbors from class 1
    x2 = torch.tensor([[0.0], [1.0], [1.1], [5.0]])
    y2 = torch.tensor([0, 1, 1, 0])
    assert KNNClassifier(k=3).fit(x2, y2).predict(torch.tensor([[0.9]])).item() == 1
    # tie (k=2, one vote each) goes to the smallest label, as in sklearn
    assert KNNClassifier(k=2).fit(torch.tensor([[0.0], [2.0]]), torch.tensor([5, 2])).predict(torch.tensor([[0.9]])).item() == 2


def test_embedding_error_and_predictor(data):
    xtr, ytr, xte, yte = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))
    model.train()
    err = embedding_error(model, TensorDataset(xtr.float(), ytr), (xte.float(), yte), NearestClassMean(), batch_size=64)
    with torch.no_grad():
        model.eval()
        etr, ete = model(xtr.float()), model(xte.float())
        model.train()
    manual = NearestClassMean().fit(etr, ytr).error(ete, yte)
    assert err == pytest.approx(manual) and model.training
    assert torch.allclose(embed(model, xte.float(), batch_size=7), ete)
    clf = KNNClassifier(k=3).fit(etr, ytr)
    pred = embedding_predictor(model, clf)(xte.float())
    assert torch.equal(pred, clf.predict(ete))


def test_bad_inputs(data):
    xtr, ytr, xte, _ = data
    with pytest.raises(RuntimeError, match="not fitted"):
        NearestClassMean().predict(xte)
    with pytest.raises(ValueError, match="features"):
        NearestClassMean().fit(xtr, ytr).predict(xte[:, :3])
    with pytest.raises(ValueError, match="k"):
        KNNClassifier(k=0)
    with pytest.raises(ValueError, match="exceeds"):
        KNNClassifier(k=500).fit(xtr, ytr)
    with pytest.raises(ValueError, match="metric"):
        KNNClassifier(metric="manhattan")
    with pytest.raises(ValueError, match="NaN"):
        KNNClassifier().fit(torch.full((4, 2), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="not seen"):
        NearestClassMean().fit(xtr, ytr).encode(torch.tensor([99]))
    with pytest.raises(TypeError, match="TensorDataset"):
        embedding_error(nn.Identity(), [1, 2, 3], (xte, ytr), NearestClassMean())
