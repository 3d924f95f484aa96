"""mCE on hand-made error tables, and the corruption-evaluation loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from geomlat.robustness import CORRUPTION_NAMES, corrupt, corruption_errors, error_rate, evaluate_corruptions, mce

MODEL = {"fog": [0.10, 0.20, 0.30], "snow": [0.05, 0.05, 0.10]}
BASE = {"fog": [0.20, 0.30, 0.50], "snow": [0.10, 0.20, 0.30]}


def test_ce_and_mce_by_hand():
    # fog: 0.6 / 1.0 = 60 %; snow: 0.2 / 0.6 = 33.33 %; mean 46.67 %
    ces = corruption_errors(MODEL, BASE)
    assert ces["fog"] == pytest.approx(60.0)
    assert ces["snow"] == pytest.approx(100.0 / 3)
    assert mce(MODEL, BASE) == pytest.approx((60.0 + 100.0 / 3) / 2)
    # percentages in, same result (unit-free ratio)
    pct = {k: [100 * v for v in vals] for k, vals in MODEL.items()}
    pct_b = {k: [100 * v for v in vals] for k, vals in BASE.items()}
    assert mce(pct, pct_b) == pytest.approx(mce(MODEL, BASE))
    # the baseline against itself scores 100
    assert mce(BASE, BASE) == pytest.approx(100.0)


def test_relative_mce_by_hand():
    # clean errors 0.05 (model) and 0.10 (baseline)
    # fog: (0.05 + 0.15 + 0.25) / (0.10 + 0.20 + 0.40) = 0.45 / 0.70
    # snow: (0 + 0 + 0.05) / (0 + 0.10 + 0.20) = 0.05 / 0.30
    ces = corruption_errors(MODEL, BASE, 0.05, 0.10, relative=True)
    assert ces["fog"] == pytest.approx(100 * 0.45 / 0.70)
    assert ces["snow"] == pytest.approx(100 * 0.05 / 0.30)
    assert mce(MODEL, BASE, 0.05, 0.10, relative=True) == pytest.approx(50 * (0.45 / 0.70 + 0.05 / 0.30))
    # independent NumPy computation on random tables
    r = np.random.default_rng(0)
    e, b = r.uniform(0.2, 0.6, (4, 5)), r.uniform(0.2, 0.6, (4, 5))
    names = [f"c{i}" for i in range(4)]
    te, tb = dict(zip(names, e.tolist())), dict(zip(names, b.tolist()))
    assert mce(te, tb) == pytest.approx(100 * np.mean(e.sum(1) / b.sum(1)))
    assert mce(te, tb, 0.1, 0.05, relative=True) == pytest.approx(100 * np.mean((e - 0.1).sum(1) / (b - 0.05).sum(1)))


def test_errors_and_zero_denominators():
    with pytest.raises(ValueError, match="no error"):
        corruption_errors({"fog": [0.1]}, {"fog": [0.0]})
    with pytest.raises(ValueError, match="does not hurt"):
        corruption_errors({"fog": [0.2, 0.2]}, {"fog": [0.1, 0.1]}, 0.05, 0.1, relative=True)
    with pytest.raises(ValueError, match="clean_error"):
        corruption_errors(MODEL, BASE, relative=True)
    with pytest.raises(KeyError, match="lacks"):
        corruption_errors({"rain": [0.1]}, BASE)
    with pytest.raises(ValueError, match="severities"):
        corruption_errors({"fog": [0.1, 0.2]}, BASE)
    with pytest.raises(ValueError, match="finite"):
        corruption_errors({"fog": [float("nan")] * 3}, BASE)
    with pytest.raises(ValueError, match=">= 0"):
        corruption_errors({"fog": [-0.1] * 3}, BASE)


class ThresholdModel(nn.Module):
    """Predicts class 1 when the mean intensity exceeds 0.5: brightness pushes dark images across."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1)


def test_evaluate_corruptions_matches_manual_loop():
    torch.manual_seed(0)
    x = torch.rand(40, 1, 8, 8) * 0.6 + 0.1  # means around 0.4: class 0 mostly
    x[:20] += 0.25
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    model = ThresholdModel()
    assert error_rate(model, x, y) == 0.0
    table = evaluate_corruptions(model, x, y, names=["brightness", "gaussian_noise"], severities=[1, 5], seed=3,
                                 batch_size=16)
    assert set(table) == {"brightness", "gaussian_noise"} and all(len(v) == 2 for v in table.values())
    # manual recomputation of the brightness errors (deterministic corruption)
    for i, s in enumerate([1, 5]):
        pred = model(corrupt(x, "brightness", s)).argmax(1)
        assert table["brightness"][i] == pytest.approx(float((pred != y).float().mean()))
    assert table["brightness"][1] > table["brightness"][0]
    # random corruption: same seed -> same table; a predict function gives the same numbers as the module
    again = evaluate_corruptions(lambda b: model(b).argmax(1), x, y, names=["gaussian_noise"], severities=[1, 5],
                                 seed=3, batch_size=16)
    assert again["gaussian_noise"] == table["gaussian_noise"]
    with pytest.raises(KeyError, match="unknown corruption"):
        evaluate_corruptions(model, x, y, names=["rain"])
    with pytest.raises(ValueError, match="severities"):
        evaluate_corruptions(model, x, y, names=["fog"], severities=[0])


def test_evaluate_restores_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 2))
    model.train()
    x, y = torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    e1 = evaluate_corruptions(model, x, y, names=["contrast"], severities=[2])
    e2 = evaluate_corruptions(model, x, y, names=["contrast"], severities=[2])
    assert e1 == e2 and model.training  # eval mode inside (deterministic), train mode restored


def test_evaluate_corruptions_on_8bit_images_like_cifar10c():
    # uint8=True: the classifier sees floor(255 * output) / 255 (np.uint8 truncation, CIFAR-10-C's storage);
    # motion blur, 8-bit in the reference through ImageMagick, is rounded instead
    torch.manual_seed(0)
    x = torch.rand(12, 3, 8, 8)
    y = torch.zeros(12, dtype=torch.long)
    seen = []

    def record(b):
        seen.append(b.clone())
        return torch.zeros(len(b), dtype=torch.long)

    evaluate_corruptions(record, x, y, names=["gaussian_noise", "motion_blur"], severities=[3], seed=5, batch_size=12,
                         uint8=True)
    for k, (name, offset) in enumerate([("gaussian_noise", 0.0), ("motion_blur", 0.5)]):
        rng = np.random.default_rng([5, CORRUPTION_NAMES.index(name), 3])
        ref = corrupt(x.double(), name, 3, rng)
        assert seen[k].dtype == x.dtype
        assert torch.equal(seen[k], (torch.floor(255 * ref + offset) / 255).float())
        if offset == 0.0:  # differs from rounding on about half of the entries
            assert (torch.round(255 * ref) != torch.floor(255 * ref)).float().mean() > 0.3
