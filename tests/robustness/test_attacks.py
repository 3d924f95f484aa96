"""Tests of FGSM, PGD and the PGD adversarial-training objective on a small MLP trained on sklearn digits."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from torch import nn

from geomlat.robustness import fgsm, pgd, snr_to_eps
from geomlat.objectives import PGDTraining, adversarial_objective


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target)
    return x[:1200], y[:1200], x[1200:1500], y[1200:1500]


@pytest.fixture(scope="module")
def model(digits):
    """MLP with dropout trained for ~1 s (dropout makes train/eval mode matter)."""
    x, y, _, _ = digits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    net.eval()
    return net


def mean_loss(net, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(net(x), y))


def test_model_is_trained(model, digits):
    _, _, xt, yt = digits
    assert float((model(xt).argmax(1) == yt).float().mean()) > 0.85


def test_fgsm_raises_loss_and_stays_in_ball(model, digits):
    _, _, x, y = digits
    eps = 0.1
    adv = fgsm(model, x, y, eps=eps)
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert mean_loss(model, adv, y) > mean_loss(model, x, y) + 0.5
    # each entry moved by exactly eps in the sign direction, unless clipped at 0/1 or zero gradient
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), [xg])
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert torch.allclose(adv, expected, atol=1e-6)
    # no gradient left on the parameters
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_snr_budget(model, digits):
    _, _, x, y = digits
    eps = snr_to_eps(x, 33.0)
    flat = x.reshape(len(x), -1)
    # independent formula: SNR of the +-eps perturbation is 33 dB
    snr = 20 * torch.log10(flat.norm(dim=1) / (eps * math.sqrt(flat.shape[1])))
    assert torch.allclose(snr, torch.full_like(snr, 33.0), atol=1e-4)
    adv = fgsm(model, x, y, snr_db=33.0)
    assert torch.all((adv - x).abs().reshape(len(x), -1).max(1).values <= eps + 1e-6)
    assert torch.allclose(adv, fgsm(model, x, y, eps=eps))


def test_pgd_at_least_fgsm_and_determinism(model, digits):
    _, _, x, y = digits
    eps = 0.05
    loss_fgsm = mean_loss(model, fgsm(model, x, y, eps=eps), y)
    g = torch.Generator().manual_seed(0)
    adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, generator=g)
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss_pgd = mean_loss(model, adv, y)
    assert loss_pgd >= loss_fgsm  # more steps at the same budget: at least as strong on this model
    adv2 = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adv, adv2)
    adv3 = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(adv, adv3)
    # without random start and with steps=1, alpha=eps, PGD is FGSM
    one = pgd(model, x, y, eps=eps, alpha=eps, steps=1, random_start=False)
    assert torch.allclose(one, fgsm(model, x, y, eps=eps), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.0, 0.5), alpha=st.floats(0.001, 0.3), steps=st.integers(0, 4), seed=st.integers(0, 2**31 - 1),
       per_image=st.booleans())
def test_pgd_projection_property(eps, alpha, steps, seed, per_image):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(5, 1, 4, 4)
    x[0] = 0.0
    x[1] = 1.0  # saturated images: projection onto [0, 1] matters
    y = torch.randint(0, 3, (5,))
    e = torch.rand(5) * eps if per_image else eps
    adv = pgd(net, x, y, eps=e, alpha=alpha, steps=steps, generator=torch.Generator().manual_seed(seed))
    bound = (e if per_image else torch.full((5,), eps)).reshape(5, 1, 1, 1)
    assert torch.all((adv - x).abs() <= bound + 1e-6)
    assert adv.min() >= 0 and adv.max() <= 1


def test_mode_restored_and_eval_used(model, digits):
    _, _, x, y = digits
    model.train()
    model[3].eval()  # a mixed state must be restored exactly
    a1 = fgsm(model, x[:50], y[:50], eps=0.1)
    a2 = fgsm(model, x[:50], y[:50], eps=0.1)
    assert torch.equal(a1, a2)  # eval mode: no dropout randomness
    assert model.training and model[1].training and not model[3].training
    model.eval()


def test_custom_loss_fn_on_embedding(digits):
    """Attack an embedding model through a differentiable nearest-class-mean loss."""
    x, y, xt, yt = digits
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        e = emb(x)
        means = torch.stack([e[y == c].mean(0) for c in range(10)])

    def loss_fn(z, target):
        return F.cross_entropy(-torch.cdist(z, means) ** 2, target, reduction="sum")

    with torch.no_grad():
        before = float(loss_fn(emb(xt), yt))
    adv = fgsm(emb, xt, yt, eps=0.1, loss_fn=loss_fn)
    with torch.no_grad():
        assert float(loss_fn(emb(adv), yt)) > before
    assert all(p.grad is None for p in emb.parameters())


def test_pgd_training_objective(digits):
    x, y, xt, yt = digits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    obj = adversarial_objective(net, eps=0.1, alpha=0.03, steps=3, seed=0)
    assert isinstance(obj, PGDTraining) and obj.model is net
    assert {id(p) for p in obj.parameters()} == {id(p) for p in net.parameters()}
    obj.train()
    logits, losses = obj(x[:64], y[:64])
    assert set(losses) == {"adv_ce"} and losses["adv_ce"].requires_grad
    # the loss is the CE on the adversarial batch, which exceeds the clean CE
    with torch.no_grad():
        assert float(losses["adv_ce"]) > float(F.cross_entropy(net(x[:64]), y[:64])) - 1e-6
    assert torch.allclose(losses["adv_ce"], F.cross_entropy(logits, y[:64]))
    assert net.training
    # a few steps of adversarial training lower the adversarial loss on the training batch
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    first = None
    for _ in range(12):
        opt.zero_grad()
        loss = obj(x[:256], y[:256])[1]["adv_ce"]
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    assert float(obj(x[:256], y[:256])[1]["adv_ce"]) < first
    obj.eval()  # evaluation: clean logits, no attack
    logits, losses = obj(xt, yt)
    assert torch.allclose(logits, net(xt))


def test_bad_inputs(model, digits):
    _, _, x, y = digits
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, x * 2, y, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="exactly one"):
        fgsm(model, x, y)
    with pytest.raises(ValueError, match="exactly one"):
        fgsm(model, x, y, eps=0.1, snr_db=33)
    with pytest.raises(ValueError, match="alpha"):
        pgd(model, x, y, alpha=0)
    with pytest.raises(ValueError, match="steps"):
        pgd(model, x, y, steps=-1)
    with pytest.raises(ValueError, match="per-image"):
        pgd(model, x, y, eps=torch.ones(3))
    with pytest.raises(TypeError, match="floating"):
        fgsm(model, (x * 255).long(), y, eps=0.1)
    with pytest.raises(ValueError, match="steps"):
        PGDTraining(model, steps=0)
