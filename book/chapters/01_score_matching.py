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
# # 1. Score matching and Langevin dynamics
#
# A generative model has to do two things: learn something about a data distribution $p(x)$ from
# examples, and turn what it learned into new examples. Score-based models split the job in an unusual
# way. They never learn $p(x)$ itself, which would need a normalising constant nobody can compute.
# They learn the direction in which $\log p$ increases fastest, the *score*, at every point of space.
# A noisy gradient ascent on $\log p$, *Langevin dynamics*, then turns any starting point into a sample.
#
# This is the idea behind every diffusion model in this book: the noise-prediction network of
# {doc}`02_ddpm` is a score model in disguise. We build it up on 2D toy data, where every density can
# be plotted and every sampler measured. After this chapter you will be able to
#
# - write down the score of a density and run Langevin dynamics with it, and explain why plain
#   Langevin dynamics mixes badly between separated modes;
# - derive the *denoising score matching* objective (Vincent 2011) and write it in a few lines;
# - train a noise-conditional score model over many noise levels (Song & Ermon 2019) and sample it
#   with *annealed* Langevin dynamics;
# - measure samples against held-out data, and see what annealing buys;
# - read an $\epsilon$-prediction network as a scaled score.

# %%
# The switch: False runs on a CPU in about a minute; True uses longer runs and the
# sampler settings
# of the paper (100 Langevin steps per noise level), on a GPU when there is one.
PAPER_SCALE = False

import math

import matplotlib.pyplot as plt
import torch

from pdlib import GaussianDiffusion
from pdlib.data import toy2d
from pdlib.exercises import (
    check_dsm_target,
    check_langevin_sampler,
    check_langevin_step,
)
from pdlib.metrics import mmd, sliced_wasserstein
from pdlib.nets import MLP2D
from pdlib.schedules import beta_schedule
from pdlib.methods.score import (
    NoiseConditionalScore,
    annealed_langevin,
    dsm_loss,
    geometric_sigmas,
    langevin_step,
)
from pdlib.train import TrainConfig, Trainer, resolve_device
from pdlib.viz import scatter2d, trajectories2d, vector_field2d

# One thread: the toy networks are tiny, a second thread only adds synchronisation, and
# it slows
# down badly when other jobs share the machine. A fixed count also keeps the numbers
# reproducible.
torch.set_num_threads(1)
torch.manual_seed(0)

if PAPER_SCALE:
    HIDDEN, TRAIN_STEPS, BATCH, N_SAMPLES, STEPS_PER_LEVEL = (
        256,
        20_000,
        1024,
        5000,
        100,
    )
    DEVICE = resolve_device("auto")
else:
    HIDDEN, TRAIN_STEPS, BATCH, N_SAMPLES, STEPS_PER_LEVEL = 128, 1500, 512, 1000, 50
    DEVICE = torch.device("cpu")


def gen(seed, device="cpu"):
    """A fresh random generator, so that every experiment below is reproducible on its
    own."""
    return torch.Generator(device).manual_seed(seed)


# %% [markdown]
# ## The score of a density
#
# The score of a density $p$ on $\mathbb R^d$ is the gradient of its logarithm,
#
# $$
# s(x) = \nabla_x \log p(x).
# $$ (eq-score-def)
#
# It is a vector field: at every point it says which way the density grows, and how fast relative to
# its current value. If $p(x) = \tilde p(x)/Z$ with an unknown constant $Z$, then
# $\nabla_x \log p = \nabla_x \log \tilde p$: the constant drops out. That is what makes scores
# attractive for modelling: a network can output any vector field without having to keep an integral
# equal to one.
#
# For a mixture of isotropic Gaussians $p(x) = \sum_k w_k\, \mathcal N(x; \mu_k, s^2 I)$ the score has a
# closed form. Differentiating $\log \sum_k w_k \mathcal N(x;\mu_k, s^2 I)$ gives
#
# $$
# \nabla_x \log p(x) = \sum_k r_k(x)\, \frac{\mu_k - x}{s^2},
# \qquad r_k(x) = \frac{w_k\, \mathcal N(x; \mu_k, s^2 I)}{\sum_j w_j\, \mathcal N(x; \mu_j, s^2 I)},
# $$ (eq-score-mixture)
#
# a responsibility-weighted pull towards the component means. Below is a two-component mixture with
# unequal weights (0.8 on the left, 0.2 on the right), its score written from
# {eq}`eq-score-mixture`, and a check against automatic differentiation of $\log p$.

# %%
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
WEIGHTS = torch.tensor([0.8, 0.2])
S = 0.4  # standard deviation of each component


def mixture_log_density(x, extra_var=0.0):
    """log p(x) of the mixture; extra_var > 0 gives the mixture blurred by N(0,
    extra_var I)."""
    var = S**2 + extra_var
    sq = ((x[:, None, :] - MEANS[None]) ** 2).sum(
        -1
    )  # [n, K] squared distances to the means
    log_comp = -sq / (2 * var) - math.log(
        2 * math.pi * var
    )  # log N(x; mu_k, var I) in 2D
    return torch.logsumexp(WEIGHTS.log() + log_comp, dim=1)


def mixture_score(x, extra_var=0.0):
    """Closed-form score, eq. (eq-score-mixture)."""
    var = S**2 + extra_var
    diff = MEANS[None] - x[:, None, :]  # [n, K, 2]
    r = (WEIGHTS.log() - (diff**2).sum(-1) / (2 * var)).softmax(
        dim=1
    )  # responsibilities r_k(x)
    return (r[..., None] * diff).sum(1) / var


x = (torch.rand(500, 2, generator=gen(0)) * 8 - 4).requires_grad_(True)
autograd_score = torch.autograd.grad(mixture_log_density(x).sum(), x)[0]
err = (mixture_score(x.detach()) - autograd_score).abs().max().item()
assert torch.allclose(mixture_score(x.detach()), autograd_score, atol=1e-4)
print(f"closed-form score vs autograd: max error < 1e-4: {err < 1e-4}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
u = torch.linspace(-4, 4, 200)
grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
density = mixture_log_density(grid).exp().reshape(200, 200)
axes[0].contourf(u, u, density, levels=20, cmap="Blues")
axes[0].set_aspect("equal")
axes[0].set_title("density p(x): weights 0.8 (left) and 0.2 (right)")
axes[1].contour(u, u, density, levels=8, cmap="Blues")
vector_field2d(
    axes[1], mixture_score, lim=4, n=17, title="score: arrows point uphill in log p"
)
plt.show()

# %% [markdown]
# ## Langevin dynamics
#
# Given the score, Langevin dynamics draws samples by a gradient step on $\log p$ plus Gaussian noise.
# With step size $\alpha > 0$ and fresh noise $z_k \sim \mathcal N(0, I)$ at every step,
#
# $$
# x_{k+1} = x_k + \frac{\alpha}{2}\, \nabla_x \log p(x_k) + \sqrt{\alpha}\, z_k .
# $$ (eq-score-langevin)
#
# The gradient term alone would climb to a mode and stop there; the noise term alone would wander off.
# Together, as $\alpha \to 0$ and the number of steps goes to infinity, the distribution of $x_k$ tends
# to $p$ from any start (under mild conditions on $p$). In `pdlib` one step is
# `pdlib.methods.score.langevin_step(score, x, step_size, noise)`.
#
# The catch is in "the number of steps goes to infinity". Let us start 2000 points uniformly in the
# square $[-4, 4]^2$ (half of them on each side) and run 1000 steps on the mixture above.


# %%
def run_langevin(score_fn, x, step_size, n_steps, generator, keep_every=None):
    path = [x]
    for k in range(n_steps):
        x = langevin_step(
            score_fn(x), x, step_size, torch.randn(x.shape, generator=generator)
        )
        if keep_every and (k + 1) % keep_every == 0:
            path.append(x)
    return x, torch.stack(path)


g = gen(1)
x_init = torch.rand(2000, 2, generator=g) * 8 - 4
x_plain, path_plain = run_langevin(
    mixture_score, x_init, step_size=0.01, n_steps=1000, generator=g, keep_every=20
)
left_plain = (x_plain[:, 0] < 0).float().mean().item()
print(f"fraction of samples in the left mode: {left_plain:.2f} (target 0.80)")
assert 0.45 < left_plain < 0.58

# %% [markdown]
# Locally the samples look right: each point settles into a Gaussian blob of the right width. Globally
# they are wrong: the left mode should hold 80% of the mass, but it holds about as many points as
# started on the left. The score is *local* information. Near the right mode it points to the right
# mode, whatever the weights are; the weights only show up in the score in the low-density gap between
# the modes, where no point ever goes. To move from one mode to the other a point has to climb against
# the score through a region where $p$ is tiny, which takes an exponentially long time in the height of
# the barrier. In practice, plain Langevin dynamics does not mix between separated modes.
#
# The remedy, which the rest of the chapter builds on, is to blur the density first. Adding Gaussian
# noise of scale $\sigma$ to the mixture gives again a mixture, with variance $s^2 + \sigma^2$ per
# component, so its score is {eq}`eq-score-mixture` with $s^2 \to s^2 + \sigma^2$. For a large
# $\sigma$ the two modes merge into one broad bump, and the score everywhere carries the information
# that the left side is heavier. *Annealed* Langevin dynamics runs a few steps at a large $\sigma$,
# then at smaller and smaller ones, ending at (nearly) the true density
# ({eq}`eq-score-annealed-step` below gives the step sizes).

# %%
mix_sigmas = geometric_sigmas(4.0, 0.05, 10)  # 4.0, 2.4, ..., 0.05: large to small


def blurred_mixture_score(x, level):
    return mixture_score(x, extra_var=float(mix_sigmas[level[0]]) ** 2)


x_annealed = annealed_langevin(
    blurred_mixture_score,
    x_init,
    mix_sigmas,
    n_steps_each=100,
    step_lr=2e-4,
    generator=gen(2),
    progress=False,
    denoise=False,
)
left_annealed = (x_annealed[:, 0] < 0).float().mean().item()
print(f"fraction in the left mode, annealed: {left_annealed:.2f} (target 0.80)")
assert 0.7 < left_annealed < 0.88

fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
for ax in axes:
    ax.contour(u, u, density, levels=6, cmap="Blues", alpha=0.6)
trajectories2d(
    axes[0], path_plain, n=25, lim=4, title="plain Langevin: paths stay in one mode"
)
scatter2d(
    axes[1], x_plain, lim=4, title=f"plain Langevin: {left_plain:.0%} on the left"
)
scatter2d(
    axes[2],
    x_annealed,
    lim=4,
    title=f"annealed Langevin: {left_annealed:.0%} on the left",
)
plt.show()

# %% [markdown]
# With the same number of steps (10 levels of 100), annealing moves the split close to the true
# 80/20. For real data we do not know the blurred scores in closed form. The next two sections learn
# them.
#
# ## Denoising score matching
#
# We want a network $s_\theta(x)$ with $s_\theta \approx \nabla_x \log p$, knowing $p$ only through
# samples. The natural objective, the Fisher divergence
# $\tfrac12\, \mathbb E_{p(x)} \| s_\theta(x) - \nabla_x \log p(x) \|^2$, contains the unknown score.
# Hyvärinen (2005) showed that integration by parts removes it, at the price of the trace of the
# Jacobian of $s_\theta$, which is expensive in high dimension. Vincent (2011) found a cheaper way:
# match the score of a *noisy* version of the data. Perturb every example with Gaussian noise,
#
# $$
# \tilde x = x + \sigma z, \qquad z \sim \mathcal N(0, I), \qquad
# q_\sigma(\tilde x \mid x) = \mathcal N(\tilde x; x, \sigma^2 I),
# $$ (eq-score-perturb)
#
# so that $\tilde x$ has the blurred density $p_\sigma(\tilde x) = \int p(x)\, q_\sigma(\tilde x \mid x)\,
# dx$. The conditional density is a Gaussian, whose score we know:
#
# $$
# \nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) = -\frac{\tilde x - x}{\sigma^2} = -\frac{z}{\sigma}.
# $$ (eq-score-dsm-target)
#
# Denoising score matching regresses the network on this target,
#
# $$
# \mathcal L_{\mathrm{DSM}}(\theta) = \tfrac12\, \mathbb E_{x \sim p,\, z}
# \big\| s_\theta(x + \sigma z) + z/\sigma \big\|^2 ,
# $$ (eq-score-dsm)
#
# and Vincent proved that {eq}`eq-score-dsm` equals the Fisher divergence to $p_\sigma$ up to a
# constant that does not depend on $\theta$. Its minimiser is therefore the score of the *blurred*
# density, $s^*(\tilde x) = \nabla \log p_\sigma(\tilde x) = -\mathbb E[z \mid \tilde x]/\sigma$: the
# average of the noise directions that could have produced $\tilde x$. No Jacobian, no unknown score,
# only noise we drew ourselves. Rearranged, this is Tweedie's formula
# $\mathbb E[x \mid \tilde x] = \tilde x + \sigma^2 \nabla \log p_\sigma(\tilde x)$: a score model is a
# denoiser.
#
# Song & Ermon (2019) train one network $s_\theta(\tilde x, i)$ for $L$ noise levels
# $\sigma_1 > \dots > \sigma_L$ at once, drawing a level uniformly for every example and weighting the
# level's loss by $\lambda(\sigma_i) = \sigma_i^2$, which makes all terms of the same size:
#
# $$
# \mathcal L(\theta) = \frac{1}{2}\, \mathbb E_{i,\, x,\, z}\, \sigma_i^2
# \big\| s_\theta(x + \sigma_i z, i) + z/\sigma_i \big\|^2
# = \frac{1}{2}\, \mathbb E_{i,\, x,\, z} \big\| \sigma_i\, s_\theta(x + \sigma_i z, i) + z \big\|^2 .
# $$ (eq-score-ncsn-loss)
#
# Here it is from scratch. It draws the levels first and the noise second from the generator it is
# given, as `pdlib.methods.score.dsm_loss` does, so with the same seed both see the same levels and noise.


# %%
def my_dsm_loss(score_model, x0, sigmas, generator):
    level = torch.randint(
        0, len(sigmas), (x0.shape[0],), generator=generator
    )  # i ~ U{0..L-1}
    sigma = sigmas[level][:, None]
    z = torch.randn(x0.shape, generator=generator)
    target = -z / sigma  # eq. (eq-score-dsm-target)
    score = score_model(x0 + sigma * z, level)
    return (
        0.5 * (sigma**2 * (score - target) ** 2).sum(1).mean()
    )  # eq. (eq-score-ncsn-loss)


demo_sigmas = geometric_sigmas(3.0, 0.03, 10)
demo_model = NoiseConditionalScore(
    MLP2D(hidden=32), demo_sigmas
)  # untrained: any network will do
x0 = toy2d("moons", 256, generator=gen(0))
mine = my_dsm_loss(demo_model, x0, demo_sigmas, generator=gen(42))
ref = dsm_loss(demo_model, x0, demo_sigmas, generator=gen(42))
assert torch.allclose(mine, ref, rtol=1e-5, atol=1e-6)
print(
    f"my DSM loss {mine.item():.4f}, pdlib {ref.item():.4f} (equal to rtol 1e-5)"
)

# %% [markdown]
# ## Many noise levels
#
# Why several levels rather than one? A single small $\sigma$ gives a score close to the data's, but
# it is learned only where the noisy data lie: in a thin shell around the data. Elsewhere the network
# has never seen a training example and its output is arbitrary, yet that is exactly where Langevin
# dynamics starts. A single large $\sigma$ gives a score that is accurate everywhere, but of a badly
# blurred density. With a ladder of levels, each level covers what the next one needs. Song & Ermon
# use a geometric sequence,
#
# $$
# \sigma_i = \sigma_1 \left(\frac{\sigma_L}{\sigma_1}\right)^{\frac{i-1}{L-1}}, \qquad i = 1, \dots, L,
# $$ (eq-score-sigmas)
#
# with $\sigma_1$ about as large as the largest distance between two data points (so that the first
# level can move a point anywhere) and $\sigma_L$ small compared with the detail in the data. In code,
# `geometric_sigmas(sigma_max, sigma_min, L)` returns them with the largest first, and level $i$ of the
# papers is index $i - 1$.
#
# The network is `MLP2D`, which takes the point and the level index (it embeds the index the way a
# DDPM network embeds its timestep). `NoiseConditionalScore` divides its output by $\sigma_i$, so the
# network itself outputs $\sigma_i s_\theta \approx -\mathbb E[z \mid \tilde x]$, a quantity of order
# one at every level (Song & Ermon 2020), and its `.loss` is {eq}`eq-score-ncsn-loss`. We train on the
# two-moons data set.

# %%
data = toy2d("moons", 20_000, generator=gen(1))  # training set
held_out = toy2d("moons", N_SAMPLES, generator=gen(2))  # to measure samples against
held_out_2 = toy2d(
    "moons", N_SAMPLES, generator=gen(3)
)  # a second draw: the metric's noise floor
max_dist = torch.cdist(held_out, held_out).max().item()
print(f"largest distance between two data points: {max_dist:.1f}")
assert 3.5 < max_dist < 4.2

sigmas = geometric_sigmas(4.0, 0.03, 10)
print("sigmas:", " ".join(f"{s:.3f}" for s in sigmas.tolist()))

# %% [markdown]
# Training uses `pdlib.train.Trainer`, which calls the model's `.loss(x0, generator=...)` on random
# minibatches. One setting matters for short runs: the trainer keeps an exponential moving average
# (EMA) of the weights, and we sample from the average. Its default decay 0.999 averages over the last
# thousand steps or so; in a 1500-step run those steps still include the early, poor weights
# ($0.999^{1500} \approx 0.22$ of the initial weights remain), so we use a decay of 0.99.

# %%
torch.manual_seed(0)
score_model = NoiseConditionalScore(MLP2D(hidden=HIDDEN), sigmas)
config = TrainConfig(
    steps=TRAIN_STEPS,
    batch_size=BATCH,
    lr=2e-3,
    ema_decay=0.99,
    seed=0,
    log_every=50,
    device=str(DEVICE),
    progress=False,
)
trainer = Trainer(score_model, data, config)
history = trainer.fit()
model = trainer.model.eval()  # the EMA copy
final_loss = history[-1]["loss"]
print(f"final training loss (mean of the last 50 steps): {final_loss:.2f}")
assert 0.45 < final_loss < 0.65

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([h["step"] for h in history], [h["loss"] for h in history])
ax.set_xlabel("step")
ax.set_ylabel("DSM loss")
ax.set_title("denoising score matching on two moons")
plt.show()

# %% [markdown]
# The loss does not go to zero, and it should not: even the true score only predicts the part of the
# noise $z$ that can be inferred from $\tilde x$. At large $\sigma$ that is nearly all of it (the data
# are a small blob compared with the noise), at small $\sigma$ very little.
#
# Here is the learned field at three levels. Far from the data the score of a small level is huge
# (about distance$/\sigma_i^2$) and would dwarf everything else, so the arrows show only the
# *direction* of $s_\theta(x, i)$. At the largest level the field points to the centre of the data
# from everywhere: it knows where the data are, but not their shape. At the smallest level it points
# to the nearest moon, across the gap between the moons as well, and it is accurate only close to the
# data, where the training examples were.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
for ax, i in zip(axes, [0, 5, len(sigmas) - 1]):
    scatter2d(ax, held_out[:300], lim=3, color="tab:orange", s=3)

    def direction(p, i=i):
        v = model(p.to(DEVICE), torch.full((len(p),), i, device=DEVICE)).cpu()
        return v / v.norm(dim=1, keepdim=True)

    vector_field2d(
        ax, direction, lim=3, n=19, title=f"level {i}: sigma = {sigmas[i]:.2f}"
    )
plt.show()

# %% [markdown]
# ## Annealed Langevin dynamics
#
# Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) runs $n$ steps of
# {eq}`eq-score-langevin` at every level, from $\sigma_1$ down to $\sigma_L$, with the step size scaled
# to the level,
#
# $$
# x \leftarrow x + \frac{\alpha_i}{2}\, s_\theta(x, i) + \sqrt{\alpha_i}\, z,
# \qquad \alpha_i = \epsilon\, \frac{\sigma_i^2}{\sigma_L^2},
# $$ (eq-score-annealed-step)
#
# so that every level moves points by an amount proportional to its own noise scale. `pdlib` adds the
# final denoising step of Song & Ermon (2020), $x \leftarrow x + \sigma_L^2\, s_\theta(x, L)$ (Tweedie's
# formula), which removes the last bit of noise. We start from uniform noise on $[-3, 3]^2$ and compare
# with a baseline that spends the same number of network calls, $L \cdot n$, at the smallest level only.
# The first row of figures follows the annealed sampler level by level: a broad cloud after the
# largest level, the rough shape of the moons halfway, thin moons at the end. The second row compares
# the final samples.

# %%
EPS = (
    1e-4  # epsilon of eq. (eq-score-annealed-step): the step size at the smallest level
)
L = len(sigmas)
g = gen(5, DEVICE)
start = torch.rand(N_SAMPLES, 2, generator=g, device=DEVICE) * 6 - 3
samples, path = annealed_langevin(
    model,
    start,
    sigmas,
    n_steps_each=STEPS_PER_LEVEL,
    step_lr=EPS,
    generator=g,
    progress=False,
    return_trajectory=True,
)


def smallest_level_only(x, level):
    return model(x, torch.full_like(level, L - 1))


baseline = annealed_langevin(
    smallest_level_only,
    start,
    sigmas[-1:],
    n_steps_each=L * STEPS_PER_LEVEL,
    step_lr=EPS,
    generator=gen(6, DEVICE),
    progress=False,
)

fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
for ax, i in zip(axes, [1, 4, 7, 10]):  # path[i] is the state after level i - 1
    scatter2d(
        ax, path[i], lim=3, title=f"after level {i - 1} (sigma = {sigmas[i - 1]:.2f})"
    )
plt.show()

fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
scatter2d(axes[0], held_out, lim=3, title="held-out data", color="tab:orange")
scatter2d(axes[1], samples, lim=3, title="annealed Langevin (after denoising)")
scatter2d(
    axes[2], baseline, lim=3, title=f"smallest sigma only ({L * STEPS_PER_LEVEL} steps)"
)
plt.show()

# %% [markdown]
# Both samplers put their points on the moons; the difference is in *how many* points go where. We
# measure it with two distances between point clouds from `pdlib.metrics`: the sliced Wasserstein
# distance (the average, over random directions, of the optimal-transport distance between the
# projected samples) and the squared maximum mean discrepancy (MMD, with a sum of Gaussian kernels).
# Both are computed against held-out data; a second held-out sample of the same size gives the floor
# that finite sample size alone produces.


# %%
def measure(x):
    return sliced_wasserstein(x, held_out, generator=gen(0)), mmd(x, held_out)


results = {
    "held-out vs held-out (floor)": measure(held_out_2),
    "annealed Langevin": measure(samples),
    "smallest sigma only": measure(baseline),
}
print(f"{'':30s} {'sliced W2':>10s} {'MMD':>8s}")
for name, (sw, mm) in results.items():
    print(f"{name:30s} {sw:10.2f} {mm:8.3f}")
sw_ann, mmd_ann = results["annealed Langevin"]
sw_base, mmd_base = results["smallest sigma only"]
assert 0.03 < sw_ann < 0.12 and -0.005 < mmd_ann < 0.01
assert 0.15 < sw_base < 0.45 and 0.04 < mmd_base < 0.25
assert sw_base > 2 * sw_ann and mmd_base > 5 * mmd_ann

# %% [markdown]
# Annealing brings both distances down to about the floor set by the sample size, while spending the
# same number of steps at the smallest level leaves the samples badly distributed: each point slides to
# the nearest stretch of a moon and stays there, so the moons are filled in proportion to where the
# uniform start happened to put points, not in proportion to the data. It is the failure of the
# Gaussian mixture at the start of the chapter, now with a learned score.
#
# ## From scores to DDPM
#
# The next chapter's model, DDPM, looks different: a fixed chain of $T$ noising steps, a network
# $\epsilon_\theta(x_t, t)$ trained to predict the noise, and a sampler that walks the chain backwards.
# But its noisy samples $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon$ are
# {eq}`eq-score-perturb` up to a scale: $x_t / \sqrt{\bar\alpha_t} = x_0 + \sigma_t \epsilon$ with
# $\sigma_t = \sqrt{(1 - \bar\alpha_t)/\bar\alpha_t}$. Repeating the argument of
# {eq}`eq-score-dsm-target` for $q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0,
# (1 - \bar\alpha_t) I)$ gives the target $-\epsilon / \sqrt{1 - \bar\alpha_t}$, so the minimiser of
# the noise-prediction loss is a scaled score:
#
# $$
# \nabla_{x_t} \log q(x_t) \approx -\frac{\epsilon_\theta(x_t, t)}{\sqrt{1 - \bar\alpha_t}} .
# $$ (eq-score-eps-link)
#
# Our `NoiseConditionalScore` network is the same object with the opposite sign: it outputs
# $\sigma_i s_\theta \approx -\mathbb E[z \mid \tilde x]$, an estimate of minus the noise. The noise
# levels of a DDPM span the same kind of ladder as the $\sigma_i$ above:

# %%
ddpm = GaussianDiffusion(beta_schedule("linear", 100))
equiv_sigma = ((1 - ddpm.alphas_cumprod) / ddpm.alphas_cumprod).sqrt()
print(
    f"DDPM (T = 100, linear): equivalent sigma from {equiv_sigma[0]:.2f} "
    f"to {equiv_sigma[-1]:.0f}"
)
assert 0.02 < equiv_sigma[0] < 0.04 and 150 < equiv_sigma[-1] < 300

# %% [markdown]
# DDPM replaces the ten geometric levels by a hundred (or a thousand) finer ones, and Langevin steps
# within a level by one step between consecutive levels; {doc}`02_ddpm` derives it from a variational
# bound instead of from scores.
#
# ## Summary
#
# - The score $\nabla_x \log p$ does not depend on the normalising constant, and Langevin dynamics
#   {eq}`eq-score-langevin` samples $p$ using only the score.
# - Plain Langevin dynamics mixes badly between separated modes: the score is local, and mode weights
#   only show in low-density regions that samples rarely visit.
# - Denoising score matching {eq}`eq-score-dsm` learns the score of the noise-blurred data by
#   regressing on $-z/\sigma$; its minimiser is a denoiser (Tweedie's formula).
# - A noise-conditional model over a geometric ladder of $\sigma$ {eq}`eq-score-sigmas`, sampled with
#   annealed Langevin dynamics {eq}`eq-score-annealed-step`, reached the held-out floor on two moons,
#   while the same number of steps at the smallest $\sigma$ did not.
# - An $\epsilon$-prediction network is a score model: $s = -\epsilon_\theta/\sqrt{1-\bar\alpha_t}$
#   {eq}`eq-score-eps-link`.
#
# ## Exercises
#
# ### 1. The denoising score matching target
#
# Write the score of $q_\sigma(\tilde x \mid x) = \mathcal N(\tilde x; x, \sigma^2 I)$ with respect to
# $\tilde x$, as a function of the noisy point, the clean point and $\sigma$
# ({eq}`eq-score-dsm-target`). Replace the `raise` and run the checker.


# %%
def dsm_target(x_noisy, x0, sigma):
    """grad of log N(x_noisy; x0, sigma^2 I) with respect to x_noisy."""
    # TODO: one line.
    raise NotImplementedError


_ = check_dsm_target(dsm_target)  # prints the verdict

# %% [markdown]
# ### 2. One Langevin step
#
# Implement {eq}`eq-score-langevin`: given the score at $x$, the step size $\alpha$ and a standard
# normal `noise` of the same shape as $x$, return the next point.


# %%
def my_langevin_step(score, x, step_size, noise):
    """One step of eq. (eq-score-langevin)."""
    # TODO: one line.
    raise NotImplementedError


_ = check_langevin_step(my_langevin_step)  # prints the verdict

# %% [markdown]
# ### 3. A Langevin sampler
#
# Turn the step into a sampler: starting from `x`, run `len(noises)` steps with a fixed step size,
# where `score_fn(x)` returns the score at the *current* point and `noises[k]` is the standard normal
# noise of step k. (`pdlib.methods.score.annealed_langevin` does this for a decreasing sequence of
# noise levels.) The checker runs it on a Gaussian whose score it knows. Then try your sampler on
# the mixture of this chapter, with `mixture_score` as `score_fn`: do you reproduce the wrong mode
# weights of plain Langevin dynamics?


# %%
def my_langevin_sampler(score_fn, x, step_size, noises):
    """x after len(noises) Langevin steps."""
    # TODO: a loop.
    raise NotImplementedError


_ = check_langevin_sampler(my_langevin_sampler)  # prints the verdict

# %% [markdown]
# ### 4. Questions
#
# 1. In the mixture experiment, plain Langevin dynamics with step size 0.01 found the wrong mode
#    weights. Would a larger step size fix it? Try 0.1 and 1.0 and explain what you see in terms of
#    the bias of the discretised dynamics.
# 2. Change `EPS` (the step size at the smallest level) to $10^{-5}$ and to $10^{-3}$, and
#    `STEPS_PER_LEVEL` to 10. Which metric reacts first, and why does a larger step size blur the
#    samples even though the score model is unchanged?
# 3. The weighting $\lambda(\sigma) = \sigma^2$ in {eq}`eq-score-ncsn-loss` makes the terms of all
#    levels of the same size. What would happen to the small levels with $\lambda = 1$?
#
# ## Scaling up
#
# On images nothing changes in the equations; the network and the numbers change. Song & Ermon (2019)
# trained a RefineNet-style noise-conditional network on CIFAR-10 with $L = 10$ levels from
# $\sigma_1 = 1$ to $\sigma_{10} = 0.01$ and sampled with $n = 100$ Langevin steps per level and
# $\epsilon = 2 \times 10^{-5}$ (the defaults of `pdlib.methods.score.annealed_langevin`); the paper reports an
# Inception score of 8.87 and an FID of 25.32 on CIFAR-10. Their follow-up (Song & Ermon 2020) sets
# $\sigma_1$ from the largest pairwise distance, as we did, and uses many more levels. Denoising
# diffusion models ({doc}`02_ddpm`) turned the same idea into a 1000-step chain with an image UNet and
# reached FID 3.17 on CIFAR-10 (Ho et al. 2020, as reported in the paper).
#
# The full image run of this book trains the $\epsilon$-prediction model (a scaled score,
# {eq}`eq-score-eps-link`) with the paper's UNet and settings:
#
# ```
# python -m pdlib train --config cifar10-ddpm
# ```
#
# (it needs the CIFAR-10 files, see `data/README.md`, and a GPU; {doc}`05_images` shows what it
# runs). Setting `PAPER_SCALE = True` at the top of this notebook keeps the toy
# data but trains longer with a wider network, draws more samples and uses the paper's 100 Langevin
# steps per level.
