"""Models: parameter counts against independent formulas / published values, named post-ReLU stages,
equivalence of the WideResNet with the reference (official) WRN forward pass, registry errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geomlat import LatentCapture
from geomlat.models import (
    MLP,
    MODELS,
    Conv1dNet,
    PreActResNet18,
    ResNet18,
    SmallCNN,
    WideResNet,
    build_model,
    count_parameters,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine is small and shared: intra-op threads only add contention for these tiny models
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- independent parameter formulas
def _bn(c):
    return 2 * c


def wrn_formula(depth, width, num_classes=10, in_channels=3, variant="preact"):
    """Parameters of the reference pre-activation WRN (Zagoruyko & Komodakis), counted by hand."""
    n = (depth - 4) // 6
    chans = [16] + [max(1, round(c * width)) for c in (16, 32, 64)]
    total = 9 * in_channels * 16 + (_bn(16) if variant == "post" else 0)
    for s in range(3):
        for b in range(n):
            c_in, c_out = (chans[s] if b == 0 else chans[s + 1]), chans[s + 1]
            stride = 2 if (b == 0 and s > 0) else 1
            total += 9 * c_in * c_out + _bn(c_out) + 9 * c_out * c_out
            if variant == "preact":
                total += _bn(c_in)  # every block has a BN on its input (official code: bn1 of width c_in)
                total += c_in * c_out if (c_in != c_out or stride != 1) else 0
            else:
                total += _bn(c_out)  # second BN
                total += c_in * c_out + _bn(c_out) if (c_in != c_out or stride != 1) else 0
    if variant == "preact":
        total += _bn(chans[3])  # final BN
    return total + chans[3] * num_classes + num_classes


def resnet18_formula(width=64, num_classes=10, preact=False):
    chans = [width, width, 2 * width, 4 * width, 8 * width]
    total = 27 * width + (0 if preact else _bn(width))
    for s in range(4):
        for b in range(2):
            c_in, c_out = (chans[s] if b == 0 else chans[s + 1]), chans[s + 1]
            proj = b == 0 and s > 0
            total += 9 * c_in * c_out + 9 * c_out * c_out + _bn(c_in if preact else c_out) + _bn(c_out)
            if proj:
                total += c_in * c_out + (0 if preact else _bn(c_out))
    total += _bn(8 * width) if preact else 0  # final BN of the pre-activation network
    return total + 8 * width * num_classes + num_classes


def smallcnn_formula(w, num_classes=10, in_channels=1):
    return 9 * in_channels * w + 9 * w * 2 * w + 9 * 2 * w * 4 * w + _bn(w) + _bn(2 * w) + _bn(4 * w) + 4 * w * num_classes + num_classes


def conv1d_formula(w, num_classes=10, in_channels=1):
    return 5 * in_channels * w + 3 * w * 2 * w + 3 * 2 * w * 4 * w + _bn(w) + _bn(2 * w) + _bn(4 * w) + 4 * w * num_classes + num_classes


@pytest.mark.parametrize("variant", ["preact", "post"])
@pytest.mark.parametrize("depth,width", [(28, 1.0), (28, 0.5), (16, 2.0), (10, 0.25), (22, 1.5)])
def test_wrn_parameter_count_matches_formula(depth, width, variant):
    with torch.device("meta"):
        model = WideResNet(depth, width, variant=variant)
    assert count_parameters(model) == wrn_formula(depth, width, variant=variant)


def test_wrn_published_sizes_and_student_ratio():
    with torch.device("meta"):
        # WRN-28-10 on CIFAR-10: 36.5M parameters in Zagoruyko & Komodakis (2016), 36,479,194 exactly
        assert count_parameters(WideResNet(28, 10)) == 36_479_194
        teacher, student = count_parameters(WideResNet(28, 1)), count_parameters(WideResNet(28, 0.5))
    assert 0.36e6 < teacher < 0.38e6  # "WRN-28-1 ~0.37M"
    # the GKD paper's student: "roughly 4 times less parameters" (listed as 27%)
    assert 0.24 < student / teacher < 0.28


@pytest.mark.parametrize("preact", [False, True])
def test_resnet18_parameter_count(preact):
    cls = PreActResNet18 if preact else ResNet18
    with torch.device("meta"):
        assert count_parameters(cls()) == resnet18_formula(preact=preact)
        assert count_parameters(cls(width=8, num_classes=3)) == resnet18_formula(8, 3, preact=preact)
    if not preact:  # the usual CIFAR ResNet18 (kuangliu/pytorch-cifar) has 11,173,962 parameters
        assert resnet18_formula() == 11_173_962


@pytest.mark.parametrize("w", [4, 8, 16, 64])
def test_small_models_parameter_count(w):
    assert count_parameters(SmallCNN(w)) == smallcnn_formula(w)
    assert count_parameters(Conv1dNet(w)) == conv1d_formula(w)
    mlp = MLP((1, 8, 8), hidden=(w, 2 * w), num_classes=10)
    assert count_parameters(mlp) == (64 * w + w) + (w * 2 * w + 2 * w) + (2 * w * 10 + 10)


def test_count_parameters_ignores_frozen():
    model = SmallCNN(4)
    total = count_parameters(model)
    for p in model.stage1.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == total - sum(p.numel() for p in model.stage1.parameters())
    with pytest.raises(TypeError):
        count_parameters(torch.zeros(3))


# ---------------------------------------------------------------- named outputs
CASES = [  # CIFAR models on 16x16 inputs to keep the test fast (any size works with global pooling)
    ("wrn", dict(depth=10, width=0.5), (3, 16, 16), [(8, 16, 16), (16, 8, 8), (32, 4, 4)], 32),
    ("wrn", dict(depth=10, width=0.5, variant="post"), (3, 16, 16), [(8, 16, 16), (16, 8, 8), (32, 4, 4)], 32),
    ("resnet18", dict(width=4), (3, 16, 16), [(4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)], 32),
    ("preact_resnet18", dict(width=4), (3, 16, 16), [(4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)], 32),
    ("small_cnn", dict(width=4), (1, 8, 8), [(4, 8, 8), (8, 4, 4), (16, 2, 2)], 16),
    ("conv1d", dict(width=4), (1, 40), [(4, 40), (8, 20), (16, 10)], 16),
    ("mlp", dict(in_features=(1, 8, 8), hidden=(12, 7)), (1, 8, 8), [(12,), (7,)], 7),
]


@pytest.mark.parametrize("name,kwargs,input_shape,stage_shapes,feat_dim", CASES)
@pytest.mark.parametrize("out_dim", [None, 2])
def test_named_outputs_are_post_relu(name, kwargs, input_shape, stage_shapes, feat_dim, out_dim):
    torch.manual_seed(0)
    model = build_model(name, out_dim=out_dim, **kwargs)
    expected_out = 10 if out_dim is None else 2
    assert model.output_dim == expected_out
    # relu_names lists exactly the ReLU modules, none in-place, each its own instance
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert model.relu_names == relus and len(relus) >= len(model.stage_names)
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert len({id(dict(model.named_modules())[n]) for n in relus}) == len(relus)

    x = torch.randn(6, *input_shape)
    names = list(dict.fromkeys(model.stage_names + [model.feature_name] + model.relu_names))
    with LatentCapture(model, names) as capture:
        out = model(x)
    assert out.shape == (6, expected_out)
    for stage, shape in zip(model.stage_names, stage_shapes):
        assert capture[stage].shape == (6, *shape)
    for n in names:  # every captured output exists (each ReLU ran) and is non-negative
        assert (capture[n] >= 0).all(), n
        assert capture[n].abs().sum() > 0, n
    feats = capture[model.feature_name]
    assert feats.shape == (6, feat_dim)
    # the features are the spatial mean of the last stage, and the head is linear in them
    last = capture[model.stage_names[-1]]
    torch.testing.assert_close(feats, last.flatten(2).mean(-1) if last.dim() > 2 else last)
    torch.testing.assert_close(out, model.fc(feats))
    # gradients reach the first layer in training mode
    out.square().sum().backward()
    first = next(p for p in model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_wrn_relu_count():
    # WRN-28: 12 blocks with 2 ReLUs, minus the 2 moved to the ends of stages 1 and 2, plus 3 stage ReLUs
    assert len(WideResNet(28, 0.5).relu_names) == 12 * 2 - 2 + 3
    assert len(ResNet18(width=2).relu_names) == 1 + 8 * 2


def _reference_wrn_forward(model: WideResNet, x):
    """The official WRN forward (szagoruyko/xternalz layout) written functionally with the model's weights:
    in every block, ``equalInOut`` decides whether the shortcut sees the raw or the activated input, and the
    block's own bn1/relu are applied to its input; the network ends with bn + relu + pool + fc."""

    def bn(mod, t):
        return F.batch_norm(t, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0.0, mod.eps)

    stages = [model.stage1, model.stage2, model.stage3]
    out = F.conv2d(x, model.conv1.weight, padding=1)
    for s, stage in enumerate(stages):
        blocks = [m for k, m in stage.named_children() if k.startswith("block")]
        for b, block in enumerate(blocks):
            # official bn1 of this block: in our model it is the block's bn1, or the previous stage's final bn
            bn1 = block.bn1 if block.preact else stages[s - 1].bn
            equal = block.shortcut is None
            act = F.relu(bn(bn1, out))
            h = F.conv2d(act, block.conv1.weight, stride=block.conv1.stride, padding=1)
            h = F.conv2d(F.relu(bn(block.bn2, h)), block.conv2.weight, padding=1)
            short = out if equal else F.conv2d(act, block.shortcut.weight, stride=block.shortcut.stride)
            out = h + short
    out = F.relu(bn(model.stage3.bn, out))
    return F.linear(out.mean((2, 3)), model.fc.weight, model.fc.bias)


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_wrn_equals_reference_forward(width):
    torch.manual_seed(1)
    model = WideResNet(16, width).double()
    # non-trivial BN statistics so that a misplaced BN would change the result
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model(x), _reference_wrn_forward(model, x))


def test_registry_and_argument_errors():
    assert set(MODELS) == {"wrn", "resnet18", "preact_resnet18", "small_cnn", "conv1d", "mlp"}
    with pytest.raises(KeyError, match="small_cnn"):
        build_model("vgg")
    with pytest.raises(TypeError, match="small_cnn"):
        build_model("small_cnn", depth=3)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=27)
    with pytest.raises(ValueError, match="width"):
        WideResNet(width=0)
    with pytest.raises(ValueError, match="out_dim"):
        SmallCNN(out_dim=0)
    with pytest.raises(ValueError, match="variant"):
        WideResNet(variant="resnext")
    with pytest.raises(ValueError, match="hidden"):
        MLP(10, hidden=())
    with pytest.raises(ValueError, match="input features"):
        MLP(10)(torch.randn(2, 11))
    with pytest.raises(ValueError, match="signals"):
        Conv1dNet()(torch.randn(2, 1, 8, 8))


def test_width_changes_capacity_of_small_models():
    teacher, student = SmallCNN(width=32), SmallCNN(width=4)
    assert count_parameters(teacher) > 40 * count_parameters(student)
    assert build_model("small_cnn").width == 16 and build_model("conv1d").width == 16
