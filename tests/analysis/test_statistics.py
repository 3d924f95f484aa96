"""CMI scores and paired differences against independent computations (scikit-learn / SciPy, a loop rewrite of
the PGDL scoring program's tables)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import mutual_info_score

from geomlat.analysis.statistics import conditional_mutual_information, paired_difference, pgdl_cmi


def _grid(seed=0, noise=0.5):
    """12 models on a complete 2 x 3 x 2 grid; gap depends on the axes, measure = gap + noise."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product([0, 1], [10, 20, 30], ["x", "y"]))
    axes = {"a": [c[0] for c in combos], "b": [c[1] for c in combos], "c": [c[2] for c in combos]}
    gap = np.array([c[0] + 0.01 * c[1] for c in combos]) + 0.3 * rng.standard_normal(len(combos))
    measure = gap + noise * rng.standard_normal(len(combos))
    return measure, gap, axes


def _brute_cmi(measure, gap, axes, subset):
    """Sum over cells u of p(u) MI(V_g; V_mu | u) / sum_u p(u) H(V_g | u), from explicit pair lists."""
    m = len(measure)
    cells = {}
    for i in range(m):
        for j in range(m):
            if i != j:
                u = tuple((axes[s][i], axes[s][j]) for s in subset)
                cells.setdefault(u, []).append((np.sign(gap[i] - gap[j]), np.sign(measure[i] - measure[j])))
    total = m * (m - 1)
    mi = sum(len(v) / total * mutual_info_score([a for a, _ in v], [b for _, b in v]) for v in cells.values())
    h = sum(len(v) / total * stats.entropy(np.unique([a for a, _ in v], return_counts=True)[1]) for v in cells.values())
    return mi / h


def test_cmi_matches_brute_force_per_conditioning_set():
    measure, gap, axes = _grid()
    out = conditional_mutual_information(measure, gap, axes, max_set=2)
    assert len(out["per_set"]) == 1 + 3 + 3
    for subset, value in out["per_set"].items():
        assert value == pytest.approx(_brute_cmi(measure, gap, axes, subset), abs=1e-12)
    assert out["score"] == pytest.approx(min(out["per_set"].values()))
    assert out["per_set"][out["argmin"]] == out["score"]


def test_cmi_extremes_and_sign_invariance():
    measure, gap, axes = _grid(noise=0.0)
    assert conditional_mutual_information(gap, gap, axes)["score"] == pytest.approx(1.0)
    assert conditional_mutual_information(-gap, gap, axes)["score"] == pytest.approx(1.0)
    assert conditional_mutual_information(np.zeros_like(gap), gap, axes)["score"] == pytest.approx(0.0)
    noisy, _, _ = _grid(noise=0.5)
    a = conditional_mutual_information(noisy, gap, axes)["score"]
    assert a == pytest.approx(conditional_mutual_information(-noisy, gap, axes)["score"])
    assert 0.0 < a < 1.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 1), st.integers(0, 2)), min_size=3, max_size=14))
def test_cmi_bounded(rows):
    measure = [r[0] for r in rows]
    gap = [r[1] for r in rows]
    axes = {"p": [r[2] for r in rows], "q": [r[3] for r in rows]}
    out = conditional_mutual_information(measure, gap, axes)
    for v in out["per_set"].values():
        assert math.isnan(v) or -1e-12 <= v <= 1 + 1e-12
    if not math.isnan(out["score"]):
        assert out["score"] == pytest.approx(_brute_cmi(measure, gap, axes, out["argmin"]), abs=1e-12)


def _pgdl_program(measure, gap, axes):
    """Loop rewrite of the PGDL scoring program's table: all ordered pairs (with i == j), '+' iff strictly greater,
    cells = every (value of model 1, value of model 2) of both hyperparameters, unweighted means, log2."""
    names = list(axes)
    possible = {n: sorted(set(axes[n]), key=str) for n in names}
    best = math.inf
    for h1, h2 in itertools.permutations(names, 2):
        keys = [(a, b, c, d) for a in possible[h1] for b in possible[h1] for c in possible[h2] for d in possible[h2]]
        table = {k: np.zeros((2, 2)) for k in keys}
        for i in range(len(measure)):
            for j in range(len(measure)):
                k = (axes[h1][i], axes[h1][j], axes[h2][i], axes[h2][j])
                table[k][0 if gap[i] > gap[j] else 1, 0 if measure[i] > measure[j] else 1] += 1
        mis, hs = [], []
        for t in table.values():
            p = t / t.sum()
            pa, pb = p.sum(1), p.sum(0)
            mis.append(sum(p[x, y] * math.log2(p[x, y] / (pa[x] * pb[y])) for x in range(2) for y in range(2) if p[x, y] > 0))
            hs.append(-sum(q * math.log2(q) for q in pa if q > 0))
        best = min(best, np.mean(mis) / np.mean(hs))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgdl_cmi_matches_scoring_program_rewrite(seed):
    measure, gap, axes = _grid(seed=seed)
    assert pgdl_cmi(measure, gap, axes) == pytest.approx(_pgdl_program(measure, gap, axes), abs=1e-12)


def test_pgdl_cmi_differs_from_jiang_weighting():
    """The two variants are different statistics (diagonal pairs, tie rule, weighting): not equal in general."""
    measure, gap, axes = _grid(seed=3)
    jiang = conditional_mutual_information(measure, gap, axes)["per_set"]
    pairs = [s for s in jiang if len(s) == 2]
    assert pgdl_cmi(measure, gap, axes) != pytest.approx(min(jiang[s] for s in pairs), abs=1e-6)


def test_paired_difference_t_matches_scipy():
    rng = np.random.default_rng(0)
    base = rng.normal(5, 1, 7)
    meth = base - 0.4 + 0.3 * rng.standard_normal(7)
    out = paired_difference(meth, base, method="t")
    ref = stats.ttest_rel(meth, base)
    ci = ref.confidence_interval(0.95)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert (out["lo"], out["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert out["mean"] == pytest.approx(float(np.mean(meth - base)))


def test_paired_difference_bootstrap_matches_scipy_percentile():
    rng = np.random.default_rng(1)
    base = rng.normal(5, 1, 10)
    meth = base + rng.normal(0.5, 0.5, 10)
    out = paired_difference(meth, base, n_boot=20000, seed=3)
    ref = stats.bootstrap((meth - base,), np.mean, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    assert out["lo"] == pytest.approx(ref.low, abs=0.03)
    assert out["hi"] == pytest.approx(ref.high, abs=0.03)
    assert out == paired_difference(meth, base, n_boot=20000, seed=3)  # seeded


def test_paired_difference_constant_and_errors():
    out = paired_difference([3.0, 4.0, 5.0], [2.0, 3.0, 4.0])
    assert (out["mean"], out["lo"], out["hi"], out["p"]) == (1.0, 1.0, 1.0, 0.0)
    assert paired_difference([1.0, 2.0], [1.0, 2.0], method="t")["p"] == 1.0
    with pytest.raises(ValueError, match="one per seed"):
        paired_difference([1.0], [2.0])
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference([1.0, float("nan")], [2.0, 1.0])
    with pytest.raises(ValueError, match="method"):
        paired_difference([1.0, 2.0], [2.0, 1.0], method="z")
    with pytest.raises(ValueError, match="axis 'a' has 2 values for 3 models"):
        conditional_mutual_information([1, 2, 3], [1, 2, 3], {"a": [0, 1]})


def test_cmi_ids_leave_out_copies_of_one_model():
    """A resample with copies: with ids, the score equals the one of the distinct models' pairs counted with
    multiplicity; without, the copies' tied pairs raise it."""
    measure, gap, axes = _grid(seed=4)
    idx = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    sub = {a: [v[k] for k in idx] for a, v in axes.items()}
    with_ids = conditional_mutual_information(measure[idx], gap[idx], sub, ids=idx)["per_set"][()]
    plain = conditional_mutual_information(measure[idx], gap[idx], sub)["per_set"][()]
    pairs = [(a, b) for a in range(len(idx)) for b in range(len(idx)) if idx[a] != idx[b]]
    v_g = [np.sign(gap[idx[a]] - gap[idx[b]]) for a, b in pairs]
    v_m = [np.sign(measure[idx[a]] - measure[idx[b]]) for a, b in pairs]
    assert with_ids == pytest.approx(mutual_info_score(v_g, v_m) / stats.entropy(np.unique(v_g, return_counts=True)[1]))
    assert plain > with_ids
