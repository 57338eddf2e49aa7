"""The exercise checkers: accept a correct solution (written here in plain torch), reject wrong ones
with a hint, report stubs as not implemented, and survive any other error in the student's code."""

import math

import pytest
import torch

from pdlib import exercises
from pdlib.exercises import CheckResult


# --------------------------------------------------------------------- reference solutions (plain torch)
def per_sample(v, x):
    return v.reshape(-1, *[1] * (x.ndim - 1))


def q_sample(x0, t, eps, alphas_cumprod):
    a = per_sample(alphas_cumprod[t], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def posterior_mean(x0, xt, t, betas):
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    b, a, ap, al = (per_sample(v[t], x0) for v in (betas, abar, abar_prev, alphas))
    return ap.sqrt() * b / (1 - a) * x0 + al.sqrt() * (1 - ap) / (1 - a) * xt


def cosine_schedule(T):
    s = 0.008
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clamp(1 - f[1:] / f[:-1], max=0.999)


def ddim_step(xt, eps, abar_t, abar_prev):
    x0 = (xt - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def ddim_step_eta(xt, eps, abar_t, abar_prev, eta, noise):
    x0 = (xt - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).sqrt() * eps + sigma * noise


def ddpm_sampler(model, betas, x, noises):
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    for i in reversed(range(len(betas))):
        t = torch.full((len(x),), i)
        x0 = (x - (1 - abar[i]).sqrt() * model(x, t)) / abar[i].sqrt()
        mean = abar_prev[i].sqrt() * betas[i] / (1 - abar[i]) * x0 + alphas[i].sqrt() * (1 - abar_prev[i]) / (
            1 - abar[i]) * x
        var = betas[i] * (1 - abar_prev[i]) / (1 - abar[i])
        x = mean + (var.sqrt() * noises[i] if i > 0 else 0)
    return x


def ddim_sampler(model, alphas_cumprod, kept, x):
    for i, i_prev in zip(reversed(kept), reversed([-1] + list(kept[:-1]))):
        a, ap = alphas_cumprod[i], (alphas_cumprod[i_prev] if i_prev >= 0 else torch.tensor(1.0))
        x = ddim_step(x, model(x, torch.full((len(x),), i)), a, ap)
    return x


def cfg_sampler(net, alphas_cumprod, kept, y, w, x):
    def guided(x, t):
        eps_u = net(x, t, y=torch.full_like(y, net.null_class))
        return eps_u + w * (net(x, t, y=y) - eps_u)

    return ddim_sampler(guided, alphas_cumprod, kept, x)


def langevin(score, x, step_size, noise):
    return x + step_size / 2 * score + math.sqrt(step_size) * noise


def langevin_sampler(score_fn, x, step_size, noises):
    for z in noises:
        x = langevin(score_fn(x), x, step_size, z)
    return x


def dsm_target(x_noisy, x0, sigma):
    return -(x_noisy - x0) / sigma**2


def guidance(eps_cond, eps_uncond, w):
    return eps_uncond + w * (eps_cond - eps_uncond)


# --------------------------------------------------------------------- plausible wrong solutions
def q_sample_wrong(x0, t, eps, alphas_cumprod):  # forgot the square roots
    a = per_sample(alphas_cumprod[t], x0)
    return a * x0 + (1 - a) * eps


def posterior_mean_wrong(x0, xt, t, betas):  # abar_{t-1} taken as abar_t
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    b, a, al = (per_sample(v[t], x0) for v in (betas, abar, alphas))
    return a.sqrt() * b / (1 - a) * x0 + al.sqrt() * (1 - a) / (1 - a) * xt


def cosine_schedule_wrong(T):  # no clipping at 0.999 and s = 0
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos(u * math.pi / 2) ** 2
    return 1 - f[1:] / f[:-1].clamp(min=1e-12)


def ddim_step_wrong(xt, eps, abar_t, abar_prev):  # mixed up abar_t and abar_prev in the direction
    x0 = (xt - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_t).sqrt() * eps


def ddpm_sampler_wrong(model, betas, x, noises):  # adds noise at the last step too
    out = ddpm_sampler(model, betas, x, noises)
    var0 = 0 * betas[0]
    return out + (betas[0] + var0).sqrt() * noises[0]


def ddim_sampler_wrong(model, alphas_cumprod, kept, x):  # stops at kept[0] instead of going to abar = 1
    for i, i_prev in zip(reversed(kept[1:]), reversed(kept[:-1])):
        x = ddim_step(x, model(x, torch.full((len(x),), i)), alphas_cumprod[i], alphas_cumprod[i_prev])
    return x


def cfg_sampler_wrong(net, alphas_cumprod, kept, y, w, x):  # guides from the conditional prediction
    def guided(x, t):
        eps_c = net(x, t, y=y)
        return eps_c + w * (eps_c - net(x, t, y=torch.full_like(y, net.null_class)))

    return ddim_sampler(guided, alphas_cumprod, kept, x)


def langevin_wrong(score, x, step_size, noise):  # step_size instead of step_size / 2
    return x + step_size * score + math.sqrt(step_size) * noise


def langevin_sampler_wrong(score_fn, x, step_size, noises):  # the score of the start, never updated
    s = score_fn(x)
    for z in noises:
        x = langevin(s, x, step_size, z)
    return x


def dsm_target_wrong(x_noisy, x0, sigma):  # divided by sigma instead of sigma^2
    return -(x_noisy - x0) / sigma


def guidance_wrong(eps_cond, eps_uncond, w):  # starts from the conditional prediction
    return eps_cond + w * (eps_cond - eps_uncond)


CHECKERS = {
    "check_q_sample": (q_sample, q_sample_wrong),
    "check_posterior_mean": (posterior_mean, posterior_mean_wrong),
    "check_cosine_schedule": (cosine_schedule, cosine_schedule_wrong),
    "check_ddim_step": (ddim_step, ddim_step_wrong),
    "check_ddpm_sampler": (ddpm_sampler, ddpm_sampler_wrong),
    "check_ddim_sampler": (ddim_sampler, ddim_sampler_wrong),
    "check_cfg_sampler": (cfg_sampler, cfg_sampler_wrong),
    "check_langevin_sampler": (langevin_sampler, langevin_sampler_wrong),
    "check_langevin_step": (langevin, langevin_wrong),
    "check_dsm_target": (dsm_target, dsm_target_wrong),
    "check_guidance": (guidance, guidance_wrong),
}


def test_every_checker_is_covered():
    public = {name for name in dir(exercises) if name.startswith("check_")}
    assert public == set(CHECKERS) | {c.__name__ for c, _, _ in LATER_CHAPTER_CHECKERS}


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_accepts_correct_solution(name, capsys):
    result = getattr(exercises, name)(CHECKERS[name][0])
    assert isinstance(result, CheckResult)
    assert result and result.passed
    assert "correct" in result.message
    assert result.message in capsys.readouterr().out  # prints its verdict


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_rejects_wrong_solution_with_hint(name):
    result = getattr(exercises, name)(CHECKERS[name][1], quiet=True)
    assert not result
    assert "Hint" in result.message and "differ" in result.message


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_reports_not_implemented(name):
    def stub(*args):
        raise NotImplementedError("TODO")

    result = getattr(exercises, name)(stub, quiet=True)
    assert not result
    assert "not implemented" in result.message


@pytest.mark.parametrize("name", sorted(CHECKERS))
@pytest.mark.parametrize("exc", [ZeroDivisionError, IndexError, RuntimeError, TypeError])
def test_survives_other_errors(name, exc):
    def broken(*args):
        raise exc("student bug")

    result = getattr(exercises, name)(broken, quiet=True)
    assert not result
    assert exc.__name__ in result.message and "not implemented" not in result.message


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_rejects_none_wrong_type_and_wrong_shape(name):
    right = CHECKERS[name][0]
    check = getattr(exercises, name)
    assert not check(lambda *a: None, quiet=True)
    assert not check(lambda *a: right(*a).numpy(), quiet=True)  # a numpy array, not a tensor
    assert not check(lambda *a: right(*a)[:-1], quiet=True)  # wrong shape
    assert not check(lambda *a: right(*a) + 1e-2, quiet=True)  # small but real error
    result = check(lambda *a: right(*a).float(), quiet=True)  # float32 is fine
    assert result, result.message


def test_quiet_prints_nothing(capsys):
    exercises.check_guidance(guidance, quiet=True)
    assert capsys.readouterr().out == ""


def test_check_result_behaves_like_a_bool():
    assert bool(CheckResult(True, "ok")) and not bool(CheckResult(False, "no"))
    assert repr(CheckResult(False, "message")) == "message"


# --------------------------------------------------------------------- the edge cases the checkers cover
def test_points_only_solutions_fail_on_images():
    def q_sample_points_only(x0, t, eps, alphas_cumprod):  # [:, None] broadcasts only over [B, D]
        a = alphas_cumprod[t][:, None]
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    result = exercises.check_q_sample(q_sample_points_only, quiet=True)
    assert not result and "[6, 3, 4, 4]" in result.message


def test_ddim_step_with_eta_is_checked_at_eta_above_zero():
    assert exercises.check_ddim_step(ddim_step_eta, quiet=True)

    def eta_ignored(xt, eps, abar_t, abar_prev, eta, noise):
        return ddim_step(xt, eps, abar_t, abar_prev)

    result = exercises.check_ddim_step(eta_ignored, quiet=True)
    assert not result and "eta = 0.5" in result.message


def test_ddim_step_covers_the_last_step():
    def no_final_step(xt, eps, abar_t, abar_prev):  # treats abar_prev = 1 as if it were abar_t
        abar_prev = torch.where(abar_prev == 1, abar_t, abar_prev)
        return ddim_step(xt, eps, abar_t, abar_prev)

    assert not exercises.check_ddim_step(no_final_step, quiet=True)


# --------------------------------------------------------------------- the GAN chapters' checkers
def gen_loss(fake_logits):
    return torch.nn.functional.softplus(-fake_logits).mean()


def r1(disc, real):
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
    return g.pow(2).sum(1).mean()


def ddgan_posterior_sample(x0, xt, t, betas, noise):
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    mean = posterior_mean(x0, xt, t, betas)
    var = per_sample(((1 - abar_prev) / (1 - abar) * betas)[t], xt)
    return mean + per_sample((t > 0).to(xt.dtype), xt) * var.sqrt() * noise


def weighted(epoch, num_epochs, delta):
    phi = -delta + 2 * delta * epoch / num_epochs
    return 1 - 1 / (1 + math.exp(-phi))


def mixed_mean_loss(x0, xt, t, direct, from_eps, r, betas):
    def mean(x):
        return posterior_mean(x, xt, t, betas)

    return (mean(x0) - (r * mean(direct).detach() + (1 - r) * mean(from_eps).detach())).pow(2).mean()


def mixed_mean_loss_not_detached(x0, xt, t, direct, from_eps, r, betas):
    def mean(x):
        return posterior_mean(x, xt, t, betas)

    return (mean(x0) - (r * mean(direct) + (1 - r) * mean(from_eps))).pow(2).mean()


def self_perceptual_inputs(x0, eps, v, t, t_prime, betas, *, true_noise=False):
    abar = torch.cumprod(1 - betas, 0)

    def forward(x, e, tt):
        a = abar[tt].reshape(-1, 1, 1, 1)
        return a.sqrt() * x + (1 - a).sqrt() * e

    a = abar[t].reshape(-1, 1, 1, 1)
    xt = forward(x0, eps, t)
    x0_hat, eps_hat = a.sqrt() * xt - (1 - a).sqrt() * v, a.sqrt() * v + (1 - a).sqrt() * xt
    return forward(x0, eps, t_prime), forward(x0_hat, eps if true_noise else eps_hat, t_prime)


def lpl_layer_term(pred, target, keep, *, stats="predicted", kept_mean=False):
    """One map's LPL term: standardise with pred's statistics over the kept positions, square, mask, mean over
    all positions, mean over channels. The keywords give plausible wrong versions."""
    w = keep.to(pred.dtype)

    def standardiser(f, mask):
        n = mask.sum((-2, -1), keepdim=True).clamp_min(1)
        mean = (f * mask).sum((-2, -1), keepdim=True) / n
        var = ((f - mean) ** 2 * mask).sum((-2, -1), keepdim=True) / n
        return lambda x: (x - mean) / torch.sqrt(var + 1e-6)

    if stats == "predicted":
        sp = st = standardiser(pred, w)
    elif stats == "separate":
        sp, st = standardiser(pred, w), standardiser(target, w)
    else:  # "all positions": the outliers inflate the statistics
        sp = st = standardiser(pred, torch.ones_like(w))
    sq = (st(target) - sp(pred)) ** 2 * w
    spatial = sq.sum((-2, -1)) / w.sum((-2, -1)).clamp_min(1) if kept_mean else sq.mean((-2, -1))
    return spatial.mean(1)


LATER_CHAPTER_CHECKERS = [
    (exercises.check_generator_loss, gen_loss, lambda f: -torch.nn.functional.softplus(f).mean()),  # minimax
    (exercises.check_r1_penalty, r1, lambda d, x: r1(d, x).sqrt()),
    (exercises.check_ddgan_posterior_sample, ddgan_posterior_sample,
     lambda x0, xt, t, b, n: posterior_mean(x0, xt, t, b) + n * 0.1),  # noise at t = 0 and the wrong scale
    (exercises.check_weighted_learning, weighted, lambda e, n, d: 1 / (1 + math.exp(-(-d + d * e / n)))),
    (exercises.check_mixed_mean_loss, mixed_mean_loss, mixed_mean_loss_not_detached),
    (exercises.check_self_perceptual_inputs, self_perceptual_inputs,
     lambda *a: self_perceptual_inputs(*a, true_noise=True)),  # x0_hat re-noised with the true eps (L_sp2's half)
    (exercises.check_lpl_layer_term, lpl_layer_term,
     lambda *a: lpl_layer_term(*a, stats="separate")),  # each map its own statistics (the paper's ablation)
]


@pytest.mark.parametrize("checker, right, wrong", LATER_CHAPTER_CHECKERS)
def test_later_chapter_checkers(checker, right, wrong, capsys):
    assert checker(right)
    assert not checker(wrong) and "Hint" in capsys.readouterr().out

    def stub(*args):
        raise NotImplementedError

    assert "not implemented" in checker(stub, quiet=True).message


@pytest.mark.parametrize("wrong", [dict(stats="all positions"), dict(kept_mean=True)])
def test_lpl_layer_term_rejects_mask_mistakes(wrong):
    """Statistics over every position (outliers included), and a mean over the kept positions only, both fail."""
    result = exercises.check_lpl_layer_term(lambda *a: lpl_layer_term(*a, **wrong), quiet=True)
    assert not result and "Hint" in result.message and "outliers masked" in result.message


def test_lpl_layer_term_masks_something():
    """The planted 3x3 blob is masked, so the masked cases really test the mask."""
    seen = []

    def spy(pred, target, keep):
        seen.append(int((~keep).sum()))
        return lpl_layer_term(pred, target, keep)

    assert exercises.check_lpl_layer_term(spy, quiet=True)
    assert seen[0] > 0 and seen[2] > 0 and seen[1] == seen[3] == 0
