"""Noise schedules, zero terminal SNR and timestep respacing.

References are written independently here (numpy float64 closed forms, improved diffusion's respacing
algorithm) and, where diffusers has the same schedule, its ``DDPMScheduler`` betas.
"""

import math

import numpy as np
import pytest
import torch

from pdlib.schedules import beta_schedule, rescale_zero_terminal_snr, space_timesteps

from diffusers import DDPMScheduler  # test-only reference (requirements.txt)
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale

SCHEDULE_NAMES = ("linear", "cosine", "quadratic", "ddgan")


# ----------------------------------------------------------------- independent closed forms (numpy)
def np_linear(T):
    scale = 1000.0 / T
    return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)


def np_cosine(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    i = np.arange(T, dtype=np.float64)
    return np.minimum(1 - f((i + 1) / T) / f(i / T), max_beta)


def np_quadratic(T):
    return np.linspace(math.sqrt(0.00085), math.sqrt(0.012), T, dtype=np.float64) ** 2


def np_ddgan(T, b_min=0.1, b_max=20.0):
    t = np.arange(T + 1, dtype=np.float64) / T * (1 - 1e-3) + 1e-3
    var = 1 - np.exp(2 * (-(t**2) * (b_max - b_min) / 4 - t * b_min / 2))
    abar = 1 - var
    return 1 - abar[1:] / abar[:-1], abar


def diffusers_betas(**kw):
    return DDPMScheduler(**kw).betas.double().numpy()


# ------------------------------------------------------------------------------------ beta_schedule
@pytest.mark.parametrize("name, T", [(name, T) for name in SCHEDULE_NAMES for T in (1, 4, 1000) if name != "linear"]
                         + [("linear", 25), ("linear", 1000), ("linear", 4000)])
def test_dtype_and_length(name, T):
    b = beta_schedule(name, T)
    assert b.dtype == torch.float64
    assert b.shape == (T,)
    assert torch.isfinite(b).all()
    assert ((b > 0) & (b <= 1)).all()


@pytest.mark.parametrize("T", [21, 100, 1000, 4000])
def test_linear_closed_form(T):
    np.testing.assert_allclose(beta_schedule("linear", T).numpy(), np_linear(T), rtol=1e-12, atol=0)


@pytest.mark.parametrize("T", [1, 4, 10, 19])
def test_linear_rejects_T_where_scaled_betas_reach_one(T):
    # 1000/T * 0.02 > 1 for T < 20: such "betas" are not probabilities (alpha_t <= 0); the schedule
    # must refuse instead of returning them silently (API: nothing fails silently)
    with pytest.raises(ValueError):
        beta_schedule("linear", T)


def test_linear_T1000_matches_diffusers_and_endpoints():
    b = beta_schedule("linear", 1000).numpy()
    assert b[0] == pytest.approx(1e-4, rel=1e-12) and b[-1] == pytest.approx(0.02, rel=1e-12)
    ref = diffusers_betas(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(b, ref, rtol=2e-6)


def test_linear_T4000_scaled_by_1000_over_T():
    b = beta_schedule("linear", 4000).numpy()
    assert b[0] == pytest.approx(1e-4 / 4, rel=1e-12)
    assert b[-1] == pytest.approx(0.02 / 4, rel=1e-12)
    # same as diffusers' linear schedule with the scaled end points
    ref = diffusers_betas(num_train_timesteps=4000, beta_schedule="linear", beta_start=2.5e-5, beta_end=0.005)
    np.testing.assert_allclose(b, ref, rtol=2e-6)


@pytest.mark.parametrize("T", [10, 1000, 4000])
def test_cosine_closed_form_and_diffusers(T):
    b = beta_schedule("cosine", T).numpy()
    np.testing.assert_allclose(b, np_cosine(T), rtol=1e-10, atol=1e-15)
    ref = diffusers_betas(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(b, ref, rtol=1e-6, atol=1e-9)
    assert b.max() <= 0.999
    assert b[-1] == pytest.approx(0.999)  # abar(1) ~ 0 so the last beta is clipped


def test_cosine_alpha_bar_follows_cos_squared():
    T = 1000
    abar = torch.cumprod(1 - beta_schedule("cosine", T), 0).numpy()
    s = 0.008
    u = np.arange(1, T + 1) / T
    ref = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    # identical except after the clipped last beta
    np.testing.assert_allclose(abar[:-1], ref[:-1], rtol=1e-9, atol=1e-15)


def test_cosine_keyword_s_is_used():
    np.testing.assert_allclose(beta_schedule("cosine", 50, s=0.02).numpy(), np_cosine(50, s=0.02), rtol=1e-10)
    assert not torch.allclose(beta_schedule("cosine", 50, s=0.02), beta_schedule("cosine", 50))


@pytest.mark.parametrize("T", [10, 1000])
def test_quadratic_closed_form_and_diffusers_scaled_linear(T):
    b = beta_schedule("quadratic", T).numpy()
    np.testing.assert_allclose(b, np_quadratic(T), rtol=1e-12)
    assert b[0] == pytest.approx(0.00085, rel=1e-12) and b[-1] == pytest.approx(0.012, rel=1e-12)
    ref = diffusers_betas(num_train_timesteps=T, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    np.testing.assert_allclose(b, ref, rtol=2e-6)


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_ddgan_closed_form(T):
    b = beta_schedule("ddgan", T).numpy()
    ref, abar = np_ddgan(T)
    np.testing.assert_allclose(b, ref, rtol=1e-10)
    # the cumulative product of the betas is abar_i / abar_0 (DDGAN's code)
    np.testing.assert_allclose(np.cumprod(1 - b), abar[1:] / abar[0], rtol=1e-10)


def test_ddgan_properties():
    b = beta_schedule("ddgan", 4)
    abar = torch.cumprod(1 - b, 0)
    # at t = 1 the VP SDE with beta_max = 20 leaves exp(-(19.9/2 + 0.1)) = 4.3e-5 of the signal variance
    # divided by abar at t_0 = 1e-3
    abar_0 = math.exp(2 * (-1e-6 * 19.9 / 4 - 1e-3 * 0.1 / 2))
    assert abar[-1].item() == pytest.approx(math.exp(-(19.9 / 2 + 0.1)) / abar_0, rel=1e-9)
    assert abar[-1] < 1e-4
    assert (b[1:] > b[:-1]).all()  # increasing noise
    # keywords reach the builder
    assert not torch.allclose(beta_schedule("ddgan", 4, beta_max=10.0), b)
    np.testing.assert_allclose(beta_schedule("ddgan", 4, beta_max=10.0).numpy(), np_ddgan(4, b_max=10.0)[0], rtol=1e-10)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError) as info:
        beta_schedule("sigmoid", 100)
    for name in SCHEDULE_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("T, err", [(0, ValueError), (-5, ValueError), (10.0, TypeError), ("10", TypeError)])
def test_bad_T(T, err):
    with pytest.raises(err):
        beta_schedule("linear", T)


def test_bad_keyword_raises_type_error():
    with pytest.raises(TypeError, match="linear"):
        beta_schedule("linear", 10, s=0.1)


# ------------------------------------------------------------------------ rescale_zero_terminal_snr
@pytest.mark.parametrize("name", ["linear", "cosine", "quadratic"])
def test_zero_terminal_snr_matches_diffusers(name):
    betas = beta_schedule(name, 1000)
    ours = rescale_zero_terminal_snr(betas)
    ref = diffusers_rescale(betas.clone())
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine", "quadratic"])
def test_zero_terminal_snr_properties(name):
    betas = beta_schedule(name, 1000)
    new = rescale_zero_terminal_snr(betas)
    abar_old = np.cumprod(1 - betas.numpy())
    abar_new = torch.cumprod(1 - new, 0)
    assert abar_new[-1].item() == 0.0  # exactly
    assert new[-1].item() == 1.0
    assert abar_new[0].item() == pytest.approx(abar_old[0], rel=1e-12)
    # Lin et al., Algorithm 1: sqrt(abar) is shifted by its last value and scaled to keep the first
    s = np.sqrt(abar_old)
    ref = (s - s[-1]) * s[0] / (s[0] - s[-1])
    np.testing.assert_allclose(abar_new.sqrt().numpy(), ref, rtol=1e-9, atol=1e-12)
    assert (new[:-1] > 0).all() and (new < 1 + 1e-12).all()


def test_zero_terminal_snr_accepts_float32_and_rejects_2d():
    out = rescale_zero_terminal_snr(beta_schedule("linear", 100).float())
    assert out.dtype == torch.float64
    assert torch.cumprod(1 - out, 0)[-1].item() == 0.0
    with pytest.raises(ValueError):
        rescale_zero_terminal_snr(torch.rand(4, 4) * 0.01)
    with pytest.raises(TypeError):
        rescale_zero_terminal_snr([0.1, 0.2])


# ------------------------------------------------------------------------------- space_timesteps
def improved_diffusion_space(T, section_counts):
    """improved-diffusion's respace.space_timesteps (cumulative fractional stride), for sections."""
    if isinstance(section_counts, int):
        section_counts = [section_counts]
    if isinstance(section_counts, str):
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(T, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


@pytest.mark.parametrize("T, count", [(1000, 50), (1000, 10), (100, 10), (4000, 100), (1000, 1000), (7, 3), (10, 1)])
def test_space_int_count(T, count):
    kept = space_timesteps(T, count)
    assert kept == improved_diffusion_space(T, count)
    assert len(kept) == count
    assert kept == sorted(kept)
    if count > 1:
        assert kept[0] == 0 and kept[-1] == T - 1


def test_space_int_count_concrete():
    assert space_timesteps(100, 10) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert space_timesteps(10, 10) == list(range(10))


@pytest.mark.parametrize("T, n, stride", [(1000, 50, 20), (1000, 10, 100), (1000, 1000, 1), (4000, 100, 40),
                                          (1000, 7, 143), (100, 1, 100)])
def test_space_ddim(T, n, stride):
    kept = space_timesteps(T, f"ddim{n}")
    assert kept == list(range(0, T, stride))
    assert len(kept) == n


@pytest.mark.parametrize("T, spec", [(300, "10,15,20"), (1000, "10,15,20"), (10, "3,4"), (1001, "5,5,5"),
                                     (100, "1,50")])
def test_space_sections(T, spec):
    kept = space_timesteps(T, spec)
    counts = [int(c) for c in spec.split(",")]
    assert len(kept) == sum(counts)
    assert space_timesteps(T, counts) == kept  # a list works too
    # each section [lo, lo + size) holds its count, evenly spread (within rounding) with both ends kept
    size, extra = divmod(T, len(counts))
    lo = 0
    for i, count in enumerate(counts):
        length = size + (i < extra)
        inside = [k for k in kept if lo <= k < lo + length]
        assert len(inside) == count
        if count > 1:
            ideal = lo + np.arange(count) * (length - 1) / (count - 1)
            assert np.abs(np.array(inside) - ideal).max() <= 0.5 + 1e-9
            assert inside[0] == lo and inside[-1] == lo + length - 1
        lo += length


@pytest.mark.parametrize("T, spec", [(300, "10,15,20"), (1000, "10,15,20"), (10, "3,4"), (1001, "5,5,5"),
                                     (100, "1,50"), (1000, 50), (4000, "25,25,25,25")])
def test_space_sections_match_improved_diffusion(T, spec):
    # API: "as in improved diffusion" -- the same kept indices, so respaced samplers and checkpoints
    # agree with improved-diffusion's respace.space_timesteps (cumulative fractional stride)
    assert space_timesteps(T, spec) == improved_diffusion_space(T, spec)


def test_space_sections_concrete():
    # T=10 in two sections of 5: 3 steps from [0..4] and 4 steps from [5..9]
    assert space_timesteps(10, "3,4") == [0, 2, 4, 5, 6, 8, 9]
    kept = space_timesteps(300, "10,15,20")
    assert [sum(1 for k in kept if lo <= k < lo + 100) for lo in (0, 100, 200)] == [10, 15, 20]


@pytest.mark.parametrize("T, spec", [(10, "ddim6"), (10, "ddim11"), (1000, "ddim0"), (1000, "ddimfoo"),
                                     (10, 11), (10, 0), (10, -3), (10, "6,1"), (10, "10,abc"), (10, ""),
                                     (10, "0,2")])
def test_space_impossible_specs(T, spec):
    with pytest.raises(ValueError):
        space_timesteps(T, spec)


@pytest.mark.parametrize("spec", [2.5, None, True])
def test_space_bad_spec_type(spec):
    with pytest.raises(TypeError):
        space_timesteps(100, spec)
