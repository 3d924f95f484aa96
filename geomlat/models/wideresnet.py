"""CIFAR WideResNet (Zagoruyko & Komodakis 2016), pre-activation, fractional widths allowed."""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .blocks import BasicBlock, PreActBlock, conv3x3, init_cifar_weights
from .common import check_positive_int, find_relu_names, output_size, pooled_features, scaled_width


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 inputs, the teacher/student of the GKD paper (WRN-28-1 and WRN-28-0.5).

    Layout: 3x3 stem conv (16 channels, not scaled) -> ``stage1..3``, each of n = (depth - 4) / 6
    pre-activation blocks with ``round(16w), round(32w), round(64w)`` channels (stride 1, 2, 2), each stage
    ending with BN + ReLU -> ``pool`` (global average, flatten) -> ``fc``. This is the reference WRN
    function exactly (see :class:`PreActBlock` for why the BN + ReLU sit at the end of a stage), and makes
    every stage output post-activation. WRN-28-1 has 369,498 parameters (CIFAR-10).

    Args:
        depth: 6n + 4 (28 -> 4 blocks per stage).
        width: widening factor k, may be fractional (0.5 -> 8/16/32 channels).
        num_classes: classes of the classification output.
        in_channels: input channels (3 for CIFAR).
        out_dim: if given, the last layer outputs an ``out_dim`` embedding instead of class scores.
        dropout: dropout probability between the two convolutions of a block (reference default 0;
            ``variant="preact"`` only).
        variant: ``"preact"`` (default) the reference WRN above; ``"post"`` the layout of the GKD authors'
            code (``PreActWideResNet`` in cadurosar/graph_kd, despite its name): stem conv-BN-ReLU, then
            post-activation :class:`BasicBlock` s (BN'd 1x1 projection shortcuts), no final BN. Stage
            outputs are post-ReLU in both. WRN-28-1: 369,690 parameters. Width 0.5 keeps ~25.5% of the
            parameters in both variants (the papers round this to "27%", "roughly 4 times less").

    Shapes: forward (B, in_channels, H, W) -> (B, output_dim); ``stage{i}`` outputs (B, C_i, H_i, W_i) >= 0,
    ``pool`` outputs (B, round(64w)) >= 0.
    """

    def __init__(
        self,
        depth: int = 28,
        width: float = 1.0,
        num_classes: int = 10,
        in_channels: int = 3,
        out_dim: int | None = None,
        dropout: float = 0.0,
        variant: str = "preact",
    ):
        super().__init__()
        check_positive_int(depth, "depth")
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        check_positive_int(in_channels, "in_channels")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if variant not in ("preact", "post"):
            raise ValueError(f"unknown WideResNet variant {variant!r}; expected 'preact' or 'post'")
        if variant == "post" and dropout > 0:
            raise ValueError("dropout is only implemented for variant='preact'")
        n = (depth - 4) // 6
        channels = [16] + [scaled_width(c, width) for c in (16, 32, 64)]
        self.depth, self.width, self.variant = depth, width, variant
        self.output_dim = output_size(num_classes, out_dim)

        self.conv1 = conv3x3(in_channels, channels[0])
        if variant == "post":
            self.bn1 = nn.BatchNorm2d(channels[0])
            self.relu = nn.ReLU()
        for s in range(3):
            if variant == "post":
                blocks = OrderedDict(
                    (f"block{b}", BasicBlock(channels[s] if b == 0 else channels[s + 1], channels[s + 1], 2 if (b == 0 and s > 0) else 1))
                    for b in range(n)
                )
                self.add_module(f"stage{s + 1}", nn.Sequential(blocks))
                continue
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for b in range(n):
                c_in = channels[s] if b == 0 else channels[s + 1]
                stride = 2 if (b == 0 and s > 0) else 1
                # stages 2 and 3 receive the activated output of the previous stage
                preact = not (b == 0 and s > 0)
                blocks[f"block{b}"] = PreActBlock(c_in, channels[s + 1], stride, preact=preact, dropout=dropout)
            blocks["bn"] = nn.BatchNorm2d(channels[s + 1])
            blocks["relu"] = nn.ReLU()
            self.add_module(f"stage{s + 1}", nn.Sequential(blocks))
        self.pool = pooled_features(2)
        self.fc = nn.Linear(channels[3], self.output_dim)
        init_cifar_weights(self)

        self.stage_names = ["stage1", "stage2", "stage3"]
        self.feature_name = "pool"
        self.relu_names = find_relu_names(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if self.variant == "post":
            x = self.relu(self.bn1(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x))
