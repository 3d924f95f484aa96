"""Channel-wise NNK: against a per-channel loop of nnk_graph / nnk_interpolation, and on constructed cases."""
import math

import pytest
import torch

from geomlat.analysis import (
    ChannelwiseEarlyStopping,
    channel_maps,
    channel_overlap,
    channelwise_early_stopping,
    channelwise_loo_errors,
    channelwise_nnk,
    geometric_stability,
)
from geomlat.nnk import nnk_graph, nnk_interpolation, nnk_weights


def activation(n=90, classes=3, seed=0):
    """(N, 4, 3, 3) activation: channel 0 informative (class pattern + noise), 1 a copy of 0, 2 and 3 pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    protos = torch.randn(classes, 9, generator=g, dtype=torch.float64)
    informative = protos[y] + 0.3 * torch.randn(n, 9, generator=g, dtype=torch.float64)
    noise = torch.randn(n, 2, 9, generator=g, dtype=torch.float64)
    x = torch.stack([informative, informative.clone(), noise[:, 0], noise[:, 1]], 1).view(n, 4, 3, 3)
    return x, y


@pytest.mark.parametrize("kernel", ["cosine", "cosine_shifted", "rbf"])
def test_channelwise_nnk_equals_a_loop_of_nnk_graph(kernel):
    x, _ = activation()
    res = channelwise_nnk(x, 8, kernel=kernel)
    assert res.weights.shape == (4, 90, 8) and res.neighbors.shape == (4, 90, 8) and res.residual.shape == (4, 90)
    assert float(res.mask.double().sum(2).mean()) < 8  # NNK pruned something: not a k-NN comparison
    for c in range(4):
        xc = x[:, c].reshape(90, -1)
        ref = nnk_weights(xc, 8, kernel=kernel)
        assert torch.equal(res.neighbors[c], ref.neighbors)
        torch.testing.assert_close(res.weights[c], ref.weights, rtol=0, atol=1e-10)
        torch.testing.assert_close(res.residual[c], ref.residual, rtol=0, atol=1e-10)
        if kernel == "rbf":
            assert float(res.sigma[c]) == pytest.approx(ref.sigma, rel=1e-12)
        g, want = res.graph(c), nnk_graph(xc, 8, kernel=kernel)
        assert torch.equal(g.edge_index, want.edge_index) and g.num_nodes == want.num_nodes
        torch.testing.assert_close(g.edge_weight, want.edge_weight, rtol=0, atol=1e-10)
        torch.testing.assert_close(g.residual, want.residual, rtol=0, atol=1e-10)
        g_ref, want_ref = res.graph(c, "reference"), nnk_graph(xc, 8, kernel=kernel, edge_rule="reference")
        assert torch.equal(g_ref.edge_index, want_ref.edge_index)


@pytest.mark.parametrize("max_nodes", [1, 100, 10_000])
def test_channelwise_loo_errors_equal_a_loop_of_nnk_interpolation(max_nodes):
    x, y = activation(n=60, seed=1)
    errors = channelwise_loo_errors(x, y, 6, max_nodes=max_nodes)  # 1: one channel per call; 10,000: all at once
    want = torch.tensor([nnk_interpolation(x[:, c].reshape(60, -1), y, 6)[1] for c in range(4)], dtype=torch.float64)
    torch.testing.assert_close(errors, want, rtol=0, atol=1e-12)
    assert errors[0] == errors[1] and errors[0] < errors[2]  # identical channels, informative beats noise


def test_identical_channels_overlap_fully_and_overlap_is_the_pairwise_jaccard():
    x, _ = activation(n=70, seed=2)
    res = channelwise_nnk(x, 7)
    ov = channel_overlap(res, node_chunk=16)  # several node chunks
    assert ov.shape == (4, 4)
    assert ov[0, 1] == 1.0 and ov[1, 0] == 1.0
    torch.testing.assert_close(ov.diagonal(), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(ov, ov.T)
    assert float(ov[0, 2]) < 0.5 and float(ov[2, 3]) < 0.5  # unrelated channels share few NNK neighbors
    for a, b in [(0, 2), (2, 3), (1, 3)]:  # independent computation: dense neighbor rows of two NNK solves
        want = geometric_stability(x[:, a].reshape(70, -1), x[:, b].reshape(70, -1), k=7)["jaccard"]
        assert float(ov[a, b]) == pytest.approx(want, abs=1e-12)


def test_noise_channel_has_chance_level_loo_error():
    n, classes = 800, 4
    x, y = activation(n=n, classes=classes, seed=3)
    errors = channelwise_loo_errors(x, y, 10)
    chance = 1 - 1 / classes
    tol = 4 * math.sqrt(chance * (1 - chance) / n)  # 4 binomial standard deviations of an error rate over N samples
    for c in (2, 3):
        assert abs(float(errors[c]) - chance) < tol, (c, float(errors[c]), chance, tol)
    assert float(errors[0]) < chance - 10 * tol  # the informative channel is far from chance


def test_channel_maps_and_bad_input():
    x = torch.arange(24.0).view(2, 3, 2, 2)
    maps = channel_maps(x)
    assert maps.shape == (3, 2, 4) and torch.equal(maps[1, 0], x[0, 1].flatten())
    with pytest.raises(ValueError, match="channel dimension"):
        channel_maps(torch.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        channel_maps(torch.full((4, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="k=4 must be smaller"):
        channelwise_nnk(torch.rand(4, 2, 3), 4)
    with pytest.raises(ValueError, match="labels has shape"):
        channelwise_loo_errors(torch.rand(6, 2, 3), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="unknown kernel"):
        channelwise_nnk(torch.rand(6, 2, 3), 2, kernel="poly")


# ------------------------------------------------------------------------------- early stopping
def authors_loop(history, patience):
    """The CW-DeepNNK training loop's stopping logic, transcribed: per-channel best and patience counters."""
    T, C = len(history), len(history[0])
    ch_patience, best_val, stop = [patience] * C, [math.inf] * C, None
    best_epoch, stop_epoch = [-1] * C, [-1] * C
    for t in range(T):
        for c in range(C):
            if ch_patience[c] > 0:
                if best_val[c] <= history[t][c]:
                    ch_patience[c] -= 1
                    if ch_patience[c] == 0:
                        stop_epoch[c] = t
                else:
                    best_val[c], ch_patience[c], best_epoch[c] = history[t][c], patience, t
        if all(p == 0 for p in ch_patience):
            stop = t
            break
    return stop, best_epoch, stop_epoch


def test_early_stopping_on_constructed_sequences():
    # channel 0: best at evaluation 2, then worse or equal (ties do not improve): out of patience 3 at 5
    # channel 1: keeps improving until 4, then flat: out at 7 -> training stops at 7, keeps evaluation 4
    history = torch.tensor([
        [0.50, 0.60], [0.40, 0.55], [0.30, 0.50], [0.30, 0.45], [0.35, 0.40],
        [0.31, 0.40], [0.10, 0.41], [0.10, 0.40], [0.0, 0.0],
    ])
    out = channelwise_early_stopping(history, patience=3)
    assert out["channel_best"].tolist() == [2, 4] and out["channel_stop"].tolist() == [5, 7]
    assert out["stop"] == 7 and out["selected"] == 4
    assert out["channel_best_error"].tolist() == pytest.approx([0.30, 0.40])
    # the 0.10 of channel 0 at evaluation 6 comes after it stopped: ignored
    # a history that ends before every channel runs out: no stop, the latest improvement is kept
    short = channelwise_early_stopping(history[:6], patience=3)
    assert short["stop"] is None and short["channel_stop"].tolist() == [5, -1] and short["selected"] == 4
    # single curve (DeepNNK / validation rule): patience 1 stops at the first non-improvement
    single = channelwise_early_stopping(torch.tensor([3.0, 2.0, 2.5, 1.0]), patience=1)
    assert single["stop"] == 2 and single["selected"] == 1


def test_early_stopping_equals_the_authors_loop_on_random_histories():
    g = torch.Generator().manual_seed(4)
    for trial in range(40):
        T, C, P = 30, 5, 1 + trial % 4
        # noisy decreasing-then-rising curves, rounded so that ties happen
        t = torch.arange(T, dtype=torch.float64)[:, None]
        turn = torch.randint(3, 25, (1, C), generator=g)
        hist = ((t - turn).abs() / T + 0.05 * torch.rand(T, C, generator=g, dtype=torch.float64)).mul(50).round() / 50
        stop, best, stop_c = authors_loop(hist.tolist(), P)
        out = channelwise_early_stopping(hist, P)
        assert out["stop"] == stop and out["channel_best"].tolist() == best and out["channel_stop"].tolist() == stop_c
        end = T if stop is None else stop + 1
        assert out["selected"] == max(best)
        assert out["selected"] < end


def test_early_stopping_online_and_bad_input():
    rule = ChannelwiseEarlyStopping(2, patience=2)
    assert not rule.update([0.5, 0.5]) and rule.active_.tolist() == [True, True]
    assert not rule.update([0.6, 0.4]) and not rule.update([0.6, 0.3])
    assert rule.active_.tolist() == [False, True]  # channel 0: two evaluations without improvement
    assert not rule.update([float("nan"), 0.35])  # a stopped channel's entry is ignored
    assert rule.update([float("nan"), 0.3])  # a tie is no improvement: channel 1 out, training stops
    assert rule.selected_eval == 2
    with pytest.raises(RuntimeError, match="already stopped"):
        rule.update([0.1, 0.1])
    with pytest.raises(ValueError, match="patience"):
        ChannelwiseEarlyStopping(2, patience=0)
    with pytest.raises(ValueError, match="one per channel"):
        ChannelwiseEarlyStopping(2, patience=1).update([0.1])
    with pytest.raises(ValueError, match="finite"):
        ChannelwiseEarlyStopping(2, patience=1).update([0.1, float("nan")])
    with pytest.raises(ValueError, match="history"):
        channelwise_early_stopping(torch.zeros(0, 3), 2)


# ------------------------------------------------------------------ the authors' conventions, neighbor options
def test_channelwise_deepnnk_equals_a_loop_of_the_numpy_rewrite_of_the_authors_code():
    from tests.test_nnk import np_deepnnk_loo

    x, y = activation(n=60)
    x[4] = x[7]  # a duplicated sample: its twin is dropped in every channel
    y[4] = y[7]
    errors = channelwise_loo_errors(x, y, 8, convention="deepnnk", max_nodes=130)
    expected = [np_deepnnk_loo(x[:, c].reshape(60, -1).numpy(), y.numpy(), 8)[2] for c in range(4)]
    assert errors.tolist() == pytest.approx(expected)
    res = channelwise_nnk(x, 8, convention="deepnnk")
    assert res.kernel == "cosine_shifted" and res.convention == "deepnnk" and res.valid.shape == (4, 60, 8)
    assert not bool(res.valid[:, 4][res.neighbors[:, 4] == 7].any())
    assert res.channel(2).convention == "deepnnk"


def test_channelwise_functions_take_the_neighbor_options_of_nnk_weights():
    x, y = activation(n=60)
    from geomlat import knn

    nb = torch.stack([knn(x[:, c].reshape(60, -1), 6, metric="euclidean") for c in range(4)])
    a = channelwise_loo_errors(x, y, 6, neighbors=nb, kernel="cosine", max_nodes=130)
    loop = [nnk_interpolation(x[:, c].reshape(60, -1), y, 6, neighbors=nb[c])[1] for c in range(4)]
    assert a.tolist() == pytest.approx(loop)
    assert a.tolist() == pytest.approx(channelwise_loo_errors(x, y, 6, neighbors=nb, node_chunk=7))
    with pytest.raises(ValueError, match=r"neighbors must have shape \(4, 60, 6\)"):
        channelwise_loo_errors(x, y, 6, neighbors=nb[:2])


def test_constant_channel_warns():
    x, y = activation(n=30)
    x[:, 2] = 0.0
    with pytest.warns(RuntimeWarning, match=r"channels \[2\] are constant"):
        channelwise_loo_errors(x, y, 5)
    with pytest.warns(RuntimeWarning, match=r"channels \[2\] are constant"):
        channelwise_nnk(x, 5, convention="deepnnk")
