"""Shared settings of pdlib's unit tests (this file only affects tests collected under tests/)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    """Run each test with one intra-op thread: the tensors here are small, and on a busy 2-core machine
    torch's thread pool spins and slows small operations down by an order of magnitude."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
