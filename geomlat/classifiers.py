"""Simple classifiers on frozen embeddings (paper section 4.2: a network trained with the label-variation
objective outputs an embedding, classified by k-NN, nearest class mean or logistic regression).

All classifiers follow the scikit-learn pattern on torch tensors: ``fit(emb (N, d), y (N,)) -> self``,
``predict(emb (M, d)) -> (M,) long tensor``, ``error(emb, y) -> float`` (fraction misclassified).
Nearest class mean and logistic regression also expose differentiable ``scores(emb) -> (M, K)`` logits
(one column per class of ``classes_``), so an embedding model can be attacked with
``geomlat.robustness.fgsm(model, x, y, loss_fn=lambda e, y: F.cross_entropy(clf.scores(e), clf.encode(y), reduction="sum"))``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ._checks import check_choice, check_labels
from .knn import knn
from ._params import check_int

METRICS = ("euclidean", "cosine")


def _check_emb(emb: Tensor, name: str = "emb") -> Tensor:
    if not isinstance(emb, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(emb).__name__}")
    if not emb.is_floating_point() or emb.dim() != 2:
        raise ValueError(f"{name} must be a floating-point (N, d) tensor, got dtype {emb.dtype} and shape {tuple(emb.shape)}")
    if emb.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(emb).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return emb


class _Base:
    classes_: Tensor

    def _fit_checks(self, emb: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        emb = _check_emb(emb)
        y = check_labels(y, emb.shape[0], "y")
        self.classes_ = torch.unique(y.cpu())
        self.dim_ = emb.shape[1]
        return emb, y

    def _predict_checks(self, emb: Tensor) -> Tensor:
        if not hasattr(self, "classes_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(emb, y) first")
        emb = _check_emb(emb)
        if emb.shape[1] != self.dim_:
            raise ValueError(f"emb has {emb.shape[1]} features but the classifier was fitted on {self.dim_}")
        return emb

    def encode(self, y: Tensor) -> Tensor:
        """Class labels -> column indices of ``scores`` (labels unseen in fit raise a ValueError)."""
        y = torch.as_tensor(y).cpu().long()
        idx = torch.searchsorted(self.classes_, y)
        ok = (idx < len(self.classes_)) & (self.classes_[idx.clamp_max(len(self.classes_) - 1)] == y)
        if not bool(ok.all()):
            raise ValueError(f"labels {sorted(set(y[~ok].tolist()))} were not seen in fit (classes {self.classes_.tolist()})")
        return idx

    def error(self, emb: Tensor, y: Tensor) -> float:
        """Fraction of misclassified rows."""
        y = check_labels(y, emb.shape[0], "y")
        return float((self.predict(emb).cpu() != y.cpu()).float().mean())


class KNNClassifier(_Base):
    """k-nearest-neighbor majority vote (uniform weights; a tied vote goes to the smallest label, like sklearn).

    Args:
        k: neighbors, >= 1 (and <= number of training points).
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: test rows per distance block (memory O(chunk_size * N)).
    """

    def __init__(self, k: int = 5, metric: str = "euclidean", chunk_size: int = 1024):
        check_int(k, "k", low=1)
        check_choice(metric, "metric", METRICS)
        self.k, self.metric, self.chunk_size = k, metric, chunk_size

    def fit(self, emb: Tensor, y: Tensor) -> "KNNClassifier":
        emb, y = self._fit_checks(emb, y)
        if self.k > emb.shape[0]:
            raise ValueError(f"k={self.k} exceeds the number of training points {emb.shape[0]}")
        self.emb_ = emb.detach()
        self.y_ = self.encode(y)
        return self

    def _prepare(self, emb: Tensor) -> Tensor:
        return torch.nn.functional.normalize(emb, dim=1) if self.metric == "cosine" else emb

    def _vote(self, neighbors: Tensor) -> Tensor:
        votes = torch.zeros(neighbors.shape[0], len(self.classes_), dtype=torch.long)
        votes.scatter_add_(1, self.y_[neighbors.cpu()], torch.ones_like(neighbors.cpu()))
        return self.classes_[votes.argmax(dim=1)]  # argmax returns the first maximum: smallest label

    @torch.no_grad()
    def predict(self, emb: Tensor) -> Tensor:
        emb = self._predict_checks(emb)
        base = self._prepare(self.emb_)
        preds = []
        for start in range(0, emb.shape[0], self.chunk_size):
            q = self._prepare(emb[start:start + self.chunk_size].to(base))
            dist = torch.cdist(q, base) if self.metric == "euclidean" else -(q @ base.T)
            preds.append(self._vote(dist.topk(self.k, dim=1, largest=False).indices))
        return torch.cat(preds)

    def loo_predict(self, emb: Tensor, y: Tensor) -> Tensor:
        """Leave-one-out predictions on one set (each point voted by its k neighbors, itself excluded),
        with :func:`geomlat.knn`. Does not change the fitted state."""
        emb = _check_emb(emb)
        y = check_labels(y, emb.shape[0], "y").cpu()
        classes = torch.unique(y)
        codes = torch.searchsorted(classes, y)
        neighbors = knn(emb.detach(), self.k, metric=self.metric).cpu()
        votes = torch.zeros(emb.shape[0], len(classes), dtype=torch.long)
        votes.scatter_add_(1, codes[neighbors], torch.ones_like(neighbors))
        return classes[votes.argmax(dim=1)]


class NearestClassMean(_Base):
    """Assign each embedding to the class whose training mean is nearest (euclidean or cosine).

    ``scores(emb)`` = minus squared euclidean distances (or cosine similarities) to the class means:
    differentiable logits.
    """

    def __init__(self, metric: str = "euclidean"):
        check_choice(metric, "metric", METRICS)
        self.metric = metric

    def fit(self, emb: Tensor, y: Tensor) -> "NearestClassMean":
        emb, y = self._fit_checks(emb, y)
        codes = self.encode(y).to(emb.device)
        sums = torch.zeros(len(self.classes_), emb.shape[1], dtype=emb.dtype, device=emb.device)
        sums.index_add_(0, codes, emb.detach())
        counts = torch.bincount(codes, minlength=len(self.classes_)).to(emb.dtype)
        self.means_ = sums / counts[:, None]
        return self

    def scores(self, emb: Tensor) -> Tensor:
        emb = self._predict_checks(emb)
        means = self.means_.to(emb)
        if self.metric == "cosine":
            return torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(means, dim=1).T
        return -((emb[:, None, :] - means[None]) ** 2).sum(-1)

    @torch.no_grad()
    def predict(self, emb: Tensor) -> Tensor:
        best = self.scores(emb).argmax(dim=1).cpu()
        return self.classes_[best]


class LogisticRegressionClassifier(_Base):
    """Multinomial logistic regression (scikit-learn ``LogisticRegression``, lbfgs) on standardized features.

    Args:
        C: inverse L2 regularization strength.
        max_iter: lbfgs iterations.
        standardize: z-score each feature with the training mean/std first.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, standardize: bool = True):
        if not (isinstance(C, (int, float)) and C > 0):
            raise ValueError(f"C must be > 0, got {C!r}")
        self.C, self.max_iter, self.standardize = float(C), max_iter, standardize

    def fit(self, emb: Tensor, y: Tensor) -> "LogisticRegressionClassifier":
        from sklearn.linear_model import LogisticRegression

        emb, y = self._fit_checks(emb, y)
        if len(self.classes_) < 2:
            raise ValueError("logistic regression needs at least 2 classes in y")
        x = emb.detach().cpu().double()
        self.mean_ = x.mean(0) if self.standardize else torch.zeros(x.shape[1], dtype=torch.float64)
        std = x.std(0, unbiased=False) if self.standardize else torch.ones(x.shape[1], dtype=torch.float64)
        self.scale_ = torch.where(std > 0, std, torch.ones_like(std))
        z = ((x - self.mean_) / self.scale_).numpy()
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(z, self.encode(y).numpy())
        coef = torch.from_numpy(self.model_.coef_)
        intercept = torch.from_numpy(self.model_.intercept_)
        if coef.shape[0] == 1:  # binary: p(class 1) = sigmoid(z) = softmax([0, z])[1]
            coef = torch.cat([torch.zeros_like(coef), coef])
            intercept = torch.cat([torch.zeros_like(intercept), intercept])
        self.coef_, self.intercept_ = coef, intercept
        return self

    def scores(self, emb: Tensor) -> Tensor:
        """Differentiable logits (M, K) of the fitted model."""
        emb = self._predict_checks(emb)
        mean, scale = self.mean_.to(emb), self.scale_.to(emb)
        return ((emb - mean) / scale) @ self.coef_.to(emb).T + self.intercept_.to(emb)

    @torch.no_grad()
    def predict(self, emb: Tensor) -> Tensor:
        best = self.scores(emb).argmax(dim=1).cpu()
        return self.classes_[best]


Classifier = KNNClassifier | NearestClassMean | LogisticRegressionClassifier


def _tensors(data: Dataset | tuple[Tensor, Tensor], name: str) -> tuple[Tensor, Tensor]:
    if isinstance(data, TensorDataset):
        return data.tensors[0], data.tensors[1]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"{name} must be a TensorDataset or an (x, y) tuple, got {type(data).__name__}")


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, batch_size: int = 512, device: str | torch.device | None = None) -> Tensor:
    """Model outputs (N, d) on inputs x (N, ...), in eval mode under no_grad (mode restored), on the CPU."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        outs = [model(xb if device is None else xb.to(device)).reshape(xb.shape[0], -1).cpu()
                for (xb,) in DataLoader(TensorDataset(x), batch_size=batch_size)]
    finally:
        for m, flag in flags:
            m.training = flag
    return torch.cat(outs)


def embedding_error(
    model: nn.Module,
    train: Dataset | tuple[Tensor, Tensor],
    test: Dataset | tuple[Tensor, Tensor],
    classifier: Classifier,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> float:
    """Test error (fraction) of ``classifier`` fitted on the model's embeddings of ``train``.

    Args:
        model: frozen embedding network (outputs (B, d); flattened if more dims).
        train, test: ``TensorDataset(x, y)`` or ``(x, y)`` tuples.
        classifier: an unfitted (or refittable) classifier of this module.
    """
    x_tr, y_tr = _tensors(train, "train")
    x_te, y_te = _tensors(test, "test")
    classifier.fit(embed(model, x_tr, batch_size, device), y_tr)
    return classifier.error(embed(model, x_te, batch_size, device), y_te)


def embedding_predictor(model: nn.Module, classifier: Classifier, device: str | torch.device | None = None
                        ) -> Callable[[Tensor], Tensor]:
    """``x -> classifier.predict(model(x))`` for :func:`geomlat.robustness.evaluate_corruptions`."""

    def predict(x: Tensor) -> Tensor:
        return classifier.predict(embed(model, x, device=device))

    return predict


__all__ = [
    "KNNClassifier",
    "LogisticRegressionClassifier",
    "NearestClassMean",
    "embed",
    "embedding_error",
    "embedding_predictor",
]
