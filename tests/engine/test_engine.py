"""Tests of geomlat.engine: atomic IO, the training loop, run records, skip and exact resume (also after SIGKILL)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geomlat.engine import (
    TrainConfig,
    atomic_save,
    atomic_write_text,
    evaluate_accuracy,
    load_checkpoint,
    load_trained_model,
    model_outputs,
    predict,
    read_json,
    train,
    write_json,
)
from geomlat.io import CheckpointError, CheckpointRefused, _atomic_write
from geomlat.objectives import Supervised

REPO = Path(__file__).resolve().parents[2]


# tiny models run much faster on one thread on a shared 2-core machine; the subprocesses use one too
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ---------------------------------------------------------------- tiny problem shared by the tests
def make_splits(n_train: int = 96, n_test: int = 40, seed: int = 0, augment: bool = True):
    """Two Gaussian blobs per class, 3 classes, 6 features; augmentation = generator-driven noise."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 6, generator=g) * 2.0

    def sample(n):
        y = torch.arange(n) % 3
        x = centers[y] + 0.7 * torch.randn(n, 6, generator=g)
        return TensorDataset(x.float(), y.long())

    def aug(x, generator):
        return x + 0.05 * torch.randn(x.shape, generator=generator)

    return SimpleNamespace(train=sample(n_train), test=sample(n_test), num_classes=3, input_shape=(6,),
                           name="blobs", augment=aug if augment else None)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # BatchNorm (running stats in the state) and Dropout (global RNG) both must resume exactly
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def small_config(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=16, lr=0.05, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def numbers(final: dict) -> dict:
    """Final metrics without wall-clock times."""
    return {k: v for k, v in final.items() if k != "seconds"}


# ---------------------------------------------------------------- io
def test_atomic_write_text_and_json(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    write_json(tmp_path / "m.json", {"a": torch.tensor([1.5, 2.0]), "nan": float("nan"), "t": (1, 2), "p": Path("x")})
    assert read_json(tmp_path / "m.json") == {"a": [1.5, 2.0], "nan": None, "t": [1, 2], "p": "x"}
    assert sorted(os.listdir(tmp_path)) == ["m.json", "sub"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="str"):
        atomic_write_text(tmp_path / "b.txt", b"bytes")


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def failing(f):
        f.write(b"partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        _atomic_write(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


class _Custom:
    pass


def test_checkpoint_roundtrip_and_weights_only(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3, "history": [{"loss": 0.5, "acc": None}]}
    atomic_save(obj, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["w"], obj["w"]) and back["epoch"] == 3 and back["history"] == obj["history"]
    torch.save({"evil": _Custom()}, tmp_path / "bad.pt")  # arbitrary class: must not be unpickled
    with pytest.raises(CheckpointRefused, match="refused and not loaded: it references .*_Custom"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


# ---------------------------------------------------------------- config
def test_train_config_validation_and_milestones():
    assert TrainConfig().milestone_epochs() == [60, 120, 160]  # the paper's schedule for 200 epochs
    assert TrainConfig(epochs=10).milestone_epochs() == [3, 6, 8]
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(0.6, 0.3))
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'epoch'"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig.from_dict({"epochs": 3, "milestones": [0.5]}).milestones == (0.5,)


# ---------------------------------------------------------------- evaluation
def test_predict_and_accuracy_match_manual():
    splits = make_splits(augment=False)
    model = make_model()
    model.train()
    x, y = splits.test.tensors
    model.eval()
    with torch.no_grad():
        expected = model(x)
    model.train()
    out = model_outputs(model, splits.test, batch_size=7)  # several batches, eval mode (BN running stats)
    assert torch.allclose(out, expected, atol=1e-6)
    assert model.training  # mode restored
    assert torch.equal(predict(model, splits.test, batch_size=7), expected.argmax(1))
    assert evaluate_accuracy(model, splits.test, batch_size=7) == pytest.approx(float((expected.argmax(1) == y).float().mean()))


# ---------------------------------------------------------------- training
def test_train_records_schedule_and_learns(tmp_path):
    splits = make_splits()
    cfg = small_config(epochs=5, milestones=(0.4, 0.8), lr_gamma=0.2)
    calls = []
    final = train(Supervised(make_model()), splits, cfg, tmp_path / "run", progress=False,
                  after_step=lambda m: calls.append(1), record={"model": "tiny"})
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    # lr used in epoch e (1-based) = lr * gamma^(number of milestones < e); milestones at epochs 2, 4
    expected_lr = [0.05 * 0.2 ** sum(m < e for m in (2, 4)) for e in range(1, 6)]
    assert [line["lr"] for line in lines] == pytest.approx(expected_lr)
    for line in lines:
        assert {"task", "loss", "train_acc", "test_error", "seconds", "steps"} <= line.keys()
        assert line["loss"] == pytest.approx(line["task"])  # only one term
        assert line["steps"] == 6  # 96 / 16
    assert len(calls) == 5 * 6  # after_step once per optimizer step
    # test error in final.json is the one of the returned model
    ckpt = load_checkpoint(run / "checkpoint.pt")
    model = make_model(seed=99)
    obj = Supervised(model)
    obj.load_state_dict(ckpt["objective"])
    assert final["test_error"] == pytest.approx(1 - evaluate_accuracy(model, splits.test))
    assert final["test_error"] < 0.2  # separable blobs: far below chance (0.67)
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert read_json(run / "config.json")["train"]["epochs"] == 5
    assert read_json(run / "config.json")["model"] == "tiny"
    assert ckpt["epoch"] == 5 and len(ckpt["history"]) == 5
    assert final["params"] == sum(p.numel() for p in model.parameters())


def test_skip_when_final_exists_and_config_mismatch(tmp_path):
    splits = make_splits()
    cfg = small_config(epochs=2)
    first = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    model = make_model(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    again = train(Supervised(model), splits, cfg, tmp_path / "r", progress=False, after_step=lambda m: calls.append(1))
    # not trained again, but the model given now holds the run's final weights (the model the metrics describe)
    assert again == first and not calls and not state_equal(before, model.state_dict())
    final_model = {k[len("model."):]: v for k, v in load_checkpoint(tmp_path / "r" / "checkpoint.pt")["objective"].items()}
    assert state_equal(final_model, model.state_dict())
    with pytest.raises(ValueError, match=r"different configuration: train.epochs is 2 there, 3 now"):
        train(Supervised(make_model()), splits, small_config(epochs=3), tmp_path / "r", progress=False)
    # a change of device alone does not invalidate a run
    assert train(Supervised(make_model()), splits, small_config(epochs=2, device="cpu", eval_batch_size=7),
                 tmp_path / "r", progress=False) == first


class _Boom(Exception):
    pass


def test_resume_after_interruption_is_bitwise_identical(tmp_path):
    splits = make_splits()
    cfg = small_config(epochs=4)
    ref = train(Supervised(make_model()), splits, cfg, tmp_path / "ref", progress=False)
    ref_state = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["objective"]

    steps = []

    def interrupt(model):  # dies in the middle of epoch 3 (6 steps per epoch)
        steps.append(1)
        if len(steps) == 15:
            raise _Boom

    with pytest.raises(_Boom):
        train(Supervised(make_model()), splits, cfg, tmp_path / "cut", progress=False, after_step=interrupt)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    assert not (tmp_path / "cut" / "final.json").exists()
    # resume from a model initialized differently: everything must come from the checkpoint
    resumed = train(Supervised(make_model(seed=123)), splits, cfg, tmp_path / "cut", progress=False)
    assert numbers(resumed) == numbers(ref)
    assert state_equal(load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["objective"], ref_state)
    ref_lines = [json.loads(s) for s in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    cut_lines = [json.loads(s) for s in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda ls: [{k: v for k, v in line.items() if "seconds" not in k} for line in ls]
    assert strip(cut_lines) == strip(ref_lines)


def test_different_seed_changes_run(tmp_path):
    splits = make_splits()
    a = train(Supervised(make_model()), splits, small_config(epochs=1, seed=1), tmp_path / "a", progress=False)
    b = train(Supervised(make_model()), splits, small_config(epochs=1, seed=2), tmp_path / "b", progress=False)
    assert a["loss"] != b["loss"]  # shuffling/augmentation/dropout really depend on the seed


_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_engine import make_splits, make_model, small_config
    import torch
    from geomlat.engine import train
    from geomlat.objectives import Supervised
    torch.set_num_threads(1)
    slow = sys.argv[2] == "slow"
    def pause(model):
        if slow:
            time.sleep(0.02)
    train(Supervised(make_model()), make_splits(n_train=192), small_config(epochs=6), sys.argv[1],
          progress=False, after_step=pause)
    """
)


def test_resume_after_sigkill(tmp_path):
    """A real interruption: the training process is SIGKILLed mid-run, then started again."""
    script = tmp_path / "run_train.py"
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run), "slow"], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until 2 epochs are recorded, then kill inside epoch 3
            metrics = run / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the training subprocess recorded no epoch in 60 s")
        time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "final.json").exists()
    killed_epoch = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert 2 <= killed_epoch < 6
    subprocess.run([sys.executable, str(script), str(run), "fast"], env=env, check=True, timeout=120)
    # reference: the same run uninterrupted, in this process (same thread count)
    ref = train(Supervised(make_model()), make_splits(n_train=192), small_config(epochs=6), tmp_path / "ref", progress=False)
    assert numbers(read_json(run / "final.json")) == numbers(ref)
    assert state_equal(load_checkpoint(run / "checkpoint.pt")["objective"],
                       load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["objective"])


class _FrozenTeacherObjective(nn.Module):
    """Student + frozen teacher: only the student may change; extra loss term recorded."""

    def __init__(self):
        super().__init__()
        self.model = make_model(0)
        self.teacher = make_model(1)
        self.teacher.requires_grad_(False)

    def forward(self, x, y):
        out = self.model(x)
        with torch.no_grad():
            t = self.teacher.eval()(x)
        return out, {"task": nn.functional.cross_entropy(out, y), "mse": 0.1 * (out - t).pow(2).mean()}


def test_frozen_parts_and_multiple_terms(tmp_path):
    obj = _FrozenTeacherObjective()
    teacher_before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    train(obj, make_splits(), small_config(epochs=2), tmp_path / "d", progress=False)
    assert state_equal(teacher_before, obj.teacher.state_dict())
    line = json.loads((tmp_path / "d" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["loss"] == pytest.approx(line["task"] + line["mse"], rel=1e-6)


def test_evaluate_hook_and_errors(tmp_path):
    splits = make_splits()
    final = train(Supervised(make_model()), splits, small_config(epochs=1), tmp_path / "e", progress=False,
                  evaluate=lambda model, s: {"test_error": 0.25, "knn_error": 0.5})
    assert final["test_error"] == 0.25 and final["knn_error"] == 0.5
    with pytest.raises(KeyError, match="test_error"):
        train(Supervised(make_model()), splits, small_config(epochs=1), tmp_path / "f", progress=False,
              evaluate=lambda model, s: {"err": 0.1})

    class NaNObjective(Supervised):
        def forward(self, x, y):
            out, losses = super().forward(x, y)
            return out, {**losses, "bad": torch.log(torch.tensor(-1.0))}

    with pytest.raises(FloatingPointError, match="epoch 1, step 1.*bad"):
        train(NaNObjective(make_model()), splits, small_config(epochs=1), tmp_path / "g", progress=False)
    with pytest.raises(TypeError, match=r"\.model"):
        train(nn.Linear(2, 2), splits, small_config(), tmp_path / "h", progress=False)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_limit_batches_and_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    final = train(Supervised(make_model()), make_splits(), small_config(epochs=1, limit_batches=2),
                  tmp_path / "l", progress=True)
    assert final["steps"] == 2
    err = terminal.getvalue()
    assert "loss=" in err and "acc=" in err and "\r" in err  # a tqdm bar on stderr with loss and accuracy


def test_progress_to_a_file_or_pipe_is_one_line_per_epoch(tmp_path, capsys):
    """Fails on the old engine: tqdm wrote carriage-return frames into logs."""
    final = train(Supervised(make_model()), make_splits(), small_config(epochs=3), tmp_path / "p", progress=True)
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err and "\x1b" not in err
    lines = err.strip().splitlines()
    history = [json.loads(line) for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line, record in zip(lines, history):
        assert line.startswith(f"p {record['epoch']}/3: loss {record['loss']:.4f}, train acc {record['train_acc']:.3f}, "
                               f"test error {100 * record['test_error']:.2f}%")
    assert history[-1]["test_error"] == final["test_error"]
    assert train(Supervised(make_model()), make_splits(), small_config(epochs=3), tmp_path / "p", progress=True) == final
    assert capsys.readouterr().err == ""  # a finished run trains nothing and prints nothing


# ---------------------------------------------------------------- damaged checkpoints (issue 12)
def _interrupted_run(splits, cfg, run_dir, after_epochs: int):
    """A run of ``cfg`` killed after ``after_epochs`` epochs (checkpoint written, no final.json)."""
    steps_per_epoch = len(splits.train) // cfg.batch_size + (len(splits.train) % cfg.batch_size > 1)
    steps = []

    def interrupt(model):
        steps.append(1)
        if len(steps) == after_epochs * steps_per_epoch + 1:
            raise _Boom

    with pytest.raises(_Boom):
        train(Supervised(make_model()), splits, cfg, run_dir, progress=False, after_step=interrupt)
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == after_epochs


def _truncate(path, fraction: float = 0.5) -> None:
    """As `truncate -s` would: keep the first part of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_truncated_checkpoint_is_reported_with_its_path(tmp_path):
    atomic_save({"w": torch.arange(2000.0)}, tmp_path / "c.pt")
    _truncate(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'c.pt'} is unreadable"):
        load_checkpoint(tmp_path / "c.pt")


def test_truncated_checkpoint_of_unfinished_run_restarts_with_same_numbers(tmp_path, capsys):
    splits = make_splits()
    cfg = small_config(epochs=4)
    ref = train(Supervised(make_model()), splits, cfg, tmp_path / "ref", progress=False)
    ref_state = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["objective"]
    _interrupted_run(splits, cfg, tmp_path / "cut", after_epochs=2)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    _truncate(ckpt)
    capsys.readouterr()
    # restarted from scratch: from the initialization the caller builds (a study builds it from the seed)
    resumed = train(Supervised(make_model()), splits, cfg, tmp_path / "cut", progress=False)
    err = capsys.readouterr().err
    assert str(ckpt) in err and "unreadable" in err and "restarts from scratch" in err
    assert (tmp_path / "cut" / "checkpoint.pt.unreadable").exists()  # kept aside, not deleted
    assert numbers(resumed) == numbers(ref)
    assert state_equal(load_checkpoint(ckpt)["objective"], ref_state)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4]


def test_truncated_checkpoint_of_finished_run_is_retrained(tmp_path, capsys):
    splits = make_splits()
    cfg = small_config(epochs=3)
    ref = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    ref_state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["objective"]
    _truncate(tmp_path / "r" / "checkpoint.pt")
    capsys.readouterr()
    again = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    assert str(tmp_path / "r" / "checkpoint.pt") in capsys.readouterr().err
    assert numbers(again) == numbers(ref)
    model = load_trained_model(tmp_path / "r", make_model(seed=9))  # the analysis step can read it again
    assert state_equal({f"model.{k}": v for k, v in model.state_dict().items()}, ref_state)


def test_truncated_final_json_is_rebuilt_from_the_checkpoint(tmp_path, capsys):
    splits = make_splits()
    cfg = small_config(epochs=2)
    ref = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    _truncate(tmp_path / "r" / "final.json")
    again = train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)
    assert str(tmp_path / "r" / "final.json") in capsys.readouterr().err
    assert numbers(again) == numbers(ref) and again["seconds"] == pytest.approx(ref["seconds"])


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_checkpoint_is_refused_with_its_path(tmp_path):
    splits = make_splits()
    cfg = small_config(epochs=3)
    _interrupted_run(splits, cfg, tmp_path / "r", after_epochs=1)
    ckpt = tmp_path / "r" / "checkpoint.pt"
    torch.save({"objective": _Payload(), "epoch": 1}, ckpt)  # as an attacker would replace it
    for call in (lambda: load_checkpoint(ckpt),
                 lambda: train(Supervised(make_model()), splits, cfg, tmp_path / "r", progress=False)):
        with pytest.raises(CheckpointRefused) as info:
            call()
        message = str(info.value)
        assert str(ckpt) in message and "refused" in message and "system" in message
        assert "weights_only=False" not in message
    assert ckpt.exists() and not (tmp_path / "r" / "final.json").exists()  # left as found, nothing run


def test_run_folder_errors_survive_pickling(tmp_path):
    """They are raised in worker processes and re-raised in the parent (pickled on the way)."""
    import pickle

    from geomlat.io import FolderInUseError, UnreadableFileError

    for err in (CheckpointError(tmp_path / "c.pt", "msg a"), CheckpointRefused(tmp_path / "c.pt", "msg b"),
                UnreadableFileError(tmp_path / "f.json", "msg c"), FolderInUseError(tmp_path, 123, "msg d")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.__dict__ == err.__dict__
