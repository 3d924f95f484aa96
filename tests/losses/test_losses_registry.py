"""Losses as plug-ins: the registry, the ``consumes`` protocol, a user's own loss in a Distiller, and
FitNet built from the models through ``build_loss``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geomlat import LatentCapture
from geomlat.distributed import GlobalBatch
from geomlat.losses import (
    GKD,
    LOSSES,
    FitNet,
    HintonKD,
    LabelVariationLoss,
    RKDAngle,
    RKDDistance,
    SimilarityPreserving,
    SmoothnessRegularizer,
    build_loss,
    get_loss,
    register_loss,
)
from geomlat.objectives import Distiller
from test_losses_distill import Net

PAIRS = [("relu1", "relu1"), ("relu2", "relu2")]


class CosineGap(nn.Module):
    """A user's feature loss: mean over pairs of (1 - cosine between the Gram matrices of teacher and student)."""

    consumes = "features"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, teacher_feats, student_feats, y):
        total = 0.0
        for t, s in zip(teacher_feats, student_feats):
            gt, gs = (t.flatten(1) @ t.flatten(1).T).flatten(), (s.flatten(1) @ s.flatten(1).T).flatten()
            total = total + 1 - F.cosine_similarity(gt.detach(), gs, dim=0)
        return self.scale * total / len(teacher_feats)


class LogitL2(nn.Module):
    """A user's logit loss with a learnable temperature (a parameter the Distiller must train)."""

    consumes = "logits"

    def __init__(self):
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros(()))

    def forward(self, teacher_logits, student_logits, y):
        return ((teacher_logits.detach() - student_logits) ** 2).mean() * self.log_t.exp()


def test_the_study_names_are_registered():
    expected = {"gkd": GKD, "rkd_d": RKDDistance, "rkd_a": RKDAngle, "hinton": HintonKD, "fitnet": FitNet,
                "sp": SimilarityPreserving, "label_variation": LabelVariationLoss, "smoothness": SmoothnessRegularizer}
    for name, cls in expected.items():
        assert LOSSES[name] is cls and get_loss(name) is cls
    kinds = {name: LOSSES[name].consumes for name in expected}
    assert kinds == {"gkd": "features", "rkd_d": "features", "rkd_a": "features", "sp": "features", "fitnet": "features",
                     "hinton": "logits", "label_variation": "output", "smoothness": "layers"}
    with pytest.raises(KeyError, match=r"unknown loss 'nope'; registered: \[.*'gkd'"):
        get_loss("nope")


@pytest.mark.parametrize("registered", [False, True])
def test_distiller_takes_a_user_loss(registered):
    torch.manual_seed(0)
    teacher, student = Net(8), Net(4)
    if registered:
        register_loss("cosine_gap_test")(CosineGap)
        try:
            feat_loss = build_loss("cosine_gap_test", scale=2.0)
        finally:
            LOSSES.unregister("cosine_gap_test")
    else:
        feat_loss = CosineGap(scale=2.0)
    logit_loss = LogitL2()
    dist = Distiller(student, teacher, {"mine": (feat_loss, 3.0), "l2": (logit_loss, 0.5)}, pairs=PAIRS)
    dist.eval()
    x, y = torch.randn(6, 1, 6, 6), torch.randint(0, 3, (6,))
    logits, losses = dist(x, y)
    # independent computation: capture the features by hand and evaluate the formulas directly
    with torch.no_grad(), LatentCapture(teacher, ["relu1", "relu2"], detach=True) as tf:
        t_logits = teacher(x)
    with LatentCapture(student, ["relu1", "relu2"]) as sf:
        s_logits = student(x)
    gap = 0.0
    for n in ("relu1", "relu2"):
        a, b = tf[n].flatten(1), sf[n].flatten(1)
        ga, gb = (a @ a.T).flatten(), (b @ b.T).flatten()
        gap += 1 - (ga @ gb) / (ga.norm() * gb.norm())
    torch.testing.assert_close(losses["mine"], 3.0 * 2.0 * gap / 2)
    torch.testing.assert_close(losses["l2"], 0.5 * ((t_logits - s_logits) ** 2).mean())
    assert set(losses) == {"task", "mine", "l2"}
    # the user loss's parameter is trained through the objective
    sum(losses.values()).backward()
    assert logit_loss.log_t.grad is not None and logit_loss.log_t.grad.abs() > 0
    assert any(p is logit_loss.log_t for p in dist.parameters())


def test_protocol_errors():
    teacher, student = Net(8), Net(4)
    with pytest.raises(TypeError, match="consumes"):  # no consumes: the Distiller cannot route it
        Distiller(student, teacher, {"mse": (nn.MSELoss(), 1.0)}, pairs=PAIRS)
    with pytest.raises(TypeError, match="consumes"):  # a one-network loss is no distillation term
        Distiller(student, teacher, {"lv": (LabelVariationLoss(), 1.0)}, pairs=PAIRS)
    with pytest.raises(TypeError, match="nn.Module"):
        Distiller(student, teacher, {"f": (lambda t, s, y: 0.0, 1.0)}, pairs=PAIRS)
    with pytest.raises(TypeError, match="consumes"):
        register_loss("mse_test")(nn.MSELoss)
    with pytest.raises(TypeError, match="nn.Module"):
        register_loss("fn_test")(lambda t, s, y: 0.0)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("gkd")(CosineGap)
    with pytest.raises(ValueError, match="already registered"):  # even the same class: one entry per name
        register_loss("gkd")(GKD)
    assert "mse_test" not in LOSSES and "fn_test" not in LOSSES and LOSSES["gkd"] is GKD
    with pytest.raises(ValueError, match="teacher=, student= and pairs="):
        build_loss("fitnet")
    with pytest.raises(TypeError, match="global_batch"):
        build_loss("gkd", gather="global")


def test_build_fitnet_from_models():
    teacher, student = Net(8), Net(4)
    teacher.train(), student.eval()
    x = torch.randn(3, 1, 6, 6)
    torch.manual_seed(5)
    built = build_loss("fitnet", teacher=teacher, student=student, pairs=PAIRS, example=x)
    torch.manual_seed(5)
    direct = FitNet([4, 8], [8, 8])  # Net(w): relu1 has w channels, relu2 has 8
    assert [(p.in_features, p.out_features) for p in built.proj] == [(4, 8), (8, 8)]
    for a, b in zip(built.parameters(), direct.parameters()):
        assert torch.equal(a, b)  # same construction, same draws from the RNG
    assert teacher.training and not student.training  # modes restored
    wrapped = build_loss("fitnet", teacher=teacher, student=student, pairs=PAIRS, example=x, global_batch=True)
    assert isinstance(wrapped, GlobalBatch) and isinstance(wrapped.loss, FitNet)
    # the Distiller routes the wrapped loss as the loss itself (on one process it is the loss)
    dist = Distiller(student, teacher, {"fit": (wrapped, 1.0)}, pairs=PAIRS)
    assert dist.kinds == {"fit": "features"}
    with pytest.raises(TypeError, match="example"):
        build_loss("fitnet", teacher=teacher, student=student, pairs=PAIRS)
