"""Capture intermediate representations of any ``nn.Module`` by name with forward hooks.

Also the output-selection rule shared by the whole package (:func:`select_output`): modules and models
that return tuples, dicts or Hugging Face ``ModelOutput`` objects (timm, ``transformers``) are reduced to
one tensor the same way everywhere (captured layers, :class:`geomlat.objectives.Distiller`, the engine's
objectives and evaluation), and :func:`pool_sequence` turns (B, T, H) token sequences into (B, H).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Iterable, Union

import torch
from torch import Tensor, nn

OutputKey = Union[str, int, None]

__all__ = ["LatentCapture", "OutputKey", "check_layer_names", "guard_hooks_of_compiled_code", "pool_sequence", "select_logits", "select_output",
           "uncompiled"]


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile(model)`` wraps (``model._orig_mod``), else ``model`` itself.

    Layer names are those of the original module (``"1"``, not ``"_orig_mod.1"``): a hook registered on one
    of its submodules fires when the compiled module runs (Dynamo traces module hooks into the graph).
    """
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing was compiled (and no import cost)
    while eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        model = model._orig_mod
    return model


def guard_hooks_of_compiled_code() -> None:
    """Make Dynamo notice forward hooks added to or removed from compiled modules (what capture does).

    By default (``torch._dynamo.config.skip_nnmodule_hook_guards = True``, for speed) code compiled while a
    module had no hooks is reused after hooks are added: the hooks then never fire (and code compiled with
    other hooks fires those). This sets the flag to False for the process and, the first time, resets
    Dynamo's caches (``torch._dynamo.reset()``: code compiled before is compiled once more, now with the
    hook guards). Measured: with the guards, capturing the same layers again reuses the compiled code.
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None and dynamo.config.skip_nnmodule_hook_guards:
        dynamo.config.skip_nnmodule_hook_guards = False
        dynamo.reset()


def check_layer_names(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """``{name: module}`` of the named submodules of ``model`` (of the module it wraps when compiled, see
    :func:`uncompiled`); ``KeyError`` naming the unknown names and listing the valid ones."""
    names = list(names)
    base = uncompiled(model)
    modules = dict(base.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        valid = [name for name in modules if name]
        raise KeyError(f"unknown layer name(s) {unknown} in {type(base).__name__}; valid names: {valid}")
    return {name: modules[name] for name in names}


def _check_key(key: OutputKey, what: str) -> OutputKey:
    if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int))):
        raise TypeError(f"{what}: an output key must be a field name (str), an index (int) or None, got {key!r}")
    return key


def select_output(output, key: OutputKey = None, prefer: str | None = None, what: str = "output") -> Tensor:
    """The tensor of a module's output that geomlat uses (the one rule of the package).

    Args:
        output: a Tensor, a tuple/list, or a mapping (``dict``, Hugging Face ``ModelOutput``, which is a
            mapping of its non-``None`` fields in declaration order).
        key: ``None`` for the default rule, a field name (``str``: mapping key or attribute) or an index
            (``int``: position in a tuple/list, or among the fields of a mapping, as in
            ``ModelOutput.to_tuple()``).
        prefer: default field of a mapping (``"logits"`` for the model's class scores, what
            :class:`geomlat.objectives.Distiller` and the objectives use; ``"last_hidden_state"`` for
            captured layers).
        what: name used in error messages.

    Default rule (``key=None``): a Tensor as is; a tuple/list -> its first Tensor element; a mapping ->
    ``output[prefer]`` when that field is present, else its first Tensor value.

    Returns:
        the selected tensor (not copied; the autograd graph is kept).
    """
    _check_key(key, what)
    if isinstance(output, Tensor):
        if key is not None:
            raise TypeError(f"{what} is a Tensor: there is no field {key!r} to select (use key=None)")
        return output
    if isinstance(output, Mapping):
        fields = list(output.keys())
        if key is None:
            if prefer is not None and prefer in output and isinstance(output[prefer], Tensor):
                return output[prefer]
            values = [output[f] for f in fields]
        elif isinstance(key, str):
            if key not in output:
                raise KeyError(f"{what} ({type(output).__name__}) has no field {key!r}; fields: {fields}")
            return _tensor(output[key], f"{what}[{key!r}]")
        else:
            if not -len(fields) <= key < len(fields):
                raise IndexError(f"{what} ({type(output).__name__}) has {len(fields)} fields {fields}; index {key} is out of range")
            return _tensor(output[fields[key]], f"{what}[{key}] (field {fields[key]!r})")
    elif isinstance(output, (tuple, list)):
        if key is None:
            values = list(output)
        elif isinstance(key, int):
            if not -len(output) <= key < len(output):
                raise IndexError(f"{what} is a {type(output).__name__} of length {len(output)}; index {key} is out of range")
            return _tensor(output[key], f"{what}[{key}]")
        else:
            raise TypeError(f"{what} is a {type(output).__name__}: select its element with an int index, not {key!r}")
    else:
        raise TypeError(f"{what} must be a Tensor, a tuple/list or a dict/ModelOutput, got {type(output).__name__}")
    for value in values:
        if isinstance(value, Tensor):
            return value
    raise TypeError(f"{what} ({type(output).__name__}) contains no Tensor to select")


def select_logits(output, key: OutputKey = None) -> Tensor:
    """The class scores (or embedding) of a model's forward output: :func:`select_output` with
    ``prefer="logits"``, i.e. by default ``ModelOutput.logits`` / ``dict["logits"]`` / the first Tensor of a
    tuple (a Tensor output as is). ``key`` picks another field name or index."""
    return select_output(output, key, prefer="logits", what="model output")


def _tensor(value, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} is a {type(value).__name__}, not a Tensor")
    return value


def pool_sequence(h: Tensor, attention_mask: Tensor | None = None, mode: str = "cls") -> Tensor:
    """Pool token representations (B, T, H) into one vector per sequence (B, H).

    Args:
        h: (B, T, H) hidden states (e.g. a captured transformer layer).
        attention_mask: (B, T) with 1 (or True) on real tokens and 0 on padding; ``None``: every token.
        mode: ``"cls"`` (the first token, BERT's [CLS]; the mask is not needed) or ``"mean"`` (mean over the
            tokens whose mask is 1).

    Returns:
        (B, H) tensor, differentiable w.r.t. ``h``.
    """
    if not isinstance(h, Tensor) or h.dim() != 3:
        raise ValueError(f"pool_sequence needs hidden states (B, T, H), got {getattr(h, 'shape', type(h).__name__)}")
    if mode not in ("cls", "mean"):
        raise ValueError(f"mode must be 'cls' or 'mean', got {mode!r}")
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != tuple(h.shape[:2]):
            raise ValueError(f"attention_mask must be (B, T) = {tuple(h.shape[:2])}, got {getattr(attention_mask, 'shape', attention_mask)}")
    if mode == "cls":
        return h[:, 0]
    if attention_mask is None:
        return h.mean(dim=1)
    mask = attention_mask.to(device=h.device, dtype=h.dtype)
    count = mask.sum(dim=1, keepdim=True)
    if bool((count == 0).any()):
        raise ValueError("attention_mask has a sequence without any token (all zeros): its mean is undefined")
    return torch.einsum("bt,bth->bh", mask, h) / count


class LatentCapture:
    """Context manager recording the outputs of named sub-modules during forward passes.

    Args:
        model: any module, or ``torch.compile(module)``: names are then those of the original module, the
            hooks run inside the compiled code and the captured values are those of the eager forward (see
            :func:`uncompiled`; capturing on a compiled module turns on Dynamo's hook guards, see
            :func:`guard_hooks_of_compiled_code`). Give the compiled module itself, not the module it wraps.
        layers: names from ``model.named_modules()`` (e.g. ``"layer2.1.relu"``).
        detach: store detached outputs (analysis) instead of keeping the autograd graph (losses).
        select: which tensor of a module's output to keep when it is not a Tensor (see
            :func:`select_output`): ``None`` (default rule), one field name / index for every layer, or a
            mapping ``{layer: key}`` (layers not in it use the default rule).

    Inside the block, ``capture.outputs`` (also what ``__enter__`` returns) maps each name to the
    output of its last forward call, a (B, ...) tensor, in the order of ``layers``. Hooks are removed
    on exit, also when the block raises. Works under ``torch.no_grad()``. Modules returning several
    values (timm, Hugging Face): by default a tuple/list contributes its first Tensor element and a
    dict/``ModelOutput`` its ``last_hidden_state`` (else its first Tensor value); a transformer layer's
    (B, T, H) output can then be pooled with :func:`pool_sequence`. Beware in-place operations applied
    after a captured module (``ReLU(inplace=True)``): they change the stored tensor; capture the in-place
    module instead.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> with LatentCapture(model, ["1", "2"]) as feats:
        ...     logits = model(torch.rand(5, 4))
        >>> list(feats), tuple(feats["1"].shape), bool((feats["1"] >= 0).all())
        (['1', '2'], (5, 8), True)
        >>> torch.equal(feats["2"], logits)
        True
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], detach: bool = False,
                 select: OutputKey | Mapping[str, OutputKey] = None):
        self.model = model
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("LatentCapture needs at least one layer name")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate layer names in {self.layers}")
        if isinstance(select, Mapping):
            extra = [name for name in select if name not in self.layers]
            if extra:
                raise KeyError(f"select names layers {extra} that are not captured ({self.layers})")
            self.select = {name: _check_key(select.get(name), f"select[{name!r}]") for name in self.layers}
        else:
            self.select = dict.fromkeys(self.layers, _check_key(select, "select"))
        self.detach = detach
        self.outputs: dict[str, Tensor] = {}
        self._handles = []

    def __enter__(self) -> dict[str, Tensor]:
        modules = check_layer_names(self.model, self.layers)
        if uncompiled(self.model) is not self.model:
            guard_hooks_of_compiled_code()
        self.outputs.clear()
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self.outputs

    def _hook(self, name: str):
        key = self.select[name]

        def hook(module, inputs, output):
            output = select_output(output, key, prefer="last_hidden_state", what=f"output of layer {name!r}")
            self.outputs[name] = output.detach() if self.detach else output

        return hook

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def ordered(self) -> list[Tensor]:
        """Captured tensors in the order of ``layers``; fails if a layer was not reached by the forward pass."""
        missing = [name for name in self.layers if name not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output during the forward pass")
        return [self.outputs[name] for name in self.layers]
