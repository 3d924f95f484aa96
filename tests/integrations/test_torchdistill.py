"""geomlat.integrations.torchdistill with the real torchdistill package (issue 14): the losses registered in
torchdistill's registry, the example config loaded through torchdistill's YAML loader and turned into its
WeightedSumLoss and optimizer, one optimization step, and the GKD term equal to geomlat's own GKD."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torchdistill")
from torchdistill.common import yaml_util  # noqa: E402
from torchdistill.losses.registry import MIDDLE_LEVEL_LOSS_DICT, get_high_level_loss, get_mid_level_loss  # noqa: E402
from torchdistill.optim.registry import get_optimizer  # noqa: E402

from geomlat import LatentCapture  # noqa: E402
from geomlat.integrations import torchdistill as td  # noqa: E402
from geomlat.losses import GKD, LabelVariationLoss, SmoothnessRegularizer  # noqa: E402
from geomlat.models import build_model  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torchdistill_gkd.yaml"


def _models(config, seed=0):
    torch.manual_seed(seed)
    return [build_model(config["models"][m]["key"], **config["models"][m]["kwargs"]) for m in ("teacher_model", "student_model")]


def _io_dicts(model, paths, x):
    """io_dict as torchdistill's DistillationBox builds it: {path: {'output': tensor}, '.': {'output': logits}}."""
    with LatentCapture(model, paths) as feats:
        out = model(x)
    io = {p: {"output": feats[p]} for p in paths}
    io["."] = {"output": out}
    return io


def test_losses_are_in_torchdistills_registry():
    for name in td.LOSS_NAMES:
        assert name in MIDDLE_LEVEL_LOSS_DICT
    loss = get_mid_level_loss({"key": "GeomlatGKDLoss", "kwargs": {"teacher_module_paths": "a", "student_module_paths": "b", "k": 3}})
    assert isinstance(loss, td.GKDLoss) and loss.gkd.k == 3
    with pytest.raises(ValueError, match="one to one"):
        td.GKDLoss(["a", "b"], ["c"])
    with pytest.raises(KeyError, match="train.student.forward_hook.output"):
        loss({"x": {"output": torch.zeros(2, 2)}}, {"a": {"output": torch.ones(2, 2)}}, torch.tensor([0, 1]))


def test_example_config_one_step_with_the_registered_gkd():
    config = yaml_util.load_yaml_file(str(EXAMPLE))
    train_set = config["datasets"]["digits/train"]  # built by torchdistill's !import_call
    assert len(train_set) == 1297 and train_set[0][0].shape == (1, 8, 8)
    teacher, student = _models(config)
    teacher.eval()
    train_cfg = config["train"]
    criterion = get_high_level_loss(train_cfg["criterion"])
    gkd_term, gkd_weight = criterion.term_dict["gkd"]
    assert isinstance(gkd_term, td.GKDLoss) and gkd_weight == 25.0
    optimizer = get_optimizer(student, train_cfg["optimizer"]["key"], **train_cfg["optimizer"]["kwargs"])
    x, y = train_set.tensors[0][:64], train_set.tensors[1][:64]
    t_paths, s_paths = train_cfg["teacher"]["forward_hook"]["output"], train_cfg["student"]["forward_hook"]["output"]

    with torch.no_grad():
        t_io = _io_dicts(teacher, t_paths, x)
    s_io = _io_dicts(student, s_paths, x)
    loss = criterion({"teacher": t_io, "student": s_io}, {}, y)
    # geomlat's own GKD on the same features, computed from the modules directly
    with torch.no_grad():
        t2 = teacher.stage2(teacher.stage1(x))
        t3 = teacher.stage3(t2)
    s2 = student.stage2(student.stage1(x))
    s3 = student.stage3(s2)
    gkd = GKD(kernel="cosine")([t2, t3], [s2, s3])
    ce = F.cross_entropy(student(x), y)
    torch.testing.assert_close(gkd_term(s_io, t_io, y), gkd)
    torch.testing.assert_close(loss, ce + 25.0 * gkd)
    assert float(gkd) > 0

    before = [p.detach().clone() for p in student.parameters()]
    optimizer.zero_grad()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, student.parameters()))
    s_io = _io_dicts(student, s_paths, x)
    assert float(criterion({"teacher": t_io, "student": s_io}, {}, y)) < float(loss)


def test_label_variation_losses_from_a_config():
    torch.manual_seed(0)
    x, y = torch.rand(16, 6), torch.arange(16) % 4
    h1, h2 = torch.relu(torch.randn(16, 5)), torch.relu(torch.randn(16, 3))
    student_io = {".": {"output": x}, "l1": {"output": h1}, "l2": {"output": (h2, "extra")}}
    lv = get_mid_level_loss({"key": "GeomlatLabelVariationLoss", "kwargs": {"k": 5, "normalized": True}})
    torch.testing.assert_close(lv(student_io, {}, y), LabelVariationLoss(k=5, normalized=True)(x, y))
    sm = get_mid_level_loss({"key": "GeomlatSmoothnessLoss", "kwargs": {"module_paths": ["l1", "l2"], "gamma": 0.5}})
    torch.testing.assert_close(sm(student_io, {}, y), SmoothnessRegularizer(gamma=0.5)([h1, h2], y))
    with pytest.raises(ValueError, match=">= 2 module paths"):
        td.SmoothnessLossTD(["l1"])


def _import_core():
    try:
        from torchdistill.core.distillation import get_distillation_box
    except Exception as exc:  # torchdistill.core imports torchvision
        pytest.skip(f"torchdistill's training box does not import here ({type(exc).__name__}: {str(exc)[:100]}); "
                    "it needs a working torchvision")
    return get_distillation_box


def test_distillation_box_runs_the_example_config():
    get_distillation_box = _import_core()
    config = yaml_util.load_yaml_file(str(EXAMPLE))
    teacher, student = _models(config)
    box = get_distillation_box(teacher, student, config["datasets"], config["train"], torch.device("cpu"), None, False, 1)
    box.pre_epoch_process(epoch=0)
    x, y, supp = next(iter(box.train_data_loader))
    loss = box.forward_process(x, y, supp)
    with torch.no_grad():
        t2 = teacher.stage2(teacher.stage1(x))
        t3 = teacher.stage3(t2)
        s2 = student.stage2(student.stage1(x))
        s3 = student.stage3(s2)
        want = F.cross_entropy(student(x), y) + 25.0 * GKD()([t2, t3], [s2, s3])
    torch.testing.assert_close(loss.detach(), want)
    box.post_forward_process(loss=loss)
