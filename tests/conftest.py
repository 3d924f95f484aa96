"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run the test with one intra-op thread (small training runs are faster and reproducible that way)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
