"""The README's API section runs as pasted: its ```python blocks, executed in order in one namespace."""
import re
from pathlib import Path

import pytest
import torch

from geomlat import to_dense

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## API in a few lines"


def api_blocks() -> list[str]:
    """The ```python blocks of the README section ``SECTION`` (up to the next ``## `` heading)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def test_readme_api_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = api_blocks()
    assert len(blocks) == 4, "the README's API section should hold the four python blocks this test runs"
    monkeypatch.chdir(tmp_path)  # the blocks write runs/ into the working directory
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md API block {i + 1}", "exec"), namespace)
    # what the blocks claim, checked against independent computations
    g, y, lv = namespace["g"], namespace["y"], namespace["lv"]
    assert g.num_nodes == len(y) == 200 and namespace["G"].N == 200
    adj = to_dense(g).detach().double()
    same = (y[:, None] != y[None, :]).double()  # label variation: weight between classes / total weight
    assert lv.item() == pytest.approx(float((adj * same).sum() / adj.sum()), rel=1e-5)
    assert lv.requires_grad  # differentiable w.r.t. the model
    assert torch.isfinite(namespace["dist"]) and namespace["dist"].item() >= 0
    assert set(namespace["losses"]) == {"task", "gkd", "kd"}
    assert 0.0 <= namespace["final"]["test_error"] < 0.9  # two epochs on digits beat chance (0.9)
    assert (tmp_path / "runs" / "gkd" / "final.json").is_file()
    assert "label variation" in capsys.readouterr().out
    errors, overlap = namespace["errors"], namespace["overlap"]
    channels = namespace["act"].shape[1]
    assert errors.shape == (channels,) and ((errors >= 0) & (errors <= 1)).all()
    assert torch.allclose(overlap.diagonal(), torch.ones(channels, dtype=overlap.dtype))  # a channel with itself
    assert 0.0 <= namespace["metrics"]["stage3"]["loo_error"] <= 1.0
    null, a, b = namespace["null"], namespace["a"], namespace["b"]  # representation similarity block
    assert 1 / 51 <= null.p_value <= 1 and null.p_value == (1 + int((null.null >= null.score).sum())) / 51
    assert namespace["cka"] == pytest.approx(linear_cka_by_hand(a.flatten(1).double(), b.flatten(1).double()), abs=1e-6)
    tables = namespace["tables"]
    assert set(tables) == {"linear_cka", "mutual_knn"} and tables["mutual_knn"].shape == (2, 2)


def linear_cka_by_hand(x, y):
    """Kornblith et al.'s feature-space CKA of centred features."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))
