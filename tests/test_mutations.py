"""Tests written against mutations that the rest of the suite let through.

Each test names the change to the library it catches:

- the trainer must pass each example's own label: ``y`` drawn with its own random index (or shuffled,
  or taken from another batch) no longer belongs to ``x``; checked through the public ``Trainer`` API
  for the three labelled data paths (a tensor tuple, a callable, a Dataset with ``dataset_labels``);
- ``pdlib.pipeline.load_trained`` must load the EMA weights by default and the raw ones with
  ``ema=False``: loading the raw weights always is the mutation.

(The third mutation of that review, max pooling in the residual down blocks, is caught in
tests/test_unet.py by the comparison with diffusers' ResnetBlock2D.)
"""

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from pdlib.config import load_config
from pdlib.pipeline import load_trained, train_run
from pdlib.train import TrainConfig, Trainer

# ------------------------------------------------------------------- labels stay with their examples
N, DIM, BATCH, STEPS = 64, 3, 8, 4


class Recorder(nn.Module):
    """The smallest trainable method: one linear layer, a loss that records every batch it is given."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DIM, 1)
        self.batches = []

    def loss(self, x0, *, generator=None, y=None):
        self.batches.append((x0.detach().clone(), None if y is None else y.detach().clone()))
        return {"loss": self.lin(x0).square().mean()}


def labelled(n=N, seed=0):
    """Examples whose first coordinate is their label: ``x[:, 0] == y``. The labels are distinct, so a
    label from another example never matches by chance."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g)
    x = torch.randn(n, DIM, generator=g)
    x[:, 0] = y.float()
    return x, y


def fit(data, **overrides) -> Recorder:
    method = Recorder()
    config = TrainConfig(**{**dict(steps=STEPS, batch_size=BATCH, lr=1e-2, device="cpu", progress=False,
                                   ema_decay=None, log_every=1, grad_clip=None), **overrides})
    Trainer(method, data, config).fit()
    return method


def assert_pairs_match(method: Recorder, n_labels=N):
    assert len(method.batches) >= STEPS
    seen = set()
    for x, y in method.batches:
        assert y is not None, "the labels were not passed as y="
        assert x.shape == (BATCH, DIM) and y.shape == (BATCH,)
        assert not y.is_floating_point()
        torch.testing.assert_close(x[:, 0], y.to(x.dtype), rtol=0, atol=0,
                                   msg="a label does not belong to its example")
        seen.update(y.tolist())
    assert len(seen) > BATCH  # batches differ: the data really were drawn at random
    assert seen <= set(range(n_labels))


def test_tensor_tuple_labels_belong_to_their_examples():
    assert_pairs_match(fit(labelled()))


def test_callable_labels_belong_to_their_examples():
    x_all, y_all = labelled()
    calls = []

    def draw(batch_size, generator):
        idx = torch.randint(0, N, (batch_size,), generator=generator)
        calls.append(batch_size)
        return x_all[idx], y_all[idx]

    method = fit(draw)
    assert calls and set(calls) == {BATCH}
    assert_pairs_match(method)


class Pairs(Dataset):
    """A plain (non-tensor) Dataset of ``(x, y)`` items."""

    def __init__(self):
        self.x, self.y = labelled(seed=1)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("make", [Pairs, lambda: TensorDataset(*labelled(seed=2))], ids=["Dataset", "TensorDataset"])
def test_dataset_labels_belong_to_their_examples(make):
    assert_pairs_match(fit(make(), dataset_labels=True))


def test_dataset_labels_off_passes_no_labels():
    method = fit(Pairs(), dataset_labels=False)
    assert method.batches and all(y is None for _, y in method.batches)
    assert all(x.shape == (BATCH, DIM) for x, _ in method.batches)


# --------------------------------------------------------------- load_trained: EMA weights by default
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 5-step toy2d run (EMA decay 0.9: after 5 steps the average is far from the raw weights)."""
    out = tmp_path_factory.mktemp("toy2d-run")
    cfg = load_config("toy2d-ddpm", ["train.steps=5", f"out_dir={out}", "train.progress=false",
                                     "train.device=cpu", "train.batch_size=32", "train.ema_decay=0.9",
                                     "train.lr=0.01", "train.log_every=5", "data.n=256",
                                     "model.kwargs={hidden: 32, depth: 2}", "diffusion.T=50", "sample.n=16"])
    trainer = train_run(cfg)
    ema = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    raw = {k: v.detach().cpu().clone() for k, v in trainer.method.state_dict().items()}
    return cfg, ema, raw


def assert_state_equal(method: nn.Module, expected: dict):
    state = method.state_dict()
    assert set(state) == set(expected)
    for k, v in expected.items():
        assert torch.equal(state[k].cpu(), v), k


def test_ema_and_raw_weights_of_the_run_differ(tiny_run):
    _, ema, raw = tiny_run
    assert set(ema) == set(raw)
    gaps = [(ema[k] - raw[k]).abs().max().item() for k in ema if ema[k].is_floating_point()]
    assert max(gaps) > 1e-3  # otherwise the tests below could not tell the two apart


def test_load_trained_gives_the_ema_weights_by_default(tiny_run):
    cfg, ema, _ = tiny_run
    method = load_trained(cfg)
    assert_state_equal(method, ema)
    assert not method.training


def test_load_trained_gives_the_raw_weights_with_ema_false(tiny_run):
    cfg, _, raw = tiny_run
    assert_state_equal(load_trained(cfg, ema=False), raw)
