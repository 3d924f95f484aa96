"""`geomlat demo`: a rerun prints the same lines (the trained network's label variation, not an untrained one's),
and bad options or a run folder made with other options stop in one line with exit status 2, before any work."""
from __future__ import annotations

import pytest

from geomlat.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _demo(tmp_path, *extra: str) -> list[str]:
    return ["demo", "--runs", str(tmp_path / "runs"), "--figure", str(tmp_path / "fig.png"), "--no-progress", *extra]


def test_demo_twice_prints_the_same_lines_and_other_epochs_are_refused(tmp_path, capsys):
    """Fails on the old engine: the second run measured the label variation of an untrained network."""
    assert main(_demo(tmp_path, "--epochs", "2")) == 0
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 5 and first[0].startswith("SmallCNN") and (tmp_path / "fig.png").is_file()
    assert main(_demo(tmp_path, "--epochs", "2")) == 0
    assert capsys.readouterr().out.splitlines() == first
    checkpoint = (tmp_path / "runs" / "small_cnn_s0" / "checkpoint.pt").read_bytes()
    assert main(_demo(tmp_path, "--epochs", "3")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "train.epochs is 2 there, 3 now" in lines[0]
    assert str(tmp_path / "runs" / "small_cnn_s0") in lines[0] and "delete the folder" in lines[0]
    assert (tmp_path / "runs" / "small_cnn_s0" / "checkpoint.pt").read_bytes() == checkpoint


@pytest.mark.parametrize("option, value, message", [
    ("--k", "0", "--k must be in 1..99"), ("--k", "100", "--k must be in 1..99"),
    ("--epochs", "-1", "--epochs must be >= 1, got -1"), ("--epochs", "0", "--epochs must be >= 1"),
    ("--seed", "-2", "--seed must be >= 0"),
])
def test_demo_options_out_of_range_stop_before_any_work(tmp_path, capsys, option, value, message):
    assert main(_demo(tmp_path, option, value)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith(f"geomlat demo: {message}")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "fig.png").exists()
