"""DistributedDataParallel on the CPU with gloo and 2 processes: gradients equal the single-process
gradients on the combined batch, and only rank 0 writes files."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pdlib.train import Trainer

BATCH = 8  # per process


class Regression(nn.Module):
    """A deterministic method (no random draws in the loss), so the gradients can be compared."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss(self, x0, generator=None):
        target = x0.sum(1, keepdim=True).sin()
        return {"loss": (self.net(x0) - target).pow(2).mean()}


def full_batch():
    return torch.linspace(-2, 2, 2 * BATCH * 3).reshape(2 * BATCH, 3)


def _worker(rank, world, init_file, out_dir):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        half = full_batch()[rank * BATCH:(rank + 1) * BATCH]
        trainer = Trainer(Regression(), lambda b, g: half, steps=1, batch_size=BATCH, grad_clip=None,
                          ema_decay=None, progress=False, device="cpu")
        assert isinstance(trainer.loss_module, nn.parallel.DistributedDataParallel)
        trainer.train_step()
        grads = {n: p.grad.clone() for n, p in trainer.method.named_parameters()}
        torch.save(grads, os.path.join(out_dir, f"grads{rank}.pt"))
        trainer.save(os.path.join(out_dir, f"checkpoint_from_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_match_combined_batch_and_only_rank0_writes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    reference = Regression()
    reference.loss(full_batch())["loss"].backward()
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"grads{rank}.pt", weights_only=True)
        for name, p in reference.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "checkpoint_from_rank0.pt").is_file()
    assert not (tmp_path / "checkpoint_from_rank1.pt").exists()


class Recording(Regression):
    """Records the batches it is given (to compare the ranks' random streams)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def loss(self, x0, generator=None):
        self.seen.append(x0.clone())
        return super().loss(x0)


def _resume_worker(rank, world, init_file, out_dir):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        cfg = dict(steps=6, batch_size=4, ema_decay=0.9, progress=False, device="cpu", log_every=1)
        straight = Trainer(Recording(), data, **cfg)
        straight.fit()
        first = Trainer(Recording(), data, **cfg)
        first.fit(3)
        path = os.path.join(out_dir, "ckpt.pt")
        first.save(path)
        resumed = Trainer(Recording(), data, **cfg, resume=path)
        resumed.fit()
        torch.save({"straight": straight.method.state_dict(), "resumed": resumed.method.state_dict(),
                    "batches": torch.stack(resumed.method.seen),
                    "straight_batches": torch.stack(straight.method.seen[3:])},
                   os.path.join(out_dir, f"resume{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_resume_keeps_each_rank_on_its_own_random_stream(tmp_path):
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"resume{r}.pt", weights_only=True) for r in (0, 1))
    for r in (r0, r1):
        assert torch.equal(r["batches"], r["straight_batches"])  # each rank continues its own stream
        for k in r["straight"]:
            assert torch.equal(r["straight"][k], r["resumed"][k]), k
    assert not torch.equal(r0["batches"], r1["batches"])  # ranks draw different batches after resume
    assert len(torch.load(tmp_path / "ckpt.pt", weights_only=True)["rng"]) == 2
