"""torchdistill integration (optional extra ``torchdistill``): geomlat's losses in torchdistill's loss registry.

Importing this module registers three *mid-level* losses (``torchdistill.losses.registry``), usable from a
torchdistill YAML config as ``criterion: {key: <name>, kwargs: {...}}`` inside a ``WeightedSumLoss`` sub-term
(see ``examples/torchdistill_gkd.yaml``). Each is called by torchdistill as
``loss(student_io_dict, teacher_io_dict, targets)``, where ``io_dict[module_path][io]`` holds what the
forward hooks of ``train.student.forward_hook`` / ``train.teacher.forward_hook`` recorded:

- ``GeomlatGKDLoss`` (:class:`GKDLoss`): graph knowledge distillation, :class:`geomlat.losses.GKD` between the
  outputs of ``teacher_module_paths[i]`` and ``student_module_paths[i]``; other kwargs go to ``GKD``
  (``k``, ``kernel``, ``mask`` (uses the targets), ``power``, ``normalize``, ``order``).
- ``GeomlatLabelVariationLoss`` (:class:`LabelVariationLossTD`): label variation of the LGG of one module's
  output, :class:`geomlat.losses.LabelVariationLoss` (``k``, ``kernel``, ``normalized``, ``sigma``).
- ``GeomlatSmoothnessLoss`` (:class:`SmoothnessLossTD`): the label-variation smoothness regularizer over
  several (post-ReLU) modules, :class:`geomlat.losses.SmoothnessRegularizer` (``power``, ``gamma``, ``k``,
  ``normalized``; it carries its own weight ``gamma ** power``).

A recorded value that is a tuple, dict or ``ModelOutput`` is reduced by :func:`geomlat.select_output`
(``select`` kwarg: field name or index). For the example config, :func:`digits_dataset` builds the
scikit-learn digits (bundled with scikit-learn: no download) as a torchdistill-ready dataset.

Only ``torchdistill.losses`` is imported here, which works without torchvision; torchdistill's training
boxes (``torchdistill.core``) need a working torchvision.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torch.utils.data import TensorDataset
from torchdistill.losses.registry import register_mid_level_loss

from ..capture import OutputKey, select_output
from ..losses import GKD, LabelVariationLoss, SmoothnessRegularizer

__all__ = ["GKDLoss", "LabelVariationLossTD", "SmoothnessLossTD", "LOSS_NAMES", "digits_dataset"]

LOSS_NAMES = ("GeomlatGKDLoss", "GeomlatLabelVariationLoss", "GeomlatSmoothnessLoss")


def _paths(paths, name: str) -> list[str]:
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError(f"{name} must be a module path or a non-empty list of module paths, got {paths!r}")
    return paths


def _recorded(io_dict: dict, path: str, io: str, side: str, select: OutputKey) -> Tensor:
    """``io_dict[path][io]`` as one tensor; a clear error when the hook was not configured."""
    entry = io_dict.get(path)
    if entry is None or io not in entry:
        raise KeyError(
            f"the {side} io_dict has no {io!r} of module {path!r}: add {path!r} to "
            f"train.{side}.forward_hook.{io} in the torchdistill config (recorded: {sorted(io_dict)})"
        )
    return select_output(entry[io], select, prefer="last_hidden_state", what=f"{side} {io} of {path!r}")


@register_mid_level_loss(key="GeomlatGKDLoss")
class GKDLoss(nn.Module):
    """torchdistill mid-level loss ``GeomlatGKDLoss``: :class:`geomlat.losses.GKD` over module pairs.

    Args:
        teacher_module_paths, student_module_paths: one path (str) or lists of equal length; the i-th
            teacher module is paired with the i-th student module (depths and widths may differ).
        io: ``"output"`` (default) or ``"input"``, as recorded by the forward hooks.
        select: output selection of a tuple/dict/ModelOutput value (:func:`geomlat.select_output`).
        **gkd_kwargs: passed to :class:`geomlat.losses.GKD`.

    Forward: ``(student_io_dict, teacher_io_dict, targets (B,))`` -> scalar ``GKD(teacher feats, student
    feats, targets)`` (unweighted: the ``weight`` of the WeightedSumLoss sub-term multiplies it).
    """

    def __init__(self, teacher_module_paths, student_module_paths, io: str = "output", select: OutputKey = None, **gkd_kwargs):
        super().__init__()
        self.teacher_paths = _paths(teacher_module_paths, "teacher_module_paths")
        self.student_paths = _paths(student_module_paths, "student_module_paths")
        if len(self.teacher_paths) != len(self.student_paths):
            raise ValueError(f"GeomlatGKDLoss pairs modules one to one: {len(self.teacher_paths)} teacher paths, "
                             f"{len(self.student_paths)} student paths")
        self.io, self.select = io, select
        self.gkd = GKD(**gkd_kwargs)

    def forward(self, student_io_dict, teacher_io_dict, targets=None, *args, **kwargs) -> Tensor:
        t = [_recorded(teacher_io_dict, p, self.io, "teacher", self.select) for p in self.teacher_paths]
        s = [_recorded(student_io_dict, p, self.io, "student", self.select) for p in self.student_paths]
        return self.gkd(t, s, targets)


@register_mid_level_loss(key="GeomlatLabelVariationLoss")
class LabelVariationLossTD(nn.Module):
    """torchdistill mid-level loss ``GeomlatLabelVariationLoss``: label variation of one module's LGG.

    Args:
        module_path: the module whose recorded value is the embedding (``"."``: the model's output).
        io: ``"output"`` or ``"input"``. is_from_teacher: read the teacher's io_dict instead.
        select: output selection (:func:`geomlat.select_output`).
        **kwargs: passed to :class:`geomlat.losses.LabelVariationLoss`.

    Forward: ``(student_io_dict, teacher_io_dict, targets (B,))`` -> scalar.
    """

    def __init__(self, module_path: str = ".", io: str = "output", is_from_teacher: bool = False, select: OutputKey = None, **kwargs):
        super().__init__()
        self.path, self.io, self.from_teacher, self.select = module_path, io, bool(is_from_teacher), select
        self.loss = LabelVariationLoss(**kwargs)

    def forward(self, student_io_dict, teacher_io_dict, targets=None, *args, **kwargs) -> Tensor:
        side, io_dict = ("teacher", teacher_io_dict) if self.from_teacher else ("student", student_io_dict)
        if targets is None:
            raise ValueError("GeomlatLabelVariationLoss needs the labels (targets) of the batch")
        return self.loss(_recorded(io_dict, self.path, self.io, side, self.select), targets)


@register_mid_level_loss(key="GeomlatSmoothnessLoss")
class SmoothnessLossTD(nn.Module):
    """torchdistill mid-level loss ``GeomlatSmoothnessLoss``: :class:`geomlat.losses.SmoothnessRegularizer`
    over the student modules ``module_paths`` (>= 2, non-negative outputs, in forward order).

    Forward: ``(student_io_dict, teacher_io_dict, targets (B,))`` -> scalar (already weighted by
    ``gamma ** power``).
    """

    def __init__(self, module_paths: Sequence[str], io: str = "output", select: OutputKey = None, **kwargs):
        super().__init__()
        self.paths = _paths(module_paths, "module_paths")
        if len(self.paths) < 2:
            raise ValueError(f"GeomlatSmoothnessLoss needs >= 2 module paths, got {self.paths}")
        self.io, self.select = io, select
        self.regularizer = SmoothnessRegularizer(**kwargs)

    def forward(self, student_io_dict, teacher_io_dict, targets=None, *args, **kwargs) -> Tensor:
        if targets is None:
            raise ValueError("GeomlatSmoothnessLoss needs the labels (targets) of the batch")
        feats = [_recorded(student_io_dict, p, self.io, "student", self.select) for p in self.paths]
        return self.regularizer(feats, targets)


def digits_dataset(split: str = "train", seed: int = 0, test_size: int = 500) -> TensorDataset:
    """The scikit-learn digits as ``TensorDataset(x (N, 1, 8, 8) float32 in [0, 1], y (N,) int64)`` (no download):
    the class-balanced split of :func:`geomlat.data.embedded.load_digits_splits` (``split``: ``"train"``,
    1,297 samples, or ``"test"``, ``test_size``). For YAML configs: ``!import_call {key:
    'geomlat.integrations.torchdistill.digits_dataset', init: {kwargs: {split: 'train'}}}``."""
    from ..data.embedded import load_digits_splits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    splits = load_digits_splits(seed=seed, test_size=test_size, augment=False)
    return splits.train if split == "train" else splits.test
