"""Tests of the `geomlat` console script: study runs from a TOML file, --set overrides, spec errors
(exit status 2 naming the field, nothing trained), and the lazily imported demo hook."""
from __future__ import annotations

import argparse
import csv
import os
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import geomlat
from geomlat.cli import main, parse_set
from geomlat.data import write_cifar_folder

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


# ---------------------------------------------------------------- issue 12: start-up, validation, locks
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_help_and_early_spec_errors_do_not_import_torch(spec_file, tmp_path):
    """`geomlat --help` and a spec error found before the study kind is loaded answer without torch."""
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text('name = "x"\nkind = \n')
    code = textwrap.dedent(
        f"""
        import sys
        import geomlat.cli
        heavy = lambda: sorted(m for m in ("torch", "torch_geometric", "pygsp", "scipy", "matplotlib") if m in sys.modules)
        for argv in (["--help"], ["study", "--help"]):
            try:
                geomlat.cli.main(argv)
            except SystemExit as exit:
                assert exit.code == 0, exit.code
        assert heavy() == [], ("--help", heavy())
        assert geomlat.cli.main(["study", {str(spec_file)!r}, "--profile", "nope"]) == 2
        assert geomlat.cli.main(["study", {str(bad_toml)!r}]) == 2
        assert geomlat.cli.main(["study", "no_such_study"]) == 2
        assert heavy() == [], ("spec errors", heavy())
        print("light")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("light")
    assert "unknown profile 'nope'" in done.stderr and "broken.toml is not valid TOML" in done.stderr


def test_train_typo_and_busy_folder_are_refused_without_torch(spec_file, tmp_path):
    """Issue 19: a `train.*` typo and a second study into a folder in use answer before torch (and
    torch_geometric, the study kind) are imported: the validation reads the torch-free TrainConfig field list
    and the lock is checked first. Failed on the old code (both imported torch first)."""
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import os, sys
        import geomlat.cli
        from geomlat.locks import folder_lock
        heavy = lambda: sorted(m for m in ("torch", "torch_geometric", "pygsp", "scipy") if m in sys.modules)
        spec, out = {str(spec_file)!r}, {str(out)!r}
        assert geomlat.cli.main(["study", spec, "--out", out, "--set", "train.epoch=1"]) == 2
        assert geomlat.cli.main(["study", spec, "--out", out, "--set", "methods.gkd.train.compile=1"]) == 2
        assert geomlat.cli.main(["study", spec, "--out", out, "--set", "train.optimizer='rmsprop'"]) == 2
        with folder_lock(os.path.join(out, "runs", "clitiny")):  # another open file: refused as another process is
            assert geomlat.cli.main(["study", spec, "--out", out, "--no-progress"]) == 2
        assert heavy() == [], heavy()
        print("light")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "light"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("geomlat: invalid study spec: train.epoch: unknown field; valid fields here:")
    assert lines[1].startswith("geomlat: invalid study spec: methods.gkd.train.compile: expected true or false, got integer 1")
    assert "train.optimizer: unknown value 'rmsprop'" in lines[2]
    assert lines[3].startswith("geomlat: study 'clitiny' in") and f"in use by process" in lines[3]
    assert sorted(p.name for p in out.rglob("*")) == [".lock", "clitiny", "runs"]  # only the test's lock: no run


def _assert_refused(status: int, err: str, out: Path, *needles: str) -> None:
    """Exit 2, one line on stderr naming the problem, nothing written."""
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("geomlat: ")
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


@pytest.mark.parametrize("device,message", [
    ("tpu", "unknown device 'tpu'"),
    ("cuda", "CUDA is not available"),
    ("cuda:0", "CUDA is not available"),
])
def test_unavailable_device_stops_before_writing(spec_file, tmp_path, capsys, device, message):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    status = main(["study", str(spec_file), "--out", str(out), "--set", f'train.device="{device}"', "--no-progress"])
    _assert_refused(status, capsys.readouterr().err, out, "train.device", message)


CIFAR_SETS = ["--set", 'data.name="cifar10"', "--set", "data.options={}",
              "--set", "teacher.kwargs={width = 8, in_channels = 3}", "--set", "student.kwargs={width = 4, in_channels = 3}"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _damage(folder: Path, case: str, marker: Path) -> str:
    """Damage one batch file of a valid CIFAR-10 folder; returns the name of that file."""
    if case == "truncated":
        data = (folder / "data_batch_3").read_bytes()
        (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
        return "data_batch_3"
    if case == "garbage":
        (folder / "test_batch").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        return "test_batch"
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Payload(marker)}
    (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=3))
    return "data_batch_1"


@pytest.mark.parametrize("case", ["truncated", "garbage", "malicious"])
def test_bad_cifar_files_stop_before_writing(spec_file, tmp_path, capsys, case):
    data = write_cifar_folder(tmp_path / "cifar", 10, 10)
    marker = tmp_path / "pwned"
    name = _damage(data, case, marker)
    out = tmp_path / "out"
    status = main(["study", str(spec_file), "--out", str(out), "--data-dir", str(data), *CIFAR_SETS, "--no-progress"])
    _assert_refused(status, capsys.readouterr().err, out, str(data / name), "not a valid CIFAR-10 batch")
    assert not marker.exists()


def test_missing_cifar_folder_stops_before_writing(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["study", str(spec_file), "--out", str(out), "--data-dir", str(tmp_path / "nowhere"), *CIFAR_SETS])
    _assert_refused(status, capsys.readouterr().err, out, str(tmp_path / "nowhere"))


HOLDER = textwrap.dedent(
    """
    import sys, time
    from geomlat.studies import StudyKind, register_study_kind, run_study

    @register_study_kind("sleepy")
    class Sleepy(StudyKind):
        def validate(self, spec, fields):
            return {}

        def run(self, spec, ctx):
            print("running", flush=True)
            time.sleep(120)
            return {}

    run_study({"name": "clitiny", "kind": "sleepy", "seeds": [0], "profiles": {"quick": {}}}, out_root=sys.argv[1])
    """
)


def test_second_run_into_a_folder_in_use_stops_and_a_killed_run_leaves_no_lock(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "running"  # the first run holds the folder
        before = sorted(out.rglob("*"))
        status = main(["study", str(spec_file), "--out", str(out), "--seeds", "0", "--set", "train.epochs=1", "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert status == 2 and len(err.splitlines()) == 1, err
        assert str(out) in err and f"process {holder.pid}" in err
        assert sorted(out.rglob("*")) == before  # the second run wrote nothing
    finally:
        holder.kill()  # a crash: SIGKILL, no clean-up
        holder.wait()
    status = main(["study", str(spec_file), "--out", str(out), "--seeds", "0", "--set", "train.epochs=1", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert (out / "results" / "clitiny" / "table.csv").exists()


def test_study_into_runs_of_another_spec_is_one_line_exit_2(spec_file, tmp_path, capsys):
    """A run folder made with another term weight is refused (not reused: issue 19), in one line."""
    out = tmp_path / "out"
    args = ["study", str(spec_file), "--out", str(out), "--seeds", "0", "--set", "train.epochs=1", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--set", "methods.gkd.terms.gkd.weight=5.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gkd_s0" in err and "delete the folder" in err
    assert "weight" in err and "25.0 there, 5.0 now" in err


def test_refused_checkpoint_is_one_line_naming_it(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["study", str(spec_file), "--out", str(out), "--seeds", "0", "--set", "train.epochs=1", "--no-progress"]
    assert main(args) == 0
    ckpt = out / "runs" / "clitiny" / "quick" / "teacher_s0" / "checkpoint.pt"
    marker = tmp_path / "pwned"
    torch.save({"objective": _Payload(marker)}, ckpt)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "refused" in err and "weights_only=False" not in err
    assert not marker.exists() and ckpt.exists()
