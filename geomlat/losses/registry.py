"""Loss registry: losses are plug-ins, looked up by name (the names of the study specs).

Protocol of a registered loss: an ``nn.Module`` class with a class attribute ``consumes`` saying what its
``forward`` takes (the :class:`geomlat.objectives.Distiller` routes its terms on it, never on the class):

- ``"features"``: ``forward(teacher_feats, student_feats, y)``, the lists of (B, ...) features of the
  (teacher layer, student layer) pairs, teacher first, and the (B,) labels; a scalar.
- ``"logits"``: ``forward(teacher_logits (B, C), student_logits (B, C), y)``; a scalar.
- ``"output"``: ``forward(output (B, ...), y)`` of one network (:class:`LabelVariationLoss`).
- ``"layers"``: ``forward([f_1, ..., f_L], y)``, features of consecutive layers of one network
  (:class:`SmoothnessRegularizer`).

Argument order: teacher first, student second, for every distillation loss of geomlat (as in the
authors' GKD code and as the paper writes ``L(A_T, A_S)``). torchdistill's losses take
``(student_output, teacher_output)``, the reverse: when porting a torchdistill loss or configuration,
swap the two arguments (geomlat's own torchdistill adapter, :mod:`geomlat.integrations.torchdistill`,
does this for you).

A loss that needs the models to be built (FitNet's projections need the channel counts of the paired
layers) has a classmethod ``from_models(teacher, student, pairs, *, example, **kwargs)``; :func:`build_loss` calls it
when teacher, student and pairs are given (and requires them), else the plain constructor.

Any loss sees the batch of every rank under ``torch.distributed`` when wrapped in
:class:`geomlat.distributed.GlobalBatch` (``build_loss(..., global_batch=True)``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from torch import nn

from ..registry import Registry

__all__ = ["CONSUMES", "DISTILL_CONSUMES", "LOSSES", "build_loss", "get_loss", "register_loss"]

#: What a loss may consume (see the module docstring).
CONSUMES = ("features", "logits", "output", "layers")
#: What a term of a :class:`geomlat.objectives.Distiller` may consume.
DISTILL_CONSUMES = ("features", "logits")

L = TypeVar("L", bound=type)


def check_consumes(loss: Any, name: str, allowed: Sequence[str] = CONSUMES) -> str:
    """The ``consumes`` attribute of a loss (class or instance), checked to be one of ``allowed``."""
    kind = getattr(loss, "consumes", None)
    if kind not in allowed:
        what = loss.__name__ if isinstance(loss, type) else type(loss).__name__
        raise TypeError(
            f"{name}: {what} has consumes={kind!r}; a loss must say what its forward takes with a class attribute "
            f"consumes, one of {list(allowed)} (see geomlat.losses.registry)"
        )
    return kind


def _check_loss_class(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_loss({name!r}) decorates nn.Module classes, got {cls!r}")
    check_consumes(cls, f"register_loss({name!r})")


#: name -> loss class (:func:`register_loss` adds to it).
LOSSES: Registry[type[nn.Module]] = Registry("loss", check=_check_loss_class)


def register_loss(name: str) -> Callable[[L], L]:
    """Class decorator: register an ``nn.Module`` loss class under ``name`` (see the protocol above).

    Raises:
        ValueError: ``name`` is empty or already registered.
        TypeError: the class is not an ``nn.Module`` subclass or has no valid ``consumes``.
    """
    return LOSSES.register(name)


def get_loss(name: str) -> type[nn.Module]:
    """The loss class registered under ``name``; :class:`geomlat.registry.UnknownNameError` (a ``KeyError``)
    listing the registered names otherwise."""
    return LOSSES[name]


def build_loss(
    name: str,
    *,
    teacher: nn.Module | None = None,
    student: nn.Module | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    example: Any = None,
    global_batch: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Instantiate the loss ``name`` with ``kwargs``.

    A class with ``from_models`` (FitNet) is built by
    ``cls.from_models(teacher, student, pairs, example=example, **kwargs)`` and needs the three models
    arguments (``example``: a small batch of inputs, from which FitNet reads the channel counts of the paired
    layers); the others by ``cls(**kwargs)`` and ignore ``teacher``, ``student``, ``pairs`` and ``example``. ``global_batch=True`` wraps
    the loss in :class:`geomlat.distributed.GlobalBatch` (the batch of every rank under torch.distributed;
    the loss itself on one process).
    """
    cls = get_loss(name)
    if "gather" in kwargs:
        raise TypeError(
            f"loss {name!r}: gather= was replaced by global_batch=True (the GlobalBatch wrapper, for every loss)"
        )
    if not isinstance(global_batch, bool):
        raise TypeError(f"global_batch must be a bool, got {global_batch!r}")
    from_models = getattr(cls, "from_models", None)
    if from_models is not None:
        if teacher is None or student is None or pairs is None:
            raise ValueError(f"loss {name!r} is built from the models: give teacher=, student= and pairs=")
        loss = from_models(teacher, student, pairs, example=example, **kwargs)
    else:
        loss = cls(**kwargs)
    if global_batch:
        from ..distributed import GlobalBatch

        loss = GlobalBatch(loss)
    return loss
