"""GaussianDiffusion: forward process, posterior, parameterisations, sampler steps, respacing, errors.

References: float64 numpy formulas (Ho et al. 2020; Song et al. 2021; Salimans & Ho 2022) written
here, and diffusers' ``DDPMScheduler`` / ``DDIMScheduler`` run in float64 on the same schedule.
"""

import numpy as np
import pytest
import torch

from pdlib import GaussianDiffusion

from diffusers import DDIMScheduler, DDPMScheduler  # test-only reference (requirements.txt)

T = 1000
BETAS = np.linspace(1e-4, 0.02, T, dtype=np.float64)  # Ho et al. linear schedule, written out
ABAR = np.cumprod(1 - BETAS)
ABAR_PREV = np.concatenate([[1.0], ABAR[:-1]])
F64 = torch.float64


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(torch.from_numpy(BETAS.copy()))


def col(a, t, ndim):
    """numpy a[t] shaped to broadcast over an array with ndim dimensions."""
    return a[np.asarray(t)].reshape(-1, *([1] * (ndim - 1)))


def make_case(seed=0, shape=(4, 2, 3, 3), t=(999, 500, 1, 0)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g, dtype=F64) * 2 - 1
    eps = torch.randn(shape, generator=g, dtype=F64)
    t = torch.tensor(t, dtype=torch.long)
    a = col(ABAR, t, len(shape))
    xt = torch.from_numpy(np.sqrt(a) * x0.numpy() + np.sqrt(1 - a) * eps.numpy())
    # an imperfect eps prediction, so x0_hat leaves [-1, 1] at large t and clipping matters
    eps_hat = 0.8 * eps + 0.5 * torch.randn(shape, generator=g, dtype=F64)
    return x0, eps, t, xt, eps_hat


# ---------------------------------------------------------------------------------- attributes
def test_attributes(process):
    assert process.T == T
    for name in ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev"):
        assert getattr(process, name).dtype == F64
        assert getattr(process, name).shape == (T,)
    np.testing.assert_allclose(process.alphas.numpy(), 1 - BETAS, rtol=1e-15)
    np.testing.assert_allclose(process.alphas_cumprod.numpy(), ABAR, rtol=1e-12)
    np.testing.assert_allclose(process.alphas_cumprod_prev.numpy(), ABAR_PREV, rtol=1e-12)
    assert process.alphas_cumprod_prev[0].item() == 1.0


def test_float32_betas_are_stored_in_float64():
    p = GaussianDiffusion(torch.from_numpy(BETAS).float())
    assert p.betas.dtype == F64 and p.alphas_cumprod.dtype == F64


@pytest.mark.parametrize("betas, err", [(torch.zeros(10), ValueError), (torch.full((10,), 1.5), ValueError),
                                        (torch.full((10,), -0.1), ValueError), (torch.rand(3, 3) * 0.1, ValueError),
                                        (list(BETAS[:10]), TypeError)])
def test_bad_betas(betas, err):
    with pytest.raises(err):
        GaussianDiffusion(betas)


# --------------------------------------------------------------------------------- forward process
def test_q_sample_closed_form(process):
    x0, eps, t, xt, _ = make_case()
    out = process.q_sample(x0, t, eps)
    assert out.dtype == F64 and out.shape == x0.shape
    torch.testing.assert_close(out, xt, rtol=1e-12, atol=1e-12)


def test_q_sample_2d_and_scalar_t(process):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(5, 2, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64)
    ref = np.sqrt(ABAR[300]) * x0.numpy() + np.sqrt(1 - ABAR[300]) * eps.numpy()
    np.testing.assert_allclose(process.q_sample(x0, torch.tensor(300), eps).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(process.q_sample(x0, torch.full((5,), 300), eps).numpy(), ref, rtol=1e-12)


def test_q_sample_keeps_float32(process):
    x0, eps, t, xt, _ = make_case()
    out = process.q_sample(x0.float(), t, eps.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, xt.float(), rtol=1e-5, atol=1e-6)


def test_q_sample_draws_noise_from_generator(process):
    x0, _, t, _, _ = make_case()
    a = process.q_sample(x0, t, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    torch.testing.assert_close(a, process.q_sample(x0, t, noise), rtol=0, atol=0)


def test_q_sample_matches_diffusers_add_noise(process):
    x0, eps, t, _, _ = make_case()
    sched = ddpm_scheduler("fixed_small", False)
    ref = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(process.q_sample(x0, t, eps), ref, rtol=1e-12, atol=1e-12)


def test_q_posterior_closed_form(process):
    x0, _, t, xt, _ = make_case(1)
    mean, var, logvar = process.q_posterior(x0, xt, t)
    n = x0.ndim
    b, a, ap, al = col(BETAS, t, n), col(ABAR, t, n), col(ABAR_PREV, t, n), col(1 - BETAS, t, n)
    ref_mean = np.sqrt(ap) * b / (1 - a) * x0.numpy() + np.sqrt(al) * (1 - ap) / (1 - a) * xt.numpy()
    ref_var = (1 - ap) / (1 - a) * b
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(var.numpy().reshape(-1), ref_var.reshape(-1), rtol=1e-11, atol=1e-300)
    assert var.reshape(-1)[-1].item() == 0.0  # t = 0: q(x_{-1} | x_0, x_1) is a point mass at x0
    # at t = 0 the posterior mean is x0 itself
    torch.testing.assert_close(mean[-1], x0[-1], rtol=1e-12, atol=1e-12)
    # log-variance: log of the variance, except at t = 0 where improved diffusion uses the t = 1 value
    ref_log = np.log(ref_var.reshape(-1)[:-1])
    np.testing.assert_allclose(logvar.reshape(-1)[:-1].numpy(), ref_log, rtol=1e-11)
    beta_tilde_1 = (1 - ABAR[0]) / (1 - ABAR[1]) * BETAS[1]
    assert logvar.reshape(-1)[-1].item() == pytest.approx(np.log(beta_tilde_1), rel=1e-11)
    assert torch.isfinite(logvar).all()


def test_q_posterior_matches_diffusers(process):
    """diffusers' DDPM step with an x0 ("sample") prediction is mean + sqrt(var) z."""
    x0, _, t, xt, _ = make_case(2)
    sched = ddpm_scheduler("fixed_small", False, prediction_type="sample")
    mean, var, _ = process.q_posterior(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        g = torch.Generator().manual_seed(100 + i)
        ref = sched.step(x0[i:i + 1], ti, xt[i:i + 1], generator=g).prev_sample
        z = torch.randn((1, *x0.shape[1:]), generator=torch.Generator().manual_seed(100 + i), dtype=F64)
        ours = mean[i:i + 1] + (var[i].sqrt() * z if ti > 0 else 0)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
        if ti > 0:
            assert var.reshape(-1)[i].item() == pytest.approx(float(sched._get_variance(ti)), rel=1e-10)


# ----------------------------------------------------------------------------- parameterisations
def test_eps_x0_conversions_formulas_and_round_trip(process):
    x0, eps, t, xt, _ = make_case(3)
    a = col(ABAR, t, x0.ndim)
    x0_from_eps = process.predict_x0_from_eps(xt, t, eps)
    np.testing.assert_allclose(x0_from_eps.numpy(), (xt.numpy() - np.sqrt(1 - a) * eps.numpy()) / np.sqrt(a),
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x0_from_eps, x0, rtol=1e-8, atol=1e-8)
    eps_from_x0 = process.predict_eps_from_x0(xt, t, x0)
    np.testing.assert_allclose(eps_from_x0.numpy(), (xt.numpy() - np.sqrt(a) * x0.numpy()) / np.sqrt(1 - a),
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_x0, eps, rtol=1e-8, atol=1e-8)
    # round trip of an arbitrary prediction
    other = torch.randn_like(eps)
    torch.testing.assert_close(process.predict_eps_from_x0(xt, t, process.predict_x0_from_eps(xt, t, other)),
                               other, rtol=1e-7, atol=1e-7)


def test_v_conversions(process):
    x0, eps, t, xt, _ = make_case(4)
    a = col(ABAR, t, x0.ndim)
    v = process.velocity(x0, eps, t)
    np.testing.assert_allclose(v.numpy(), np.sqrt(a) * eps.numpy() - np.sqrt(1 - a) * x0.numpy(), rtol=1e-12,
                               atol=1e-14)
    torch.testing.assert_close(process.predict_x0_from_v(xt, t, v), x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(process.predict_eps_from_v(xt, t, v), eps, rtol=1e-10, atol=1e-10)
    other = torch.randn_like(v)
    np.testing.assert_allclose(process.predict_x0_from_v(xt, t, other).numpy(),
                               np.sqrt(a) * xt.numpy() - np.sqrt(1 - a) * other.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(process.predict_eps_from_v(xt, t, other).numpy(),
                               np.sqrt(a) * other.numpy() + np.sqrt(1 - a) * xt.numpy(), rtol=1e-12, atol=1e-14)
    # diffusers' get_velocity agrees
    sched = ddpm_scheduler("fixed_small", False)
    torch.testing.assert_close(v, sched.get_velocity(x0, eps, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_target_and_split_prediction(process, param):
    x0, eps, t, xt, _ = make_case(5)
    target = process.target(x0, eps, t, param)
    expected = {"eps": eps, "x0": x0, "v": process.velocity(x0, eps, t)}[param]
    torch.testing.assert_close(target, expected, rtol=0, atol=0)
    eps_hat, x0_hat = process.split_prediction(xt, t, target, param)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-8, atol=1e-8)
    # with clip the x0 is clamped and eps re-derived from it (consistent with xt)
    wild = 3 * torch.randn_like(target)
    eps_c, x0_c = process.split_prediction(xt, t, wild, param, clip=True)
    assert x0_c.abs().max() <= 1
    torch.testing.assert_close(process.q_sample(x0_c, t, eps_c), xt, rtol=1e-8, atol=1e-8)


def test_snr(process):
    t = torch.tensor([0, 1, 500, 999])
    s = process.snr(t)
    assert s.dtype == F64 and s.shape == (4,)
    np.testing.assert_allclose(s.numpy(), ABAR[t] / (1 - ABAR[t]), rtol=1e-12)
    assert (s[:-1] > s[1:]).all()
    with pytest.raises(TypeError):
        process.snr(torch.tensor([1.0]))
    with pytest.raises(ValueError):
        process.snr(torch.tensor([T]))
    with pytest.raises(ValueError):
        process.snr(torch.tensor([-1]))


# ---------------------------------------------------------------------- ddpm_step vs diffusers
def ddpm_scheduler(variance_type, clip, prediction_type="epsilon"):
    sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          variance_type=variance_type, clip_sample=clip, prediction_type=prediction_type)
    betas = torch.from_numpy(BETAS.copy())  # run diffusers in float64 on the same schedule
    sched.betas, sched.alphas = betas, 1 - betas
    sched.alphas_cumprod = torch.cumprod(1 - betas, 0)
    sched.one = torch.tensor(1.0, dtype=F64)
    return sched


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_matches_diffusers(process, variance, clip):
    x0, _, t, xt, eps_hat = make_case(6)
    if clip:  # make sure clipping actually changes something at the noisy end
        assert process.predict_x0_from_eps(xt[:1], t[:1], eps_hat[:1]).abs().max() > 1
    sched = ddpm_scheduler({"small": "fixed_small", "large": "fixed_large"}[variance], clip)
    seeds = [11, 12, 13, 14]
    refs, noise = [], []
    for i, ti in enumerate(t.tolist()):
        refs.append(sched.step(eps_hat[i:i + 1], ti, xt[i:i + 1],
                               generator=torch.Generator().manual_seed(seeds[i])).prev_sample)
        noise.append(torch.randn((1, *xt.shape[1:]), generator=torch.Generator().manual_seed(seeds[i]), dtype=F64))
    out = process.ddpm_step(xt, t, eps_hat, torch.cat(noise), variance=variance, clip=clip)
    torch.testing.assert_close(out, torch.cat(refs), rtol=1e-9, atol=1e-10)


def test_ddpm_step_no_noise_at_t0_and_clip_changes_result(process):
    x0, _, t, xt, eps_hat = make_case(7)
    big = 100 * torch.ones_like(xt)
    a = process.ddpm_step(xt, t, eps_hat, noise=torch.zeros_like(xt))
    for variance in ("small", "large"):  # beta~_0 = 0 but beta_0 > 0: the mask matters for "large"
        b = process.ddpm_step(xt, t, eps_hat, noise=big, variance=variance)
        torch.testing.assert_close(a[-1], b[-1], rtol=0, atol=0)  # t = 0: the noise is ignored
        assert not torch.allclose(a[:-1], b[:-1])
    c = process.ddpm_step(xt, t, eps_hat, noise=torch.zeros_like(xt), clip=True)
    assert not torch.allclose(a[0], c[0])
    # "large" adds more noise than "small" (beta_t > beta~_t)
    s = process.ddpm_step(xt, t, eps_hat, noise=big) - a
    l_ = process.ddpm_step(xt, t, eps_hat, noise=big, variance="large") - a
    assert (l_[:-1].abs() > s[:-1].abs()).all()


def test_ddpm_step_generator(process):
    _, _, t, xt, eps_hat = make_case(8)
    out = process.ddpm_step(xt, t, eps_hat, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(out, process.ddpm_step(xt, t, eps_hat, noise), rtol=0, atol=0)


def test_ddpm_step_with_x0_prediction(process):
    x0, _, t, xt, eps_hat = make_case(9)
    noise = torch.randn_like(xt)
    mean, var, _ = process.q_posterior(x0, xt, t)
    nonzero = (t > 0).double().reshape(-1, 1, 1, 1)
    out = process.ddpm_step(xt, t, None, noise, x0=x0)
    torch.testing.assert_close(out, mean + nonzero * var.sqrt() * noise, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- ddim_step vs diffusers
def ddim_scheduler(n_steps, clip):
    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=clip, set_alpha_to_one=True, prediction_type="epsilon")
    betas = torch.from_numpy(BETAS.copy())
    sched.betas, sched.alphas = betas, 1 - betas
    sched.alphas_cumprod = torch.cumprod(1 - betas, 0)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
    sched.set_timesteps(n_steps)
    return sched


DDIM_CASES = [(n, eta, clip) for n in (1000, 50, 10, 7) for eta in (0.0, 1.0) for clip in (False, True)]


@pytest.mark.parametrize("n_steps, eta, clip", DDIM_CASES)
def test_ddim_step_matches_diffusers(process, n_steps, eta, clip):
    sched = ddim_scheduler(n_steps, clip)
    ts = sched.timesteps.tolist()
    ratio = T // n_steps
    chosen = [ts[0], ts[len(ts) // 2], ts[-2], ts[-1]]
    assert chosen[-1] == 0
    _, _, t, xt, eps_hat = make_case(10, t=chosen)
    t_prev = torch.tensor([max(ti - ratio, -1) for ti in chosen])
    assert t_prev[-1].item() == -1
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    ref = torch.cat([
        sched.step(eps_hat[i:i + 1], ti, xt[i:i + 1], eta=eta, use_clipped_model_output=True,
                   variance_noise=noise[i:i + 1]).prev_sample
        for i, ti in enumerate(chosen)])
    out = process.ddim_step(xt, t, t_prev, eps_hat, eta=eta, noise=noise, clip=clip)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)


def test_ddim_step_closed_form(process):
    """Song et al. eq. 12 with sigma(eta) written out, including the final step to abar = 1."""
    _, _, t, xt, eps_hat = make_case(11, t=(999, 600, 20, 5))
    t_prev = torch.tensor([899, 300, 19, -1])
    noise = torch.randn_like(xt)
    eta = 0.5
    abar_ext = np.concatenate([ABAR, [1.0]])  # index -1 -> 1
    a, ap = col(ABAR, t, 4), col(abar_ext, t_prev, 4)
    x, e, z = xt.numpy(), eps_hat.numpy(), noise.numpy()
    x0 = (x - np.sqrt(1 - a) * e) / np.sqrt(a)
    sigma = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
    ref = np.sqrt(ap) * x0 + np.sqrt(1 - ap - sigma**2) * e + sigma * z
    out = process.ddim_step(xt, t, t_prev, eps_hat, eta=eta, noise=noise)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-9, atol=1e-10)
    # the last step (t_prev = -1) returns x0_hat exactly, with no noise
    np.testing.assert_allclose(out[-1].numpy(), x0[-1], rtol=1e-10, atol=1e-12)


def test_ddim_eta0_is_deterministic_and_eta1_uses_generator(process):
    _, _, t, xt, eps_hat = make_case(12, t=(999, 500, 100, 2))
    t_prev = t - 1
    a = process.ddim_step(xt, t, t_prev, eps_hat, eta=0.0, noise=100 * torch.ones_like(xt))
    b = process.ddim_step(xt, t, t_prev, eps_hat, eta=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = process.ddim_step(xt, t, t_prev, eps_hat, eta=1.0, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(c, process.ddim_step(xt, t, t_prev, eps_hat, eta=1.0, noise=noise), rtol=0, atol=0)
    # eta = 1 with a one-step gap is the DDPM "small" step (sigma^2 = beta~_t)
    torch.testing.assert_close(c, process.ddpm_step(xt, t, eps_hat, noise), rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------- respacing
@pytest.mark.parametrize("spec", ["ddim50", 10, "10,15,20", 1000])
def test_respace(process, spec):
    from pdlib.schedules import space_timesteps

    kept = space_timesteps(T, spec)
    r = process.respace(spec)
    assert r.T == len(kept)
    assert r.timestep_map == kept
    np.testing.assert_allclose(r.alphas_cumprod.numpy(), ABAR[kept], rtol=1e-10)
    prev = np.concatenate([[1.0], ABAR[kept][:-1]])
    np.testing.assert_allclose(r.betas.numpy(), 1 - ABAR[kept] / prev, rtol=1e-9, atol=1e-15)
    # respacing a respaced process maps back to the original indices
    rr = r.respace(5)
    assert rr.timestep_map == [kept[i] for i in space_timesteps(r.T, 5)]
    np.testing.assert_allclose(rr.alphas_cumprod.numpy(), ABAR[rr.timestep_map], rtol=1e-10)


def test_respace_ddim50_concrete(process):
    r = process.respace("ddim50")
    assert r.timestep_map[:3] == [0, 20, 40] and r.timestep_map[-1] == 980
    assert r.betas[0].item() == pytest.approx(BETAS[0], rel=1e-12)
    assert r.betas[1].item() == pytest.approx(1 - ABAR[20] / ABAR[0], rel=1e-10)


# ---------------------------------------------------------------------------------- bad input
def test_float_timesteps_type_error(process):
    x0, eps, _, xt, _ = make_case()
    tf = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError):
        process.q_sample(x0, tf, eps)
    with pytest.raises(TypeError):
        process.q_posterior(x0, xt, tf)
    with pytest.raises(TypeError):
        process.predict_x0_from_eps(xt, tf, eps)
    with pytest.raises(TypeError):
        process.ddpm_step(xt, tf, eps)
    with pytest.raises(TypeError):
        process.ddim_step(xt, torch.tensor([5, 5, 5, 5]), tf, eps)
    with pytest.raises(TypeError):
        process.q_sample(x0, torch.tensor([True, False, True, False]), eps)


@pytest.mark.parametrize("bad", [[T, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 5000]])
def test_out_of_range_timesteps(process, bad):
    x0, eps, _, xt, _ = make_case()
    t = torch.tensor(bad)
    with pytest.raises(ValueError):
        process.q_sample(x0, t, eps)
    with pytest.raises(ValueError):
        process.ddpm_step(xt, t, eps)
    with pytest.raises(ValueError):
        process.velocity(x0, eps, t)


def test_ddim_bad_t_prev_and_eta(process):
    _, _, _, xt, eps = make_case()
    t = torch.tensor([10, 10, 10, 10])
    with pytest.raises(ValueError):
        process.ddim_step(xt, t, torch.tensor([-2, 5, 5, 5]), eps)
    with pytest.raises(ValueError):
        process.ddim_step(xt, t, torch.tensor([10, 5, 5, 5]), eps)  # t_prev must be < t
    with pytest.raises(ValueError):
        process.ddim_step(xt, t, torch.tensor([12, 5, 5, 5]), eps)
    with pytest.raises(ValueError):
        process.ddim_step(xt, t, t - 1, eps, eta=-0.5)


def test_wrong_timestep_shape(process):
    x0, eps, _, _, _ = make_case()
    with pytest.raises(ValueError):
        process.q_sample(x0, torch.tensor([1, 2, 3]), eps)
    with pytest.raises(ValueError):
        process.q_sample(x0, torch.tensor([[1, 2, 3, 4]]), eps)


def test_wrong_noise_shape_q_sample(process):
    x0, _, t, _, _ = make_case()
    with pytest.raises(ValueError):
        process.q_sample(x0, t, torch.randn(4, 2, 3))


@pytest.mark.parametrize("shape", [(4, 1, 1, 1), (4, 2, 3, 1), (3, 2, 3, 3), (1, 2, 3, 3)])
def test_wrong_noise_shape_ddpm_step(process, shape):
    # a noise tensor that merely broadcasts would silently correlate the noise across pixels/samples
    _, _, t, xt, eps = make_case()
    with pytest.raises(ValueError):
        process.ddpm_step(xt, t, eps, noise=torch.randn(shape, dtype=F64))


@pytest.mark.parametrize("shape", [(4, 1, 1, 1), (4, 2, 3, 1), (3, 2, 3, 3), (1, 2, 3, 3)])
def test_wrong_noise_shape_ddim_step(process, shape):
    _, _, _, xt, eps = make_case()
    t = torch.tensor([10, 10, 10, 10])
    with pytest.raises(ValueError):
        process.ddim_step(xt, t, t - 1, eps, eta=1.0, noise=torch.randn(shape, dtype=F64))


def test_unknown_options(process):
    x0, eps, t, xt, _ = make_case()
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="sampler"):
        process.sample(model, (2, 2), sampler="euler", progress=False)
    with pytest.raises(ValueError, match="parameterization"):
        process.sample(model, (2, 2), parameterization="score", progress=False)
    with pytest.raises(ValueError):
        process.target(x0, eps, t, "score")
    with pytest.raises(ValueError):
        process.split_prediction(xt, t, eps, "epsilon")
    with pytest.raises(ValueError):
        process.ddpm_step(xt, t, eps, variance="medium")
    with pytest.raises(ValueError):
        process.sample(model, (2, 2), noise=torch.zeros(3, 2), progress=False)
    with pytest.raises(ValueError):
        process.sample(model, (2, 2), steps="ddim3000", progress=False)
