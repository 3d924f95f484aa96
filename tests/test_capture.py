import pytest
import torch
from torch import nn

from geomlat import LatentCapture


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_captures_named_outputs_and_removes_hooks():
    model = _model()
    x = torch.randn(5, 4)
    with LatentCapture(model, ["1", "2"]) as feats:
        out = model(x)
    torch.testing.assert_close(feats["1"], torch.relu(model[0](x)))
    torch.testing.assert_close(feats["2"], out)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_gradients_flow_through_captured_tensors():
    model = _model()
    with LatentCapture(model, ["1"]) as feats:
        model(torch.randn(5, 4))
    feats["1"].sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_works_under_no_grad_and_detach():
    model = _model()
    with torch.no_grad(), LatentCapture(model, ["0"]) as feats:
        model(torch.randn(5, 4))
    assert not feats["0"].requires_grad
    with LatentCapture(model, ["0"], detach=True) as feats:
        model(torch.randn(5, 4))
    assert not feats["0"].requires_grad


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: \\['0', '1', '2'\\]"):
        with LatentCapture(_model(), ["layer9"]):
            pass


def test_hooks_removed_after_exception():
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with LatentCapture(model, ["0", "1"]):
            model(torch.randn(2, 4))
            raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_ordered_reports_missing_layers():
    model = _model()
    cap = LatentCapture(model, ["0", "2"])
    with cap:
        pass
    with pytest.raises(RuntimeError, match="produced no output"):
        cap.ordered()


def test_capture_on_a_compiled_module_equals_the_eager_capture():
    """``torch.compile(model)`` (an OptimizedModule, whose named_modules carry an ``_orig_mod.`` prefix): the
    original names resolve and the hooks fire under compile, with the eager values; the Distiller and the
    smoothness objective take compiled models too."""
    from geomlat.losses import GKD
    from geomlat.objectives import Distiller, SmoothnessObjective

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    compiled = torch.compile(model, backend="eager")  # Dynamo traces the hooks; no code generation to wait for
    x = torch.randn(6, 4)
    with LatentCapture(model, ["1", "3"]) as eager:
        out = model(x)
    with LatentCapture(compiled, ["1", "3"]) as feats:
        cout = compiled(x)
    assert list(feats) == ["1", "3"]
    torch.testing.assert_close(cout, out)
    for name in ("1", "3"):
        torch.testing.assert_close(feats[name], eager[name])
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    with pytest.raises(KeyError, match=r"unknown layer name\(s\) \['9'\] in Sequential; valid names: \['0', '1'"):
        LatentCapture(compiled, ["9"]).__enter__()
    y = torch.arange(6) % 3
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    _, losses = Distiller(compiled, teacher, {"gkd": (GKD(), 1.0)}, pairs=[("1", "1")])(x, y)
    torch.testing.assert_close(losses["gkd"], GKD()([torch.relu(teacher[0](x))], [eager["1"]]))
    _, smooth = SmoothnessObjective(compiled, layers=["1", "3"])(x, y)
    _, want = SmoothnessObjective(model, layers=["1", "3"])(x, y)
    torch.testing.assert_close(smooth["smoothness"], want["smoothness"])


def test_hooks_added_after_a_compiled_call_still_fire():
    """Code compiled while the module had no hook is not reused once hooks are added (Dynamo's default
    skips the guard on empty hook dicts: the capture came back empty), nor code compiled with other hooks."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    compiled = torch.compile(model, backend="eager")
    for names in (None, ["3"], ["1"], ["1", "3"], None, ["3"]):
        x = torch.randn(5, 4)
        if names is None:
            torch.testing.assert_close(compiled(x), model(x))
            continue
        with LatentCapture(model, names) as eager:
            model(x)
        with LatentCapture(compiled, names) as feats:
            compiled(x)
        assert list(feats) == names
        for name in names:
            torch.testing.assert_close(feats[name], eager[name])


@pytest.mark.slow  # Inductor's code generation: ~30 s on a loaded 2-core machine
def test_capture_under_inductor_equals_the_eager_capture():
    """The default backend (Inductor code generation) also runs the hooks of the original modules."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    compiled = torch.compile(model)
    x = torch.randn(5, 4)
    with LatentCapture(model, ["1"]) as eager:
        model(x)
    with LatentCapture(compiled, ["1"]) as feats:
        compiled(x)
    torch.testing.assert_close(feats["1"], eager["1"])
