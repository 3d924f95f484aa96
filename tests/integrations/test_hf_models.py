"""Hugging Face transformers and timm models (issue 14): LatentCapture on ModelOutputs, per-layer LGGs and
label variation, and a GKD step (Distiller) between two randomly initialized models of each kind (no
downloads). timm needs torchvision; where torchvision does not import (the CPU torch wheel with PyPI's CUDA
torchvision), the timm test is skipped and transformers' own ResNet stands in as the torchvision-free
convolutional model."""
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from geomlat import LatentCapture, latent_graph, pool_sequence  # noqa: E402
from geomlat.analysis import layer_label_variation  # noqa: E402
from geomlat.engine.train import Supervised, predict  # noqa: E402
from geomlat.losses import GKD, Distiller, HintonKD  # noqa: E402
from geomlat.signals import label_variation  # noqa: E402

B, T, C = 12, 10, 3


def _bert(hidden: int, layers: int, seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=T, num_labels=C,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _resnet(widths, seed: int):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=list(widths), depths=[1] * len(widths),
                       layer_type="basic", num_labels=C)
    return ResNetForImageClassification(cfg)


def _tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 60, (B, T), generator=g), torch.arange(B) % C


def test_bert_layers_captured_from_model_outputs():
    model = _bert(16, 2, seed=0).eval()
    ids, y = _tokens()
    layers = ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1", "bert.encoder", "bert"]
    with torch.no_grad(), LatentCapture(model, layers, detach=True) as feats:
        out = model(ids)
        ref = model(ids, output_hidden_states=True)
    # 'bert.encoder' and 'bert' return ModelOutputs: their last_hidden_state is selected
    hs = ref.hidden_states
    for name, want in zip(layers, [hs[0], hs[1], hs[2], hs[2], hs[2]]):
        assert feats[name].shape == (B, T, 16)
        torch.testing.assert_close(feats[name], want)
    torch.testing.assert_close(out.logits, ref.logits)
    # per-layer LGGs on the CLS token: layer_label_variation against label_variation of each LGG built here
    cls = {name: pool_sequence(f, mode="cls") for name, f in feats.items()}
    got = layer_label_variation(cls, y, k=4)
    for name, h in zip(layers, [hs[0], hs[1], hs[2], hs[2], hs[2]]):
        g = latent_graph(h[:, 0], k=4)
        want = float(label_variation(g, y, normalized=True))
        assert got[name] == pytest.approx(want, rel=1e-6)
        assert 0 < got[name] < 1
    # a field other than last_hidden_state, by name
    with torch.no_grad(), LatentCapture(model, ["bert"], select="pooler_output") as feats:
        model(ids)
    torch.testing.assert_close(feats["bert"], model.bert.pooler(hs[2]))


def test_bert_mean_pooling_over_the_attention_mask():
    model = _bert(16, 2, seed=0).eval()
    ids, _ = _tokens()
    mask = torch.ones(B, T, dtype=torch.long)
    mask[:, 6:] = 0
    with torch.no_grad(), LatentCapture(model, ["bert.encoder.layer.1"]) as feats:
        model(ids, attention_mask=mask)
    h = feats["bert.encoder.layer.1"]
    torch.testing.assert_close(pool_sequence(h, mask, mode="mean"), h[:, :6].mean(1))


def _check_gkd_step(student, teacher, x, y, pairs, ref_feats):
    """One Distiller step (GKD + Hinton KD): values against an independent computation from the models'
    hidden_states, finite gradients on every student parameter, none on the teacher, loss changes."""
    gkd = GKD(kernel="cosine_shifted")  # hidden states are signed
    dist = Distiller(student, teacher, {"gkd": (gkd, 25.0), "kd": (HintonKD(T=4.0), 1.0)}, pairs=pairs)
    dist.train()
    logits, losses = dist(x, y)
    with torch.no_grad():
        t_out = teacher(x, output_hidden_states=True)
    s_out = student(x, output_hidden_states=True)
    t_feats, s_feats = ref_feats(t_out, s_out)
    torch.testing.assert_close(logits, s_out.logits)
    torch.testing.assert_close(losses["task"], F.cross_entropy(s_out.logits, y))
    torch.testing.assert_close(losses["kd"], HintonKD(T=4.0)(t_out.logits, s_out.logits))
    torch.testing.assert_close(losses["gkd"], 25.0 * gkd(t_feats, s_feats))
    assert float(losses["gkd"].detach()) > 0
    total = sum(losses.values())
    opt = torch.optim.SGD(student.parameters(), lr=0.05)
    opt.zero_grad()
    total.backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(p.grad is None for p in teacher.parameters())
    opt.step()
    _, after = dist(x, y)
    assert float(sum(after.values()).detach()) != float(total.detach())


def test_gkd_step_between_two_berts():
    teacher, student = _bert(32, 3, seed=1), _bert(16, 2, seed=2)
    ids, y = _tokens()
    pairs = [("bert.encoder.layer.2", "bert.encoder.layer.1"), ("bert", "bert")]  # 'bert': last_hidden_state

    def ref(t_out, s_out):
        return [t_out.hidden_states[3], t_out.hidden_states[3]], [s_out.hidden_states[2], s_out.hidden_states[2]]

    _check_gkd_step(student, teacher, ids, y, pairs, ref)


def test_supervised_and_predict_on_a_bert():
    model = _bert(16, 2, seed=0)
    ids, y = _tokens()
    out, losses = Supervised(model)(ids, y)
    torch.testing.assert_close(losses["task"], F.cross_entropy(model(ids).logits, y))
    ds = torch.utils.data.TensorDataset(ids, y)
    model.eval()
    torch.testing.assert_close(predict(model, ds, batch_size=5), model(ids).logits.argmax(1))


def test_gkd_step_between_two_resnets_from_transformers():
    """The torchvision-free convolutional equivalent of a timm model: transformers' ResNet."""
    teacher, student = _resnet((16, 32), seed=1), _resnet((8, 16), seed=2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(B, 1, 16, 16, generator=g), torch.arange(B) % C
    layers = ["resnet.encoder.stages.0", "resnet.encoder.stages.1", "resnet"]
    student.eval()
    with torch.no_grad(), LatentCapture(student, layers, detach=True) as feats:
        ref = student(x, output_hidden_states=True)
    for name, want in zip(layers, ref.hidden_states[1:] + (ref.hidden_states[-1],)):
        torch.testing.assert_close(feats[name], want)
    got = layer_label_variation(feats, y)
    for name in layers:
        assert got[name] == pytest.approx(float(label_variation(latent_graph(feats[name]), y, normalized=True)), rel=1e-6)
    pairs = [("resnet.encoder.stages.0", "resnet.encoder.stages.0"), ("resnet.encoder.stages.1", "resnet.encoder.stages.1")]

    def ref_feats(t_out, s_out):
        return list(t_out.hidden_states[1:3]), list(s_out.hidden_states[1:3])

    _check_gkd_step(student.train(), teacher, x, y, pairs, ref_feats)


def _import_timm():
    try:
        import timm
    except Exception as exc:  # torchvision missing, or a CUDA torchvision wheel that cannot load with CPU torch
        pytest.skip(f"timm does not import here ({type(exc).__name__}: {str(exc)[:120]}); "
                    "transformers' ResNet is tested instead")
    return timm


def test_gkd_step_between_two_timm_models():
    timm = _import_timm()
    torch.manual_seed(1)
    teacher = timm.create_model("resnet18", pretrained=False, num_classes=C, in_chans=1)
    torch.manual_seed(2)
    student = timm.create_model("resnet10t", pretrained=False, num_classes=C, in_chans=1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(B, 1, 32, 32, generator=g), torch.arange(B) % C
    pairs = [("layer3", "layer3"), ("layer4", "layer4")]
    dist = Distiller(student, teacher, {"gkd": (GKD(), 25.0), "kd": (HintonKD(), 1.0)}, pairs=pairs)
    logits, losses = dist(x, y)
    with torch.no_grad(), LatentCapture(teacher, ["layer3", "layer4"]) as t_feats:
        teacher(x)
    s3 = student.layer3(student.layer2(student.layer1(student.maxpool(student.act1(student.bn1(student.conv1(x)))))))
    torch.testing.assert_close(losses["gkd"], 25.0 * GKD()([t_feats["layer3"], t_feats["layer4"]], [s3, student.layer4(s3)]))
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    assert layer_label_variation({"layer4": t_feats["layer4"]}, y)["layer4"] > 0
