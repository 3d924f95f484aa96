"""Training objectives, all in one place.

The objective protocol (what :func:`geomlat.engine.train` and a user's own loop consume): an
``nn.Module`` with

- an attribute ``.model``, the network being trained and evaluated (checkpointed with the objective);
- ``forward(x, y) -> (output, {name: loss})``: ``x`` the model's inputs for a batch of B samples, ``y`` (B,)
  integer labels; ``output``
  is what ``.model`` returns for the batch (logits (B, C), or an embedding (B, D)), ``{name: loss}``
  scalar tensors, each already weighted, whose sum is minimized over the objective's parameters that
  require grad (a frozen teacher has ``requires_grad=False``; FitNet's projections or a bottleneck head
  are parameters of the objective, trained with the model).

The inputs ``x`` may be a tensor (``model(x)``), a tuple/list (``model(*x)``) or a mapping such as a Hugging
Face tokenizer's ``BatchEncoding`` (``{"input_ids", "attention_mask", ...}``, called as ``model(**x)``):
see :mod:`geomlat.batch`. Only :class:`PGDTraining` needs a tensor (it attacks the input pixels).

A plain loop::

    objective = Supervised(model)
    for x, y in loader:
        output, losses = objective(x, y)
        sum(losses.values()).backward()
        optimizer.step(); optimizer.zero_grad()

Every objective here subclasses :class:`Objective`, which writes the protocol down (``.model``,
``output_key``, :meth:`Objective.logits`, ``checkpoint_exclude``); the engine only needs the protocol.

Objectives here:

- :class:`Supervised`: cross-entropy.
- :class:`Distiller`: knowledge distillation, ``CE + sum_terms weight * L_term`` (LGG paper 4.1); its
  terms are any losses following the protocol of :mod:`geomlat.losses.registry` (``consumes``).
- :class:`LabelVariationObjective`: label variation of the output LGG as the training objective (LGG
  paper Section 4.2, Appendix E; Bontonou et al. 2019), optionally beside cross-entropy. ``.model(x)`` is
  the embedding (any width, 2-D included).
- :class:`BottleneckCrossEntropy`: cross-entropy through a linear head on a low-dimensional embedding (the
  bottleneck the paper adds to train 2-D embeddings with cross-entropy, Appendix E). ``.model(x)`` is the
  embedding; the head is part of the objective (trained and checkpointed with it).
- :class:`SmoothnessObjective`: cross-entropy plus the label-variation smoothness regularizer over
  captured layers (LGG paper Section 4.3; Lassance, Gripon & Ortega, "Laplacian networks", 2021).
- :class:`PGDTraining` (:func:`adversarial_objective`): PGD adversarial training (Madry et al. 2018).

(Formerly in ``engine/train.py``, ``losses/objectives.py``, ``losses/distill.py`` and
``robustness/attacks.py``; those names stay importable from there.)
"""
from __future__ import annotations

import functools
import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import checks_deferred, value_check
from .batch import Inputs, attention_mask_of, batch_size, call_model
from .capture import LatentCapture, OutputKey, check_layer_names, select_logits, select_output
from .distributed import GlobalBatch
from .losses.embedding import LabelVariationLoss
from .losses.registry import DISTILL_CONSUMES, check_consumes
from .losses.regularizers import SmoothnessRegularizer
from .robustness.attacks import LossFn, cross_entropy_sum, pgd
from ._params import check_int, check_number

__all__ = [
    "BottleneckCrossEntropy",
    "Distiller",
    "LabelVariationObjective",
    "PGDTraining",
    "SmoothnessObjective",
    "Supervised",
    "adversarial_objective",
]


def check_class_labels(y: Tensor, logits: Tensor, what: str) -> Tensor:
    """Labels ``y`` (B,) must index the C = ``logits.shape[-1]`` classes: ``ValueError`` naming C and the
    label out of range (instead of torch's ``IndexError: Target 9 is out of bounds``, or a device assert on
    a GPU). Inside :func:`geomlat.checks.deferred_value_checks` the test is recorded on the device (no host
    read; the message then names C and the valid range) and the labels are returned clamped to [0, C - 1]
    (the same labels when they are valid), so that the step runs until the recorded check is verified.

    Returns:
        the labels to use: ``y`` itself outside deferred checks."""
    if y.numel() == 0 or logits.dim() != 2:
        return y
    num_classes = logits.shape[-1]
    low, high = torch.aminmax(y.detach())
    if checks_deferred():
        value_check((low >= 0) & (high < num_classes),
                    f"{what}: labels must be class indices in [0, {num_classes - 1}] (C = {num_classes}, the width "
                    f"of the logits), got a label out of this range")
        return y.clamp(0, num_classes - 1)
    low, high = int(low), int(high)
    if low < 0 or high >= num_classes:
        bad = high if high >= num_classes else low
        raise ValueError(f"{what}: label {bad} is out of range for C = {num_classes} classes (the width of the "
                         f"logits): labels must be class indices in [0, {num_classes - 1}]")
    return y


class _Taps(LatentCapture):
    """Forward hooks on the named layers of ``model``, registered once at construction and recording only
    during :meth:`run`: registering hooks inside a region compiled by ``torch.compile`` is a graph break
    (``RemovableHandle.next_id``), while existing hooks are traced with the modules. Idle hooks cost a flag
    test per captured module call and hold no tensor. Names are checked as by :class:`LatentCapture`
    (``KeyError`` listing the valid ones). The hooks are ``functools.partial`` of a method: a model carrying
    them can still be pickled or deep-copied.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], detach: bool = False):
        super().__init__(model, layers, detach=detach)
        self.recording = False
        self.__enter__()  # the hooks stay for the objective's lifetime

    def _hook(self, name: str):
        return functools.partial(self._record, name)

    def _record(self, name: str, module: nn.Module, inputs, output) -> None:
        if self.recording:
            output = select_output(output, self.select[name], prefer="last_hidden_state", what=f"output of layer {name!r}")
            self.outputs[name] = output.detach() if self.detach else output

    def run(self, fn, *args, **kwargs) -> tuple[object, dict[str, Tensor]]:
        """``(fn(*args, **kwargs), {layer: output})`` (``fn`` the model, or a function calling it); the captured
        outputs are handed over, none is kept here."""
        if not torch.compiler.is_compiling():
            # eager: the taps run after every other hook of their module, as a LatentCapture entered now
            # would (a hook registered after the objective may replace the output). Compiled code keeps the
            # order the hooks had when it was traced.
            for handle in self._handles:
                hooks = handle.hooks_dict_ref()
                if hooks is not None and handle.id in hooks:
                    hooks.move_to_end(handle.id)
        self.recording = True
        try:
            out = fn(*args, **kwargs)
        finally:
            self.recording = False
        outputs, self.outputs = self.outputs, {}
        return out, outputs


def _check_model(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


class Objective(nn.Module):
    """Base of the training objectives: the protocol of this module's docstring, written down.

    Attributes:
        model: the network being trained and evaluated (checked to be an ``nn.Module``).
        output_key: which part of ``model``'s output is the logits (or the embedding) when it is not a
            Tensor (:func:`geomlat.select_logits`: ``None`` = ``.logits`` / ``["logits"]`` / first Tensor).
        checkpoint_exclude: names of submodules the engine's checkpoints leave out (frozen, rebuilt by the
            caller, e.g. a Distiller's ``("teacher",)``).

    Subclasses implement ``forward(x, y) -> (output, {name: weighted scalar loss})``; :meth:`logits` is
    the model's selected output for inputs ``x``. The engine (:func:`geomlat.engine.train`) and
    :class:`geomlat.integrations.lightning.ObjectiveModule` accept any ``nn.Module`` with this protocol
    (duck-typed: an objective need not subclass this class).
    """

    #: submodules :func:`geomlat.engine.train` does not store in checkpoints
    checkpoint_exclude: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, output_key: OutputKey = None):
        super().__init__()
        self.model = _check_model(model)
        self.output_key = output_key

    def logits(self, x: Inputs) -> Tensor:
        """The model's output on the inputs ``x`` (a tensor, tuple or mapping, :mod:`geomlat.batch`), the part
        named by ``output_key``: (B, C) logits, or (B, D) for an embedding objective."""
        return select_logits(call_model(self.model, x), self.output_key)

    def forward(self, x: Inputs, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, y) -> (output, {{name: loss}})")


class Supervised(Objective):
    """Cross-entropy objective: ``forward(x, y) -> (model(x) (B, C), {"task": CE})``, ``x`` a tensor, tuple or
    mapping of inputs (``model(**x)``, see :mod:`geomlat.batch`).

    Args:
        model: a classifier returning logits (B, C).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy`.
        output_key: the logits of a model returning a tuple, dict or ``ModelOutput`` (see
            :func:`geomlat.select_logits`; default ``.logits`` / ``["logits"]`` / first Tensor).
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0, output_key: OutputKey = None):
        super().__init__(model, output_key)
        self.label_smoothing = float(label_smoothing)

    def forward(self, x: Inputs, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.logits(x)
        y = check_class_labels(y, out, "Supervised")
        return out, {"task": F.cross_entropy(out, y, label_smoothing=self.label_smoothing)}


def _check_weight(value: float, name: str) -> float:
    check_number(value, name, low=0)
    return float(value)


class LabelVariationObjective(Objective):
    """Train ``model`` by minimizing the label variation of the LGG of its output (LGG paper 4.2).

    Args:
        model: network whose output (B, D) is the embedding (D free: 2 works).
        loss: the label-variation loss (default ``LabelVariationLoss()``: full RBF graph, bandwidth from the
            batch, so the loss is invariant to a rescaling of the output).
        ce_weight: weight of a cross-entropy term on the same output (then D must equal the number of
            classes); 0 (default) trains with label variation alone.

    Forward: ``x`` (B, ...), ``y`` (B,) -> ``(model(x) (B, D), {"label_variation": loss[, "task": w * CE]})``.
    """

    def __init__(self, model: nn.Module, loss: nn.Module | None = None, ce_weight: float = 0.0,
                 output_key: OutputKey = None):
        super().__init__(model, output_key)
        self.loss = LabelVariationLoss() if loss is None else loss
        self.ce_weight = _check_weight(ce_weight, "ce_weight")

    def forward(self, x: Inputs, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.logits(x)
        losses = {"label_variation": self.loss(out, y)}
        if self.ce_weight > 0:
            message = f"ce_weight > 0 needs class scores (B, C > max label); got output shape {tuple(out.shape)}"
            if out.dim() != 2:
                raise ValueError(message)
            value_check(y.max() < out.shape[1], message)  # deferred in the engine: no host read
            losses["task"] = self.ce_weight * F.cross_entropy(out, y)
        return out, losses


class BottleneckCrossEntropy(Objective):
    """Cross-entropy through a linear head on the (low-dimensional) output of ``model``.

    ``logits = head(model(x))`` with ``head = nn.Linear(embed_dim, num_classes)``. The engine evaluates
    ``.model``, i.e. the embedding; classify it with ``geomlat.classifiers`` or with :meth:`logits`.

    Args:
        model: embedding network (B, ...) -> (B, embed_dim).
        num_classes: number of classes C.
        embed_dim: width of the embedding (default ``model.output_dim``).

    Forward: ``x``, ``y`` -> ``(logits (B, C), {"task": CE})``.
    """

    def __init__(self, model: nn.Module, num_classes: int, embed_dim: int | None = None, output_key: OutputKey = None):
        super().__init__(model, output_key)
        dim = embed_dim if embed_dim is not None else getattr(model, "output_dim", None)
        for value, name in ((dim, "embed_dim"), (num_classes, "num_classes")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int (give embed_dim when the model has no output_dim), got {value!r}")
        self.head = nn.Linear(dim, num_classes)

    def logits(self, x: Inputs) -> Tensor:
        """``head(embedding)``: (B, C) logits of the inputs ``x``."""
        return self.head(super().logits(x))

    def forward(self, x: Inputs, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.logits(x)
        y = check_class_labels(y, logits, "BottleneckCrossEntropy")
        return logits, {"task": F.cross_entropy(logits, y)}


class SmoothnessObjective(Objective):
    """Cross-entropy plus the smoothness regularizer on captured layers (LGG paper 4.3, eq. 9).

    ``task_weight * CE(model(x), y) + regularizer([f_1(x), ..., f_L(x)], y)`` where f_l are the outputs of
    the named modules ``layers`` in forward order (authors: every ReLU of a PreActResNet18, i.e.
    ``model.relu_names``). The regularizer carries its own weight (``gamma ** power``).

    Args:
        model: classifier returning logits (B, C).
        layers: names of non-negative (post-ReLU) modules, >= 2 (default ``model.relu_names``).
        regularizer: default ``SmoothnessRegularizer()`` (m = 2, gamma = 0.01, full cosine graphs).
        task_weight: weight of the cross-entropy term.

    Forward: ``x``, ``y`` -> ``(logits, {"task": CE, "smoothness": L_reg})``.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, regularizer: nn.Module | None = None,
                 task_weight: float = 1.0, output_key: OutputKey = None):
        super().__init__(model, output_key)
        names = list(getattr(model, "relu_names", []) if layers is None else layers)
        check_layer_names(model, names)  # an unknown name first: KeyError naming it and the valid names
        if len(names) < 2:
            raise ValueError(f"the smoothness regularizer needs >= 2 layers, got {names} (give layers= or a model with relu_names)")
        self.layers = names
        self._taps = _Taps(model, names)
        self.regularizer = SmoothnessRegularizer() if regularizer is None else regularizer
        self.task_weight = _check_weight(task_weight, "task_weight")

    def forward(self, x: Inputs, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out, captured = self._taps.run(call_model, self.model, x)
        logits = select_logits(out, self.output_key)
        y = check_class_labels(y, logits, "SmoothnessObjective")
        feats = [captured[n] for n in self.layers]
        inner = self.regularizer.loss if isinstance(self.regularizer, GlobalBatch) else self.regularizer
        if isinstance(inner, SmoothnessRegularizer):
            # the classes are the logits' columns: one-hot labels without reading y on the host (also through
            # GlobalBatch, which passes the number on to the wrapped regularizer)
            reg = self.regularizer(feats, y, num_classes=logits.shape[-1])
        else:
            reg = self.regularizer(feats, y)
        return logits, {"task": self.task_weight * F.cross_entropy(logits, y), "smoothness": reg}


def _check_term_weight(weight, name: str) -> float:
    """A term weight must be a finite number >= 0 (as the study spec requires); returns it as a float."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise TypeError(f"term {name!r}: the weight must be a number, got {weight!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"term {name!r}: the weight must be a finite number >= 0, got {value}")
    return value


class Distiller(Objective):
    """Knowledge-distillation objective: ``forward(x, y) -> (student_logits, {"task": CE, name: w * L})``.

    Args:
        student: network being trained (``.model``).
        teacher: trained network; frozen (``requires_grad=False``) and kept in eval mode, also after
            ``.train()``; run under ``torch.no_grad()``.
        terms: ``{name: (loss_module, weight)}``, any ``nn.Module`` following the protocol of
            :mod:`geomlat.losses.registry` (registered or not), routed on its ``consumes`` attribute:
            ``"features"`` terms (GKD, RKD-D, RKD-A, SP, FitNet, ...) are called
            ``loss(teacher_feats, student_feats, y)`` with the lists of features of ``pairs``;
            ``"logits"`` terms (HintonKD, ...) ``loss(teacher_logits, student_logits, y)``. When the batch
            is a mapping holding an ``attention_mask`` (B, T) (a tokenizer's output), feature terms get it
            as ``loss(..., attention_mask=mask)``, so that padding never enters their geometry (the teacher
            and the student see the same inputs, hence the same mask; pair (B, T, H) token layers then).
            A loss wrapped
            in :class:`geomlat.distributed.GlobalBatch` is routed as the loss itself. Loss modules with
            parameters (FitNet projections) are trained with the student through this objective's
            parameters.
        pairs: ``[(teacher_layer, student_layer), ...]`` module names (see ``named_modules()``), captured
            with :class:`geomlat.LatentCapture`; depths may differ.
        task_weight: weight of the cross-entropy term ``"task"``.
        output_key: which part of the student's forward output is the logits when it is not a Tensor
            (Hugging Face ``ModelOutput``, dict, tuple; see :func:`geomlat.select_logits`): ``None`` =
            ``.logits`` / ``["logits"]`` / the first Tensor of a tuple; or a field name or an index.
        teacher_output_key: the same for the teacher (default: ``output_key``).

    Every weight must be a finite number >= 0 (NaN, Inf or a negative weight raise ``ValueError`` naming
    the term).

    Each returned loss is a scalar, already multiplied by its weight; the engine sums them.
    The engine's checkpoints leave out the frozen teacher (``checkpoint_exclude``): the caller rebuilds it.
    """

    #: submodules :func:`geomlat.engine.train` does not store in checkpoints (frozen, rebuilt by the caller)
    checkpoint_exclude = ("teacher",)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        terms: Mapping[str, tuple[nn.Module, float]],
        pairs: Sequence[tuple[str, str]] = (),
        task_weight: float = 1.0,
        output_key: OutputKey = None,
        teacher_output_key: OutputKey = None,
    ):
        super().__init__(student, output_key)
        self.teacher_output_key = output_key if teacher_output_key is None else teacher_output_key
        self.teacher = _check_model(teacher)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.task_weight = _check_term_weight(task_weight, "task")
        self.pairs = [tuple(p) for p in pairs]
        for p in self.pairs:
            if len(p) != 2 or not all(isinstance(n, str) for n in p):
                raise ValueError(f"pairs must be (teacher_layer, student_layer) name pairs, got {p!r}")
        modules, self.weights, self.kinds = {}, {}, {}
        for name, spec in terms.items():
            if name == "task":
                raise ValueError("the term name 'task' is reserved for the cross-entropy loss")
            if not isinstance(spec, (tuple, list)) or len(spec) != 2:
                raise ValueError(f"term {name!r} must be (loss_module, weight), got {spec!r}")
            module, weight = spec
            if not isinstance(module, nn.Module):
                raise TypeError(f"term {name!r}: the loss must be an nn.Module, got {type(module).__name__}")
            self.kinds[name] = check_consumes(module, f"term {name!r}", DISTILL_CONSUMES)
            modules[name] = module
            self.weights[name] = _check_term_weight(weight, name)
        self.terms = nn.ModuleDict(modules)
        if "features" in self.kinds.values() and not self.pairs:
            raise ValueError("feature-based terms need layer pairs: pairs=[(teacher_layer, student_layer), ...]")
        # hooks registered now, also validating the layer names (KeyError listing the valid names)
        t_names = list(dict.fromkeys(t for t, _ in self.pairs))
        s_names = list(dict.fromkeys(s for _, s in self.pairs))
        self._teacher_taps = _Taps(self.teacher, t_names, detach=True) if t_names else None
        self._student_taps = _Taps(self.model, s_names) if s_names else None

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # the teacher's batch-norm statistics and dropout stay frozen
        return self

    def forward(self, x: Inputs, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``x`` the inputs of B samples (a tensor, a tuple, or a mapping such as ``{"input_ids",
        "attention_mask"}``, given as they are to the teacher and the student), ``y`` (B,) integer class
        labels -> ``(student logits (B, C), {name: loss})``.

        Raises:
            TypeError, ValueError: ``y`` is not an integer tensor of shape (B,), B the batch size of ``x``
                (checked before any forward pass); a label is not in [0, C) (C the student's logits width;
                deferred inside :func:`geomlat.checks.deferred_value_checks`).
        """
        if not isinstance(y, Tensor):
            raise TypeError(f"Distiller: labels y must be a torch.Tensor of shape (B,), got {type(y).__name__}")
        try:
            b = batch_size(x)
        except (TypeError, IndexError):  # no tensor, or a 0-dim one: the model call says what is wrong
            b = None
        if b is not None and (y.dim() != 1 or y.shape[0] != b):
            shape = f"x shape {tuple(x.shape)}" if isinstance(x, Tensor) else f"{type(x).__name__} inputs"
            raise ValueError(f"Distiller: labels y have shape {tuple(y.shape)} but the batch x has {b} samples "
                             f"({shape}); expected y of shape ({b},)")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"Distiller: labels y must hold integer class indices, got dtype {y.dtype}")
        with torch.no_grad():
            t_logits, t_out = _forward_tapped(self._teacher_taps, self.teacher, x)
            t_logits = select_logits(t_logits, self.teacher_output_key)
        s_logits, s_out = _forward_tapped(self._student_taps, self.model, x)
        s_logits = select_logits(s_logits, self.output_key)
        y = check_class_labels(y, s_logits, "Distiller")
        t_names = [] if self._teacher_taps is None else self._teacher_taps.layers
        s_names = [] if self._student_taps is None else self._student_taps.layers
        missing = [n for n in t_names if n not in t_out] + [n for n in s_names if n not in s_out]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output during the forward pass")
        t_feats = [t_out[t] for t, _ in self.pairs]
        s_feats = [s_out[s] for _, s in self.pairs]
        mask = attention_mask_of(x)
        feature_kwargs = {} if mask is None else {"attention_mask": mask}  # the CNN path calls loss(t, s, y)
        losses = {"task": self.task_weight * F.cross_entropy(s_logits, y)}
        for name, module in self.terms.items():
            if self.kinds[name] == "logits":
                value = module(t_logits, s_logits, y)
            else:
                value = module(t_feats, s_feats, y, **feature_kwargs)
            losses[name] = self.weights[name] * value
        return s_logits, losses


def _forward_tapped(taps: "_Taps | None", model: nn.Module, x: Inputs) -> tuple[object, dict[str, Tensor]]:
    """``(model's output, {name: captured output})`` of one forward pass of ``model`` on the inputs ``x``
    (``model(x)``, ``model(*x)`` or ``model(**x)``), through its taps if it has captured layers."""
    if taps is None:
        return call_model(model, x), {}
    return taps.run(call_model, model, x)


class PGDTraining(Objective):
    """PGD adversarial training objective (Madry et al. 2018) for ``geomlat.engine.train``.

    ``forward(x, y)`` crafts PGD examples (eps, alpha, steps; Madry's CIFAR setting 8/255, 2/255, 7) and
    returns ``(model(x_adv), {"adv_ce": cross_entropy(model(x_adv), y)})``: the engine minimizes the
    cross-entropy on the adversarial batch only (no clean term), as in Madry et al.

    Mode: the attack is generated with the model in eval mode (batch-norm running statistics are not
    updated by the attack's forward passes and dropout is off, as in TRADES' reference code); the model's
    mode is then restored, so the training forward pass on ``x_adv`` runs in whatever mode the engine set
    (train mode during training). When the objective itself is in eval mode (``objective.eval()``),
    forward returns the clean logits and the clean cross-entropy (no attack), so evaluation is cheap.

    The random starts come from the objective's own ``torch.Generator`` seeded with ``seed`` (its state is
    not part of a checkpoint: a resumed run draws different starts).

    Attributes:
        model: the trained network (its parameters are this objective's parameters).
        output_key: the logits of a model returning a tuple, dict or ``ModelOutput``
            (:func:`geomlat.select_logits`), for the attack's loss and the returned logits.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 7,
        random_start: bool = True,
        seed: int = 0,
        loss_fn: LossFn = cross_entropy_sum,
        output_key: OutputKey = None,
    ):
        super().__init__(model, output_key)
        check_number(eps, "eps", low=0)
        check_number(alpha, "alpha", low=0, low_open=True)
        check_int(steps, "steps", low=1)
        self.eps, self.alpha, self.steps, self.random_start = float(eps), float(alpha), steps, random_start
        self.loss_fn = loss_fn
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not isinstance(x, Tensor):
            raise TypeError(f"PGDTraining attacks the input pixels: x must be a tensor of images (B, ...), got "
                            f"{type(x).__name__} inputs (a mapping such as a tokenizer's output has no pixels "
                            "to perturb)")
        if self.training:
            # the CPU generator draws the random start, moved to x's device by pgd
            loss_fn = functools.partial(_selected_loss, self.loss_fn, self.output_key)
            x = pgd(self.model, x, y, self.eps, self.alpha, self.steps, self.random_start, self.generator,
                    loss_fn, eval_mode=True)
        logits = self.logits(x)
        return logits, {"adv_ce": F.cross_entropy(logits, y)}

    def extra_repr(self) -> str:
        return f"eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, random_start={self.random_start}"


def _selected_loss(loss_fn: LossFn, output_key: OutputKey, output, y: Tensor) -> Tensor:
    """``loss_fn`` of the logits selected from a model's ``output`` (the attack's loss with ``output_key``)."""
    return loss_fn(select_logits(output, output_key), y)


def adversarial_objective(model: nn.Module, **kwargs) -> PGDTraining:
    """PGD adversarial-training objective for ``model``; keyword arguments as in :class:`PGDTraining`."""
    return PGDTraining(model, **kwargs)
