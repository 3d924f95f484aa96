"""torch.compile: inside deferred_value_checks (the engine's mode) every loss, latent_adjacency and each
objective's forward trace into one graph (0 graph breaks by torch._dynamo.explain; fullgraph=True compiles),
compiled values and gradients equal the eager ones, the deferred checks still fire from compiled code, and a
training loop does not recompile from step to step."""
import copy
import pickle

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn

from geomlat.checks import deferred_value_checks
from geomlat.graphs import latent_adjacency, latent_graph
from geomlat.losses.distill import GKD, FitNet, HintonKD, RKDAngle, RKDDistance, SimilarityPreserving
from geomlat.losses.embedding import LabelVariationLoss
from geomlat.losses.regularizers import SmoothnessRegularizer
from geomlat.objectives import BottleneckCrossEntropy, Distiller, LabelVariationObjective, SmoothnessObjective, Supervised

B = 12
#: the per-function tests trace forward and backward through AOTAutograd (functionalization, the effectful
#: check op) without Inductor's code generation, minutes on a 2-core machine; Inductor itself runs in the
#: training-step, check and latent_graph tests and in benchmarks/bench_compile.py
BACKEND = "aot_eager"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    dynamo.reset()
    yield
    dynamo.reset()


def _feats(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = [torch.rand(B, 4, 3, 3, generator=g), torch.rand(B, 10, generator=g)]
    s = [torch.rand(B, 2, 3, 3, generator=g).requires_grad_(), torch.rand(B, 6, generator=g).requires_grad_()]
    return t, s, torch.arange(B) % 3


def _loss_cases():
    t, s, y = _feats()
    signed = torch.randn(B, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
    logits = torch.randn(2, B, 4, generator=torch.Generator().manual_seed(2))
    return {
        "gkd_authors_inter_knn": (GKD(k=4, mask="inter", power=2), (t, s, y)),
        "gkd_paper_knn": (GKD(k=4, order="paper", mask="intra"), (t, s, y)),
        "gkd_paper_rbf_full": (GKD(order="paper", kernel="rbf"), (t, s, y)),
        "rkd_d": (RKDDistance(), (t, s, y)),
        "rkd_a": (RKDAngle(), (t, s, y)),
        "sp": (SimilarityPreserving(), (t, s, y)),
        "fitnet": (FitNet([2, 6], [4, 10]), (t, s, y)),
        "hinton": (HintonKD(), (logits[0], logits[1].requires_grad_(), y)),
        "label_variation": (LabelVariationLoss(k=4), (signed, y)),
        "label_variation_normalized_full": (LabelVariationLoss(normalized=True), (signed, y)),
        "smoothness_full": (SmoothnessRegularizer(num_classes=3), ([s[0], s[1]], y)),
        "smoothness_knn_normalized": (SmoothnessRegularizer(k=4, normalized=True, num_classes=3), ([s[0], s[1]], y)),
        "latent_adjacency_auto_signed": (lambda x: latent_adjacency(x, k=4)[0], (signed,)),
        "latent_adjacency_auto_nonneg": (lambda x: latent_adjacency(x, k=4, normalize="sym", power=2)[0], (s[1],)),
    }


def _grads(value, args):
    leaves = [a for a in _flat(args) if a.requires_grad]
    return torch.autograd.grad(value, leaves) if leaves else ()


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        elif torch.is_tensor(a):
            yield a


@pytest.mark.parametrize("name", list(_loss_cases()))
def test_losses_compile_into_one_graph_with_the_eager_values(name):
    """0 graph breaks, and fullgraph=True gives the eager value and gradients."""
    fn, args = _loss_cases()[name]
    with deferred_value_checks() as checks:
        explained = dynamo.explain(fn)(*args)
        assert explained.graph_break_count == 0, [str(r.reason).splitlines()[0] for r in explained.break_reasons]
        assert explained.graph_count == 1
        dynamo.reset()
        eager = fn(*args)
        # FitNet's projection over dim 1 (movedim then Linear): aot_eager's backward views a non-contiguous
        # gradient (a torch bug of that debug backend); Inductor compiles it
        backend = "inductor" if name == "fitnet" else BACKEND
        compiled = torch.compile(fn, fullgraph=True, backend=backend)(*args)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
        for got, want in zip(_grads(compiled.sum(), args), _grads(eager.sum(), args)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        recorded = len(checks)
    assert recorded > 0 or name in ("hinton", "fitnet")  # compiled checks recorded (and passed on exit); KD and FitNet have none


def test_compiled_deferred_checks_fire_with_the_immediate_message():
    """A NaN student feature and a negative label: nothing raised by the compiled call, the verification
    raises the immediate check's message, naming the step that was current when the compiled code ran."""
    t, s, y = _feats()
    bad = [s[0].detach().clone(), s[1].detach()]
    bad[0][3, 1, 0, 0] = float("nan")
    loss = GKD(mask="inter")
    with pytest.raises(ValueError) as immediate:
        loss(t, bad, y)
    compiled = torch.compile(loss, fullgraph=True)
    with deferred_value_checks(verify_on_exit=False) as checks:
        checks.step = 0
        compiled(t, s, y)
        checks.step = 1
        compiled(t, bad, y)  # no error yet, no host read
        with pytest.raises(ValueError) as deferred:
            checks.verify()
        checks.step = 2
        compiled(t, s, y.clone().fill_(-1))
        assert checks.failure()[0] == 2
    assert str(deferred.value) == str(immediate.value)
    assert "step 1" in " ".join(deferred.value.__notes__)


def test_compiled_overflow_check_names_the_overflow():
    """The kernels' overflow test of squared norms (a host read outside deferred checks) is a recorded
    device-side check in compiled code."""
    x = torch.rand(B, 8)
    fn = torch.compile(lambda x: latent_adjacency(x, k=4, kernel="cosine")[0], fullgraph=True)
    with deferred_value_checks(verify_on_exit=False) as checks:
        fn(x)
        checks.verify()
        fn(x * 1e19)
        with pytest.raises(ValueError, match="overflow or underflow"):
            checks.verify()


def test_auto_kernel_under_deferred_checks_matches_the_immediate_choice():
    """kernel='auto' without a host read (torch.where of cosine and RBF) gives the graph of the immediate
    choice on non-negative and on signed data."""
    for x in (torch.rand(B, 5), torch.randn(B, 5)):
        want = latent_adjacency(x, k=4)
        with deferred_value_checks():
            got = latent_adjacency(x, k=4)
        torch.testing.assert_close(got[0], want[0])
        assert torch.equal(got[1], want[1])


def _mlp(h, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 3))


def _objectives():
    return {
        "supervised": lambda: Supervised(_mlp(8, 0)),
        "label_variation_ce": lambda: LabelVariationObjective(_mlp(8, 0), ce_weight=0.5),
        "bottleneck": lambda: BottleneckCrossEntropy(nn.Linear(6, 2), 3, embed_dim=2),
        "smoothness": lambda: SmoothnessObjective(_mlp(8, 0), ["1", "3"]),
        "distiller_gkd_hinton": lambda: Distiller(_mlp(8, 0), _mlp(16, 1), {"gkd": (GKD(), 5.0), "kd": (HintonKD(), 0.5)},
                                                  pairs=[("1", "1"), ("3", "3")]),
        "distiller_fitnet_rkd": lambda: Distiller(_mlp(8, 0), _mlp(16, 1), {"fit": (FitNet([8], [16]), 1.0),
                                                                             "rkd": (RKDDistance(), 1.0)}, pairs=[("3", "3")]),
    }


@pytest.mark.parametrize("name", list(_objectives()))
def test_objective_forward_compiles_into_one_graph_with_the_eager_losses(name):
    objective = _objectives()[name]()
    x, y = torch.randn(B, 6, generator=torch.Generator().manual_seed(3)), torch.arange(B) % 3
    with deferred_value_checks():
        explained = dynamo.explain(objective)(x, y)
        assert explained.graph_break_count == 0, [str(r.reason).splitlines()[0] for r in explained.break_reasons]
        dynamo.reset()
        out, losses = objective(x, y)
        c_out, c_losses = torch.compile(objective, fullgraph=True, backend=BACKEND)(x, y)
    torch.testing.assert_close(c_out, out, rtol=1e-4, atol=1e-6)
    assert c_losses.keys() == losses.keys()
    for key in losses:
        torch.testing.assert_close(c_losses[key], losses[key], rtol=1e-4, atol=1e-6)


def test_compiled_training_steps_do_not_recompile_and_follow_eager():
    """Five GKD + KD distillation steps, compiled vs eager from the same weights, over two deferred-check
    blocks with verifications between: one compiled graph pair (no recompilation per step or per block),
    and the same weights at the end."""
    from torch._dynamo.utils import counters

    def run(compiled: bool):
        objective = _objectives()["distiller_gkd_hinton"]()
        step_fn = torch.compile(objective, fullgraph=True) if compiled else objective
        opt = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.05)
        g = torch.Generator().manual_seed(4)
        for block in range(2):
            with deferred_value_checks(verify_on_exit=False) as checks:
                for step in range(3 if block == 0 else 2):
                    checks.step = step
                    x, y = torch.randn(B, 6, generator=g), torch.randint(0, 3, (B,), generator=g)
                    _, losses = step_fn(x, y)
                    sum(losses.values()).backward()
                    opt.step()
                    opt.zero_grad()
                    if step % 2 == 1:
                        checks.verify()
        return [p.detach().clone() for p in objective.model.parameters()]

    counters.clear()
    compiled = run(True)
    assert counters["stats"]["unique_graphs"] == 1
    for got, want in zip(compiled, run(False)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_latent_graph_compiles_to_the_adjacency_graph_and_its_edge_list():
    """latent_graph = latent_adjacency (one graph, fullgraph) + a data-dependent edge list
    (``nonzero``) + PyG's Data. The edge list compiles with dynamo's capture_dynamic_output_shape_ops;
    building Data does not trace (its attribute machinery): compiled without fullgraph, latent_graph
    gives the eager graph."""
    x = torch.rand(B, 7)
    want = latent_graph(x, k=4, normalize="sym")
    with deferred_value_checks():
        got = torch.compile(lambda x: latent_graph(x, k=4, normalize="sym"))(x)
        assert torch.equal(got.edge_index, want.edge_index)
        torch.testing.assert_close(got.edge_weight, want.edge_weight)

        def edge_list(x):
            adj, edges = latent_adjacency(x, k=4, normalize="sym")
            index = edges.nonzero().T
            return index, adj[index[0], index[1]]

        with dynamo.config.patch(capture_dynamic_output_shape_ops=True):
            index, weight = torch.compile(edge_list, fullgraph=True)(x)
    assert torch.equal(index, want.edge_index)
    torch.testing.assert_close(weight, want.edge_weight)


def test_objective_capture_hooks_are_idle_outside_forward_and_travel_with_the_model():
    """The objectives' capture hooks (registered once: hook registration breaks a compiled graph) keep no
    tensor outside forward, still see a hook registered later that replaces an output (eager), and leave the
    model picklable and deep-copyable."""
    objective = _objectives()["distiller_gkd_hinton"]()
    x, y = torch.randn(B, 6), torch.arange(B) % 3
    objective.model(x)
    assert objective._student_taps.outputs == {}
    _, before = objective(x, y)
    assert objective._student_taps.outputs == {} and objective._teacher_taps.outputs == {}
    handle = objective.model[1].register_forward_hook(lambda m, i, out: out * 0)  # every later feature zero
    _, after = objective(x, y)
    handle.remove()
    assert before["gkd"] > 0 and after["gkd"] != before["gkd"]
    copied = copy.deepcopy(objective)
    pickle.loads(pickle.dumps(objective.model))
    _, again = copied(x, y)
    torch.testing.assert_close(again["gkd"], before["gkd"])
    assert objective._student_taps.outputs == {}
