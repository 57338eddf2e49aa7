"""The training layer every method uses: phases and several optimisers, frozen networks, gradient
accumulation, refused non-finite steps, verified checkpoints, SIGTERM, logs without duplicates,
persistent DataLoader workers."""

import json
import os
import shutil
import signal

import pytest
import torch
from torch import nn

import pdlib
from pdlib.methods import Method
from pdlib.train import EMA, Frozen, OptimizerSpec, Phase, TrainConfig, Trainer, load_checkpoint

CFG = dict(steps=6, batch_size=8, lr=1e-2, ema_decay=0.5, device="cpu", progress=False, log_every=1, seed=0)


def data_2d(n=64):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------ frozen networks
class WithFrozen(Method):
    """A trained layer followed by a frozen one that holds dropout (eval mode must switch it off)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(2, 2)
        self.critic = Frozen(nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.9), nn.Linear(4, 1)))

    def loss(self, x0, *, generator=None):
        return {"loss": self.critic(self.net(x0)).pow(2).mean()}


def test_frozen_network_conventions(tmp_path):
    method = WithFrozen()
    inner = method.critic.net
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    t = Trainer(method, data_2d(), TrainConfig(**CFG, checkpoint_path=str(tmp_path / "c.pt")))
    t.fit()
    # eval mode although the method trains, so dropout is off: two calls agree
    assert method.training and not inner.training
    x = torch.randn(5, 2)
    assert torch.equal(method.critic(x), method.critic(x))
    # no optimiser, no gradient, no update
    assert all(id(p) not in {id(q) for q in t.optimizer.param_groups[0]["params"]} for p in inner.parameters())
    assert all(p.grad is None and not p.requires_grad for p in inner.parameters())
    for k, v in inner.state_dict().items():
        assert torch.equal(v, before[k]), k
    # left out of checkpoints and exports, and shared (not copied) by the EMA
    state = load_checkpoint(tmp_path / "c.pt")
    assert set(state["method"]) == {"net.weight", "net.bias"} == set(state["ema"])
    assert t.ema.module.critic.net is inner
    # yet the trained network did learn through it
    assert not torch.equal(method.net.weight, WithFrozen().net.weight)


def test_frozen_passes_gradients_to_its_input_and_moves_with_its_holder():
    method = WithFrozen()
    x = torch.randn(3, 2, requires_grad=True)
    method.critic(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    method.double()
    assert method.critic.net[0].weight.dtype == torch.float64
    assert Frozen(nn.Linear(2, 3)).out_features == 3  # attributes reach the wrapped net
    with pytest.raises(TypeError):
        Frozen("not a module")


def test_unfrozen_parameters_outside_every_optimiser_are_an_error():
    class Leaky(Method):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def optimizers(self):
            return [OptimizerSpec("main", ("a",))]

        def loss(self, x0, *, generator=None):
            return {"loss": (self.a(x0) + self.b(x0)).pow(2).mean()}

    with pytest.raises(ValueError, match="in no optimiser"):
        Trainer(Leaky(), data_2d(), TrainConfig(**CFG))


# ------------------------------------------------------------------------------ phases
class ToyGAN(Method):
    """Two networks, two optimisers, a lazy R1 phase with ``create_graph=True``, an EMA of G only and a
    loss weight that depends on training progress: the shapes DDGAN and LDDGAN need."""

    ema_networks = ("generator",)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Linear(2, 2)
        self.discriminator = nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 1))
        self.calls = []

    def optimizers(self):
        return [OptimizerSpec("G", ("generator",), lr=1e-2, betas=(0.5, 0.9)),
                OptimizerSpec("D", ("discriminator",), lr=2e-2, betas=(0.5, 0.9))]

    def phases(self):
        return [Phase("D", "D"), Phase("Dreg", "D", every=3), Phase("G", "G")]

    def phase_loss(self, phase, x0, *, step, progress, generator=None):
        self.calls.append((phase, step, progress))
        z = torch.randn(x0.shape, generator=generator)
        if phase == "D":
            fake = self.generator(z).detach()
            loss = nn.functional.softplus(self.discriminator(fake)).mean() \
                + nn.functional.softplus(-self.discriminator(x0)).mean()
        elif phase == "Dreg":
            real = x0.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.discriminator(real).sum(), real, create_graph=True)
            loss = grad.pow(2).sum(1).mean()
        else:
            loss = (1.0 + progress) * nn.functional.softplus(-self.discriminator(self.generator(z))).mean()
        return {"loss": loss}


def test_phases_optimisers_ema_and_progress():
    method = ToyGAN()
    d0 = [p.detach().clone() for p in method.discriminator.parameters()]
    t = Trainer(method, data_2d(), TrainConfig(**CFG))
    assert set(t.optimizers) == {"G", "D"}
    assert t.optimizers["G"].param_groups[0]["betas"] == (0.5, 0.9)
    assert t.optimizers["D"].param_groups[0]["lr"] == 2e-2
    with pytest.raises(AttributeError, match="several optimisers"):
        t.optimizer  # noqa: B018
    history = t.fit()
    # every phase at its interval, in the declared order, with step and progress
    expected = []
    for step in range(6):
        expected += [("D", step)] + ([("Dreg", step)] if step % 3 == 0 else []) + [("G", step)]
    assert [(p, s) for p, s, _ in method.calls] == expected
    assert [pr for p, s, pr in method.calls if p == "G"] == [s / 6 for s in range(6)]
    # logs per phase; the lazy phase is averaged over the steps it ran
    assert {"D/loss", "G/loss", "D/grad_norm_D", "G/grad_norm_G"} <= set(history[0])
    assert "Dreg/loss" in history[0] and "Dreg/loss" not in history[1]
    # R1 reached the discriminator; the EMA averages the generator only
    assert not all(torch.equal(a, b) for a, b in zip(d0, method.discriminator.parameters()))
    for e, p in zip(t.ema.module.discriminator.parameters(), method.discriminator.parameters()):
        assert torch.equal(e, p)
    assert not torch.equal(t.ema.module.generator.weight, method.generator.weight)


def test_multi_phase_exact_resume(tmp_path):
    straight = Trainer(ToyGAN(), data_2d(), TrainConfig(**CFG))
    straight.fit()
    first = Trainer(ToyGAN(), data_2d(), TrainConfig(**CFG))
    first.fit(4)  # mid-way through a lazy interval
    first.save(tmp_path / "c.pt")
    resumed = Trainer(ToyGAN(), data_2d(), TrainConfig(**CFG), resume=tmp_path / "c.pt")
    resumed.fit()
    for a, b in zip(straight.method.state_dict().values(), resumed.method.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.history == resumed.history


def test_plan_errors():
    class Bad(ToyGAN):
        def phases(self):
            return [Phase("D", "nope")]

    with pytest.raises(ValueError, match="nope"):
        Trainer(Bad(), data_2d(), TrainConfig(**CFG))
    with pytest.raises(ValueError):
        Phase("x", every=0)


def test_ema_of_named_networks_only():
    model = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
    ema = EMA(model, 0.5, networks=("a",), warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, 0)
    assert torch.equal(ema.module["b"].weight, model["b"].weight)
    torch.testing.assert_close(ema.module["a"].weight, model["a"].weight - 0.5)


# ------------------------------------------------------------------------------ accumulation
class Regression(Method):
    """Deterministic (no random draws), so gradients can be compared across batchings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss(self, x0, *, generator=None):
        return {"loss": (self.net(x0) - x0.sum(1, keepdim=True).sin()).pow(2).mean()}


def grads_seen(trainer):
    seen = []
    step = trainer.optimizer.step

    def wrapped(*a, **k):
        seen.append([p.grad.clone() for p in trainer.method.parameters()])
        return step(*a, **k)

    trainer.optimizer.step = wrapped
    return seen


def test_gradient_accumulation_equals_the_large_batch():
    x = data_2d(16)
    halves = iter([x[:8], x[8:]])
    small = Trainer(Regression(), lambda b, g: next(halves), TrainConfig(**{**CFG, "grad_accum": 2}), grad_clip=None)
    large = Trainer(Regression(), lambda b, g: x, TrainConfig(**{**CFG, "batch_size": 16}), grad_clip=None)
    a, b = grads_seen(small), grads_seen(large)
    ta, tb = small.train_step(), large.train_step()
    for ga, gb in zip(a[0], b[0]):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)
    assert ta["loss"] == pytest.approx(tb["loss"], rel=1e-6)
    assert small.global_batch == large.global_batch == 16


# ------------------------------------------------------------------------------ non-finite steps
class Poisoned(Regression):
    """Finite loss, NaN gradient from step ``bad_step`` on (sqrt at 0 has an infinite slope)."""

    def __init__(self, bad_step, term=False):
        super().__init__()
        self.bad_step, self.term, self.calls = bad_step, term, 0

    def loss(self, x0, *, generator=None):
        self.calls += 1
        out = super().loss(x0)
        if self.calls >= self.bad_step:
            if self.term:
                return {"loss": out["loss"] * float("nan"), "mse": out["loss"].detach(),
                        "metric": torch.tensor(float("nan"))}
            out["loss"] = out["loss"] + (self.net[0].weight * 0).abs().sqrt().sum()
        return out


def test_non_finite_gradient_is_refused_and_checkpoint_stays_good(tmp_path):
    path = tmp_path / "c.pt"
    t = Trainer(Poisoned(bad_step=7), data_2d(), TrainConfig(**{**CFG, "steps": 10, "checkpoint_every": 5,
                                                                "checkpoint_path": str(path)}))
    with pytest.raises(pdlib.NonFiniteLossError, match="step 7.*gradient norm") as err:
        t.fit()
    assert isinstance(err.value, FloatingPointError)
    assert t.step == 6
    for tensor in [*t.method.state_dict().values(), *t.ema.module.state_dict().values()]:
        assert torch.isfinite(tensor).all()
    state = load_checkpoint(path)  # the crash save: a good state at a step boundary
    assert state["step"] == 6
    assert all(torch.isfinite(v).all() for v in state["method"].values())
    assert load_checkpoint(str(path) + ".prev")["step"] == 5


def test_non_finite_term_is_named():
    t = Trainer(Poisoned(bad_step=2, term=True), data_2d(), TrainConfig(**CFG))
    with pytest.raises(pdlib.NonFiniteLossError, match="step 2: .*metric = nan"):
        t.fit()
    assert t.step == 1


def test_save_refuses_non_finite_weights_and_keeps_the_last_good_file(tmp_path):
    path = tmp_path / "c.pt"
    t = Trainer(Regression(), data_2d(), TrainConfig(**CFG))
    t.fit(2)
    t.save(path)
    good = path.read_bytes()
    with torch.no_grad():
        t.method.net[0].weight[0, 0] = float("nan")
    with pytest.raises(pdlib.CheckpointError, match="non-finite"):
        t.save(path)
    assert path.read_bytes() == good


def test_a_write_that_fails_verification_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    t = Trainer(Regression(), data_2d(), TrainConfig(**CFG))
    t.save(path)
    good = path.read_bytes()

    def truncated_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 not a whole file")

    monkeypatch.setattr(torch, "save", truncated_save)
    with pytest.raises(pdlib.CheckpointError):
        t.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


# ------------------------------------------------------------------------------ preemption and logs
def test_sigterm_checkpoints_at_a_step_boundary_and_resume_is_exact(tmp_path):
    x = data_2d()
    straight_dir, split_dir = tmp_path / "a", tmp_path / "b"
    common = {**CFG, "steps": 8}
    straight = Trainer(Regression(), x, TrainConfig(**common, checkpoint_path=str(straight_dir / "c.pt"),
                                                    log_path=str(straight_dir / "log.jsonl")))
    straight.fit()
    calls = {"n": 0}

    def draw(b, g):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during step 3
        return x[torch.randint(0, len(x), (b,), generator=g)]

    cfg = TrainConfig(**common, checkpoint_path=str(split_dir / "c.pt"), log_path=str(split_dir / "log.jsonl"))
    previous = signal.getsignal(signal.SIGTERM)
    t = Trainer(Regression(), draw, cfg)
    with pytest.raises(pdlib.TrainingPreempted):
        t.fit()
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
    assert t.step == 3 and load_checkpoint(split_dir / "c.pt")["step"] == 3
    resumed = Trainer(Regression(), draw, cfg, resume=split_dir / "c.pt")
    resumed.fit()
    for a, b in zip(straight.method.state_dict().values(), resumed.method.state_dict().values()):
        assert torch.equal(a, b)
    assert (split_dir / "log.jsonl").read_text() == (straight_dir / "log.jsonl").read_text()


def test_resumed_log_drops_lines_written_after_the_checkpoint(tmp_path):
    """A hard kill after the last checkpoint leaves later lines in the log; the resume drops them."""
    x = data_2d()
    log, ckpt = tmp_path / "log.jsonl", tmp_path / "c.pt"
    cfg = TrainConfig(**{**CFG, "steps": 10}, checkpoint_path=str(ckpt), log_path=str(log))
    t = Trainer(Regression(), x, cfg)
    t.fit(5)
    shutil.copy(ckpt, tmp_path / "at5.pt")
    t.fit(8)  # steps 6-8 logged, then "killed": the checkpoint on disk goes back to step 5
    shutil.copy(tmp_path / "at5.pt", ckpt)
    Trainer(Regression(), x, cfg, resume=ckpt).fit()
    steps = [json.loads(line).get("step") for line in log.read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))


# ------------------------------------------------------------------------------ data loading
class WorkerIds(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([float(os.getpid()), float(i)])


class Recorder(Regression):
    def __init__(self):
        super().__init__()
        self.pids = []

    def loss(self, x0, *, generator=None):
        self.pids += x0[:, 0].tolist()
        return super().loss(x0[:, 1:].repeat(1, 2) / 8)


def test_dataloader_workers_persist_across_epochs():
    method = Recorder()
    t = Trainer(method, WorkerIds(), TrainConfig(**{**CFG, "batch_size": 4, "num_workers": 1}))
    t.fit(6)  # three epochs of two batches
    assert len(set(method.pids)) == 1 and method.pids[0] != os.getpid()


def test_loss_plot_of_a_multi_phase_run(tmp_path):
    from pdlib.viz import plot_history

    t = Trainer(ToyGAN(), data_2d(), TrainConfig(**CFG))
    ax = plot_history(t.fit(), tmp_path / "loss.png")
    assert sorted(line.get_label() for line in ax.get_lines()) == ["D/loss", "Dreg/loss", "G/loss"]
    assert (tmp_path / "loss.png").is_file()
