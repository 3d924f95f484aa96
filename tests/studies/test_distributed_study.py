"""`geomlat study gkd --nproc 2` (torchrun --standalone, 2 CPU processes, gloo on loopback) on a tiny override
of the gkd spec gives the same table layout and files as the one-process run, each run trained once with
the one-process batch schedule."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geomlat.cli import main as cli_main
from geomlat.studies import run_study

REPO = Path(__file__).resolve().parents[2]
# one seed, one epoch of two batches, a small MNIST-1D, a small analysis; every method of the gkd spec kept
SETS = ["train.epochs=1", "train.limit_batches=2", "workers=1", "data.options={num_samples=600, test_size=100}",
        "analysis.samples=40", "analysis.k=4"]
OVERRIDES = {"train": {"epochs": 1, "limit_batches": 2}, "workers": 1,
             "data": {"options": {"num_samples": 600, "test_size": 100}}, "analysis": {"samples": 40, "k": 4}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    one, two = root / "one", root / "two"
    run_study("gkd", "quick", out_root=one, seeds=[0], overrides=OVERRIDES, progress=False, log=lambda s: None)
    cmd = [sys.executable, "-m", "geomlat.cli", "study", "gkd", "--nproc", "2", "--out", str(two), "--seeds", "0",
           "--no-progress"] + [a for s in SETS for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return one, two, proc.stdout


def _csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_same_files(outputs):
    one, two, _ = outputs
    files = _files(one)
    assert files == _files(two)
    assert "results/gkd/table.md" in files and "figures/gkd/graph_variants.png" in files
    assert not [f for f in files if f.endswith(".tmp")]


def test_same_table_layout(outputs):
    one, two, _ = outputs
    md_one = (one / "results/gkd/table.md").read_text().splitlines()
    md_two = (two / "results/gkd/table.md").read_text().splitlines()
    table_one = [line for line in md_one if line.startswith("|")]
    table_two = [line for line in md_two if line.startswith("|")]
    assert table_one[:2] == table_two[:2]  # header and alignment row
    assert [r.split("|")[1] for r in table_one] == [r.split("|")[1] for r in table_two]  # one row per method, same order
    assert len(table_one) == 2 + 1 + 9  # teacher and the 9 methods of the gkd spec
    for name in ("table.csv", "runs.csv", "analysis.csv"):
        head_one, rows_one = _csv(one / "results/gkd" / name)
        head_two, rows_two = _csv(two / "results/gkd" / name)
        assert head_one == head_two, name
        assert [r[:2] for r in rows_one] == [r[:2] for r in rows_two], name  # same methods/runs, same order
    _, rows = _csv(two / "results/gkd/table.csv")
    assert all(r[2] for r in rows)  # a test error for every method


def test_runs_use_the_one_process_schedule(outputs):
    one, two, stdout = outputs
    for run in sorted(p.name for p in (one / "runs/gkd/quick").iterdir() if p.is_dir()):
        a = json.loads((one / "runs/gkd/quick" / run / "final.json").read_text())
        b = json.loads((two / "runs/gkd/quick" / run / "final.json").read_text())
        assert a["steps"] == b["steps"] == 2 and a["epochs"] == b["epochs"] == 1
        assert a["params"] == b["params"]
        # the logged loss terms are the same names (every term of the method, summed over the ranks)
        assert sorted(a) == sorted(b)
    # rank 0 alone prints: one line per run
    assert stdout.count("teacher_s0 ") == 1 and stdout.count("gkd_inter_s0") == 1


def test_nproc_rejects_a_bad_spec_before_starting(tmp_path, capsys):
    assert cli_main(["study", "gkd", "--nproc", "2", "--out", str(tmp_path), "--set", "train.epochs=0"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
