"""The interpolating regime of the selection study: stopping rule, unreached models listed, statistics."""
import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from geomlat.studies.selection import interp_report
from geomlat.studies.selection.interpolation import AXES, train_to_interpolation

IT = {"lr": 0.05, "batch_size": 16, "max_epochs": 200, "loss_threshold": 0.01, "snapshot_every": 5}


def test_training_stops_at_the_rule_and_reports_a_cap():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(5, 2)
    fit = train_to_interpolation(model, x, y, IT, seed=0)
    ce = float(torch.nn.functional.cross_entropy(model(x), y).detach())
    acc = float((model(x).argmax(1) == y).double().mean())
    assert fit["reached"] and fit["reason"] is None and (ce <= 0.01 or acc == 1.0)
    assert fit["snapshots"][-1][0] == fit["epochs"] < IT["max_epochs"]
    # identical inputs with different labels cannot be fitted: the cap is hit and the reason says so
    xc, yc = torch.zeros(8, 5), torch.tensor([0, 1] * 4)
    fit = train_to_interpolation(torch.nn.Linear(5, 2), xc, yc, {**IT, "max_epochs": 3}, seed=0)
    assert not fit["reached"] and "cap of 3 epochs" in fit["reason"] and fit["epochs"] == 3


def _records(seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for w, d, ln, n, s in itertools.product([16, 32], [3, 4], [0.0, 0.2, 0.4], [500, 1000], [0, 1]):
        test = 0.1 + 0.5 * ln - 0.00005 * n + 0.02 * rng.standard_normal()
        curve = [{"epoch": e, "val_error": test + 0.01 * k, "test_error": test + 0.01 * k, "train_loss": 1.0 / e, "margin": e}
                 for k, e in enumerate([10, 20, 30])]
        recs.append({"run": f"m{len(recs)}", "seed": s, "width": w, "depth": d, "label_noise": ln, "train_size": n,
                     "reached": True, "reason": None, "test_error": test, "val_error": test, "epochs": 30,
                     "train_loss": 0.005, "train_acc": 1.0, "seconds": 1.0, "curve": curve,
                     "measures": {"train_loss": 0.005, "margin": -test, "nnk_loo_deepnnk": test + 0.05 * rng.standard_normal()}})
    return recs


def test_statistics_match_scipy_and_orientation():
    recs = _records()
    it = {"measures": ["train_loss", "margin", "nnk_loo_deepnnk"], "n_boot": 50, "cmi_boot": 10}
    rows = {r["measure"]: r for r in interp_report.statistics(recs, it)}
    test = np.array([r["test_error"] for r in recs])
    # margin has sign -1: oriented value = test error, a perfect ranking
    assert rows["margin"]["tau"] == pytest.approx(1.0) and rows["margin"]["cmi"] == pytest.approx(1.0)
    assert rows["train_loss"]["tau"] == 0.0 and rows["train_loss"]["cmi"] == pytest.approx(0.0)
    nnk = np.array([r["measures"]["nnk_loo_deepnnk"] for r in recs])
    assert rows["nnk_loo_deepnnk"]["tau"] == pytest.approx(stats.kendalltau(nnk, test).statistic * 1.0, abs=1e-12)
    assert rows["nnk_loo_deepnnk"]["vs_best"] == "margin" and rows["nnk_loo_deepnnk"]["tau_minus_best"] < 0
    assert rows["nnk_loo_deepnnk"]["family"] == "geometric" and rows["margin"]["family"] == "classic baseline"


def test_unreached_models_are_listed_not_dropped(tmp_path):
    recs = _records()
    recs[0].update(reached=False, reason="after the cap of 300 epochs: training CE 0.5 > 0.01")
    it = {"measures": ["margin", "nnk_loo_deepnnk"], "early_stopping": ["train_loss", "margin"], "n_boot": 20, "cmi_boot": 10,
          "loss_threshold": 0.01, "max_epochs": 300, "patience": 1, "snapshot_every": 10}
    interp_report.write_all(recs, {"interpolation": it}, tmp_path / "r", tmp_path / "f")
    assert "m0: after the cap of 300 epochs" in (tmp_path / "r" / "not_interpolated.md").read_text()
    assert "47 of 48 models reached" in (tmp_path / "r" / "ranking.md").read_text()
    es = (tmp_path / "r" / "early_stopping.md").read_text()
    assert "validation error" in es and "margin" in es
    assert (tmp_path / "f" / "tau.png").stat().st_size > 1000


def test_a_record_made_with_another_spec_is_refused(tmp_path):
    """A finished model record is reused only for the spec that made it (no stale numbers after a spec edit)."""
    from geomlat.io import read_json, write_json
    from geomlat.studies.runner import load_spec
    from geomlat.studies.selection import interpolation

    spec = load_spec("selection", "interpolation")
    config = interpolation.configs(spec["interpolation"]["axes"])[0]
    path = tmp_path / f"{interpolation.run_name(config, 0)}.json"
    made_by = {"data": spec["data"], "model": spec["model"], "interpolation": spec["interpolation"]}
    write_json(path, {"run": path.stem, "made_by": made_by, "test_error": 0.5})
    assert interpolation.run_model(spec, config, 0, str(tmp_path))["test_error"] == 0.5
    other = {**spec, "interpolation": {**spec["interpolation"], "samples": 123}}
    with pytest.raises(ValueError, match="another spec .interpolation differs.*delete"):
        interpolation.run_model(other, config, 0, str(tmp_path))
    assert read_json(path)["test_error"] == 0.5
