"""Figures a reader can read (issue 12): one palette whose series differ for every reader (checked with
CIEDE2000 color differences under simulated dichromacy), a marker per series, a legend for the classes of
the embedding figure, y-axis labels on the manifold-metric panels, distinct class styles in the toy graphs."""
from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from geomlat.studies import figures, run_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# ----------------------------------------------------------------------------- color science (independent)
# Machado, Oliveira & Fernandes (2009) dichromacy simulation, severity 1, applied to linear sRGB
VISIONS = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]),
}


def to_lab(colors, vision: str = "normal") -> np.ndarray:
    """CIELAB (D65) of matplotlib colors as seen with ``vision``: (n, 3)."""
    c = np.array([to_rgb(x) for x in colors])
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lin = np.clip(lin @ VISIONS[vision].T, 0.0, 1.0)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def ciede2000(lab1, lab2) -> float:
    """CIEDE2000 color difference (Sharma, Wu & Dalal 2005)."""
    (L1, a1, b1), (L2, a2, b2) = lab1, lab2
    Cm = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    G = 0.5 * (1 - np.sqrt(Cm**7 / (Cm**7 + 25.0**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360 if C1p else 0.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360 if C2p else 0.0
    dLp, dCp = L2 - L1, C2p - C1p
    dhp = 0.0 if C1p * C2p == 0 else (h2p - h1p + 180) % 360 - 180
    dHp = 2 * np.sqrt(C1p * C2p) * np.sin(np.radians(dhp / 2))
    Lpm, Cpm = (L1 + L2) / 2, (C1p + C2p) / 2
    if C1p * C2p == 0:
        hpm = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hpm = (h1p + h2p) / 2
    else:
        hpm = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    T = (1 - 0.17 * np.cos(np.radians(hpm - 30)) + 0.24 * np.cos(np.radians(2 * hpm))
         + 0.32 * np.cos(np.radians(3 * hpm + 6)) - 0.20 * np.cos(np.radians(4 * hpm - 63)))
    Rc = 2 * np.sqrt(Cpm**7 / (Cpm**7 + 25.0**7))
    Sl = 1 + 0.015 * (Lpm - 50) ** 2 / np.sqrt(20 + (Lpm - 50) ** 2)
    Sc, Sh = 1 + 0.045 * Cpm, 1 + 0.015 * Cpm * T
    Rt = -np.sin(np.radians(60 * np.exp(-(((hpm - 275) / 25) ** 2)))) * Rc
    return float(np.sqrt((dLp / Sl) ** 2 + (dCp / Sc) ** 2 + (dHp / Sh) ** 2 + Rt * (dCp / Sc) * (dHp / Sh)))


def min_difference(colors, vision: str) -> float:
    lab = to_lab(colors, vision)
    return min(ciede2000(lab[i], lab[j]) for i, j in itertools.combinations(range(len(lab)), 2))


@pytest.mark.parametrize("lab1, lab2, expected", [  # Sharma et al.'s test data, pairs 1, 17, 25, 7, 13
    ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
    ((50, 2.5, 0), (73, 25, -18), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((50, 0, 0), (50, -1, 2), 2.3669),
    ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792),
])
def test_ciede2000_matches_published_data(lab1, lab2, expected):
    assert ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- the palette
def test_palette_series_differ_for_every_reader():
    palette = list(figures.PALETTE)
    assert len(palette) == 10 and len(set(palette)) == 10
    # normal vision: all ten classes clearly apart (the old "colorblind" palette's orange and vermillion: 11.6)
    assert min_difference(palette, "normal") >= 15.0
    # dichromats: the first five series (toy classes, manifold layers, robust methods, GKD networks) stay apart
    for vision in ("protanopia", "deuteranopia", "tritanopia"):
        assert min_difference(palette[:5], vision) >= 10.0, vision


def test_series_styles_are_distinct_pairs():
    assert len(set(figures.MARKERS)) == len(figures.MARKERS) == 10
    ten = figures.series_styles(10)
    assert [c for c, _ in ten] == list(figures.PALETTE) and len({m for _, m in ten}) == 10
    many = figures.series_styles(100)
    assert len(set(many)) == 100  # beyond ten, colors repeat with another marker
    assert figures.series_styles(0) == []
    with pytest.raises(ValueError, match="non-negative int"):
        figures.series_styles(-1)


# ----------------------------------------------------------------------------- the figures
def capture_figures(monkeypatch, module) -> dict:
    """Record each matplotlib Figure the study module saves, by file name (the PNG is still written)."""
    saved = {}
    original = module.save_figure

    def save(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(module, "save_figure", save)
    return saved


def marker_shape(collection) -> bytes:
    return np.round(collection.get_paths()[0].vertices, 6).tobytes()


def test_toy_graph_classes_have_distinct_colors_and_markers(tmp_path, monkeypatch):
    from geomlat.studies import toy

    saved = capture_figures(monkeypatch, toy.figures)
    spec = {
        "name": "tinytoy", "kind": "toy", "seeds": [0],
        "data": {"name": "digits", "options": {"train_size": 200, "test_size": 100}},
        "model": {"model": "small_cnn", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "batch_size": 50, "lr": 0.05},
        "graph": {"k": 5, "classes": [0, 1, 2, 3], "per_class": 5, "draws": 1},
        "profiles": {"quick": {}},
    }
    run_study(spec, "quick", out_root=tmp_path, progress=False, log=lambda s: None)
    fig = saved["toy_graphs.png"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"class {c}" for c in range(4)]
    for ax in fig.axes:
        points = {c.get_label(): c for c in ax.collections if c.get_label().startswith("class")}
        assert sorted(points) == [f"class {c}" for c in range(4)]
        colors = [to_rgb(points[f"class {c}"].get_facecolor()[0][:3]) for c in range(4)]
        for vision in VISIONS:
            assert min_difference(colors, vision) >= 10.0, vision
        assert len({marker_shape(points[f"class {c}"]) for c in range(4)}) == 4


def test_manifold_metric_panels_have_y_labels_and_distinct_layers(tmp_path, monkeypatch):
    from geomlat.studies import manifold

    saved = capture_figures(monkeypatch, manifold.figures)
    spec = {
        "name": "tinymanifold", "kind": "manifold", "seeds": [0], "layers": ["input", "stage2", "pool"],
        "data": {"name": "digits", "options": {"train_size": 150, "test_size": 100}},
        "model": {"model": "small_cnn", "kwargs": {"width": 4}},
        "train": {"epochs": 2, "batch_size": 50, "lr": 0.05},
        "analysis": {"samples": 60, "nnk_k": 8, "graph_k": 5},
        "comparison": {"model": {"model": "small_cnn", "kwargs": {"width": 2}}, "samples": 40, "knn_k": 5, "lgg_k": 5},
        "profiles": {"quick": {}},
    }
    run_study(spec, "quick", out_root=tmp_path, progress=False, log=lambda s: None)
    for name in ("manifold_metrics.png", "nnk_loo_vs_test.png", "label_spectra.png"):
        for ax in saved[name].axes:
            assert ax.get_ylabel().strip(), (name, ax.get_title())
            assert ax.get_xlabel().strip() or ax.get_xticklabels(), (name, ax.get_title())
    metrics = saved["manifold_metrics.png"]
    assert len({ax.get_ylabel() for ax in metrics.axes}) == 3
    for ax in metrics.axes:
        lines = [line for line in ax.get_lines() if line.get_label() in spec["layers"]]
        assert [line.get_label() for line in lines] == spec["layers"]
        assert len({line.get_marker() for line in lines}) == 3 and len({line.get_color() for line in lines}) == 3
    assert [t.get_text() for t in metrics.legends[0].get_texts()] == spec["layers"]


def test_embedding_figure_has_a_legend_of_the_classes(tmp_path, monkeypatch):
    from geomlat.studies import embed

    torch.manual_seed(0)
    y = torch.arange(10).repeat(6)  # 60 points, 10 classes
    for epoch in (0, 3):
        path = tmp_path / "runs" / "lv_2d_s0" / "embeddings" / f"epoch_{epoch}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": epoch, "embedding": torch.randn(60, 2)}, path)
    spec = {"figure": {"methods": ["lv_2d"], "epochs": [0, 3]}, "seeds": [0], "data": {"name": "digits"},
            "methods": {"lv_2d": {"label": "Label variation, 2-D"}}}
    ctx = SimpleNamespace(runs_dir=tmp_path / "runs", figures_dir=tmp_path / "figures")
    saved = capture_figures(monkeypatch, embed.figures)
    out = embed.figures.embeddings_figure(spec, ctx, y)
    assert out.is_file() and out.stat().st_size > 10_000
    fig = saved["embeddings_2d.png"]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [f"class {c}" for c in range(10)]
    styles = [(to_rgb(h.get_color()), h.get_marker()) for h in legend.legend_handles]
    assert len(set(styles)) == 10 and len({m for _, m in styles}) == 10
    # each class is drawn with its legend entry's color and marker, at the recorded coordinates
    ax = fig.axes[0]
    emb = torch.load(tmp_path / "runs" / "lv_2d_s0" / "embeddings" / "epoch_0.pt", weights_only=True)["embedding"]
    assert len(ax.collections) == 10
    for c, coll in enumerate(ax.collections):
        assert np.allclose(coll.get_offsets(), emb[y == c].numpy())
        assert np.allclose(coll.get_facecolor()[0][:3], styles[c][0])
