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
# # 4. Guidance
#
# A conditional diffusion model $\epsilon_\theta(x_t, t, y)$ learns $p(x \mid y)$: give it the label
# "dog" and it samples dogs. In practice plain conditional sampling is rarely what people use. Almost
# every image generator you have seen turns a knob, the *guidance scale* $w$, that pushes samples
# further towards what the label asks for: fewer odd samples, more typical ones, less variety.
# Dhariwal and Nichol (2021) did it with the gradient of a separate classifier; Ho and Salimans
# (2022) showed that the diffusion model itself, trained with the label sometimes dropped, can play
# the classifier's part. That second recipe, classifier-free guidance (CFG), is one line of code.
#
# After this chapter you will be able to
#
# - train a class-conditional diffusion model that is also an unconditional one (label dropout),
# - write the guided prediction from scratch and check it against `pdlib.guidance`,
# - measure what guidance buys and what it costs: fidelity up, diversity down, and too much of it
#   pushes samples off the data,
# - say what "CFG rescale" does and when it makes sense.

# %%
# The switch: False runs on a CPU in about two minutes; True uses the paper's settings
# (GPU, hours).
PAPER_SCALE = False

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from pdlib import GaussianDiffusion
from pdlib.data import num_classes, toy2d
from pdlib.exercises import check_cfg_sampler, check_guidance
from pdlib.guidance import classifier_free_guidance, guided_output, rescale_guidance
from pdlib.methods import DDPM
from pdlib.metrics import precision_recall, sliced_wasserstein
from pdlib.nets import MLP2D
from pdlib.schedules import beta_schedule
from pdlib.train import Trainer, TrainConfig, resolve_device
from pdlib.viz import scatter2d, vector_field2d

# One thread: the toy networks are tiny, a second thread only adds synchronisation, and
# it slows
# down badly when other jobs share the machine.
torch.set_num_threads(1)
torch.manual_seed(0)

if PAPER_SCALE:
    T, HIDDEN, TRAIN_STEPS, N_PER_CLASS = 1000, 512, 30_000, 1000
    DEVICE = resolve_device("auto")
else:
    T, HIDDEN, TRAIN_STEPS, N_PER_CLASS = 100, 128, 6000, 150
    DEVICE = torch.device("cpu")


def gen(seed):
    """A fresh random generator on the sampling device, so every experiment is
    reproducible."""
    return torch.Generator(DEVICE).manual_seed(seed)


process = GaussianDiffusion(beta_schedule("linear", T))

# %% [markdown]
# ## A labelled toy set
#
# The eight Gaussians: eight tight clusters on a circle, and the label $y \in \{0, \dots, 7\}$ says
# which cluster a point came from. `toy2d(..., return_labels=True)` returns the labels, and
# `num_classes` says how many there are.

# %%
NAME = "8gaussians"
K = num_classes(NAME)
x_train, y_train = toy2d(
    NAME, 20_000, torch.Generator().manual_seed(0), return_labels=True
)
x_ref, y_ref = toy2d(
    NAME, 2400, torch.Generator().manual_seed(1), return_labels=True
)  # held out
centres = torch.stack([x_ref[y_ref == k].mean(0) for k in range(K)])
counts = torch.bincount(y_train)
print(f"{K} classes; training points per class: {counts.tolist()}")
assert K == 8 and counts.sum() == 20_000 and counts.min() > 2300 and counts.max() < 2700

# %% [markdown]
# ## Classifier guidance in one equation
#
# By Bayes' rule $\log p(x_t \mid y) = \log p(x_t) + \log p(y \mid x_t) - \log p(y)$, so the score of
# the conditional distribution is the unconditional score plus the gradient of a classifier. Recall
# from {doc}`01_score_matching` that the noise predictor is a scaled score,
# $\epsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\,\nabla_{x_t}\log p(x_t)$. Dhariwal and Nichol
# (2021) train a classifier $p_\phi(y \mid x_t, t)$ *on noisy inputs* and sample with
#
# $$
# \hat\epsilon(x_t, t, y) = \epsilon_\theta(x_t, t) - w\,\sqrt{1-\bar\alpha_t}\;\nabla_{x_t}\log p_\phi(y \mid x_t, t),
# $$ (eq-guid-classifier)
#
# the score of $p(x_t)\,p_\phi(y \mid x_t)^w$. With $w = 1$ this is the conditional model; with $w > 1$
# the classifier's opinion counts more than Bayes' rule says, and samples move to where the
# classifier is most confident. (The $\sqrt{1-\bar\alpha_t}$ turns a score into an $\epsilon$; code
# index $t$ is the papers' step $t+1$ throughout, as everywhere in this book.)
#
# The price is a second network that must be trained on noisy data, and a worry: following a
# classifier's input gradient is also how adversarial examples are made, so the classifier's
# confidence can rise without the sample getting better.
#
# ## Classifier-free guidance
#
# Ho and Salimans (2022) remove the classifier. Apply Bayes' rule the other way round:
# $\nabla \log p(y \mid x_t) = \nabla \log p(x_t \mid y) - \nabla \log p(x_t)$, and both scores on the
# right are diffusion models. Writing $\epsilon_c = \epsilon_\theta(x_t, t, y)$ and
# $\epsilon_u = \epsilon_\theta(x_t, t, \varnothing)$ for the conditional and the unconditional
# prediction, {eq}`eq-guid-classifier` becomes
#
# $$
# \hat\epsilon = \epsilon_u + w\,(\epsilon_c - \epsilon_u).
# $$ (eq-guid-cfg)
#
# $w = 0$ is the unconditional model, $w = 1$ the conditional one, $w > 1$ extrapolates past the
# conditional prediction, away from the unconditional one. (Ho and Salimans write
# $(1+w')\,\epsilon_c - w'\,\epsilon_u$; that is {eq}`eq-guid-cfg` with $w = 1 + w'$. `pdlib` and this
# book use $w$, so that "no guidance" is $w = 1$.) One network provides both predictions: during
# training the label is replaced by a "null" label $\varnothing$ with some probability, so the same
# weights also learn the unconditional model. Ho and Salimans use 0.1 or 0.2 on ImageNet. Here the
# unconditional model is the hard one: eight tight clusters with nothing to say which, against one
# cluster for a known label. An earlier version of this chapter trained 2,000 steps with 0.1 and its
# unconditional model drew a ring instead of clusters; we train 6,000 steps and drop the label with
# probability 0.5, so that half of the updates train each model.
#
# ## Training with label dropout
#
# `MLP2D(num_classes=K)` has a label embedding with $K + 1$ rows; the last one, `net.null_class`, is
# the null label. `DDPM(..., cond_drop_prob=0.5)` swaps a label for it with probability 0.5, and the
# `Trainer` passes the labels of `data=(x, y)` to the loss as `y=`.

# %%
torch.manual_seed(0)
net = MLP2D(hidden=HIDDEN, num_classes=K)
print(f"labels 0..{K - 1}, null label = {net.null_class}")
method = DDPM(net, process, cond_drop_prob=0.5)
trainer = Trainer(
    method,
    (x_train, y_train),
    TrainConfig(
        steps=TRAIN_STEPS,
        batch_size=256,
        lr=3e-3,
        ema_decay=0.995,
        device=str(DEVICE),
        progress=False,
        log_every=100,
    ),
)
trainer.fit()
model = trainer.model  # the EMA copy
final_loss = sum(h["loss"] for h in trainer.history[-5:]) / 5
print(f"training loss over the last 500 steps: {final_loss:.2f}")
assert 0.02 < final_loss < 0.15

# %% [markdown]
# ### From scratch
#
# The guided prediction {eq}`eq-guid-cfg` in three lines, checked against `pdlib.guidance.guided_output`
# (the formula) and against `classifier_free_guidance` (the wrapper that evaluates both predictions in
# one batch and is what `DDPM.sample` uses).


# %%
def my_guided_eps(net, x, t, y, w):
    """Eq. (eq-guid-cfg): the unconditional prediction, moved w times along
    (cond - uncond)."""
    eps_c = net(x, t, y=y)
    eps_u = net(x, t, y=torch.full_like(y, net.null_class))
    return eps_u + w * (eps_c - eps_u)


ema_net = model.net
g = gen(3)
x = torch.randn(256, 2, generator=g, device=DEVICE)
t = torch.randint(0, T, (256,), generator=g, device=DEVICE)
y = torch.randint(0, K, (256,), generator=g, device=DEVICE)
with torch.no_grad():
    eps_c, eps_u = ema_net(x, t, y=y), ema_net(x, t, y=torch.full_like(y, K))
    for w in (0.0, 1.0, 3.0):
        mine = my_guided_eps(ema_net, x, t, y, w)
        err_formula = (mine - guided_output(eps_c, eps_u, w)).abs().max().item()
        err_wrapper = (
            (mine - classifier_free_guidance(ema_net, y, w)(x, t)).abs().max().item()
        )
        print(
            f"w = {w}: max |mine - guided_output| < 1e-5: {err_formula < 1e-5}, "
            f"max |mine - classifier_free_guidance| < 1e-5: {err_wrapper < 1e-5}"
        )
        assert max(err_formula, err_wrapper) < 1e-5
    assert torch.allclose(
        my_guided_eps(ema_net, x, t, y, 1.0), eps_c, atol=1e-6
    )  # w = 1: conditional

# %% [markdown]
# Guidance changes only the prediction; the sampler is untouched. A from-scratch guided DDPM sampler is
# therefore the ancestral loop of {doc}`02_ddpm` with `my_guided_eps` in place of the network, and it
# reproduces `DDPM.sample(n, y=..., guidance_scale=w)` when both draw from the same generator:


# %%
@torch.no_grad()
def my_guided_sample(net, process, y, w, generator):
    x = torch.randn(len(y), 2, generator=generator, device=DEVICE)
    for i in reversed(range(process.T)):
        t = torch.full((len(y),), i, device=DEVICE)
        x = process.ddpm_step(x, t, my_guided_eps(net, x, t, y, w), generator=generator)
    return x


y_small = torch.arange(K, device=DEVICE).repeat(8)
mine = my_guided_sample(ema_net, process, y_small, 3.0, gen(7))
ref = model.sample(
    len(y_small),
    y=y_small,
    guidance_scale=3.0,
    generator=gen(7),
    device=DEVICE,
    progress=False,
)
err = (mine - ref).abs().max().item()
print(f"guided sampler, w = 3: max |mine - DDPM.sample| = {err:.4f}")
assert torch.allclose(mine, ref, atol=1e-4)

# %% [markdown]
# ## Sweeping the guidance scale
#
# We draw 150 samples of each class at $w \in \{0, 1, 2, 3, 5, 8\}$, all from the same starting noise,
# and measure per class, against that class's held-out data:
#
# - **fidelity**: the fraction of samples inside the class's cluster, within three standard deviations
#   of its centre (the held-out data themselves score 0.99); the mean distance from a sample to the
#   nearest held-out point of its class ("nearest", lower is better); and the precision of
#   Kynkäänniemi et al. (2019) from `pdlib.metrics.precision_recall`;
# - **diversity**: the recall from the same function (the fraction of the class's data covered by
#   the samples) and the *spread*, the standard deviation of the samples divided by that of the data
#   (1 is right, smaller means collapsed);
# - a **distance**: the sliced Wasserstein distance from the class's samples to the class's data.
#
# The numbers are averages over the eight classes.

# %%
W_SWEEP = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0]
labels = torch.arange(K, device=DEVICE).repeat_interleave(N_PER_CLASS)
RADIUS = (
    3 * x_ref[y_ref == 0].std(0).mean().item()
)  # 3 standard deviations of one cluster


def class_metrics(samples, labels):
    """Per-class fidelity, diversity and distance to the held-out data, averaged over
    classes."""
    rows = []
    for k in range(K):
        s, d = samples[labels == k], x_ref[y_ref == k]
        inside = ((s - centres[k]).norm(dim=1) < RADIUS).float().mean().item()
        nearest = torch.cdist(s, d).min(dim=1).values.mean().item()
        precision, recall = precision_recall(d, s, k=3)
        sw = sliced_wasserstein(s, d, generator=torch.Generator().manual_seed(3))
        spread = (s.std(0).norm() / d.std(0).norm()).item()
        rows.append([inside, nearest, precision, recall, spread, sw])
    names = ["inside", "nearest", "precision", "recall", "spread", "SW"]
    return dict(zip(names, torch.tensor(rows).mean(0).tolist()))


data_inside = (
    sum(
        ((x_ref[y_ref == k] - centres[k]).norm(dim=1) < RADIUS).float().mean().item()
        for k in range(K)
    )
    / K
)
print(f"held-out data inside their cluster: {data_inside:.2f}")
assert 0.97 < data_inside <= 1.0


def draw(w, rescale=0.0, seed=2):
    """150 guided samples per class, always from the same starting noise."""
    return model.sample(
        len(labels),
        y=labels,
        guidance_scale=w,
        guidance_rescale=rescale,
        generator=gen(seed),
        device=DEVICE,
        progress=False,
    ).cpu()


guided, results = {}, {}
for w in W_SWEEP:
    guided[w] = draw(w)
    results[w] = class_metrics(guided[w], labels.cpu())
print(f"{'w':>4} | " + " | ".join(f"{k:>9}" for k in results[0.0]))
for w, r in results.items():
    print(
        f"{w:4.0f} | "
        + " | ".join(
            f"{v:9.3f}" if k == "nearest" else f"{v:9.2f}" for k, v in r.items()
        )
    )
r = results
assert 0.08 < r[0.0]["inside"] < 0.2 and r[1.0]["inside"] > 0.95  # chance vs the label
recalls = [r[w]["recall"] for w in (1.0, 2.0, 3.0, 5.0, 8.0)]
assert all(a > b for a, b in zip(recalls, recalls[1:]))  # diversity falls with w
assert (
    r[1.0]["recall"] > 0.9 and 0.8 < r[1.0]["spread"] < 1.1
)  # w = 1: the data's diversity
assert (
    r[2.0]["inside"] >= r[1.0]["inside"] and r[3.0]["precision"] > r[1.0]["precision"]
)
assert (
    r[1.0]["recall"] > r[2.0]["recall"] > r[3.0]["recall"] > r[5.0]["recall"]
)  # diversity falls
assert r[1.0]["spread"] > r[2.0]["spread"] > r[3.0]["spread"] > r[5.0]["spread"]
assert (
    r[8.0]["inside"] < r[5.0]["inside"] and r[8.0]["nearest"] > r[5.0]["nearest"]
)  # too much
assert min(r, key=lambda w: r[w]["SW"]) == 1.0  # the best match is w = 1

# %%
fig, axes = plt.subplots(1, len(W_SWEEP) + 1, figsize=(2.4 * (len(W_SWEEP) + 1), 2.7))
style = dict(cmap="tab10", vmin=0, vmax=9, s=1, lim=2)
scatter2d(axes[0], x_ref, c=y_ref, title="held-out data", **style)
for ax, w in zip(axes[1:], W_SWEEP):
    scatter2d(ax, guided[w], c=labels.cpu(), title=f"w = {w:g}", **style)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# Colours are the labels asked for. At $w = 0$ the labels are ignored: the unconditional model (the
# same weights with the null label) draws the eight clusters, a little more diffuse than the data,
# with every colour in every cluster, and 11 % of the samples land in the cluster their label names,
# close to the one in eight of a model that knows nothing of the label. $w = 1$ puts nearly every
# sample in its cluster with the right spread. Larger $w$ shrinks each cluster to a tight core, and
# at $w = 5$-$8$ some clusters stretch into a streak pointing away from the centre.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
near = [r[w]["nearest"] for w in W_SWEEP]
rec = [r[w]["recall"] for w in W_SWEEP]
axes[0].plot(rec, near, "o-")
for w, a, b in zip(W_SWEEP, rec, near):
    axes[0].annotate(
        f"w={w:g}", (a, b), textcoords="offset points", xytext=(5, 4), fontsize=8
    )
axes[0].set_yscale("log")
axes[0].set_xlabel("diversity: recall (higher is better)")
axes[0].set_ylabel(
    "distance to nearest data point of the class\n(fidelity, lower is better)"
)
axes[0].set_title("fidelity against diversity")
for key, marker in (
    ("inside", "o-"),
    ("precision", "s--"),
    ("recall", "^-"),
    ("spread", "v-"),
):
    axes[1].plot(W_SWEEP[1:], [r[w][key] for w in W_SWEEP[1:]], marker, label=key)
axes[1].set_xlabel("guidance scale w")
axes[1].set_ylim(0, 1.05)
axes[1].set_title("the numbers against w (w = 0 left out)")
axes[1].legend(loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# The trade-off, measured:
#
# - From $w = 0$ to $w = 1$ every number improves: "inside" goes from 0.11 (chance, one cluster in
#   eight) to 0.99, precision from 0.11 to 0.98, the distance to the nearest data point of the class
#   from 1.618 to 0.008, the spread from 14 times the cluster's (samples in all eight clusters) to
#   0.92, the sliced Wasserstein distance from 1.37 to 0.01, and recall from 0.95 to 0.97. This step
#   is the label being used.
# - Beyond $w = 1$ fidelity sits at its ceiling (the held-out data themselves score 0.99 "inside")
#   while diversity falls steadily: recall 0.92 at $w = 2$, 0.86 at 3, 0.73 at 5 and 0.61 at 8, and
#   the clusters shrink to about 70 % of their true spread. The sliced Wasserstein distance, which
#   wants the *whole* class distribution, is best at $w = 1$; guidance trades it for typical samples.
# - At $w = 8$ guidance starts to overshoot: "inside" drops to 0.98, the distance to the nearest data
#   point grows from 0.007 to 0.011, and the spread stops shrinking (0.69, against 0.68 at $w = 5$),
#   because some clusters stretch along a ray pointing away from the other classes (the zoom further
#   down shows class 0 pushed off-centre).
#
# Our conditional model is already about as faithful as the data, so guidance has little fidelity to
# add here and the diversity cost dominates. On images, where conditional samples at $w = 1$ are often
# not recognisable, the fidelity gain is large (see "Scaling up"). On images the shrinking looks like
# less varied, more prototypical pictures, and the overshoot like over-saturated colours.
#
# ### Where guidance pushes
#
# The guidance term $w\,(\epsilon_c - \epsilon_u)$ is, by the Bayes argument above, the gradient of an
# *implicit* classifier, $\nabla \log p(y \mid x_t) = -(\epsilon_c - \epsilon_u)/\sqrt{1-\bar\alpha_t}$,
# as accurate as the two predictions are (and our $\epsilon_u$ is the weak one from above).
# Drawing $-(\epsilon_c - \epsilon_u)$ for class 0 (blue) shows where guidance moves a noisy point. At
# high noise ($t = 70$) it is a nearly uniform drift towards class 0's side of the circle; at low noise
# ($t = 10$) the arrows converge on the cluster, long far from it and vanishing at it. Scaled by a large
# $w$, the early uniform drift carries samples past their cluster, outwards, away from the other
# classes: the overshoot at $w = 8$ in the zoom below.

# %%
k0 = 0
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
for ax, t_show in zip(axes, (70, 40, 10)):
    t_vec = lambda n: torch.full((n,), t_show, device=DEVICE)
    field = lambda p: (
        -(
            ema_net(
                p.to(DEVICE), t_vec(len(p)), y=torch.full((len(p),), k0, device=DEVICE)
            )
            - ema_net(
                p.to(DEVICE), t_vec(len(p)), y=torch.full((len(p),), K, device=DEVICE)
            )
        )
    )
    scatter2d(ax, x_ref, color="0.8", s=1, lim=2.2)
    scatter2d(ax, x_ref[y_ref == k0], color="tab:blue", s=1, lim=2.2)
    title = f"t = {t_show}: " + r"$-(\epsilon_c - \epsilon_u)$, class 0"
    vector_field2d(ax, field, lim=2.2, n=17, title=title, color="tab:red")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Try it: the guidance scale
#
# With a running kernel, move the slider (the samples start from the same noise every time). The
# built book shows the static figure after it: a zoom on class 0's cluster, where the shrinking and
# the overshoot are easy to see.


# %% tags=["nbval-ignore-output"]
def show_guided(w=1.0):
    s = guided[w] if w in guided else draw(w)
    m = class_metrics(s, labels.cpu())
    fig, ax = plt.subplots(figsize=(4, 4))
    scatter2d(
        ax,
        s,
        c=labels.cpu(),
        cmap="tab10",
        vmin=0,
        vmax=9,
        lim=2,
        title=f"w = {w:.1f}: inside {m['inside']:.2f}, recall {m['recall']:.2f}",
    )
    plt.show()


widgets.interactive(
    show_guided,
    w=widgets.FloatSlider(value=1.0, min=0.0, max=8.0, step=0.5, description="w"),
)

# %%
fig, axes = plt.subplots(1, len(W_SWEEP), figsize=(2.4 * len(W_SWEEP), 2.7))
c = centres[k0]
for ax, w in zip(axes, W_SWEEP):
    ax.scatter(x_ref[y_ref == k0, 0], x_ref[y_ref == k0, 1], s=3, color="0.75")
    s = guided[w][labels.cpu() == k0]
    ax.scatter(s[:, 0], s[:, 1], s=3, color="tab:blue")
    ax.add_patch(plt.Circle(c.tolist(), RADIUS, fill=False, ls="--", color="0.4"))
    ax.set_xlim(c[0] - 0.5, c[0] + 0.5)
    ax.set_ylim(c[1] - 0.5, c[1] + 0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"w = {w:g}")
fig.suptitle(
    "class 0, zoomed: data (grey), samples (blue), 3 standard deviations (dashed)"
)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## CFG rescale
#
# Large $w$ also inflates the *size* of the prediction: $\epsilon_u + w(\epsilon_c - \epsilon_u)$ can
# have a much larger norm than either input. In images that shows up as over-exposed, over-saturated
# samples. Lin et al. (2024, "Common diffusion noise schedules and sample steps are flawed",
# eqs. 15-16) rescale the guided $x_0$ prediction so that its standard deviation over the pixels
# matches the conditional one, and blend:
#
# $$
# \hat x_0^{\text{rescaled}} = \hat x_0^{\,\text{guided}}\,\frac{\operatorname{std}(\hat x_0^{\,c})}{\operatorname{std}(\hat x_0^{\,\text{guided}})},\qquad
# \hat x_0^{\text{final}} = \phi\,\hat x_0^{\text{rescaled}} + (1-\phi)\,\hat x_0^{\,\text{guided}},
# $$ (eq-guid-rescale)
#
# with $\phi = 0.7$ (the value the self-perceptual paper uses too). `pdlib.guidance.rescale_guidance`
# implements it, and `DDPM.sample(..., guidance_rescale=0.7)` applies it at every step. The standard
# deviation is taken per sample over all its coordinates, which is meaningful for an image with
# thousands of pixels. Checked from scratch on image-shaped tensors:


# %%
def my_rescale(x0_guided, x0_cond, phi):
    """Eq. (eq-guid-rescale), per sample over all non-batch dimensions."""
    dims = tuple(range(1, x0_guided.ndim))
    rescaled = (
        x0_guided
        * x0_cond.std(dim=dims, keepdim=True)
        / x0_guided.std(dim=dims, keepdim=True)
    )
    return phi * rescaled + (1 - phi) * x0_guided


g = torch.Generator().manual_seed(4)
x0_c, x0_u = (torch.randn(4, 3, 8, 8, generator=g) for _ in range(2))
x0_g = guided_output(x0_c, x0_u, 5.0)
err = (
    (my_rescale(x0_g, x0_c, 0.7) - rescale_guidance(x0_g, x0_c, 0.7)).abs().max().item()
)
std_ratio = lambda a: (a.std(dim=(1, 2, 3)) / x0_c.std(dim=(1, 2, 3))).mean().item()
ratio, ratio_after = std_ratio(x0_g), std_ratio(rescale_guidance(x0_g, x0_c, 1.0))
print(
    f"max |mine - rescale_guidance| < 1e-5: {err < 1e-5}; "
    f"guided std / conditional std = {ratio:.1f} before, "
    f"{ratio_after:.1f} after (phi = 1)"
)
assert err < 1e-5 and 3 < ratio < 8 and abs(ratio_after - 1) < 1e-4

# %% [markdown]
# For a 2D point the "standard deviation over the coordinates" is just $|a - b|/\sqrt 2$, which says
# nothing about the size of the prediction and is nearly 0 for points near the diagonal $a = b$. The
# ratio in {eq}`eq-guid-rescale` then explodes. Here is what it does to our samples at $w = 5$:

# %%
plain = guided[5.0]
resc = draw(5.0, rescale=0.7)
far = {
    name: (s.norm(dim=1) > 2).float().mean().item()
    for name, s in (("w=5", plain), ("w=5, rescale 0.7", resc))
}
print(
    ", ".join(
        f"{name}: {100 * v:.0f}% of samples farther than 2 from the origin"
        for name, v in far.items()
    )
)
assert far["w=5"] == 0 and far["w=5, rescale 0.7"] > 0.02

fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for ax, (name, s) in zip(axes, (("w = 5", plain), ("w = 5, rescale 0.7", resc))):
    scatter2d(
        ax, s, c=labels.cpu(), cmap="tab10", vmin=0, vmax=9, s=1, lim=4, title=name
    )
plt.tight_layout()
plt.show()

# %% [markdown]
# The scattered points come from the classes whose clusters sit near the diagonal. The lesson is not
# that rescaling is wrong, but that it assumes many coordinates per sample: on images its
# statistics are stable and it tames large $w$; on 2D points it should be left off.
#
# ## Summary
#
# - Classifier guidance adds $w$ times a noisy classifier's gradient to the score
#   {eq}`eq-guid-classifier`; classifier-free guidance gets the same gradient from the difference of a
#   conditional and an unconditional prediction of one network,
#   $\hat\epsilon = \epsilon_u + w(\epsilon_c - \epsilon_u)$ {eq}`eq-guid-cfg`.
# - One network learns both by label dropout: `DDPM(net, process, cond_drop_prob=0.5)` with a network
#   that has a null label (`MLP2D(num_classes=K).null_class`). Sample with
#   `DDPM.sample(n, y=labels, guidance_scale=w)`; guidance changes only the prediction, so any sampler
#   works with it.
# - Measured on eight Gaussians: $w = 0$ ignores the label (the unconditional model draws all eight
#   clusters, 11 % of samples in their label's cluster, about chance), $w = 1$ matches each class best
#   (lowest sliced Wasserstein distance), $w = 2$-$8$ trade diversity (recall from 0.97 down to 0.61,
#   spread) for fidelity that is already at its ceiling, and $w = 8$ starts to overshoot.
# - CFG rescale {eq}`eq-guid-rescale` matches the per-sample standard deviation of the guided $x_0$ to
#   the conditional one; it is meant for high-dimensional samples such as images.
#
# ## Exercises
#
# **1. The guided prediction.** Write {eq}`eq-guid-cfg`. The checker compares your function with
# `pdlib.guidance.guided_output` on random inputs with $w = 3$.


# %%
def my_guidance(eps_cond, eps_uncond, w):
    """The classifier-free guided prediction (eq. eq-guid-cfg)."""
    # TODO: one line.
    raise NotImplementedError


# %%
_ = check_guidance(my_guidance)  # prints the verdict

# %% [markdown]
# **2. A guided sampler.** Write a deterministic DDIM sampler ($\eta = 0$) with classifier-free
# guidance: at every kept step, call `net(x, t, y=...)` once with the labels and once with
# `net.null_class`, combine the two predictions with your `my_guidance`, and take a DDIM step with the
# result (`kept` as `space_timesteps(T, S)` returns it, ending with the step to $\bar\alpha = 1$). The
# checker compares it with its own guided loop at $w = 0, 1, 3$ on an untrained labelled `MLP2D`.

# %%
def my_cfg_sampler(net, alphas_cumprod, kept, y, w, x_T):
    """x_0 from x_T: DDIM (eta = 0) on the classifier-free guided prediction."""
    # TODO: the (t, t_prev) pairs, then a loop of guided predictions and DDIM steps.
    raise NotImplementedError


# %%
_ = check_cfg_sampler(my_cfg_sampler)  # prints the verdict

# %% [markdown]
# **3. Classifier guidance for real.** Train a small classifier $p_\phi(y \mid x_t, t)$ on noisy points
# (an `MLP2D(out_dim=K)` fed $x_t$ from `process.q_sample`, with a cross-entropy loss), then sample with
# {eq}`eq-guid-classifier`, computing $\nabla_{x_t} \log p_\phi$ with `torch.autograd.grad`. Use the
# *unconditional* predictions of our model (`y=None`). Compare fidelity and recall with CFG at the same
# $w$. What happens if you train the classifier on clean points only?
#
# **4. A weak unconditional model.** Train with `cond_drop_prob=0.1` and `TRAIN_STEPS = 2000` (the
# first version of this chapter): the unconditional model then draws a ring instead of eight
# clusters. Measure the table of this section for that model. Which numbers at $w > 1$ change, and
# what does this say about how guidance depends on $\epsilon_u$?
#
# **5. Guidance on part of the trajectory.** Apply guidance only for $t$ below (or above) some
# threshold, by writing a model function that returns the guided prediction for some timesteps and the
# conditional one for the others, and passing it to `process.sample`. Which half of the trajectory
# causes the loss of diversity?
#
# ## Scaling up
#
# At paper scale the network is an image UNet with a class embedding,
# `UNet.from_preset("ddpm-cifar10", num_classes=10)`, trained exactly as above on `(images, labels)` with
# `DDPM(..., cond_drop_prob=0.5)` and the `Trainer`; `PAPER_SCALE = True` at the top gives the larger
# toy settings on a GPU. The published numbers to compare with (ImageNet 256x256, FID, lower is
# better; precision/recall as fidelity/diversity) are Dhariwal and Nichol's (2021):
#
# | model | FID | precision | recall |
# | --- | --- | --- | --- |
# | ADM (conditional, no guidance) | 10.94 | 0.69 | 0.63 |
# | ADM-G (classifier guidance) | 4.59 | 0.82 | 0.52 |
#
# the same trade-off as measured above: precision up, recall down. Classifier-free guidance is now
# the default of text-to-image models (diffusers' Stable Diffusion pipeline uses $w = 7.5$ in this
# book's convention), and the self-perceptual paper in this book samples with CFG rescale
# $\phi = 0.7$. The unconditional CIFAR-10 base run (it needs a GPU and the CIFAR-10 files of
# `data/README.md`):
#
# ```bash
# python -m pdlib train --config cifar10-ddpm
# ```
#
# The run configurations have no label options, so a class-conditional run uses the Python API as
# above.
