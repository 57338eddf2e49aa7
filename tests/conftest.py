"""Shared settings of pdlib's unit tests (this file only affects tests collected under tests/)."""

import os
import socket

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


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to open a network connection: a missing data set must raise
    its instructions without trying to download anything."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a unit test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture
def no_md5(monkeypatch):
    """The small files cannot match the archive's md5 sums: keep torchvision's existence check only."""
    import torchvision.datasets.celeba
    import torchvision.datasets.cifar

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", exists)
