"""Tests of the `geomlat` console script: study runs from a TOML file, --set overrides, spec errors
(exit status 2 naming the field, nothing trained), and the lazily imported demo hook."""
from __future__ import annotations

import argparse
import csv
import sys
import types

import pytest
import torch

import geomlat
from geomlat.cli import main, parse_set

TINY_TOML = """
name = "clitiny"
kind = "distill"
seeds = [0, 1]
pairs = [["stage1", "stage1"], ["stage2", "stage2"], ["stage3", "stage3"]]
threads = 1

[train]
epochs = 3
batch_size = 50
lr = 0.05

[data]
name = "digits"
options = { train_size = 150, test_size = 60 }

[teacher]
model = "small_cnn"
kwargs = { width = 8 }

[student]
model = "small_cnn"
kwargs = { width = 4 }

[methods.baseline]
label = "Baseline student"

[methods.gkd]
label = "GKD"
[methods.gkd.terms.gkd]
loss = "gkd"
weight = 25.0

[analysis]
samples = 40
k = 5

[profiles.quick]
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "clitiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_parse_set():
    assert parse_set("train.epochs=1") == {"train": {"epochs": 1}}
    assert parse_set("a.b.c=0.5") == {"a": {"b": {"c": 0.5}}}
    assert parse_set("flag=true") == {"flag": True}
    assert parse_set("seeds=[1, 2]") == {"seeds": [1, 2]}
    assert parse_set('name="x"') == {"name": "x"}
    assert parse_set("device=cuda:1") == {"device": "cuda:1"}  # not TOML: kept as text
    with pytest.raises(argparse.ArgumentTypeError, match="FIELD=VALUE"):
        parse_set("epochs")
    with pytest.raises(argparse.ArgumentTypeError, match="bad field path"):
        parse_set("train..epochs=1")


def test_study_from_toml_file_with_overrides(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["study", str(spec_file), "--out", str(out), "--seeds", "0", "--set", "train.epochs=1",
                   "--set", "methods.gkd.label=\"GKD (cli)\"", "--no-progress"])
    assert status == 0
    with open(out / "results" / "clitiny" / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["Teacher", "Baseline student", "GKD (cli)"]
    assert all(r["seeds"] == "1" for r in rows)  # --seeds replaced [0, 1]
    config = geomlat.engine.read_json(out / "runs" / "clitiny" / "quick" / "gkd_s0" / "config.json")
    assert config["train"]["epochs"] == 1 and config["train"]["seed"] == 0
    assert "done in" in capsys.readouterr().out


def test_spec_error_exits_2_before_training(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["study", str(spec_file), "--out", str(out), "--set", 'methods.gkd.terms.gkd.weight="heavy"'])
    assert status == 2
    err = capsys.readouterr().err
    assert "invalid study spec: methods.gkd.terms.gkd.weight: expected a finite number" in err
    assert not out.exists()
    assert main(["study", "no_such_study"]) == 2
    assert "no study named 'no_such_study'" in capsys.readouterr().err
    assert main(["study", str(spec_file), "--profile", "paper", "--out", str(out)]) == 2
    assert "profiles: unknown profile 'paper'" in capsys.readouterr().err


def test_demo_is_imported_lazily_and_gets_its_arguments(monkeypatch):
    received = []
    fake = types.ModuleType("geomlat.demo")
    fake.main = lambda args: received.append(list(args)) or 0
    monkeypatch.setitem(sys.modules, "geomlat.demo", fake)
    monkeypatch.setattr(geomlat, "demo", fake, raising=False)
    assert main(["demo", "--fast", "x"]) == 0
    assert received == [["--fast", "x"]]


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["study", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--profile" in out and "--data-dir" in out and "--set" in out
    with pytest.raises(SystemExit):
        main([])  # a subcommand is required
