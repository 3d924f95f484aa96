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
