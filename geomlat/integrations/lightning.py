"""PyTorch Lightning integration (optional extra ``lightning``: ``pip install geomlat[lightning]``).

- :class:`GeometryMonitor`: a ``Callback`` that, every N epochs (or steps), captures chosen layers of the
  LightningModule on a fixed probe batch ``(x, y)`` and logs, per layer, the label variation of its LGG,
  the distance between its LGG and the previous layer's (and the teacher's paired layer's, when a teacher
  is given) and the leave-one-out NNK interpolation error, through the Trainer's own loggers (CSV,
  TensorBoard, ...).
- :class:`ObjectiveModule`: a ``LightningModule`` that trains any geomlat objective
  (``forward(x, y) -> (output, {name: loss})``: :class:`geomlat.objectives.Distiller`,
  :class:`geomlat.objectives.Supervised`, ...), e.g. GKD + Hinton KD in a few lines::

      from geomlat.losses import GKD, HintonKD
      from geomlat.objectives import Distiller
      from geomlat.integrations.lightning import GeometryMonitor, ObjectiveModule

      distiller = Distiller(student, teacher, {"gkd": (GKD(), 25.0), "kd": (HintonKD(T=4), 1.0)},
                            pairs=[("layer3", "layer3")])
      module = ObjectiveModule(distiller, lr=0.05)
      monitor = GeometryMonitor((x_probe, y_probe), ["model.layer2", "model.layer3"],
                                teacher=teacher, teacher_layers=["layer2", "layer3"])
      lightning.Trainer(max_epochs=10, callbacks=[monitor]).fit(module, train_loader)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_labels
from ..batch import attention_mask_of, batch_size, call_model, to_device
from ..capture import LatentCapture, OutputKey, select_logits
from ..distances import DISTANCES, graph_distance
from ..graphs import GraphOptions, feature_vectors, graph_options as _graph_options
from ..nnk import NNKOptions, nnk_interpolation
from ..options import keep_defaults
from ..signals import label_variation
from .._params import check_int

__all__ = ["GeometryMonitor", "ObjectiveModule", "layer_metrics"]


def layer_metrics(
    feats: Mapping[str, Tensor],
    y: Tensor,
    teacher_feats: Mapping[str, Tensor] | None = None,
    k: int | None = None,
    kernel: str = "auto",
    nnk_k: int = 10,
    nnk_kernel: str = "cosine",
    distance: str = "frobenius",
    prefix: str = "geom",
    *,
    attention_mask: Tensor | None = None,
    reduce: str | None = None,
    graph_options: GraphOptions | None = None,
    nnk_options: NNKOptions | None = None,
) -> dict[str, float]:
    """The metrics :class:`GeometryMonitor` logs, for features already captured.

    Args:
        feats: ``{layer: (B, ...) features}`` in forward order.
        y: (B,) integer labels of the probe batch.
        teacher_feats: ``{layer: (B, ...) teacher features}``, same keys as ``feats`` (the paired layer).
        k, kernel: LGG of each layer (:func:`geomlat.latent_graph`; ``k=None``: full graph).
        nnk_k, nnk_kernel: initial k-NN and kernel of the NNK solve (:func:`geomlat.nnk.nnk_interpolation`).
        distance: a registered graph distance (:data:`geomlat.DISTANCES`).
        attention_mask: (B, T), 1 on real tokens (Hugging Face's convention), for (B, T, H) token features;
            reduce: how tokens become one vector (:func:`geomlat.sequences.sample_vectors`: the mean of the
            real tokens by default with a mask). Padding never enters a metric. ``kernel`` and ``nnk_kernel``
            default to ``"auto"`` (geomlat's rule: cosine for non-negative features, RBF for signed ones).
        graph_options: the LGGs as a :class:`geomlat.graphs.GraphOptions` instead of ``k``, ``kernel`` and
            ``reduce`` (which then keep their defaults); the distance graphs add ``normalize="sym"``.
        nnk_options: the NNK solve as a :class:`geomlat.nnk.NNKOptions` instead of ``nnk_k`` and ``nnk_kernel``.

    Returns ``{name: value}`` with, for each layer ``L``:

    - ``{prefix}/label_variation/L``: normalized label variation of L's LGG (in [0, 1], Appendix C);
    - ``{prefix}/lgg_distance_prev/L`` (not for the first layer): ``distance`` between the
      ``D^-1/2 A D^-1/2``-normalized LGGs of L and of the previous layer (normalized, so layers of
      different widths and scales compare);
    - ``{prefix}/lgg_distance_teacher/L`` (with ``teacher_feats``): the same between L and its teacher layer;
    - ``{prefix}/nnk_loo_error/L``: leave-one-out NNK interpolation error of the labels.
    """
    graph, nnk = _monitor_options(layer_metrics, graph_options, nnk_options, k, kernel, reduce, nnk_k, nnk_kernel)
    DISTANCES[distance]  # an unknown name raises UnknownNameError (a ValueError) listing the registered ones
    if teacher_feats is not None and list(teacher_feats) != list(feats):
        raise KeyError(f"teacher_feats must have the keys of feats {list(feats)}, got {list(teacher_feats)}")
    vector_graph = graph.replace(reduce=None)  # the graphs of the (B, d) vectors
    normalized = vector_graph.replace(normalize="sym")
    out: dict[str, float] = {}
    prev = None
    for name, f in feats.items():
        f = feature_vectors(f.detach(), attention_mask, graph.reduce, f"GeometryMonitor: layer {name!r}").float()
        labels = check_labels(y, f.shape[0]).to(f.device)
        out[f"{prefix}/label_variation/{name}"] = float(label_variation(vector_graph.graph(f), labels, normalized=True))
        g = normalized.graph(f)
        if prev is not None:
            out[f"{prefix}/lgg_distance_prev/{name}"] = float(graph_distance(g, prev, distance))
        if teacher_feats is not None:
            t_mask = None if attention_mask is None else attention_mask.to(teacher_feats[name].device)
            t_vec = feature_vectors(teacher_feats[name].detach(), t_mask, graph.reduce, f"GeometryMonitor: teacher layer {name!r}")
            t = normalized.graph(t_vec.float().to(f.device))
            out[f"{prefix}/lgg_distance_teacher/{name}"] = float(graph_distance(g, t, distance))
        out[f"{prefix}/nnk_loo_error/{name}"] = nnk_interpolation(f, labels, **nnk.kwargs())[1]
        prev = g
    return out


def _monitor_options(owner, graph_options, nnk_options, k, kernel, reduce, nnk_k, nnk_kernel
                     ) -> tuple[GraphOptions, NNKOptions]:
    """The graph and NNK options of :func:`layer_metrics` / :class:`GeometryMonitor` (``owner``): the
    options objects when given (their keywords then keep ``owner``'s defaults), else built from the keywords."""
    graph = _graph_options(graph_options, owner, k=k, kernel=kernel, reduce=reduce)
    if nnk_options is None:
        return graph, NNKOptions(k=nnk_k, kernel=nnk_kernel)
    if not isinstance(nnk_options, NNKOptions):
        raise TypeError(f"nnk_options must be an NNKOptions, got {type(nnk_options).__name__}")
    keep_defaults(owner, "nnk_options", nnk_k=nnk_k, nnk_kernel=nnk_kernel)
    return graph, nnk_options


def _check_every(value, name: str) -> int | None:
    check_int(value, name, low=1, none_ok=True)
    if value is None:
        return None
    return value


class GeometryMonitor(pl.Callback):
    """Log per-layer latent-geometry metrics of a LightningModule on a fixed probe batch during training.

    Args:
        probe: ``(x, y)``: a fixed batch and its (B,) labels (B small: the NNK solve and the B x B graphs cost
            O(B^2 d)). ``x`` is a (B, ...) tensor, or a mapping of named inputs (a tokenizer's ``BatchEncoding``,
            called as ``module(**x)``) whose ``attention_mask`` then keeps padding out of every metric (token
            features (B, T, H) -> (B, H) by ``reduce``). Moved to the module's device when measured.
        layers: names in ``pl_module.named_modules()`` (e.g. ``"model.layer3"`` for a module stored as
            ``self.model``), in forward order; checked when fitting starts (``on_fit_start``), with the
            valid names in the error.
        every_n_epochs: measure at the end of every N-th training epoch (logged with ``pl_module.log``,
            ``on_epoch=True``: also visible to ``ModelCheckpoint``/``EarlyStopping``). Ignored when
            ``every_n_steps`` is set.
        every_n_steps: measure after every N-th optimizer step instead (written straight to every
            ``trainer.loggers`` at ``trainer.global_step``, whatever the Trainer's ``log_every_n_steps``).
        teacher: optional teacher network, run on the same probe (eval mode, no grad).
        teacher_layers: names in ``teacher.named_modules()``, one per entry of ``layers`` (the paired layer).
        k, kernel, nnk_k, nnk_kernel, distance, prefix: see :func:`layer_metrics`.
        select, teacher_select: output selection of captured layers (see :class:`geomlat.LatentCapture`).
        forward: ``forward(pl_module, x)`` running the probe (default ``pl_module(x)``, ``pl_module(**x)`` for a mapping).
        reduce: token features (B, T, H) -> (B, H) (:func:`geomlat.sequences.sample_vectors`).
        graph_options, nnk_options: the options objects instead of the keywords (see :func:`layer_metrics`).

    Every measurement is also appended to ``history`` as ``{"epoch", "step", **metrics}``. The module's (and
    teacher's) train/eval mode is restored afterwards; the measurement is in eval mode, without gradients.
    """

    def __init__(
        self,
        probe: tuple[Tensor, Tensor],
        layers: Sequence[str],
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        teacher: nn.Module | None = None,
        teacher_layers: Sequence[str] | None = None,
        k: int | None = None,
        kernel: str = "auto",
        nnk_k: int = 10,
        nnk_kernel: str = "cosine",
        distance: str = "frobenius",
        prefix: str = "geom",
        select: OutputKey | Mapping[str, OutputKey] = None,
        teacher_select: OutputKey | Mapping[str, OutputKey] = None,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        reduce: str | None = None,
        *,
        graph_options: GraphOptions | None = None,
        nnk_options: NNKOptions | None = None,
    ):
        super().__init__()
        if (not isinstance(probe, (tuple, list)) or len(probe) != 2 or not isinstance(probe[1], Tensor)
                or not isinstance(probe[0], (Tensor, Mapping))):
            raise TypeError("probe must be a pair (x, y): x a tensor or a mapping of named inputs, y a tensor of labels")
        x, y = probe
        n = batch_size(x)
        self.y = check_labels(y, n, "probe labels")
        graph, nnk = _monitor_options(GeometryMonitor.__init__, graph_options, nnk_options, k, kernel, reduce, nnk_k,
                                      nnk_kernel)
        if nnk.k >= n or (graph.k is not None and graph.k >= n):
            raise ValueError(f"the probe batch has {n} samples: k ({graph.k}) and nnk_k ({nnk.k}) must be smaller")
        self.x = x
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("GeometryMonitor needs at least one layer name")
        if (teacher is None) != (teacher_layers is None):
            raise ValueError("give both teacher and teacher_layers (one teacher layer per student layer), or neither")
        self.teacher = teacher
        self.teacher_layers = None if teacher_layers is None else list(teacher_layers)
        if self.teacher_layers is not None and len(self.teacher_layers) != len(self.layers):
            raise ValueError(f"teacher_layers needs one name per layer: {len(self.layers)} layers, got {len(self.teacher_layers)}")
        DISTANCES[distance]  # an unknown name raises UnknownNameError (a ValueError) listing the registered ones
        self.every_n_epochs = _check_every(every_n_epochs, "every_n_epochs")
        self.every_n_steps = _check_every(every_n_steps, "every_n_steps")
        self.options = dict(graph_options=graph, nnk_options=nnk, distance=distance, prefix=prefix)
        self.select, self.teacher_select = select, teacher_select
        self.forward = forward if forward is not None else call_model
        self.history: list[dict[str, float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the layer names before any training (a misspelled name would fail only at the first measurement)."""
        checks = [("layers", self.layers, pl_module, "pl_module")]
        if self.teacher is not None:
            checks.append(("teacher_layers", self.teacher_layers, self.teacher, "teacher"))
        for arg, names, module, what in checks:
            valid = [name for name, _ in module.named_modules() if name]
            unknown = [name for name in names if name not in valid]
            if unknown:
                raise ValueError(f"GeometryMonitor: unknown {arg} {unknown} in the {what} "
                                 f"({type(module).__name__}); valid names: {valid}")

    @staticmethod
    def _capture(module: nn.Module, names: list[str], x, run, select) -> list[Tensor]:
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), LatentCapture(module, names, detach=True, select=select) as cap:
                run(module, x)
        finally:
            module.train(was_training)
        missing = [n for n in names if n not in cap]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output on the probe batch")
        return [cap[n] for n in names]

    def measure(self, pl_module: nn.Module) -> dict[str, float]:
        """Capture the layers on the probe batch and return :func:`layer_metrics` (nothing is logged)."""
        device = next(pl_module.parameters()).device
        x = to_device(self.x, device)
        feats = dict(zip(self.layers, self._capture(pl_module, self.layers, x, self.forward, self.select)))
        teacher_feats = None
        if self.teacher is not None:
            t = self._capture(self.teacher, self.teacher_layers, to_device(x, next(self.teacher.parameters()).device),
                              call_model, self.teacher_select)
            teacher_feats = dict(zip(self.layers, t))
        mask = attention_mask_of(x)
        return layer_metrics(feats, self.y, teacher_feats, **self.options, attention_mask=mask)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps is not None or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self.measure(pl_module)
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=len(self.y))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps is None or trainer.global_step % self.every_n_steps != 0:
            return
        metrics = self.measure(pl_module)
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


class ObjectiveModule(pl.LightningModule):
    """A LightningModule training a geomlat objective (``forward(x, y) -> (output, {name: scalar loss})``,
    attribute ``.model``), e.g. :class:`geomlat.objectives.Distiller` (GKD + Hinton KD).

    ``training_step`` sums the objective's losses and logs each term as ``train/<name>`` and the total as
    ``train/loss`` (epoch means); ``validation_step`` logs ``val/acc`` of ``argmax`` of the model's logits
    (:func:`geomlat.select_logits` with ``output_key``). SGD with momentum and weight decay over the
    objective's trainable parameters (the student and, e.g., FitNet projections; never a frozen teacher),
    cosine-annealed over ``trainer.max_epochs``.

    The network is registered as ``self.model`` before the objective, so its layers are ``"model.<name>"``
    in ``named_modules()`` (the names :class:`GeometryMonitor` takes).

    Args:
        objective: the geomlat objective; ``.model`` is the network being trained.
        lr, momentum, weight_decay: SGD settings.
        output_key: logits of a model returning a tuple/dict/``ModelOutput`` in validation.
    """

    def __init__(self, objective: nn.Module, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 output_key: OutputKey = None):
        super().__init__()
        if not isinstance(getattr(objective, "model", None), nn.Module):
            raise TypeError(f"objective must be a geomlat objective with a .model network, got {type(objective).__name__}")
        # the network first: its layers are named "model.<layer>" in named_modules() (GeometryMonitor)
        self.model = objective.model
        self.objective = objective
        self.lr, self.momentum, self.weight_decay, self.output_key = float(lr), float(momentum), float(weight_decay), output_key

    def forward(self, x: Tensor):
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        _, losses = self.objective(x, y)
        total = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train/loss", total, on_step=False, on_epoch=True, batch_size=len(y))
        return total

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = select_logits(self.model(x), self.output_key)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self):
        params = [p for p in self.objective.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}
