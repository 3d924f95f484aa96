"""The `robust` study kind: spec validation, a tiny quick run checked against independent recomputations,
and a one-batch smoke run of the paper profile on a tiny synthetic CIFAR-10 folder."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from geomlat.data.cifar import write_cifar_folder
from geomlat.engine import evaluate_accuracy
from geomlat.io import load_checkpoint
from geomlat.models import build_model
from geomlat.robustness import corruption_errors
from geomlat.studies import SpecError, load_spec, run_study
from geomlat.studies.spec import find_spec_file, read_spec_file
from geomlat.data import load_dataset

TINY = {
    "train": {"epochs": 2, "limit_batches": 1, "batch_size": 32},
    "attacks": {"samples": 20, "fgsm_eps": [0.1], "pgd_steps": 2},
    "corruptions": {"names": ["gaussian_noise", "motion_blur"], "severities": [1, 5], "samples": 40},
}


def _raw():
    return read_spec_file(find_spec_file("robust"))


@pytest.mark.parametrize(
    "override, path",
    [
        ({"methods": {"pgd": {"objective": "adversarial"}}}, "methods.pgd.objective"),
        ({"methods": {"parseval": {"parseval": {"beta": -1.0}}}}, "methods.parseval.parseval.beta"),
        ({"methods": {"parseval": {"parseval": 3}}}, "methods.parseval.parseval"),
        ({"methods": {"baseline": {"layers": ["stage1.relu"]}}}, "methods.baseline.layers"),
        ({"methods": {"regularizer": {"layers": ["stage1.relu", "nope"]}}}, "methods.regularizer"),
        ({"methods": {"regularizer": {"kwargs": {"power": 0}}}}, "methods.regularizer"),
        ({"baseline": "parseval"}, "baseline"),
        ({"baseline": "missing"}, "baseline"),
        ({"data": {"name": "mnist1d"}}, "data.name"),
        ({"attacks": {"fgsm_eps": [-0.1]}}, "attacks.fgsm_eps[0]"),
        ({"corruptions": {"names": ["fog", "rain"]}}, "corruptions.names[1]"),
        ({"corruptions": {"severities": [0]}}, "corruptions.severities[0]"),
        ({"model": {"kwargs": {"out_dim": 2}}}, "model.kwargs.out_dim"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"attacks": {"sampels": 3}}, "attacks.sampels"),
    ],
)
def test_spec_errors_name_the_field(override, path):
    with pytest.raises(SpecError) as err:
        load_spec(_raw(), "quick", overrides=override)
    assert err.value.path == path or err.value.path.startswith(path), str(err.value)


def test_quick_profile_validates_with_defaults():
    spec = load_spec("robust", "quick")
    assert spec["kind"] == "robust" and set(spec["methods"]) == {"baseline", "regularizer", "parseval", "parseval_reg", "pgd"}
    assert spec["attacks"]["fgsm_snr_db"] == 33.0 and spec["methods"]["parseval"]["parseval"] == {"beta": 0.001}  # validation-chosen
    assert load_spec("robust", "paper")["methods"]["parseval"]["parseval"] == {"beta": 0.01}  # the paper's value


def test_tiny_quick_run(tmp_path):
    summary = run_study("robust", "quick", out_root=tmp_path, seeds=[0], overrides=TINY, progress=False, log=lambda s: None)
    runs = tmp_path / "runs" / "robust" / "quick"
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["baseline"]["mce"] == pytest.approx(100.0) and rows["baseline"]["time_ratio"] == pytest.approx(1.0)
    # clean error of the baseline recomputed from its checkpoint
    splits = load_dataset("digits", seed=0)
    model = build_model("small_cnn", width=16)
    state = load_checkpoint(runs / "baseline_s0" / "checkpoint.pt")["objective"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items()})
    assert rows["baseline"]["clean"] == pytest.approx(1 - evaluate_accuracy(model, splits.test), abs=1e-9)
    # mCE of a method recomputed with the library from the stored per-run error tables
    ev = {m: json.loads((runs / f"{m}_s0" / "eval.json").read_text()) for m in rows}
    ces = corruption_errors(ev["pgd"]["corruptions"], ev["baseline"]["corruptions"])
    assert rows["pgd"]["mce"] == pytest.approx(np.mean(list(ces.values())))
    # time ratio = median epoch seconds / the baseline's, from metrics.jsonl
    def med(m):
        lines = [json.loads(l) for l in (runs / f"{m}_s0" / "metrics.jsonl").read_text().splitlines()]
        return float(np.median([l["seconds"] for l in lines]))
    assert rows["pgd"]["time_ratio"] == pytest.approx(med("pgd") / med("baseline"))
    # corrupted sets are shared, 8-bit, in [0, 1]
    stored = load_checkpoint(runs / "corrupted" / "motion_blur_5.pt")
    assert stored["images"].dtype == torch.uint8 and stored["images"].shape == (40, 1, 8, 8)
    table = (tmp_path / "results" / "robust" / "table.md").read_text()
    assert "PGD adversarial training" in table and "approximations" in table
    with open(tmp_path / "results" / "robust" / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert (tmp_path / "figures" / "robust" / "error_vs_severity.png").stat().st_size > 1000
    # a second call reuses every finished run and evaluation: same rows
    again = run_study("robust", "quick", out_root=tmp_path, seeds=[0], overrides=TINY, progress=False, log=lambda s: None)
    assert again["rows"] == summary["rows"] or all(
        a["clean"] == b["clean"] and a["mce"] == b["mce"] for a, b in zip(again["rows"], summary["rows"]))


def test_paper_profile_one_batch_smoke(tmp_path):
    write_cifar_folder(tmp_path / "data" / "cifar-10-batches-py", n_train_per_batch=4, n_test=10)
    overrides = {
        "threads": 1,
        "train": {"epochs": 1, "limit_batches": 1, "batch_size": 8, "device": "cpu"},
        "attacks": {"samples": 4, "pgd_steps": 1, "fgsm_eps": []},
        "corruptions": {"names": ["brightness"], "severities": [1], "samples": 10},
        "methods": {"pgd": {"kwargs": {"steps": 1}}},
    }
    summary = run_study("robust", "paper", data_dir=str(tmp_path / "data"), out_root=tmp_path, seeds=[0],
                        overrides=overrides, progress=False, log=lambda s: None)
    assert len(summary["rows"]) == 5
    cfg = json.loads((tmp_path / "runs" / "robust" / "paper" / "regularizer_s0" / "config.json").read_text())
    assert cfg["model"]["model"] == "preact_resnet18" and cfg["objective"] == "smoothness"
    assert (tmp_path / "results" / "robust" / "table.md").exists()


def test_corrupted_sets_stored_truncated_like_cifar10c(tmp_path):
    # two-valued images: contrast (severity 2, factor 0.5) maps them to 100.75 / 255 and 150.75 / 255, whose
    # 8-bit storage in CIFAR-10-C is np.uint8 truncation: 100 and 150 (rounding would give 101 and 151)
    from geomlat.studies.common import corrupted_sets

    a, b = 75.75 / 255, 175.75 / 255
    x = torch.full((3, 1, 4, 4), a, dtype=torch.float32)
    x[:, :, :, 2:] = b
    xd = x.double()
    m = xd.mean(dim=(2, 3), keepdim=True)
    want = torch.floor(255 * ((xd - m) * 0.5 + m)).to(torch.uint8)  # dense formula of the reference
    assert set(want.unique().tolist()) == {100, 150}
    sets = list(corrupted_sets(x, ["contrast", "motion_blur"], [2], seed=0, cache_dir=tmp_path))
    assert torch.equal(torch.round(sets[0][2] * 255).to(torch.uint8), want)
    assert torch.equal(load_checkpoint(tmp_path / "contrast_2.pt")["images"], want)
    # motion blur is 8-bit in the reference (ImageMagick rounds): rounded, from the same random stream
    from geomlat.robustness import corrupt
    from geomlat.robustness.corruptions import CORRUPTION_NAMES

    ref = corrupt(xd, "motion_blur", 2, np.random.default_rng([0, CORRUPTION_NAMES.index("motion_blur"), 2]))
    assert torch.equal(load_checkpoint(tmp_path / "motion_blur_2.pt")["images"], torch.floor(255 * ref + 0.5).to(torch.uint8))
    # a set cached under the old storage rule (no "storage" key) is recomputed, not reused
    old = {"images": want + 1, "n": 3, "seed": 0}
    torch.save(old, tmp_path / "contrast_2.pt")
    again = next(iter(corrupted_sets(x, ["contrast"], [2], seed=0, cache_dir=tmp_path)))
    assert torch.equal(torch.round(again[2] * 255).to(torch.uint8), want)
