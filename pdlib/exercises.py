"""Checkers for the book's exercises: they run a student's function against pdlib's on random
inputs and say whether it is right, with a hint when it is not.

Each ``check_*`` returns a ``CheckResult`` (truthy when correct) and prints its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .diffusion import GaussianDiffusion
from .guidance import guided_output
from .schedules import beta_schedule
from .methods.score import langevin_step


@dataclass
class CheckResult:
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def _compare(name: str, fn: Callable, args: tuple, expected: torch.Tensor, hint: str,
             atol: float = 1e-5, quiet: bool = False) -> CheckResult:
    try:
        got = fn(*args)
    except NotImplementedError:
        result = CheckResult(False, f"{name}: not implemented yet (replace the TODO).")
    except Exception as err:  # the student's code may fail in any way; report it, do not crash
        result = CheckResult(False, f"{name}: your function raised {type(err).__name__}: {err}")
    else:
        if got is None:
            result = CheckResult(False, f"{name}: your function returned None (replace the TODO).")
        elif not isinstance(got, torch.Tensor):
            result = CheckResult(False, f"{name}: expected a torch.Tensor, got {type(got).__name__}.")
        elif got.shape != expected.shape:
            result = CheckResult(False, f"{name}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
        elif not torch.allclose(got.double(), expected.double(), atol=atol, rtol=1e-4):
            err = (got.double() - expected.double()).abs().max().item()
            result = CheckResult(False, f"{name}: values differ (max error {err:.3g}). Hint: {hint}")
        else:
            result = CheckResult(True, f"{name}: correct!")
    if not quiet:
        print(result.message)
    return result


SHAPES = ((16, 2), (6, 3, 4, 4))  #: every checker tries points [B, 2] and image-shaped tensors [B, C, H, W]


def _case(seed: int = 0, T: int = 100, shape=(16, 2)):
    g = torch.Generator().manual_seed(seed)
    process = GaussianDiffusion(beta_schedule("linear", T))
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (shape[0],), generator=g)
    t[0], t[-1] = 0, T - 1
    return process, x0, eps, t


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` [B] shaped [B, 1, ..., 1] to broadcast against ``like``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _all(name: str, results: list[CheckResult], quiet: bool) -> CheckResult:
    """One verdict for several cases: the first failure, or success naming what was covered."""
    failed = next((r for r in results if not r), None)
    result = failed if failed is not None else CheckResult(True, f"{name}: correct!")
    if not quiet:
        print(result.message)
    return result


def _toy_eps_model(seed: int = 7) -> Callable:
    """A fixed, smooth 'network' eps(x, t) for checking sampling loops (any shape of x)."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn((), generator=g, dtype=torch.float64) for _ in range(2))

    def model(x, t, **kw):
        tt = _per_sample(t.to(x.dtype), x)
        return 0.5 * torch.tanh(a * x + b * tt / 100) + 0.1 * x

    return model


_BROADCAST_HINT = ("index with t, then reshape to [B, 1, ..., 1] so it broadcasts over any data shape "
                   "(e.g. v.reshape(-1, *[1] * (x.ndim - 1))); [:, None] only works for [B, D] data.")


def check_q_sample(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0, t, eps, alphas_cumprod) -> x_t`` (DDPM chapter), on points and on image-shaped tensors."""
    results = []
    for shape in SHAPES:
        p, x0, eps, t = _case(shape=shape)
        results.append(_compare(f"q_sample {list(shape)}", fn, (x0, t, eps, p.alphas_cumprod),
                                p.q_sample(x0, t, eps), "x_t mixes x0 and eps with the square roots of "
                                "abar_t and 1 - abar_t; " + _BROADCAST_HINT, quiet=True))
    return _all("q_sample", results, quiet)


def check_posterior_mean(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0, xt, t, betas) -> mean of q(x_{t-1} | x_t, x_0)`` (DDPM chapter), t = 0 included."""
    results = []
    for shape in SHAPES:
        p, x0, eps, t = _case(1, shape=shape)
        xt = p.q_sample(x0, t, eps)
        results.append(_compare(f"posterior mean {list(shape)}", fn, (x0, xt, t, p.betas),
                                p.q_posterior(x0, xt, t)[0],
                                "abar_{t-1} is 1 at t = 0; the x0 coefficient is sqrt(abar_{t-1}) beta_t/(1-abar_t) "
                                "and the x_t coefficient sqrt(alpha_t)(1-abar_{t-1})/(1-abar_t); "
                                + _BROADCAST_HINT, quiet=True))
    return _all("posterior mean", results, quiet)


def check_cosine_schedule(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(T) -> betas`` of the cosine schedule (DDPM chapter)."""
    return _compare("cosine schedule", fn, (50,), beta_schedule("cosine", 50),
                    "abar(u) = cos^2((u + s)/(1 + s) * pi/2) with s = 0.008 at u = i/T for i = 0..T; "
                    "beta_i = 1 - abar(i+1)/abar(i), clipped at 0.999.", quiet=quiet)


def check_ddim_step(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(xt, eps, abar_t, abar_prev[, eta, noise]) -> x_prev`` (DDIM chapter, eq. 12). ``abar_t`` and
    ``abar_prev`` come shaped to broadcast ([B, 1] for points, [B, 1, 1, 1] for images); the last step
    (``t_prev = -1``, abar_prev = 1) is among the cases. A function that also takes ``eta`` and ``noise``
    is checked at eta = 0.5 and 1 as well."""
    import inspect

    with_eta = len(inspect.signature(fn).parameters) >= 6
    results = []
    for shape in SHAPES:
        p, x0, eps, t = _case(2, shape=shape)
        xt = p.q_sample(x0, t, eps)
        t = t.clamp(min=1)
        t_prev = t - 1
        t_prev[0] = -1                                       # the final step, to abar = 1
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        abar = _per_sample(p.alphas_cumprod[t], xt)
        abar_prev = _per_sample(torch.cat([p.alphas_cumprod, p.alphas_cumprod.new_ones(1)])[t_prev], xt)
        for eta in (0.0, 0.5, 1.0) if with_eta else (0.0,):
            args = (xt, eps, abar, abar_prev) + ((eta, noise) if with_eta else ())
            results.append(_compare(f"ddim step {list(shape)}, eta = {eta}", fn, args,
                                    p.ddim_step(xt, t, t_prev, eps, eta=eta, noise=noise),
                                    "predict x0 from x_t and eps first; with eta > 0, sigma (eq. 16) both adds "
                                    "sigma * noise and shrinks the eps coefficient to sqrt(1 - abar_prev - "
                                    "sigma^2); at t_prev = -1, abar_prev = 1.", quiet=True))
    return _all("ddim step" + (" (eta = 0, 0.5, 1)" if with_eta else " (eta = 0)"), results, quiet)


def check_ddpm_sampler(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(model, betas, x_T, noises) -> x_0``: ancestral sampling (DDPM chapter, Algorithm 2) with the
    "small" variance beta~_t, where ``model(x, t)`` predicts eps for a LongTensor ``t`` [B] and
    ``noises[i]`` is the noise of the step *from* index i (unused at i = 0)."""
    results = []
    model = _toy_eps_model()
    for shape in SHAPES:
        p = GaussianDiffusion(beta_schedule("linear", 30))
        g = torch.Generator().manual_seed(11)
        x_T = torch.randn(shape, generator=g, dtype=torch.float64)
        noises = torch.randn((p.T, *shape), generator=g, dtype=torch.float64)
        x = x_T
        for i in reversed(range(p.T)):
            t = torch.full((shape[0],), i)
            x = p.ddpm_step(x, t, model(x, t), noise=noises[i])
        results.append(_compare(f"ddpm sampler {list(shape)}", fn, (model, p.betas, x_T, noises), x,
                                "loop i = T-1 down to 0: eps = model(x, t) with t a [B] LongTensor, the posterior "
                                "mean from the predicted x0, plus sqrt(beta~_i) * noises[i] except at i = 0.",
                                quiet=True))
    return _all("ddpm sampler", results, quiet)


def check_ddim_sampler(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(model, alphas_cumprod, kept, x_T) -> x_0``: deterministic DDIM (eta = 0) over the kept
    timesteps (increasing 0-based indices, as ``space_timesteps`` returns them), ending with the step to
    abar = 1; ``model(x, t)`` predicts eps (DDIM chapter, eq. 12)."""
    from .schedules import space_timesteps

    results = []
    model = _toy_eps_model(8)
    p = GaussianDiffusion(beta_schedule("linear", 100))
    for shape in SHAPES:
        for steps in (10, 3):
            kept = space_timesteps(p.T, steps)
            x_T = torch.randn(shape, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
            x = x_T
            for i, i_prev in zip(reversed(kept), reversed([-1] + kept[:-1])):
                t = torch.full((shape[0],), i)
                x = p.ddim_step(x, t, torch.full_like(t, i_prev), model(x, t))
            results.append(_compare(f"ddim sampler {list(shape)}, {steps} steps", fn,
                                    (model, p.alphas_cumprod, kept, x_T), x,
                                    "walk the pairs (kept[k], kept[k-1]) from the end, the last pair being "
                                    "(kept[0], -1) with abar = 1; call the model with the original index.",
                                    quiet=True))
    return _all("ddim sampler", results, quiet)


def check_cfg_sampler(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(net, alphas_cumprod, kept, y, w, x_T) -> x_0``: DDIM (eta = 0) with classifier-free guidance
    (guidance chapter), where ``net(x, t, y=labels)`` predicts eps and ``net.null_class`` is the label of
    the unconditional model."""
    from .nets import MLP2D
    from .schedules import space_timesteps

    torch.manual_seed(0)
    net = MLP2D(hidden=32, num_classes=3).eval()
    p = GaussianDiffusion(beta_schedule("linear", 100))
    kept = space_timesteps(p.T, 10)
    g = torch.Generator().manual_seed(12)
    x_T = torch.randn(16, 2, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    results = []
    for w in (0.0, 1.0, 3.0):
        x = x_T
        with torch.no_grad():
            for i, i_prev in zip(reversed(kept), reversed([-1] + kept[:-1])):
                t = torch.full((16,), i)
                eps = guided_output(net(x, t, y=y), net(x, t, y=torch.full_like(y, net.null_class)), w)
                x = p.ddim_step(x, t, torch.full_like(t, i_prev), eps)
        results.append(_compare(f"cfg sampler, w = {w}", torch.no_grad()(fn),
                                (net, p.alphas_cumprod, kept, y, w, x_T), x,
                                "at every step evaluate the net with y and with the null label, combine the "
                                "two predictions with w, and take a DDIM step with the result.", quiet=True))
    return _all("cfg sampler", results, quiet)


def check_langevin_step(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(score, x, step_size, noise) -> x_next`` (score matching chapter, eq. 4)."""
    g = torch.Generator().manual_seed(3)
    score, x, z = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(3))
    return _compare("langevin step", fn, (score, x, 0.01, z), langevin_step(score, x, 0.01, z),
                    "x + step_size/2 * score + sqrt(step_size) * noise.", quiet=quiet)


def check_dsm_target(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x_noisy, x0, sigma) -> grad log q(x_noisy | x0)`` (score matching chapter, eq. 2)."""
    g = torch.Generator().manual_seed(4)
    x0, z = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(2))
    sigma = 0.3
    return _compare("dsm target", fn, (x0 + sigma * z, x0, sigma), -z / sigma,
                    "q(x~|x) = N(x, sigma^2 I), so its score is -(x~ - x)/sigma^2.", quiet=quiet)


def check_guidance(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(eps_cond, eps_uncond, w) -> guided eps`` (guidance chapter)."""
    g = torch.Generator().manual_seed(5)
    cond, uncond = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(2))
    return _compare("classifier-free guidance", fn, (cond, uncond, 3.0), guided_output(cond, uncond, 3.0),
                    "start from the unconditional prediction and move w times along (cond - uncond); "
                    "w = 1 must give the conditional prediction back.", quiet=quiet)


def check_langevin_sampler(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(score_fn, x, step_size, noises) -> x`` after ``len(noises)`` Langevin steps (score matching
    chapter, eq. 4), ``noises[k]`` being the noise of step k and ``score_fn(x)`` the score at x."""
    g = torch.Generator().manual_seed(13)
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)

    def score_fn(x):  # the score of N(mean, 0.25 I)
        return -(x - mean) / 0.25

    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    noises = torch.randn(25, 32, 2, generator=g, dtype=torch.float64)
    expected = x
    for z in noises:
        expected = langevin_step(score_fn(expected), expected, 0.01, z)
    return _compare("langevin sampler", fn, (score_fn, x, 0.01, noises), expected,
                    "re-evaluate score_fn at the current x before every step; step k uses noises[k].",
                    quiet=quiet)


# ------------------------------------------------------------------------------ GAN chapters
def _scalar_compare(name: str, fn: Callable, args: tuple, expected: float, hint: str, quiet: bool) -> CheckResult:
    """Compare a function returning a number (float or 0-d tensor) with ``expected``."""
    try:
        got = fn(*args)
        got = float(got.detach()) if isinstance(got, torch.Tensor) else float(got)
    except NotImplementedError:
        result = CheckResult(False, f"{name}: not implemented yet (replace the TODO).")
    except Exception as err:  # the student's code may fail in any way; report it, do not crash
        result = CheckResult(False, f"{name}: your function raised {type(err).__name__}: {err}")
    else:
        ok = abs(got - expected) <= 1e-5 + 1e-4 * abs(expected)
        result = CheckResult(ok, f"{name}: correct!" if ok else f"{name}: got {got:.6g}, expected {expected:.6g}. "
                                                                  f"Hint: {hint}")
    if not quiet:
        print(result.message)
    return result


def check_generator_loss(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(fake_logits) -> the non-saturating generator loss`` (GAN chapter): -E log sigmoid(D(G(z)))."""
    from .methods.gan import generator_loss

    logits = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    results = [_scalar_compare(f"generator loss ({label})", fn, (x,), float(generator_loss(x)),
                               "the generator wants D to call its samples real: the cross-entropy with target 1, "
                               "-log(sigmoid(logit)) = softplus(-logit), averaged over the batch.", quiet=True)
               for label, x in [("random logits", logits), ("confident D", logits - 8)]]
    return _all("generator loss", results, quiet)


def check_r1_penalty(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(discriminator, real) -> E ||grad_x D(x)||^2`` (GAN chapter; without the gamma / 2)."""
    from .methods.gan import r1_penalty

    g = torch.Generator().manual_seed(1)
    w1, w2 = torch.randn(2, 16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)

    def disc(x):
        return torch.tanh(x @ w1) @ w2

    real = torch.randn(32, 2, generator=g, dtype=torch.float64)
    leaf = real.clone().requires_grad_(True)
    expected = float(r1_penalty(disc(leaf), leaf).detach())
    return _scalar_compare("R1 penalty", fn, (disc, real), expected,
                           "make a copy of the real points that requires grad, apply D, take torch.autograd.grad of "
                           "the sum of its outputs with create_graph=True, then the mean over the batch of the squared "
                           "norm of each example's gradient.", quiet)


def check_ddgan_posterior_sample(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0_pred, xt, t, betas, noise) -> x_{t-1}`` (DDGAN chapter): a draw of q(x_{t-1} | x_t, x0')
    with the given noise and none at t == 0, on the 4-step ``ddgan`` schedule, points and images. The
    expected draw is ``DDGAN.posterior_sample`` with a generator whose first draw is ``noise``."""
    from .methods.ddgan import DDGAN
    from .nets.gan import MLPDiscriminator2D, MLPGenerator2D

    p = GaussianDiffusion(beta_schedule("ddgan", 4))
    method = DDGAN(MLPGenerator2D(), MLPDiscriminator2D(), p)  # posterior_sample uses only the process
    results = []
    for shape in SHAPES:
        g = torch.Generator().manual_seed(2)
        x0, xt = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        t = torch.arange(shape[0]) % 4
        expected = method.posterior_sample(x0, xt, t, generator=torch.Generator().manual_seed(3))
        results.append(_compare(f"posterior sample {list(shape)}", fn, (x0, xt, t, p.betas, noise), expected,
                                "the mean is DDPM's posterior mean with x0' in place of x0; the standard deviation is "
                                "sqrt(beta~_t) with beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t; no noise at "
                                "t = 0. " + _BROADCAST_HINT, quiet=True))
    return _all("posterior sample", results, quiet)


def check_weighted_learning(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(epoch, num_epochs, delta) -> float`` (LDDGAN chapter): the weighted-learning weight, eq. 9."""
    from .methods.ddgan import weighted_learning_weight

    results = [_scalar_compare(f"weight at epoch {e} of {n} (delta {d})", fn, (e, n, d),
                               weighted_learning_weight(e, n, d),
                               "lambda = 1 - sigmoid(phi) with phi going linearly from -delta at epoch 0 to +delta at "
                               "the last epoch.", quiet=True)
               for e, n, d in [(0, 100, 6.0), (30, 100, 6.0), (50, 100, 6.0), (100, 100, 6.0), (7, 20, 2.0)]]
    return _all("weighted learning", results, quiet)


def check_mixed_mean_loss(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0, xt, t, x0_direct, x0_from_eps, r, betas) -> L_mu`` (metric-functions chapter): the mean
    squared error between the true posterior mean and the r-mix of the posterior means of the two x0
    estimates, with both branch means detached (Cas-DM paper eq. 12). Checked on images with a per-pixel
    r: the value, and that no gradient reaches the two estimates (only r learns from L_mu)."""
    from .methods.dual import posterior_mean_mix_loss

    betas = beta_schedule("cosine", 50).double()
    p = GaussianDiffusion(betas)
    g = torch.Generator().manual_seed(4)
    x0, xt, direct, from_eps = (torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(4))
    r = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 5, 17, 30, 42, 49])
    expected = float(posterior_mean_mix_loss(p, x0, xt, t, direct, from_eps, r))
    value = _scalar_compare("L_mu", fn, (x0, xt, t, direct, from_eps, r, betas), expected,
                            "mu(x0) = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / "
                            "(1 - abar_t) x_t; mix the two estimates' means with r (r for the direct one), compare "
                            "with mu of the true x0, and average the squares over every element. " + _BROADCAST_HINT,
                            quiet=True)
    results = [value]
    if value:
        leaves = [v.clone().requires_grad_(True) for v in (direct, from_eps, r)]
        fn(x0, xt, t, *leaves, betas).backward()
        grads = [0.0 if v.grad is None else float(v.grad.abs().max()) for v in leaves]
        ok = grads[0] == 0 and grads[1] == 0 and grads[2] > 0
        results.append(CheckResult(ok, "L_mu gradients: correct!" if ok else
                                   f"L_mu gradients: largest gradient on x0_direct {grads[0]:.3g}, on x0_from_eps "
                                   f"{grads[1]:.3g}, on r {grads[2]:.3g}. Hint: only r may learn from L_mu: detach "
                                   "the two branch means (.detach()) before mixing them."))
    return _all("L_mu", results, quiet)


def check_self_perceptual_inputs(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0, eps, v_hat, t, t_prime, betas) -> (x_tp, x_tp_hat)`` (self-perceptual chapter): the two inputs
    of the frozen network, Lin & Yang 2024 eqs. 6-11: x_t = forward(x0, eps, t); x0_hat and eps_hat from the
    v prediction at x_t; x_tp = forward(x0, eps, t'), x_tp_hat = forward(x0_hat, eps_hat, t'). Checked on a
    zero-terminal-SNR schedule (t = T-1 included) and at t' = t, where the two must coincide (eq. 13)."""
    from .schedules import rescale_zero_terminal_snr

    betas = rescale_zero_terminal_snr(beta_schedule("linear", 50)).double()
    p = GaussianDiffusion(betas)
    g = torch.Generator().manual_seed(5)
    x0, eps, v_hat = (torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0, 7, 20, 33, 49, 49])
    results = []
    for label, t_prime in (("t' drawn", torch.tensor([49, 3, 40, 33, 0, 12])), ("t' = t", t)):
        xt = p.q_sample(x0, t, eps)
        eps_hat, x0_hat = p.split_prediction(xt, t, v_hat, "v")
        expected = (p.q_sample(x0, t_prime, eps), p.q_sample(x0_hat, t_prime, eps_hat))
        hint = ("x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; x0_hat = sqrt(abar_t) x_t - sqrt(1 - abar_t) v; "
                "eps_hat = sqrt(abar_t) v + sqrt(1 - abar_t) x_t; then diffuse (x0, eps) and (x0_hat, eps_hat) to t'. "
                "abar = cumprod(1 - betas). " + _BROADCAST_HINT)
        for i, name in enumerate(("x_t' (true pair)", "x^_t' (predicted pair)")):
            results.append(_compare(f"{name}, {label}", lambda *a, i=i: _part(fn(*a), i),
                                    (x0, eps, v_hat, t, t_prime, betas), expected[i], hint, quiet=True))
    return _all("self-perceptual inputs", results, quiet)


def _part(out, i: int):
    """Item ``i`` of a student's pair of outputs (None when they returned None)."""
    if out is None:
        return None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"expected a pair (x_tp, x_tp_hat), got {type(out).__name__}")
    return out[i]


def check_lpl_layer_term(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(pred, target, keep) -> Tensor[B]`` (latent-perceptual-loss chapter): the term of one decoder map in
    the LPL (Berrada Ifriqi et al. 2025, eq. 3) before its depth weight. ``pred`` and ``target`` are the
    feature maps ``[B, C, H, W]`` of the predicted and the true latent, ``keep`` the bool outlier mask of
    ``pred`` (False at outliers). Per sample and channel, the mean and ``sqrt(var + NORM_EPS)`` of ``pred`` over
    the *kept* positions (population variance) standardise both maps; the squared difference is zeroed where
    ``keep`` is False, averaged over all ``H * W`` positions, then over the channels. Checked against
    ``pdlib.perceptual.LatentPerceptualLoss`` on random maps with planted outliers (the mask from
    ``pdlib.perceptual.lpl.outlier_mask``) and with a mask that keeps everything."""
    from .perceptual.lpl import LatentPerceptualLoss, MapsAsLatents, outlier_mask

    loss = LatentPerceptualLoss(MapsAsLatents(), snr_threshold=None)
    plain = LatentPerceptualLoss(MapsAsLatents(), snr_threshold=None, outlier_mask=False)
    results = []
    for seed, shape in ((6, (6, 3, 24, 24)), (7, (4, 5, 32, 32))):
        g = torch.Generator().manual_seed(seed)
        target = torch.randn(shape, generator=g, dtype=torch.float64)
        pred = 1.5 * target + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64) + 0.3
        pred[:, :, 1:4, 2:5] += 12.0  # a 3x3 blob of outliers (under 2 % of the positions): the mask removes it
        pred[::2, :, 15:17, 9:11] -= 12.0  # a 2x2 one in every other sample, which the closing keeps
        hint = ("take the mean and sqrt(var + 1e-6) of pred over the kept positions only (per sample and channel, "
                "population variance), standardise BOTH maps with them, square the difference, zero it where keep "
                "is False, then average over all H * W positions (masked ones count as 0) and over the channels.")
        for label, keep, expected in (("outliers masked", outlier_mask(pred), loss(pred, target)),
                                      ("nothing masked", torch.ones(shape, dtype=torch.bool), plain(pred, target))):
            results.append(_compare(f"LPL layer term {list(shape)}, {label}", fn, (pred, target, keep), expected,
                                    hint, quiet=True))
    return _all("LPL layer term", results, quiet)
