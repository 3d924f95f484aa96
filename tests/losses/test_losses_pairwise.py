"""PairwiseDistillationLoss: the template method shared by GKD, RKD-D, RKD-A, SP and FitNet (the pair
checks, the detached teacher, the sample vectors with attention_mask, the mean over pairs)."""
import pytest
import torch
from torch import Tensor

from geomlat.losses.distill import GKD, FitNet, RKDAngle, RKDDistance, SimilarityPreserving
from geomlat.losses.pairwise import PairwiseDistillationLoss


class GramGap(PairwiseDistillationLoss):
    """A new pairwise loss written as pair_loss only: squared gap of the (B, B) Gram matrices."""

    def pair_loss(self, t: Tensor, s: Tensor, labels, index: int) -> Tensor:
        return ((t @ t.T - s @ s.T) ** 2).mean()


def test_the_distillation_losses_share_the_base():
    for cls in (GKD, RKDDistance, RKDAngle, SimilarityPreserving, FitNet):
        assert issubclass(cls, PairwiseDistillationLoss) and cls.consumes == "features"


def test_a_loss_written_as_pair_loss_gets_the_loop_the_mask_and_the_checks():
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(5, 4, 3, generator=g), torch.randn(5, 6, generator=g)]
    s = [torch.randn(5, 4, 2, generator=g, requires_grad=True), torch.randn(5, 3, generator=g, requires_grad=True)]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    # independent computation: the masked mean of the real tokens by hand, then the mean over the two pairs
    def masked_mean(x):
        m = mask[:, :, None].to(x.dtype)
        return (x * m).sum(1) / m.sum(1)
    # the second pair is 2-D: the mask applies only to token features, so give the pairs separately
    got = GramGap()([t[0]], [s[0]], attention_mask=mask)
    want = ((masked_mean(t[0]) @ masked_mean(t[0]).T - masked_mean(s[0]) @ masked_mean(s[0]).T) ** 2).mean()
    torch.testing.assert_close(got, want)
    two = GramGap()([t[1], 2 * t[1]], [s[1], s[1]])  # two 2-D pairs: the mean of the two pair losses
    first = ((t[1] @ t[1].T - s[1] @ s[1].T) ** 2).mean()
    second = ((4 * t[1] @ t[1].T - s[1] @ s[1].T) ** 2).mean()
    torch.testing.assert_close(two, (first + second) / 2)
    got.backward()
    assert s[0].grad is not None and t[0].grad is None  # the teacher is detached
    with pytest.raises(ValueError, match="2 teacher feature tensors but 1"):
        GramGap()(t, s[:1])
    with pytest.raises(ValueError, match="batch size"):
        GramGap()([t[1]], [s[1][:4]])
    bad = t[0].clone()
    bad[2, 3] = float("nan")  # a padding position never enters the loss
    assert torch.equal(GramGap()([bad], [s[0]], attention_mask=mask), got)


def test_a_pairwise_loss_without_pair_loss_says_so():
    with pytest.raises(NotImplementedError, match="pair_loss"):
        PairwiseDistillationLoss()(torch.rand(4, 2), torch.rand(4, 2))
