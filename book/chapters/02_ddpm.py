# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Denoising diffusion probabilistic models
#
# {doc}`01_score_matching` learned the score of noise-blurred data at ten noise levels and sampled it
# with many Langevin steps per level. Denoising diffusion probabilistic models (DDPM; Sohl-Dickstein et
# al. 2015, Ho et al. 2020) make the same idea into a latent-variable model with a likelihood bound. A
# fixed *forward process* destroys the data in $T$ small Gaussian steps; a network learns to undo one
# step at a time; sampling runs the learned *reverse process* once, from pure noise to data. The
# training loss that comes out of the bound, after some algebra and one bold simplification, is plain
# regression on the noise. Everything in the later chapters (fast samplers, guidance, perceptual
# losses) is built on this model.
#
# After this chapter you will be able to
#
# - write the forward process and sample any $x_t$ in one step;
# - follow the derivation from the evidence lower bound (ELBO) to $L_\text{simple}$, including the
#   Gaussian posterior $q(x_{t-1} \mid x_t, x_0)$;
# - train a DDPM on 2D data with `pdlib`, sample it ancestrally and measure the samples;
# - convert between the $\epsilon$, $x_0$ and $v$ parameterisations and compare them;
# - compare the linear and cosine noise schedules by their signal-to-noise ratio.

# %%
# The switch: False runs on a CPU in about a minute; True uses the paper's T = 1000
# steps, longer
# training and a wider network (GPU when there is one).
PAPER_SCALE = False

import matplotlib.pyplot as plt
import torch
from ipywidgets import IntSlider, interact

from pdlib import GaussianDiffusion
from pdlib.data import toy2d
from pdlib.exercises import (
    check_cosine_schedule,
    check_ddpm_sampler,
    check_posterior_mean,
    check_q_sample,
)
from pdlib.methods import DDPM
from pdlib.metrics import mmd, sliced_wasserstein
from pdlib.nets import MLP2D
from pdlib.schedules import beta_schedule
from pdlib.train import TrainConfig, Trainer, resolve_device
from pdlib.viz import scatter2d, trajectories2d

# One thread: the toy networks are tiny, a second thread only adds synchronisation, and
# it slows
# down badly when other jobs share the machine. A fixed count also keeps the numbers
# reproducible.
torch.set_num_threads(1)
torch.manual_seed(0)

if PAPER_SCALE:
    T, HIDDEN, TRAIN_STEPS, N_SAMPLES = 1000, 512, 30_000, 5000
    DEVICE = resolve_device("auto")
else:
    T, HIDDEN, TRAIN_STEPS, N_SAMPLES = 100, 64, 1500, 2000
    DEVICE = torch.device("cpu")


def gen(seed, device="cpu"):
    """A fresh random generator, so that every experiment below is reproducible on its
    own."""
    return torch.Generator(device).manual_seed(seed)


data = toy2d("swissroll", 20_000, generator=gen(1))  # training set
held_out = toy2d("swissroll", N_SAMPLES, generator=gen(2))  # to measure samples against
held_out_2 = toy2d(
    "swissroll", N_SAMPLES, generator=gen(3)
)  # a second draw: the metrics' noise floor
process = GaussianDiffusion(beta_schedule("linear", T))
print(process)
assert process.T == T

# %% [markdown]
# ## The forward process
#
# The forward process is a Markov chain that adds a little Gaussian noise at every step, shrinking
# the signal so that the total variance stays bounded. With a *noise schedule*
# $0 < \beta_1 < \dots < \beta_T < 1$ (papers' numbering, steps $1..T$),
#
# $$
# q(x_t \mid x_{t-1}) = \mathcal N\big(x_t;\ \sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t I\big).
# $$ (eq-ddpm-forward-step)
#
# A composition of Gaussian steps is Gaussian, so $x_t$ can be drawn directly from $x_0$. With
# $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s=1}^{t} \alpha_s$,
#
# $$
# q(x_t \mid x_0) = \mathcal N\big(x_t;\ \sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\big),
# \qquad\text{that is}\qquad
# x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon,\quad \epsilon \sim \mathcal N(0, I).
# $$ (eq-ddpm-forward)
#
# (By induction: if $x_{t-1} = \sqrt{\bar\alpha_{t-1}}\, x_0 + \sqrt{1 - \bar\alpha_{t-1}}\, \epsilon'$,
# then $x_t$ has mean $\sqrt{\alpha_t \bar\alpha_{t-1}}\, x_0$ and variance
# $\alpha_t (1 - \bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$.) The schedule is chosen so that
# $\bar\alpha_T \approx 0$: at the end nothing of the data is left and $x_T \approx \mathcal N(0, I)$.
#
# **Indexing.** In code, as in improved-diffusion and `diffusers`, timesteps are 0-based: index `t` is
# the papers' step $t + 1$. So `process.alphas_cumprod[t]` is the papers' $\bar\alpha_{t+1}$, and
# `process.alphas_cumprod_prev[t]` is the papers' $\bar\alpha_t$ (equal to 1 at index 0: the clean
# data). Here is {eq}`eq-ddpm-forward` from scratch, computing $\bar\alpha$ from the betas, checked
# against `GaussianDiffusion.q_sample`.


# %%
def my_q_sample(x0, t, eps, betas):
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)  # abar at indices 0..T-1
    abar = alphas_cumprod[t].to(x0.dtype)[
        :, None
    ]  # one value per example, broadcast over x, y
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


x0 = toy2d("swissroll", 512, generator=gen(10))
t = torch.randint(0, T, (512,), generator=gen(11))
eps = torch.randn(x0.shape, generator=gen(12))
mine, ref = my_q_sample(x0, t, eps, process.betas), process.q_sample(x0, t, eps)
assert torch.allclose(mine, ref, atol=1e-6)
print("q_sample: max error < 1e-6")  # asserted above

# %% [markdown]
# The swiss roll at a few steps of the forward process (indices 0, 2, 4, 9, 24 and 99, the papers'
# steps 1, 3, 5, 10, 25 and 100), all from the same $x_0$ and the same $\epsilon$. With $T = 100$ the
# linear schedule wipes out the spiral's fine structure within the first ten steps; the rest of the
# chain moves between ever blurrier blobs.

# %%
x0_show = held_out[:1000]
eps_show = torch.randn(x0_show.shape, generator=gen(13))


def noisy(t_index):
    return process.q_sample(x0_show, torch.full((len(x0_show),), t_index), eps_show)


show_steps = [0, T // 50, T // 25, T // 10 - 1, T // 4 - 1, T - 1]
fig, axes = plt.subplots(1, len(show_steps), figsize=(20, 3.6))
for ax, ti in zip(axes, show_steps):
    abar = process.alphas_cumprod[ti].item()
    scatter2d(ax, noisy(ti), lim=3.5, title=f"t={ti}: abar={abar:.3f}")
plt.show()

# %% [markdown]
# With a running kernel you can scrub through the process with a slider (the static row above is what
# the printed book shows):


# %% tags=["nbval-ignore-output"]
def show_forward(t=T // 4):
    fig, ax = plt.subplots(figsize=(4, 4))
    abar = process.alphas_cumprod[t].item()
    title = f"t={t}: sqrt(abar)={abar**0.5:.2f}, sqrt(1-abar)={(1 - abar) ** 0.5:.2f}"
    scatter2d(ax, noisy(t), lim=3.5, title=title)
    plt.show()


_ = interact(
    show_forward, t=IntSlider(value=T // 4, min=0, max=T - 1, step=1, description="t")
)

# %% [markdown]
# ## From the ELBO to $L_\text{simple}$
#
# The reverse process is a Markov chain with learned Gaussian steps, started from the prior
# $p(x_T) = \mathcal N(0, I)$:
# $p_\theta(x_{t-1} \mid x_t) = \mathcal N\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 I\big)$, with
# fixed variances $\sigma_t^2$ (Ho et al. use $\beta_t$ or $\tilde\beta_t$ below). As for any latent
# variable model, with the forward process as the approximate posterior, the negative log-likelihood
# is bounded by
#
# $$
# -\log p_\theta(x_0) \le \mathbb E_q \Big[
# \underbrace{D_\text{KL}\big(q(x_T \mid x_0)\,\|\,p(x_T)\big)}_{L_T}
# + \sum_{t=2}^{T} \underbrace{D_\text{KL}\big(q(x_{t-1} \mid x_t, x_0)\,\|\,p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}}
# \underbrace{-\, \log p_\theta(x_0 \mid x_1)}_{L_0} \Big].
# $$ (eq-ddpm-elbo)
#
# $L_T$ has no parameters. Each $L_{t-1}$ compares a reverse step with the forward process *run
# backwards given $x_0$*, which by Bayes' rule is a Gaussian with a closed form:
#
# $$
# q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),\qquad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\, \beta_t}{1 - \bar\alpha_t}\, x_0
# + \frac{\sqrt{\alpha_t}\, (1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\, x_t,\qquad
# \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\, \beta_t .
# $$ (eq-ddpm-posterior)
#
# To see where it comes from, write $q(x_{t-1} \mid x_t, x_0) \propto q(x_t \mid x_{t-1})\,
# q(x_{t-1} \mid x_0)$ as a function of $x_{t-1}$. Both factors are Gaussian in $x_{t-1}$: the first
# with precision $\alpha_t/\beta_t$ around $x_t/\sqrt{\alpha_t}$, the second with precision
# $1/(1 - \bar\alpha_{t-1})$ around $\sqrt{\bar\alpha_{t-1}}\, x_0$. Precisions add and means are
# averaged with precision weights:
#
# $$
# \frac{1}{\tilde\beta_t} = \frac{\alpha_t}{\beta_t} + \frac{1}{1 - \bar\alpha_{t-1}},\qquad
# \tilde\mu_t = \tilde\beta_t \Big( \frac{\sqrt{\alpha_t}}{\beta_t}\, x_t
# + \frac{\sqrt{\bar\alpha_{t-1}}}{1 - \bar\alpha_{t-1}}\, x_0 \Big),
# $$ (eq-ddpm-posterior-precision)
#
# which simplifies to {eq}`eq-ddpm-posterior` using $\alpha_t (1 - \bar\alpha_{t-1}) + \beta_t =
# 1 - \bar\alpha_t$. We implement the precision form from scratch and check it against the closed form in
# `GaussianDiffusion.q_posterior`. In code, the papers' step $t$ is index $t - 1$ and the papers'
# $\bar\alpha_{t-1}$ is `alphas_cumprod_prev`. At index 0 (the papers' step 1) the prior
# $q(x_0 \mid x_0)$ is a point mass, the precision form divides by zero, and the posterior is simply
# $x_0$ with zero variance; the check uses indices $\ge 1$.


# %%
def my_posterior(x0, xt, t, betas):
    alphas = 1 - betas
    abar_prev = torch.cumprod(alphas, 0)[t - 1][
        :, None
    ]  # papers' abar_{t-1}; valid for index t >= 1
    a, b = alphas[t][:, None], betas[t][:, None]
    precision = a / b + 1 / (1 - abar_prev)  # eq. (eq-ddpm-posterior-precision)
    mean = (a.sqrt() / b * xt + abar_prev.sqrt() / (1 - abar_prev) * x0) / precision
    return mean, 1 / precision


x0 = toy2d("swissroll", 512, generator=gen(20)).double()
t = torch.randint(1, T, (512,), generator=gen(21))
xt = process.q_sample(
    x0, t, torch.randn(x0.shape, generator=gen(22), dtype=torch.float64)
)
my_mean, my_var = my_posterior(x0, xt, t, process.betas)
ref_mean, ref_var, _ = process.q_posterior(x0, xt, t)
assert torch.allclose(my_mean, ref_mean, atol=1e-10) and torch.allclose(
    my_var, ref_var, atol=1e-12
)
print(
    "posterior mean: max error < 1e-10, variance: max error < 1e-12"  # asserted above
)

# %% [markdown]
# Both $q(x_{t-1} \mid x_t, x_0)$ and $p_\theta(x_{t-1} \mid x_t)$ are Gaussians with fixed isotropic
# variances, so their KL divergence is a squared distance between the means:
#
# $$
# L_{t-1} = \frac{1}{2\sigma_t^2}\, \mathbb E_q \big\| \tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t) \big\|^2 + C .
# $$ (eq-ddpm-kl)
#
# Now reparameterise. Substituting $x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\, \epsilon)/\sqrt{\bar\alpha_t}$
# from {eq}`eq-ddpm-forward` into {eq}`eq-ddpm-posterior` gives
# $\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}} \big( x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\, \epsilon \big)$.
# The network sees $x_t$, so the only unknown is $\epsilon$, and Ho et al. let the network predict it:
#
# $$
# \mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}} \Big( x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\,
# \epsilon_\theta(x_t, t) \Big)
# \quad\Longrightarrow\quad
# L_{t-1} = \frac{\beta_t^2}{2 \sigma_t^2\, \alpha_t (1 - \bar\alpha_t)}\, \mathbb E_{x_0, \epsilon}
# \big\| \epsilon - \epsilon_\theta(x_t, t) \big\|^2 + C .
# $$ (eq-ddpm-eps-weighted)
#
# A quick numerical check of the substitution (the posterior mean computed from $x_0$ and from the
# noise agree):

# %%
eps = torch.randn(x0.shape, generator=gen(23), dtype=torch.float64)
xt = process.q_sample(x0, t, eps)
a, b, abar = (
    process.alphas[t][:, None],
    process.betas[t][:, None],
    process.alphas_cumprod[t][:, None],
)
mean_from_eps = (xt - b / (1 - abar).sqrt() * eps) / a.sqrt()
mean_from_x0 = process.q_posterior(x0, xt, t)[0]
assert torch.allclose(mean_from_eps, mean_from_x0, atol=1e-10)
print(
    "posterior mean from eps vs from x0: max error < 1e-10"  # asserted above
)

# %% [markdown]
# The last step is the bold one. The weights in {eq}`eq-ddpm-eps-weighted` vary a lot with $t$ (plotted
# below for $\sigma_t^2 = \beta_t$, the linear schedule): they are largest at the first, nearly clean
# step and smallest about a third of the way through the chain. The largest weight is about 10 times
# the smallest at $T = 100$ and about 100 times the smallest at $T = 1000$ (the max/min ratios printed
# below). Measured against the mean weight, as in the plot, the first step weighs about 5.5 and
# about 50 times the mean. Ho et al. simply drop the weights, sample $t$ uniformly, and train on
#
# $$
# L_\text{simple}(\theta) = \mathbb E_{t \sim \mathcal U\{1..T\},\, x_0,\, \epsilon}
# \big\| \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon,\ t\big) \big\|^2 .
# $$ (eq-ddpm-lsimple)
#
# Dropping the weights gives relatively more weight to the noisy steps and less to the last few,
# nearly clean ones; the result is a worse likelihood bound but better samples. $L_0$ is only
# approximately the $t = 1$ term: Ho et al. model $p_\theta(x_0 \mid x_1)$ with a discretised Gaussian
# decoder over the 256 pixel values, and the $t = 1$ term of $L_\text{simple}$ stands in for it by
# replacing the decoder's integral over each pixel bin with the Gaussian density times the bin width
# (ignoring $\sigma_1^2$ and the edge bins). In code, $t$ is drawn from $\{0, \dots, T-1\}$, and
# `DDPM.loss` averages the squared error over coordinates as well as the batch (a constant factor).


# %%
def elbo_weights(proc):
    """beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) of eq. (eq-ddpm-eps-weighted) with
    sigma_t^2 = beta_t."""
    return proc.betas / (2 * proc.alphas * (1 - proc.alphas_cumprod))


fig, ax = plt.subplots(figsize=(5.5, 3.2))
ratio = {}
for T_plot in [100, 1000]:
    w = elbo_weights(GaussianDiffusion(beta_schedule("linear", T_plot)))
    ax.semilogy(torch.arange(T_plot) / T_plot, w / w.mean(), label=f"T = {T_plot}")
    ratio[T_plot] = (w.max() / w.min()).item()
    print(f"T = {T_plot}: largest ELBO weight / smallest = {ratio[T_plot]:.0f}")
assert 9 < ratio[100] < 11 and 95 < ratio[1000] < 105
ax.set_xlabel("t / T")
ax.set_ylabel("ELBO weight / mean weight")
ax.set_title("the weights that L_simple drops")
ax.legend()
plt.show()

# %% [markdown]
# ## Training
#
# `pdlib.methods.DDPM` is this loss around any network `net(x, t)`: it draws $t$ and $\epsilon$,
# builds $x_t$ with `q_sample` and regresses the network output on the target. We train the small
# residual MLP of the toy chapters (width 64) on the swiss roll with `pdlib.train.Trainer`. As in
# {doc}`01_score_matching`, the exponential moving average of the weights uses a decay of 0.99, which
# suits a run of a thousand or two steps (the default 0.999 is made for long runs).


# %%
def train(parameterization, steps=TRAIN_STEPS, schedule_process=process):
    torch.manual_seed(0)
    method = DDPM(
        MLP2D(hidden=HIDDEN), schedule_process, parameterization=parameterization
    )
    config = TrainConfig(
        steps=steps,
        batch_size=256,
        lr=3e-3,
        ema_decay=0.99,
        seed=0,
        log_every=50,
        device=str(DEVICE),
        progress=False,
    )
    trainer = Trainer(method, data, config)
    trainer.fit()
    return trainer


trainer_eps = train("eps")
ddpm = trainer_eps.model  # the EMA copy
history = trainer_eps.history
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot([h["step"] for h in history], [h["loss"] for h in history])
ax.set_xlabel("step")
ax.set_ylabel("L_simple (mean of 50 steps)")
ax.set_title("training a DDPM on the swiss roll")
plt.show()
final_loss = history[-1]["loss"]
print(f"final loss: {final_loss:.2f}")
assert 0.15 < final_loss < 0.35

# %% [markdown]
# The loss levels off well above zero: at large $t$ the noisy point says little about which $\epsilon$
# produced it, and the best prediction is a conditional mean.
#
# ## Ancestral sampling
#
# Sampling runs the reverse chain: start from $x_T \sim \mathcal N(0, I)$ and for $t = T, \dots, 1$
# draw
#
# $$
# x_{t-1} = \frac{1}{\sqrt{\alpha_t}} \Big( x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\,
# \epsilon_\theta(x_t, t) \Big) + \sigma_t z,\qquad z \sim \mathcal N(0, I),
# $$ (eq-ddpm-ancestral)
#
# with no noise in the last step. `pdlib` computes the same mean by predicting $x_0$ from
# $\epsilon_\theta$ and plugging it into $\tilde\mu_t$ of {eq}`eq-ddpm-posterior`, which also works for
# networks that predict $x_0$ or $v$; $\sigma_t^2 = \tilde\beta_t$ by default. One call of
# `DDPM.sample` (that is, `GaussianDiffusion.sample`) runs the whole chain; `return_trajectory=True`
# also returns every intermediate state.

# %%
samples, trajectory = ddpm.sample(
    N_SAMPLES, generator=gen(7, DEVICE), progress=False, return_trajectory=True
)
print(f"trajectory: {tuple(trajectory.shape)} = (T + 1 states, samples, 2)")
assert tuple(trajectory.shape) == (T + 1, N_SAMPLES, 2)

fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
trajectories2d(
    axes[0], trajectory, n=12, lim=3.5, title="12 reverse paths (grey start, red end)"
)
scatter2d(axes[1], held_out, lim=2.5, title="held-out data", color="tab:orange")
scatter2d(axes[2], samples, lim=2.5, title=f"DDPM samples ({T} steps)")
plt.show()

fig, axes = plt.subplots(1, 6, figsize=(20, 3.6))
for ax, k in zip(axes, [0, T // 2, 4 * T // 5, 9 * T // 10, 19 * T // 20, T]):
    scatter2d(ax, trajectory[k], lim=3.5, title=f"after {k} reverse steps")
plt.show()

# %% [markdown]
# The paths wander almost at random for most of the chain and are pulled onto the roll only at the
# end: the spiral appears in the last tenth of the steps, the mirror image of the forward process,
# which destroyed it in the first tenth. We measure the samples as in {doc}`01_score_matching`, with the sliced
# Wasserstein distance and the MMD against held-out data, next to the floor that two independent
# held-out samples of the same size give.


# %%
def measure(x):
    return sliced_wasserstein(x, held_out, generator=gen(0)), mmd(x, held_out)


floor_sw, floor_mmd = measure(held_out_2)
sw_eps, mmd_eps = measure(samples)
print(f"{'':28s} {'sliced W2':>10s} {'MMD':>8s}")
floor_mmd_text = f"{floor_mmd:8.3f}".replace(
    "-0.000", " 0.000"
)  # the MMD estimate can be slightly negative
print(f"{'held-out vs held-out':28s} {floor_sw:10.2f} {floor_mmd_text}")
print(f"{'DDPM, eps-prediction':28s} {sw_eps:10.2f} {mmd_eps:8.3f}")
assert 0.02 < floor_sw < 0.05 and -0.003 < floor_mmd < 0.003
assert 0.03 < sw_eps < 0.09 and 0 < mmd_eps < 0.02

# %% [markdown]
# The samples are clearly above the floor: the sliced Wasserstein distance is 0.06, twice the 0.03 of
# two held-out samples, and the MMD is 0.008 against 0.000. The figure shows why. The outer arm of the
# roll is there, though thicker than in the data and smeared at its outer end. The inner arm is mostly
# lost: only a short, dense stroke of it remains on the right, its inner end is missing, and the points
# that should form the rest of it are scattered over the inside of the roll. A likely cause is the
# small network and the short training: errors at the last, nearly clean steps blur fine detail. (Try
# `PAPER_SCALE = True`.)
#
# ## What to predict: $\epsilon$, $x_0$ or $v$
#
# Given $x_t$ and $t$, any one of $x_0$, $\epsilon$ and the *velocity* $v$ (Salimans & Ho 2022)
# determines the others, so the network may predict any of them:
#
# $$
# \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \hat\epsilon}{\sqrt{\bar\alpha_t}},\qquad
# v = \sqrt{\bar\alpha_t}\, \epsilon - \sqrt{1 - \bar\alpha_t}\, x_0,\qquad
# \hat x_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, \hat v,\qquad
# \hat\epsilon = \sqrt{\bar\alpha_t}\, \hat v + \sqrt{1 - \bar\alpha_t}\, x_t .
# $$ (eq-ddpm-param)
#
# The conversions from scratch, against `GaussianDiffusion`:

# %%
x0 = toy2d("swissroll", 512, generator=gen(30)).double()
t = torch.randint(0, T, (512,), generator=gen(31))
eps = torch.randn(x0.shape, generator=gen(32), dtype=torch.float64)
xt = process.q_sample(x0, t, eps)
abar = process.alphas_cumprod[t][:, None]
pairs = {
    "x0 from eps": (
        (xt - (1 - abar).sqrt() * eps) / abar.sqrt(),
        process.predict_x0_from_eps(xt, t, eps),
    ),
    "eps from x0": (
        (xt - abar.sqrt() * x0) / (1 - abar).sqrt(),
        process.predict_eps_from_x0(xt, t, x0),
    ),
    "v": (abar.sqrt() * eps - (1 - abar).sqrt() * x0, process.velocity(x0, eps, t)),
}
v = pairs["v"][0]
pairs["x0 from v"] = (
    abar.sqrt() * xt - (1 - abar).sqrt() * v,
    process.predict_x0_from_v(xt, t, v),
)
pairs["eps from v"] = (
    abar.sqrt() * v + (1 - abar).sqrt() * xt,
    process.predict_eps_from_v(xt, t, v),
)
for name, (mine, ref) in pairs.items():
    assert torch.allclose(mine, ref, atol=1e-8)
    print(f"{name:12s} max error < 1e-8")
assert torch.allclose(
    pairs["x0 from v"][0], x0, atol=1e-8
)  # the round trip gives the true x0 back

# %% [markdown]
# The choice still matters, because the squared error on one target is a *weighted* squared error on
# another. If the network's $x_0$ is off by $\Delta x_0$ at fixed $x_t$, its implied $\epsilon$ is off
# by $\Delta\epsilon = -\sqrt{\bar\alpha_t/(1 - \bar\alpha_t)}\, \Delta x_0$; with
# $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$,
#
# $$
# \|\Delta x_0\|^2 = \frac{\|\Delta \epsilon\|^2}{\mathrm{SNR}(t)},\qquad
# \|\Delta v\|^2 = \Big(1 + \frac{1}{\mathrm{SNR}(t)}\Big) \|\Delta \epsilon\|^2 .
# $$ (eq-ddpm-param-weights)
#
# Regressing on $x_0$ therefore puts almost no weight on the nearly clean steps (large SNR), where a
# small error in $x_0$ becomes a large error in the implied noise; regressing on $v$ weighs every step
# at least as much as $\epsilon$ does, and stays well defined where $\bar\alpha_t = 0$. We train the
# $x_0$ and $v$ versions with exactly the same budget as the $\epsilon$ model above (same network, steps,
# batches, seed) and sample all three with the same noise.

# %%
results = {"eps": (samples, sw_eps, mmd_eps)}
for parameterization in ["x0", "v"]:
    model = train(parameterization).model
    x = model.sample(N_SAMPLES, generator=gen(7, DEVICE), progress=False)
    results[parameterization] = (x, *measure(x))

fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
for ax, (name, (x, sw, mm)) in zip(axes, results.items()):
    scatter2d(ax, x, lim=2.5, title=f"predict {name}: SW {sw:.2f}, MMD {mm:.3f}")
plt.show()
print(f"{'target':8s} {'sliced W2':>10s} {'MMD':>8s}")
for name, (_, sw, mm) in results.items():
    print(f"{name:8s} {sw:10.2f} {mm:8.3f}")
sw_x0, mmd_x0 = results["x0"][1:]
sw_v, mmd_v = results["v"][1:]
assert 0.07 < sw_x0 < 0.2 and 0.03 < mmd_x0 < 0.12
assert 0.03 < sw_v < 0.1 and 0 < mmd_v < 0.02
assert mmd_x0 > 3 * max(mmd_eps, mmd_v)

# %% [markdown]
# With this small budget, $\epsilon$- and $v$-prediction give similar samples, and $x_0$-prediction is
# clearly worse: its samples fill in the inside of the roll, as
# {eq}`eq-ddpm-param-weights` predicts (the last steps, which place points precisely, get almost no
# weight). Which target is best in general depends on the data, the schedule and the sampler; $v$ is
# popular for few-step samplers and for schedules that reach $\bar\alpha = 0$, where
# $\epsilon$-prediction breaks down.
#
# ## Noise schedules: linear and cosine
#
# Ho et al. use betas that grow linearly from $10^{-4}$ to $0.02$ over $T = 1000$ steps (`pdlib` scales
# both ends by $1000/T$ so that other $T$ give the same curve). Nichol & Dhariwal (2021) observed that
# with this schedule $\bar\alpha_t$ is already close to zero well before the end, so the last steps are
# wasted on pure noise, and proposed to define $\bar\alpha$ directly:
#
# $$
# \bar\alpha_t = \frac{f(t)}{f(0)},\qquad f(t) = \cos^2\Big( \frac{t/T + s}{1 + s} \cdot \frac{\pi}{2} \Big),
# \qquad \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ 0.999\Big),
# $$ (eq-ddpm-cosine)
#
# with $s = 0.008$, so that $\beta$ is not too small near $t = 0$; the clip at 0.999 avoids a
# singularity at the end. In code, `beta_schedule("cosine", T)[i]` is
# $1 - f(i+1)/f(i)$ for $i = 0, \dots, T-1$. The clearest way to compare schedules is the
# log signal-to-noise ratio, $\log \mathrm{SNR}(t) = \log \bar\alpha_t - \log(1 - \bar\alpha_t)$
# (`GaussianDiffusion.snr`):

# %%
schedules = {
    name: GaussianDiffusion(beta_schedule(name, T)) for name in ["linear", "cosine"]
}
steps = torch.arange(T)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, proc in schedules.items():
    axes[0].plot(steps / T, proc.alphas_cumprod, label=name)
    axes[1].plot(steps / T, proc.snr(steps).log(), label=name)
axes[0].set_xlabel("t / T")
axes[0].set_ylabel("abar_t")
axes[0].set_title("signal kept")
axes[1].set_xlabel("t / T")
axes[1].set_ylabel("log SNR(t)")
axes[1].set_title("log signal-to-noise ratio")
for ax in axes:
    ax.legend()
plt.show()

print(
    f"{'schedule':8s} {'abar at index T-1':>18s} {'steps with abar < 0.01':>23s} "
    f"{'log SNR range':>16s}"
)
for name, proc in schedules.items():
    logsnr = proc.snr(steps).log()
    near_zero = (proc.alphas_cumprod < 0.01).float().mean().item()
    print(
        f"{name:8s} {proc.alphas_cumprod[-1].item():18.1e} {near_zero:23.0%} "
        f"{logsnr.min().item():7.1f} to {logsnr.max().item():.1f}"
    )
frac_linear = (schedules["linear"].alphas_cumprod < 0.01).float().mean().item()
frac_cosine = (schedules["cosine"].alphas_cumprod < 0.01).float().mean().item()
assert 0.3 < frac_linear < 0.45 and 0.03 < frac_cosine < 0.12
abar_end = {name: proc.alphas_cumprod[-1].item() for name, proc in schedules.items()}
snr_range = {name: proc.snr(steps).log() for name, proc in schedules.items()}
assert 1e-5 < abar_end["linear"] < 1e-3 and abar_end["cosine"] < 1e-4
assert all(-20 < r.min() < -5 and 3 < r.max() < 12 for r in snr_range.values())

# %% [markdown]
# With the linear schedule more than a third of the steps have $\bar\alpha_t < 0.01$: they only move
# noise around. The cosine schedule spends its steps more evenly in log SNR, nearly linearly over
# most of the range, and keeps more signal in the first half. It matters most for images at low
# resolution and for short chains; on the toy data the linear schedule with $T = 100$ is fine.
#
# ## Summary
#
# - The forward process {eq}`eq-ddpm-forward-step` has closed-form marginals {eq}`eq-ddpm-forward`, so
#   any $x_t$ is one line of code away from $x_0$.
# - The ELBO {eq}`eq-ddpm-elbo` is a sum of KL divergences between Gaussians. The posterior
#   {eq}`eq-ddpm-posterior` is the precision-weighted combination of two Gaussians; reparameterising the
#   mean by the noise turns each KL into a weighted noise regression {eq}`eq-ddpm-eps-weighted`, and
#   dropping the weights gives $L_\text{simple}$ {eq}`eq-ddpm-lsimple`.
# - A 3-block MLP trained for 1500 steps and sampled with 100 ancestral steps
#   {eq}`eq-ddpm-ancestral` gets the outer arm of the swiss roll but loses most of the inner one:
#   sliced Wasserstein distance 0.06 against a held-out floor of 0.03, MMD 0.008 against 0.000.
# - $\epsilon$, $x_0$ and $v$ are interchangeable {eq}`eq-ddpm-param` but imply different weightings
#   {eq}`eq-ddpm-param-weights`; with the same budget $x_0$-prediction was clearly worse here.
# - The cosine schedule {eq}`eq-ddpm-cosine` spreads the log SNR more evenly than the linear one,
#   which wastes many of its last steps on pure noise.
# - The $\epsilon$-network is a scaled score ({doc}`01_score_matching`), and sampling does not have to
#   use all $T$ steps: that is {doc}`03_ddim`.
#
# ## Exercises
#
# ### 1. Sampling the forward process
#
# Implement {eq}`eq-ddpm-forward` given the table of $\bar\alpha$ values (0-based, as
# `process.alphas_cumprod`). `t` has shape `[B]`; `x0` and `eps` have shape `[B, 2]` here, but the
# checker also passes image-shaped tensors `[B, C, H, W]`, so make $\bar\alpha_t$ broadcast over any
# number of trailing axes.


# %%
def q_sample(x0, t, eps, alphas_cumprod):
    """A draw of x_t ~ q(x_t | x_0) with the given noise (eq. eq-ddpm-forward)."""
    # TODO: two lines.
    raise NotImplementedError


_ = check_q_sample(q_sample)  # prints the verdict

# %% [markdown]
# ### 2. The posterior mean
#
# Implement the mean $\tilde\mu_t$ of {eq}`eq-ddpm-posterior` in its closed form, from the betas. Mind
# the 0-based index: at index 0 the papers' $\bar\alpha_{t-1}$ is 1.


# %%
def posterior_mean(x0, xt, t, betas):
    """Mean of q(x_{t-1} | x_t, x_0) at 0-based indices t."""
    # TODO: compute alphas, abar and abar_prev (with abar_prev = 1 at index 0), then the
    # two coefficients.
    raise NotImplementedError


_ = check_posterior_mean(posterior_mean)  # prints the verdict

# %% [markdown]
# ### 3. The cosine schedule
#
# Implement the betas of {eq}`eq-ddpm-cosine` for a given $T$ ($s = 0.008$, clip at 0.999).


# %%
def cosine_betas(T):
    """Nichol & Dhariwal's cosine schedule, float64 tensor of length T."""
    # TODO: eq. (eq-ddpm-cosine), then the betas from consecutive abar values.
    raise NotImplementedError


_ = check_cosine_schedule(cosine_betas)  # prints the verdict

# %% [markdown]
# ### 4. The sampler
#
# Write ancestral sampling ({eq}`eq-ddpm-ancestral`, Ho et al.'s Algorithm 2) from the betas alone:
# from `x_T`, loop over the indices $T-1, \dots, 0$, predict $\epsilon$ with `model(x, t)` (`t` a
# LongTensor of shape `[B]` filled with the index), form the posterior mean from the predicted
# $x_0$, and add $\sigma_t$ times `noises[i]` with $\sigma_t^2 = \tilde\beta_t$, except at index 0.
# The checker compares your samples with `GaussianDiffusion.ddpm_step` on points and on images, with
# the same noise.


# %%
def my_ddpm_sampler(model, betas, x_T, noises):
    """x_0 from x_T by ancestral sampling; noises[i] is the noise of the step from
    index i."""
    # TODO: the tables you need, then a loop.
    raise NotImplementedError


_ = check_ddpm_sampler(my_ddpm_sampler)  # prints the verdict

# %% [markdown]
# ### 5. Questions
#
# 1. Train the $\epsilon$ model with `beta_schedule("cosine", T)` (pass
#    `schedule_process=GaussianDiffusion(beta_schedule("cosine", T))` to `train`) and compare the
#    metrics. Is the difference larger or smaller than the one between parameterisations? Why might the
#    cosine schedule matter less for 2D data than for images?
# 2. `ddpm.sample(..., variance="large")` uses $\sigma_t^2 = \beta_t$ instead of $\tilde\beta_t$. Which
#    metric changes, and in which direction? Relate it to the two choices Ho et al. discuss.
# 3. Using {eq}`eq-ddpm-param-weights`, write the weighting of the $\epsilon$-error that the ELBO
#    {eq}`eq-ddpm-eps-weighted` would use, and compare it with the implied weightings of
#    $x_0$- and $v$-prediction. Which of the three is closest to the ELBO?
#
# ## Scaling up
#
# At paper scale the equations stay and the sizes change. Ho et al. (2020) use $T = 1000$, the linear
# schedule from $10^{-4}$ to $0.02$, $\epsilon$-prediction with $L_\text{simple}$, and a 35.7M-parameter
# UNet on CIFAR-10 (32x32 images); the paper reports an FID of 3.17 on CIFAR-10. Nichol & Dhariwal
# (2021) switch to the cosine schedule and $T = 4000$ with a deeper UNet. It is not wider: it keeps
# Ho et al.'s 128 base channels and channel multipliers (1, 2, 2, 2), but has 3 residual blocks per
# resolution instead of 2 and attention at 16x16 and 8x8 instead of 16x16 only (dropout 0.3,
# learning rate $10^{-4}$, batch 128, EMA 0.9999). With that setup and 400k iterations, the Cas-DM paper
# reports FID 6.79 on CIFAR-10 for its $\epsilon$-prediction DDPM baseline (its own reproduction, as
# reported in that paper). All these FIDs use the TF-Inception features; numbers from another feature
# network are not comparable.
#
# The full runs of this book, with Ho et al.'s setting and with Nichol & Dhariwal's (trained with
# $L_\text{simple}$; their learned variances are not part of `pdlib`), need a GPU and the CIFAR-10
# files (see `data/README.md` in the repository):
#
# ```
# python -m pdlib train --config cifar10-ddpm
# python -m pdlib train --config cifar10-improved
# ```
#
# Setting `PAPER_SCALE = True` at the top of this notebook keeps the toy data but uses $T = 1000$, a
# wider network, longer training and more samples, on a GPU when there is one.
