"""Output selection for models returning tuples, dicts or ModelOutput-like mappings (issue 14): the one rule
of geomlat.capture.select_output, used by LatentCapture, Distiller, the objectives and the engine."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geomlat import LatentCapture, pool_sequence, select_logits, select_output
from geomlat.engine import model_outputs
from geomlat.losses import GKD, HintonKD
from geomlat.objectives import BottleneckCrossEntropy, Distiller, LabelVariationObjective, SmoothnessObjective, Supervised


class Wrapped(nn.Module):
    """A classifier whose forward returns ``kind``: 'dict' {'hidden', 'logits'}, 'tuple' (logits, hidden)."""

    def __init__(self, kind: str, width: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(5, width), nn.ReLU())
        self.head = nn.Linear(width, 3)
        self.kind = kind

    def forward(self, x):
        h = self.body(x)
        logits = self.head(h)
        if self.kind == "dict":
            return {"hidden": h, "logits": logits}
        if self.kind == "tuple":
            return (logits, h)
        return logits


def test_default_rule_and_explicit_keys():
    a, b = torch.randn(2, 3), torch.randn(2, 4)
    assert select_output(a) is a
    assert select_output(("meta", a, b)) is a  # first Tensor element, not the first element
    assert select_output([a, b], key=1) is b
    d = OrderedDict(pooler_output=b, last_hidden_state=a)
    assert select_output(d, prefer="last_hidden_state") is a
    assert select_output(d) is b  # no preferred field: first Tensor value
    assert select_output(d, key="pooler_output", prefer="last_hidden_state") is b
    assert select_output(d, key=1) is a  # index over the fields in order
    assert select_logits({"loss": None, "logits": b, "h": a}) is b


def test_bad_keys_name_the_problem():
    with pytest.raises(KeyError, match="no field 'logit'.*fields: \\['logits'\\]"):
        select_logits({"logits": torch.zeros(2, 2)}, key="logit")
    with pytest.raises(IndexError, match="length 2; index 5"):
        select_output((torch.zeros(1), torch.zeros(1)), key=5)
    with pytest.raises(TypeError, match="no Tensor"):
        select_output(("a", None))
    with pytest.raises(TypeError, match="is a Tensor"):
        select_output(torch.zeros(2), key="logits")
    with pytest.raises(TypeError, match="field name \\(str\\), an index"):
        select_output((torch.zeros(1),), key=1.5)
    with pytest.raises(TypeError, match="Tensor, a tuple/list or a dict"):
        select_output(3.0)
    with pytest.raises(KeyError, match="not captured"):
        LatentCapture(Wrapped("dict"), ["body"], select={"head": 0})


def test_capture_selects_per_layer():
    class Inner(nn.Module):
        def forward(self, x):
            return {"extra": x + 1, "last_hidden_state": x * 2}

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.inner2 = Inner(), Inner()

        def forward(self, x):
            return self.inner(x)["last_hidden_state"] + self.inner2(x)["extra"]

    m, x = Outer(), torch.randn(3, 4)
    with LatentCapture(m, ["inner", "inner2"], select={"inner2": "extra"}) as feats:
        m(x)
    torch.testing.assert_close(feats["inner"], x * 2)
    torch.testing.assert_close(feats["inner2"], x + 1)


def test_pool_sequence_against_a_loop():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    mean = pool_sequence(h, mask, mode="mean")
    for i in range(3):
        n = int(mask[i].sum())
        torch.testing.assert_close(mean[i], h[i, :n].mean(0))
    torch.testing.assert_close(pool_sequence(h, mode="cls"), h[:, 0])
    torch.testing.assert_close(pool_sequence(h, mode="mean"), h.mean(1))
    with pytest.raises(ValueError, match="without any token"):
        pool_sequence(h, torch.zeros(3, 5), mode="mean")
    with pytest.raises(ValueError, match="\\(B, T, H\\)"):
        pool_sequence(h[0])
    with pytest.raises(ValueError, match="attention_mask must be"):
        pool_sequence(h, mask[:, :3], mode="mean")


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_distiller_and_objectives_on_structured_outputs(kind):
    """Failed before: TypeError (cross_entropy on a dict) / 'dict' object has no attribute 'detach'."""
    x, y = torch.randn(12, 5), torch.arange(12) % 3
    student, teacher = Wrapped(kind, 6, seed=1), Wrapped(kind, 10, seed=2)
    ref_s, ref_t = Wrapped("tensor", 6, seed=1), Wrapped("tensor", 10, seed=2)
    dist = Distiller(student, teacher, {"gkd": (GKD(), 2.0), "kd": (HintonKD(T=3.0), 0.5)}, pairs=[("body", "body")])
    logits, losses = dist(x, y)
    torch.testing.assert_close(logits, ref_s(x))
    torch.testing.assert_close(losses["task"], F.cross_entropy(ref_s(x), y))
    torch.testing.assert_close(losses["kd"], 0.5 * HintonKD(T=3.0)(ref_t(x), ref_s(x)))
    torch.testing.assert_close(losses["gkd"], 2.0 * GKD()([ref_t.body(x)], [ref_s.body(x)]))
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())

    out, sup = Supervised(Wrapped(kind, 6, seed=1))(x, y)
    torch.testing.assert_close(sup["task"], F.cross_entropy(ref_s(x), y))
    out, sm = SmoothnessObjective(Wrapped(kind, 6, seed=1), layers=["body.1", "body"])(x, y)
    torch.testing.assert_close(out, ref_s(x))
    out, lv = LabelVariationObjective(Wrapped(kind, 6, seed=1))(x, y)
    torch.testing.assert_close(out, ref_s(x))
    bce = BottleneckCrossEntropy(Wrapped(kind, 6, seed=1), num_classes=2, embed_dim=3)
    torch.testing.assert_close(bce.logits(x), bce.head(ref_s(x)))
    ds = torch.utils.data.TensorDataset(x, y)
    torch.testing.assert_close(model_outputs(Wrapped(kind, 6, seed=1), ds), ref_s(x).detach())


def test_output_key_picks_another_field():
    x, y = torch.randn(12, 5), torch.arange(12) % 3
    m = Wrapped("dict", 6, seed=1)
    out, _ = LabelVariationObjective(m, output_key="hidden")(x, y)
    torch.testing.assert_close(out, m.body(x))
    student, teacher = Wrapped("tuple", 6, seed=1), Wrapped("dict", 10, seed=2)
    dist = Distiller(student, teacher, {"kd": (HintonKD(), 1.0)}, output_key=0, teacher_output_key="logits")
    logits, losses = dist(x, y)
    torch.testing.assert_close(losses["kd"], HintonKD()(teacher(x)["logits"], student(x)[0]))
    with pytest.raises(KeyError, match="no field 'scores'"):
        Supervised(m, output_key="scores")(x, y)
