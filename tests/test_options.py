"""Option sets (geomlat.options): GraphOptions and NNKOptions are the one definition of the graph and NNK
options. The functions keep their keywords and give the same results as the options objects; every field is
a parameter of every function of its family (so a new field reaches them); unknown names are refused with
the valid ones listed; the consumers (LabelVariationLoss, GKD, the Lightning monitor) take either form."""
import dataclasses
import inspect

import pytest
import torch

from geomlat.analysis import channelwise_loo_errors, channelwise_nnk
from geomlat.graphs import GraphOptions, latent_adjacency, latent_graph
from geomlat.losses.distill import GKD
from geomlat.losses.embedding import LabelVariationLoss
from geomlat.nnk import NNKOptions, nnk_graph, nnk_interpolation, nnk_weights

GRAPH_FUNCTIONS = [latent_adjacency, latent_graph]
NNK_FUNCTIONS = [nnk_weights, nnk_graph, channelwise_nnk]

#: one non-default value per graph option (every field of GraphOptions, checked below)
GRAPH_CHANGES = {"k": 3, "kernel": "cosine_shifted", "sigma": 0.7, "symmetrize": "mutual", "normalize": "sym",
                 "self_loops": True, "mask": "inter", "power": 2, "reduce": "first"}
NNK_CHANGES = {"kernel": "rbf", "sigma": 0.8, "tol": 0.05, "solver": "approx", "knn_backend": "chunked",
               "chunk_size": 7, "approx_steps": 5, "node_chunk": 9, "convention": "deepnnk"}
#: the other options an option needs to matter (a bandwidth needs the RBF kernel, steps the approximate solver)
NNK_CONTEXT = {"sigma": dict(kernel="rbf"), "approx_steps": dict(solver="approx")}
#: base graph options of the graph test (token features, so that reduce matters)
GRAPH_BASE = dict(k=4, reduce="mean")


def _params(fn):
    return inspect.signature(getattr(fn, "__wrapped__", fn)).parameters


@pytest.mark.parametrize("cls, functions", [(GraphOptions, GRAPH_FUNCTIONS), (NNKOptions, NNK_FUNCTIONS)])
def test_every_field_is_a_parameter_of_every_function_with_the_same_default(cls, functions):
    for fn in functions:
        params = _params(fn)
        for field in dataclasses.fields(cls):
            assert field.name in params, f"{fn.__name__} lacks the option {field.name}"
            if field.default is not dataclasses.MISSING:
                assert params[field.name].default == field.default, (fn.__name__, field.name)


def test_the_tables_of_changes_cover_every_field():
    assert set(GRAPH_CHANGES) == set(GraphOptions.names())
    assert set(NNK_CHANGES) | {"k"} == set(NNKOptions.names())


@pytest.mark.parametrize("name", list(GRAPH_CHANGES))
def test_graph_options_give_the_keyword_graph_and_each_option_matters(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, 3, generator=g)
    mask = (torch.arange(4)[None, :] < torch.randint(1, 5, (10, 1), generator=g)).long()
    labels = torch.arange(10) % 3
    base = GraphOptions(**GRAPH_BASE)
    opts = base.replace(**{name: GRAPH_CHANGES[name]})
    kwargs = opts.kwargs()
    adj, edges = latent_adjacency(x, **kwargs, labels=labels, attention_mask=mask)
    o_adj, o_edges = opts.adjacency(x, labels, mask)
    assert torch.equal(adj, o_adj) and torch.equal(edges, o_edges)
    data, o_data = latent_graph(x, **kwargs, labels=labels, attention_mask=mask), opts.graph(x, labels, mask)
    assert torch.equal(data.edge_index, o_data.edge_index) and torch.equal(data.edge_weight, o_data.edge_weight)
    # the option reached the construction: the graph differs from the base one
    assert not torch.equal(base.adjacency(x, labels, mask)[0], adj)


@pytest.mark.parametrize("name", list(NNK_CHANGES))
def test_nnk_options_give_the_keyword_weights(name):
    x = torch.rand(30, 5, generator=torch.Generator().manual_seed(1))
    base = NNKOptions(k=6, **NNK_CONTEXT.get(name, {}))
    opts = base.replace(**{name: NNK_CHANGES[name]})
    res, o_res = nnk_weights(x, **opts.kwargs()), opts.weights(x)
    for a, b in ((res.neighbors, o_res.neighbors), (res.weights, o_res.weights), (res.residual, o_res.residual)):
        assert torch.equal(a, b)
    if name not in ("knn_backend", "chunk_size", "node_chunk"):  # memory layout only: the same weights
        assert not torch.equal(base.weights(x).weights, res.weights)
    g, o_g = nnk_graph(x, **opts.kwargs()), opts.graph(x)
    assert torch.equal(g.edge_index, o_g.edge_index) and torch.equal(g.edge_weight, o_g.edge_weight)


def test_unknown_option_names_are_refused_with_the_valid_ones():
    x, y = torch.rand(12, 3), torch.arange(12) % 2
    for make in (lambda: GraphOptions(kk=3), lambda: GraphOptions().replace(normalise="sym"),
                 lambda: NNKOptions(k=3, tool=1e-3), lambda: nnk_interpolation(x, y, 3, tool=1e-3),
                 lambda: channelwise_loo_errors(x[:, :, None], y, 3, tool=1e-3)):
        with pytest.raises(TypeError, match="valid options: .*'k'"):
            make()


@pytest.mark.parametrize("bad", [dict(power=0), dict(power=True), dict(symmetrize="min"), dict(self_loops="yes"),
                                 dict(sigma=-1.0), dict(k=0), dict(kernel="nope"), dict(reduce="max"),
                                 dict(mask="all"), dict(normalize="rw")])
def test_graph_options_validate_in_one_place(bad):
    with pytest.raises((TypeError, ValueError)):
        GraphOptions(**bad)
    with pytest.raises((TypeError, ValueError)):
        latent_adjacency(torch.rand(6, 3), **bad)


def test_label_variation_loss_takes_options_or_keywords():
    out = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 4
    assert torch.equal(LabelVariationLoss(k=5)(out, y), LabelVariationLoss(options=GraphOptions(k=5, kernel="rbf"))(out, y))
    # an option the keywords do not have reaches the loss: the normalized graph's weights differ
    normalized = LabelVariationLoss(options=GraphOptions(k=5, kernel="rbf", normalize="sym"))(out, y)
    adj = latent_adjacency(out, k=5, kernel="rbf", normalize="sym")[0]
    assert torch.allclose(normalized, (adj * (y[:, None] != y[None, :])).sum())
    with pytest.raises(ValueError, match="not both"):
        LabelVariationLoss(k=5, options=GraphOptions(k=5))


def test_gkd_takes_options_or_keywords():
    g = torch.Generator().manual_seed(3)
    t, s, y = torch.rand(12, 6, generator=g), torch.rand(12, 4, generator=g), torch.arange(12) % 3
    for order in ("authors", "paper"):
        kw = GKD(k=4, mask="inter", power=2, order=order)(t, s, y)
        opt = GKD(order=order, options=GraphOptions(k=4, mask="inter", power=2, normalize="sym"))(t, s, y)
        assert torch.equal(kw, opt)
    with pytest.raises(ValueError, match="symmetrize"):
        GKD(options=GraphOptions(symmetrize="mutual"))
    with pytest.raises(ValueError, match="not both"):
        GKD(k=3, options=GraphOptions(k=3))


def test_layer_metrics_take_options_or_keywords():
    pytest.importorskip("lightning")
    from geomlat.integrations.lightning import layer_metrics

    g = torch.Generator().manual_seed(4)
    feats = {"a": torch.rand(14, 5, generator=g), "b": torch.rand(14, 3, generator=g)}
    y = torch.arange(14) % 2
    kw = layer_metrics(feats, y, k=4, kernel="cosine", nnk_k=5)
    opt = layer_metrics(feats, y, graph_options=GraphOptions(k=4, kernel="cosine"),
                        nnk_options=NNKOptions(k=5, kernel="cosine"))
    assert kw == opt
    with pytest.raises(ValueError, match="not both"):
        layer_metrics(feats, y, k=4, graph_options=GraphOptions(k=4))
