"""Trainer, EMA and checkpoints: exact resume, atomic and safe checkpoint files, crash saves, clipping."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import pdlib
from pdlib import GaussianDiffusion
from pdlib.data import toy2d
from pdlib.methods import DDPM
from pdlib.nets import MLP2D
from pdlib.schedules import beta_schedule
from pdlib.train import EMA, TrainConfig, Trainer, load_checkpoint, save_checkpoint

CFG = dict(steps=20, batch_size=32, lr=2e-3, ema_decay=0.9, grad_clip=1.0, device="cpu", progress=False,
           log_every=5, seed=3)


def tiny_method(seed=0):
    torch.manual_seed(seed)
    return DDPM(MLP2D(hidden=16, depth=1, time_dim=8), GaussianDiffusion(beta_schedule("linear", 50)))


@pytest.fixture(scope="module")
def data():
    return toy2d("moons", 256, generator=torch.Generator().manual_seed(0))


def assert_same(a, b, path="state"):
    """Recursive exact equality of nested states (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


# ------------------------------------------------------------------------------------ resume
def test_exact_resume(tmp_path, data):
    straight = Trainer(tiny_method(), data, TrainConfig(**CFG))
    straight.fit(20)

    first = Trainer(tiny_method(), data, TrainConfig(**CFG))
    first.fit(10)
    path = tmp_path / "run.pt"
    first.save(path)
    # a fresh method with different initial weights: everything must come from the checkpoint
    resumed = Trainer(tiny_method(seed=99), data, TrainConfig(**CFG), resume=path)
    assert resumed.step == 10
    resumed.fit(20)

    assert resumed.step == straight.step == 20
    assert_same(straight.method.state_dict(), resumed.method.state_dict(), "method")
    assert_same(straight.ema.module.state_dict(), resumed.ema.module.state_dict(), "ema")
    assert_same(straight.optimizer.state_dict(), resumed.optimizer.state_dict(), "optimizer")
    assert [h["step"] for h in resumed.history] == [5, 10, 15, 20]
    assert_same(straight.history, resumed.history, "history")
    # and the run really changed the weights (the comparison is not between two untouched models)
    assert not torch.equal(straight.method.net.inp.weight, tiny_method().net.inp.weight)


def test_resume_mid_log_window_keeps_history_exact(tmp_path, data):
    """Resuming at a step that is not a multiple of log_every: the logged averages must be those of the
    uninterrupted run (each record averages the last log_every steps)."""
    straight = Trainer(tiny_method(), data, TrainConfig(**CFG))
    straight.fit(20)
    first = Trainer(tiny_method(), data, TrainConfig(**CFG))
    first.fit(7)
    first.save(tmp_path / "mid.pt")
    resumed = Trainer(tiny_method(), data, TrainConfig(**CFG), resume=tmp_path / "mid.pt")
    resumed.fit(20)
    assert_same(straight.method.state_dict(), resumed.method.state_dict())
    assert [h["step"] for h in resumed.history] == [5, 10, 15, 20]
    for a, b in zip(straight.history, resumed.history):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-9), (a["step"], k)


def test_two_fit_calls_log_like_one(data):
    once = Trainer(tiny_method(), data, TrainConfig(**CFG))
    once.fit(10)
    twice = Trainer(tiny_method(), data, TrainConfig(**CFG))
    twice.fit(3)
    twice.fit(10)
    assert [h["step"] for h in twice.history] == [5, 10]
    for a, b in zip(once.history, twice.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-9)


def test_resume_with_labels_and_callable_data(tmp_path):
    def draw(n, g):
        x, y = toy2d("8gaussians", n, generator=g, return_labels=True)
        return x, y

    def method():
        torch.manual_seed(0)
        net = MLP2D(hidden=16, depth=1, time_dim=8, num_classes=8)
        return DDPM(net, GaussianDiffusion(beta_schedule("linear", 50)), cond_drop_prob=0.2)

    straight = Trainer(method(), draw, TrainConfig(**CFG))
    straight.fit(12)
    first = Trainer(method(), draw, TrainConfig(**CFG))
    first.fit(6)
    first.save(tmp_path / "c.pt")
    resumed = Trainer(method(), draw, TrainConfig(**CFG), resume=tmp_path / "c.pt")
    resumed.fit(12)
    assert_same(straight.method.state_dict(), resumed.method.state_dict())
    assert_same(straight.ema.module.state_dict(), resumed.ema.module.state_dict())


def test_resume_without_ema_in_checkpoint_raises(tmp_path, data):
    t = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "ema_decay": None}))
    t.fit(2)
    t.save(tmp_path / "noema.pt")
    with pytest.raises(ValueError, match="EMA"):
        Trainer(tiny_method(), data, TrainConfig(**CFG), resume=tmp_path / "noema.pt")


# --------------------------------------------------------------------------------- checkpoints
def test_torch_checkpoint_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "i": torch.arange(5), "nested": {"a": [1, 2.5, "x"], "b": (3, 4)},
             "step": 7, "name": "run", "none": None}
    path = save_checkpoint(tmp_path / "sub" / "s.pt", state)
    assert Path(path) == tmp_path / "sub" / "s.pt"
    assert_same(state, load_checkpoint(path))
    assert os.listdir(tmp_path / "sub") == ["s.pt"]


def test_safetensors_round_trip_with_metadata(tmp_path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(6, dtype=torch.int64).reshape(2, 3),
             "h": torch.randn(2, dtype=torch.float64), "__metadata__": {"step": "10", "note": "ema weights"}}
    save_checkpoint(tmp_path / "w.safetensors", state)
    back = load_checkpoint(tmp_path / "w.safetensors")
    assert back["__metadata__"] == {"step": "10", "note": "ema weights"}
    assert_same({k: v for k, v in state.items() if k != "__metadata__"},
                {k: v for k, v in back.items() if k != "__metadata__"})
    # the file is a real safetensors file
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], state["w"])


def test_safetensors_without_metadata(tmp_path):
    save_checkpoint(tmp_path / "w.safetensors", {"w": torch.ones(2)})
    back = load_checkpoint(tmp_path / "w.safetensors")
    assert set(back) == {"w"} and torch.equal(back["w"], torch.ones(2))


def test_safetensors_rejects_non_tensors_with_type_error(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "w.safetensors", {"w": torch.ones(2), "step": 3})
    assert not (tmp_path / "w.safetensors").exists()


def test_save_rejects_non_dict(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", [torch.ones(2)])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_is_atomic(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"ckpt{suffix}"
    old = {"w": torch.arange(4.0)}
    save_checkpoint(path, old)

    def broken_writer(obj, target, *args, **kw):
        with open(target, "wb") as f:
            f.write(b"PK\x03\x04 partial bytes")  # half a file, then the disk fills up
        raise OSError("No space left on device")

    if suffix == ".pt":
        monkeypatch.setattr(torch, "save", broken_writer)
    else:
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, filename, metadata=None:
                            broken_writer(tensors, filename))
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"w": torch.zeros(4)})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left behind
    assert torch.equal(load_checkpoint(path)["w"], old["w"])


def test_trainer_save_is_atomic_under_keyboard_interrupt(tmp_path, monkeypatch, data):
    t = Trainer(tiny_method(), data, TrainConfig(**CFG))
    t.fit(2)
    path = tmp_path / "t.pt"
    t.save(path)

    def interrupted(obj, target, *a, **k):
        Path(target).write_bytes(b"\x80\x02partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        t.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["t.pt"]
    assert load_checkpoint(path)["step"] == 2


class Evil:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save", "torch.save-legacy"])
def test_malicious_pickle_is_refused(tmp_path, writer):
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pt"
    payload = {"state": Evil(sentinel), "w": torch.ones(2)}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    elif writer == "torch.save":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    # sanity: unpickling it normally really would run the command
    assert not sentinel.exists()
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_malicious_pickle_is_refused_by_trainer_resume(tmp_path, data):
    sentinel = tmp_path / "SENTINEL"
    torch.save({"method": Evil(sentinel)}, tmp_path / "evil.pt")
    with pytest.raises(pdlib.CheckpointError):
        Trainer(tiny_method(), data, TrainConfig(**CFG), resume=tmp_path / "evil.pt")
    assert not sentinel.exists()


def test_evil_payload_is_real(tmp_path):
    """The payload used above does run code when unpickled without protection."""
    sentinel = tmp_path / "REAL"
    pickle.loads(pickle.dumps(Evil(sentinel)))
    assert sentinel.exists()


@pytest.mark.parametrize("keep", [0.5, 0.1, 20, 0])
def test_truncated_checkpoint(tmp_path, keep):
    path = tmp_path / "t.pt"
    save_checkpoint(path, {"w": torch.randn(100, 100), "step": 3})
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 4, 0])
def test_truncated_safetensors(tmp_path, keep):
    path = tmp_path / "t.safetensors"
    save_checkpoint(path, {"w": torch.randn(100, 100)})
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(path)


def _random_bytes(seed, n=1000):
    import random

    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 10, b"PK\x03\x04" + bytes(100), _random_bytes(0),
                                     _random_bytes(7), _random_bytes(44)],
                         ids=["empty", "text", "zip-header", "random0", "random7", "random44"])
def test_garbage_checkpoint(tmp_path, content):
    # whatever is in the file, the caller gets a CheckpointError (not KeyError, IndexError, OSError, ...)
    (tmp_path / "g.pt").write_bytes(content)
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(tmp_path / "g.pt")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(pdlib.CheckpointError):
        load_checkpoint(tmp_path)  # a directory


# ------------------------------------------------------------------------------ crash save
class Boom(RuntimeError):
    pass


def failing_data(fail_at, exc=Boom):
    calls = {"n": 0}

    def draw(n, g):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise exc("data loader died")
        return toy2d("moons", n, generator=g)

    return draw


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_exception_in_fit_writes_checkpoint(tmp_path, exc):
    path = tmp_path / "crash.pt"
    t = Trainer(tiny_method(), failing_data(6, exc), TrainConfig(**{**CFG, "checkpoint_path": str(path)}))
    with pytest.raises(exc):
        t.fit()
    assert t.step == 5
    state = load_checkpoint(path)
    assert state["step"] == 5
    assert_same(state["method"], t.method.state_dict())
    # it resumes from there
    r = Trainer(tiny_method(), failing_data(0), TrainConfig(**{**CFG, "checkpoint_path": str(path)}), resume=path)
    assert r.step == 5
    r.fit(7)
    assert load_checkpoint(path)["step"] == 7  # fit saves at the end too


def test_exception_before_any_step_writes_nothing(tmp_path):
    path = tmp_path / "crash.pt"
    t = Trainer(tiny_method(), failing_data(1), TrainConfig(**{**CFG, "checkpoint_path": str(path)}))
    with pytest.raises(Boom):
        t.fit()
    assert not path.exists()


def test_no_checkpoint_path_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = Trainer(tiny_method(), failing_data(3), TrainConfig(**CFG))
    with pytest.raises(Boom):
        t.fit()
    assert os.listdir(tmp_path) == []


def test_non_finite_loss_raises(data):
    bad = data.clone()
    bad[:] = float("nan")
    t = Trainer(tiny_method(), bad, TrainConfig(**CFG))
    with pytest.raises(FloatingPointError):
        t.fit(1)


# ----------------------------------------------------------------------------- optimisation
def test_loss_decreases():
    data = toy2d("8gaussians", 2048, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    method = DDPM(MLP2D(hidden=64, depth=2, time_dim=16), GaussianDiffusion(beta_schedule("linear", 100)))
    t = Trainer(method, data, TrainConfig(steps=300, batch_size=256, lr=3e-3, log_every=50, device="cpu",
                                          progress=False, ema_decay=0.99))
    history = t.fit()
    assert [h["step"] for h in history] == [50, 100, 150, 200, 250, 300]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    # evaluated on fresh noise with a fixed generator: the trained model beats the untrained one
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    torch.manual_seed(0)
    fresh = DDPM(MLP2D(hidden=64, depth=2, time_dim=16), GaussianDiffusion(beta_schedule("linear", 100)))
    with torch.no_grad():
        trained = t.method.loss(data, generator=g())["loss"]
        untrained = fresh.loss(data, generator=g())["loss"]
    assert trained < 0.7 * untrained


def test_ema_update_closed_form():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9, warmup=False)
    p0 = [p.detach().clone() for p in model.parameters()]
    snapshots = []
    for k in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 3))  # moves the BatchNorm running statistics
        snapshots.append([p.detach().clone() for p in model.parameters()])
        ema.update(model, k)
    d = 0.9
    for i, p_ema in enumerate(ema.module.parameters()):
        expected = d**3 * p0[i] + d**2 * (1 - d) * snapshots[0][i] + d * (1 - d) * snapshots[1][i] \
            + (1 - d) * snapshots[2][i]
        torch.testing.assert_close(p_ema, expected, rtol=1e-6, atol=1e-6)
    # buffers are copied, not averaged
    torch.testing.assert_close(ema.module[1].running_mean, model[1].running_mean, rtol=0, atol=0)
    assert all(not p.requires_grad for p in ema.module.parameters())
    # the EMA copy does not share storage with the model
    with torch.no_grad():
        model[0].weight.add_(100.0)
    assert ema.module[0].weight.abs().max() < 50


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_ema_bad_decay(decay):
    with pytest.raises(ValueError):
        EMA(nn.Linear(2, 2), decay)


def test_ema_warmup_schedule():
    ema = EMA(nn.Linear(2, 2), decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(90) == pytest.approx(0.91)
    assert ema.decay_at(10**6) == 0.999
    assert EMA(nn.Linear(2, 2), decay=0.999, warmup=False).decay_at(0) == 0.999


@pytest.mark.parametrize("warmup,first_decay", [(False, 0.75), (True, 0.1)])
def test_trainer_ema_follows_formula(data, warmup, first_decay):
    t = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "ema_decay": 0.75, "ema_warmup": warmup}))
    before = [p.detach().clone() for p in t.method.parameters()]
    t.train_step()
    after = [p.detach().clone() for p in t.method.parameters()]
    d = first_decay
    for b, a, e in zip(before, after, t.ema.module.parameters()):
        torch.testing.assert_close(e, d * b + (1 - d) * a, rtol=1e-6, atol=1e-7)
    assert t.model is t.ema.module
    t2 = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "ema_decay": None}))
    assert t2.ema is None and t2.model is t2.method


def record_step(trainer):
    """Wrap the optimiser step to record the gradient norm and learning rate it sees."""
    seen = []
    step = trainer.optimizer.step

    def wrapped(*a, **k):
        grads = [p.grad for p in trainer.method.parameters() if p.grad is not None]
        seen.append((torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item(),
                     trainer.optimizer.param_groups[0]["lr"]))
        return step(*a, **k)

    trainer.optimizer.step = wrapped
    return seen


def test_grad_clipping_limits_norm(data):
    t = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "grad_clip": 0.01}))
    seen = record_step(t)
    terms = [t.train_step() for _ in range(3)]
    for (norm, _), term in zip(seen, terms):
        assert term["grad_norm"] > 0.01  # the raw norm was above the limit ...
        assert norm <= 0.01 * (1 + 1e-4)  # ... and the optimiser saw the clipped gradient
        assert norm == pytest.approx(0.01, rel=1e-3)

    u = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "grad_clip": None}))
    seen = record_step(u)
    terms = u.train_step()
    assert "grad_norm" not in terms
    assert seen[0][0] > 0.01

    v = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "grad_clip": 1e6}))
    seen = record_step(v)
    terms = v.train_step()
    assert seen[0][0] == pytest.approx(terms["grad_norm"], rel=1e-5)  # below the limit: untouched


def test_warmup_learning_rate(data):
    t = Trainer(tiny_method(), data, TrainConfig(**{**CFG, "lr": 1e-3, "warmup_steps": 4}))
    seen = record_step(t)
    t.fit(6)
    lrs = [lr for _, lr in seen]
    assert lrs == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3])


def test_tuple_data_passes_labels():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def loss(self, x0, generator=None, **cond):
            seen.append(cond)
            return {"loss": (self.w * x0.sum()) ** 2}

    x, y = toy2d("moons", 100, generator=torch.Generator().manual_seed(0), return_labels=True)
    t = Trainer(Spy(), (x, y), TrainConfig(**{**CFG, "ema_decay": None, "batch_size": 10}))
    t.fit(2)
    assert len(seen) == 2 and all(c["y"].shape == (10,) for c in seen)
    Trainer(Spy(), x, TrainConfig(**{**CFG, "ema_decay": None})).fit(1)
    assert seen[-1] == {}


# ------------------------------------------------------------------------------ bad config
def build(data, **overrides):
    """Bad values may be refused by TrainConfig or by the Trainer: either is fine, silence is not."""
    return Trainer(tiny_method(), data, TrainConfig(**{**CFG, **overrides}))


@pytest.mark.parametrize("bad, err", [
    (dict(steps=0), ValueError), (dict(steps=2.5), TypeError), (dict(batch_size=0), ValueError),
    (dict(lr=0.0), ValueError), (dict(lr=-1e-3), ValueError), (dict(amp="fp16"), ValueError),
    (dict(log_every=0), ValueError), (dict(checkpoint_every=10), ValueError), (dict(ema_decay=1.0), ValueError),
])
def test_bad_config_values(data, bad, err):
    with pytest.raises(err):
        build(data, **bad)


@pytest.mark.parametrize("bad", [dict(grad_clip=0.0), dict(grad_clip=-1.0), dict(warmup_steps=-5),
                                 dict(checkpoint_every=0, checkpoint_path="x.pt")])
def test_bad_config_values_that_would_fail_silently(data, bad):
    # grad_clip <= 0 zeroes or flips the gradients, a negative warmup gives a negative learning rate
    # (gradient ascent), checkpoint_every=0 silently never checkpoints
    with pytest.raises(ValueError):
        build(data, **bad)


def test_bad_trainer_arguments(data):
    with pytest.raises(TypeError):
        Trainer(tiny_method(), data, TrainConfig(**CFG), no_such_option=1)

    class NoParams(nn.Module):
        def loss(self, x0, **kw):
            return {"loss": x0.sum()}

    with pytest.raises(ValueError):
        Trainer(NoParams(), data, TrainConfig(**CFG))


@pytest.mark.parametrize("warmup", [True, False])
def test_default_ema_is_usable_after_a_short_run(warmup):
    """The default EMA (decay 0.999) with its warm-up tracks the weights after 300 steps; without the
    warm-up it still holds most of the random initialisation (the trap a short course run falls into)."""
    torch.manual_seed(0)
    data = toy2d("moons", 4000, torch.Generator().manual_seed(0))
    method = DDPM(MLP2D(hidden=64), GaussianDiffusion(beta_schedule("linear", 100)))
    t = Trainer(method, data, TrainConfig(steps=300, batch_size=256, lr=2e-3, ema_warmup=warmup,
                                          progress=False, device="cpu"))
    t.fit()
    held_out = toy2d("moons", 4000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ema = t.ema.module.loss(held_out, generator=torch.Generator().manual_seed(2))["loss"]
        raw = t.method.loss(held_out, generator=torch.Generator().manual_seed(2))["loss"]
    if warmup:
        assert ema < 1.1 * raw
    else:
        assert ema > 1.5 * raw
