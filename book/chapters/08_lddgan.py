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
# # 8. Latent denoising diffusion GANs
#
# DDGAN ({doc}`07_ddgan`) cut the number of network calls to four. LDDGAN (Trinh & Hamagami 2024)
# makes each call cheaper: a pretrained autoencoder compresses the images, and the whole chain runs on
# its small latent maps; the decoder turns the final latent into an image once. The paper adds
# *weighted learning*, a reconstruction term whose weight falls along an S-curve during training.
# After this chapter you will be able to
#
# - train an autoencoder with L1, a perceptual term and a patch discriminator, with or without the KL
#   penalty, and fix the scale of its latents;
# - run DDGAN in its latent space (`pdlib.methods.LDDGAN`) and say why decoding random latents does not
#   give images;
# - write the weighted-learning schedule and compare adversarial loss alone, + reconstruction and
#   + weighted learning (the paper's Table 6), and the autoencoder with and without KL (Table 7);
# - measure sampling speed fairly: time per 100 images including the decoder, against DDPM and DDIM on
#   the same data, side by side in one run.
#
# **Where the models come from.** `python -m pdlib experiment lddgan-digits` trained two autoencoders
# and four LDDGANs on the 8x8 digits, and `python -m pdlib experiment lddgan-digits-long` trained one
# more LDDGAN for eight times as many steps, the model of the speed comparison (their records below give
# the commits and the wall times); this notebook loads them, samples and measures live. `RETRAIN = True`
# trains them here.

# %%
# The switches. RETRAIN = True trains lddgan-digits and lddgan-digits-long here (their minutes are printed below).
RETRAIN = False
PAPER_SCALE = False

import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import pdlib
from pdlib import experiments
from pdlib.data.images import digits
from pdlib.exercises import check_weighted_learning
from pdlib.methods import weighted_learning_weight
from pdlib.metrics.digits import digits_quality, train_digits_classifier
from pdlib.nets import AutoEncoder
from pdlib.pipeline import load_trained
from pdlib.viz import show_images

torch.set_num_threads(1)
torch.manual_seed(0)
BUDGET = "paper" if PAPER_SCALE else "book"
RESULTS = Path("../results")
NAME, LONG = "lddgan-digits", "lddgan-digits-long"
root = experiments.results_root([NAME, LONG], retrain=RETRAIN, budget=BUDGET, root=RESULTS)
records = {name: experiments.load_record(name, root) for name in (NAME, LONG)}
record = records[NAME]
for name, info in records.items():
    print(experiments.record_summary(info))
    for run, seconds in info["train_wall_time_s"].items():
        steps = info["config"][run]["train"]["steps"]
        batch = info["config"][run]["train"]["batch_size"]
        print(f"  {run:<16} {steps:>6} steps at batch {batch:>3} in {seconds / 60:4.1f} min")


def load(run, name=NAME):
    cfg = experiments.run_config(name, run, BUDGET, root)
    return load_trained(cfg, root / name / f"{run}.safetensors")


methods = {run: load(run) for run in record["config"]}
long_lddgan = load("lddgan-long", LONG)

# %% [markdown]
# ## The autoencoder
#
# `pdlib.nets.AutoEncoder` is latent diffusion's convolutional encoder and decoder (residual blocks,
# one attention block in the middle) with a downsampling factor $f \in \{2, 4, 8\}$. It is trained
# (`pdlib.methods.AutoEncoderTraining`) with the L1 reconstruction error, a perceptual distance and a
# *patch discriminator* that judges local patches of the reconstructions (hinge loss, switched on after
# a warm-up, as in VQGAN), so that reconstructions stay sharp rather than blurred. With `kl=True` the
# encoder outputs a mean and a log-variance, the latent is a draw from that Gaussian, and a small KL
# penalty pulls it towards $\mathcal N(0, I)$; LDDGAN drops that penalty: its generator can model any
# latent distribution, and the paper's Table 7 finds the unconstrained latent space better.
#
# Our digits are 8x8 with one channel; $f = 2$ gives 4x4x2 latents (32 numbers for 64 pixels). The
# perceptual term is left out at this size: LPIPS's backbones pool an 8x8 image away before their
# deeper layers. Before diffusion, latents are multiplied by a stored *scale factor*,
# 1 / (standard deviation of the training latents), so the chain starts from data of unit scale.

# %%
test_images = digits(size=8, split="test")[0]
ae_rows = record["results"]["autoencoders"]
print(
    f"{'autoencoder':<16}{'params':>8}{'scale':>7}{'L1 (held out)':>15}"
    f"{'Frechet of recon.':>19}"
)
recons = {}
for run in ("autoencoder", "autoencoder-kl"):
    # the frozen autoencoder inside the LDDGAN that uses it (fitted scale factor)
    ae = methods[f"lddgan-wl{'-kl' if run.endswith('kl') else ''}"].autoencoder.net
    with torch.no_grad():
        rec = ae(test_images).clamp(-1, 1)
        z = ae.encode(test_images)
    recons[run] = rec
    l1 = float((rec - test_images).abs().mean())
    n_params = sum(p.numel() for p in ae.parameters())
    print(
        f"{run:<16}{n_params:>8,}{float(ae.scale_factor):>7.2f}{l1:>15.3f}"
        f"{ae_rows[run]['samples']['frechet']:>19.1f}"
    )
    assert (
        abs(float(z.std()) - 1) < 0.1
    )  # the scale factor makes the latents unit-scale
    assert (
        abs(l1 - ae_rows[run]["l1"]) < 0.01
    )  # the exported fp16 weights reproduce the record
print(f"(real vs real Frechet floor: {ae_rows['autoencoder']['floor']['frechet']:.1f})")

# %%
fig, axes = plt.subplots(1, 5, figsize=(14, 3.2))
show_images(axes[0], test_images[:32], title="held-out digits")
show_images(axes[1], recons["autoencoder"][:32], title="reconstructed (no KL)")
show_images(axes[2], recons["autoencoder-kl"][:32], title="reconstructed (KL)")
for ax, run in zip(axes[3:], ("lddgan-wl", "lddgan-wl-kl")):
    z = torch.randn(32, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        noise_images = methods[run].autoencoder.decode(z).clamp(-1, 1)
    kind = "KL" if run.endswith("kl") else "no KL"
    show_images(ax, noise_images, title=f"decoded N(0, I) latents ({kind})")
plt.tight_layout()
plt.show()

# %% [markdown]
# The two right panels decode latents drawn from $\mathcal N(0, I)$: that is how a VAE samples, and
# without a model of the latent distribution it gives blots rather than digits (for the KL
# autoencoder, whose penalty weight is tiny, too). A generative model of the latents is needed: LDDGAN.
#
# ## LDDGAN and weighted learning
#
# `pdlib.methods.LDDGAN` is DDGAN on the scaled latents of the frozen autoencoder: its `to_space`
# encodes, its `sample` runs the $T = 4$ posterior-sampling steps on latents and decodes once. The
# generator's loss is
#
# $$
# L_G = L_\text{adv} + \lambda(e)\, \| x_0 - x_0' \|_1, \qquad
# \lambda(e) = 1 - \sigma(\varphi), \quad \varphi = -\delta + 2\delta\, \frac{e}{E},
# $$ (eq-lddgan-wl)
#
# with $e$ the epoch (here: the fraction of training done), $E$ the number of epochs and $\delta = 6$.
# The reconstruction term speeds up the early game, and fading it out gives the adversarial term the
# last word, which the paper credits with better recall. (The extracted paper text prints
# $\varphi = -\delta + \delta E/N$; the authors' runs go from $-\delta$ to $+\delta$, which is the
# S-curve of their Figure 2.)

# %%
progress = torch.linspace(0, 1, 101)
scratch = 1 - torch.sigmoid(-6.0 + 12.0 * progress)
curve = torch.tensor([weighted_learning_weight(float(p), 1.0) for p in progress])
assert torch.allclose(scratch.double(), curve.double(), atol=1e-6)
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.plot(progress, curve)
ax.set_xlabel("training progress e / E")
ax.set_ylabel("reconstruction weight lambda")
plt.show()
print(
    f"lambda: start {float(curve[0]):.4f}, half way {float(curve[50]):.2f}, "
    f"end {float(curve[-1]):.4f}"
)

# %% [markdown]
# ## The ablations at CPU scale (Tables 6 and 7)
#
# Four LDDGANs with the same networks, data, seed and number of steps: adversarial loss alone,
# + a fixed reconstruction weight of 1, + weighted learning, all on the no-KL autoencoder; and weighted
# learning on the KL autoencoder. Each draws 1000 samples here (4 generator calls and one decoder call
# each); precision and recall (fidelity and coverage) and the Fréchet distance are measured in the digits
# classifier's features against the held-out digits, as in {doc}`05_images`. A second set of 1000 samples
# from another seed shows how much the numbers move with the samples alone.

# %%
classifier, accuracy = train_digits_classifier(epochs=40)
assert accuracy > 0.9
ROWS = ("lddgan-adv", "lddgan-rec", "lddgan-wl", "lddgan-wl-kl")
quality, samples = {}, {}
for run in ROWS:
    for seed in (0, 1):
        with torch.no_grad():
            x = methods[run].sample(1000, generator=torch.Generator().manual_seed(seed))
        measured = digits_quality(x.clamp(-1, 1), classifier)
        quality[run, seed] = measured["samples"]
        samples.setdefault(run, x.clamp(-1, 1))
floor = measured["floor"]  # real vs real at the same sample count (1000 against 539)
print(f"{'run':<14}{'precision':>10}{'recall':>8}{'Frechet':>9}   (second sample set)")
for run in ROWS:
    a, b = quality[run, 0], quality[run, 1]
    print(
        f"{run:<14}{a['precision']:>10.2f}{a['recall']:>8.2f}{a['frechet']:>9.1f}"
        f"   ({b['precision']:.2f}, {b['recall']:.2f}, {b['frechet']:.1f})"
    )
print(
    f"{'floor':<14}{floor['precision']:>10.2f}{floor['recall']:>8.2f}"
    f"{floor['frechet']:>9.1f}"
)
for (
    run
) in ROWS:  # the record was measured with the fp32 weights, this with their fp16 export
    recorded = record["results"]["runs"][run]["samples"]["frechet"]
    assert abs(quality[run, 0]["frechet"] - recorded) < 0.05 * recorded + 0.5
fd_noise = max(abs(quality[r, 0]["frechet"] - quality[r, 1]["frechet"]) for r in ROWS)
recall_noise = max(abs(quality[r, 0]["recall"] - quality[r, 1]["recall"]) for r in ROWS)
print(
    f"largest change between the two sample sets: Frechet {fd_noise:.1f}, "
    f"recall {recall_noise:.2f}"
)
fd = {r: (quality[r, 0]["frechet"] + quality[r, 1]["frechet"]) / 2 for r in ROWS}
rec = {r: (quality[r, 0]["recall"] + quality[r, 1]["recall"]) / 2 for r in ROWS}
# what the text below says
assert fd["lddgan-rec"] < min(fd["lddgan-adv"], fd["lddgan-wl"]) - 2 * fd_noise
assert abs(fd["lddgan-wl"] - fd["lddgan-adv"]) < 2 * fd_noise
assert abs(fd["lddgan-wl-kl"] - fd["lddgan-wl"]) < 2 * fd_noise
assert max(rec.values()) - min(rec.values()) < 2 * recall_noise + 0.05
assert all(fd[r] > 3 * floor["frechet"] for r in ROWS)

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
for ax, run in zip(axes, ROWS):
    q = quality[run, 0]
    show_images(
        ax,
        samples[run][:64],
        title=f"{run}\nP {q['precision']:.2f} "
        f"R {q['recall']:.2f} FD {q['frechet']:.1f}",
    )
plt.tight_layout()
plt.show()

# %% [markdown]
# **What the ablation shows at this budget** (1500 steps, one training seed per row):
#
# - **The fixed reconstruction term helps fidelity clearly**: its Fréchet distance is far below the
#   other rows, by much more than the change between two sample sets, and its samples look cleaner.
#   Its recall is a little lower than the adversarial-only run's, the direction the paper reports,
#   but the difference is within the sampling noise here.
# - **Weighted learning did not help here.** Its Fréchet distance and recall are within the noise of
#   the adversarial-only run. With 1500 steps the weight is below 0.12 for the last third of training,
#   and the adversarial game alone seems to give back what the reconstruction term bought early on; the
#   paper's gains (Table 6: FID 3.09 to 3.03 on CIFAR-10, recall 0.56 to 0.58) are small differences
#   after 2000 epochs, which this budget cannot resolve.
# - **KL or no KL** (Table 7): no difference beyond the noise between the two autoencoders, which also
#   reconstruct equally well.
# - All four stay far from the real-vs-real floor: at a few CPU-minutes of adversarial training the
#   samples are digit-like but blurred and sometimes broken (the grids below). A single training seed
#   per row leaves the seed-to-seed spread unmeasured (exercise 1).
#
# ## Speed: time per 100 images, side by side
#
# The paper's headline is speed: 4 network calls and 0.08 s per 100 CIFAR-10 images on an A100,
# including the decoder. Here every sampler runs on the same CPU in the same cell, on the same digits
# task, and the table reports network calls (NFE), seconds per 100 images (decoder included, median of
# 5 repetitions of 100 images, one thread) and the quality of 1000 samples. The DDPM is the committed
# `ddpm-digits` model of {doc}`05_images` (v-prediction, 1000 steps), sampled with DDIM at 100 and 50
# steps. The LDDGAN is `lddgan-long` of `lddgan-digits-long`: the ablation's best row, `lddgan-rec`,
# trained for 12,000 steps instead of 1,500, at batch 128 instead of 64 and with the discriminator's
# learning rate equal to the generator's (2e-4 instead of 5e-4; short probes, noted in the project's
# issue 8, found these two changes the most useful of those tried). It has the same networks, so the
# same speed. The timings vary with the machine, so the cell's output is not checked by the tests; the
# quality columns are measured in the next cell, which is, with the 1,500-step `lddgan-rec` beside it.

# %%
ddpm = load_trained(
    experiments.run_config("ddpm-digits", "ddpm", BUDGET, RESULTS),
    RESULTS / "ddpm-digits" / "ddpm.safetensors",
)
SAMPLERS = {
    "LDDGAN (4 steps + decoder)": (long_lddgan, {}, 4),
    "DDPM, DDIM 100": (
        ddpm,
        dict(sampler="ddim", steps=100, clip=True, progress=False),
        100,
    ),
    "DDPM, DDIM 50": (
        ddpm,
        dict(sampler="ddim", steps=50, clip=True, progress=False),
        50,
    ),
}


def seconds_per_100(method, kw, reps=5):
    times = []
    for r in range(reps):
        g = torch.Generator().manual_seed(r)
        start = time.perf_counter()
        with torch.no_grad():
            method.sample(100, generator=g, **kw)
        times.append(time.perf_counter() - start)
    return sorted(times)[reps // 2]


# %% tags=["nbval-ignore-output"]
timing = {name: seconds_per_100(m, kw) for name, (m, kw, _) in SAMPLERS.items()}
base = timing["LDDGAN (4 steps + decoder)"]
for name, (_, _, nfe) in SAMPLERS.items():
    print(
        f"{name:<28} NFE {nfe:>4}   {timing[name]:.3f} s per 100 images   "
        f"{timing[name] / base:5.1f} x LDDGAN"
    )
assert timing["DDPM, DDIM 100"] / base > 20  # the speed goal against DDIM-100 (text below)

# %%
speed_quality, speed_samples = {}, {}
QUALITY_ROWS = {"LDDGAN, 1500 steps (lddgan-rec)": (methods["lddgan-rec"], {}, 4), **SAMPLERS}
for name, (m, kw, nfe) in QUALITY_ROWS.items():
    with torch.no_grad():
        x = m.sample(1000, generator=torch.Generator().manual_seed(0), **kw).clamp(-1, 1)
    speed_quality[name] = digits_quality(x, classifier)["samples"]
    speed_samples[name] = x[:64]
lddgan_q = speed_quality["LDDGAN (4 steps + decoder)"]
short_q = speed_quality["LDDGAN, 1500 steps (lddgan-rec)"]
ddim_q = speed_quality["DDPM, DDIM 100"]
# what the text below says (noise: the largest change between two sample sets in the ablation above)
assert ddim_q["frechet"] < 1.5 * floor["frechet"]
assert lddgan_q["frechet"] < short_q["frechet"] - 2 * fd_noise
assert lddgan_q["recall"] - short_q["recall"] > 2.5 * recall_noise
assert ddim_q["frechet"] < lddgan_q["frechet"] < ddim_q["frechet"] + fd_noise
assert lddgan_q["precision"] > ddim_q["precision"] + recall_noise
assert lddgan_q["recall"] < ddim_q["recall"] - 3 * recall_noise
print(f"{'sampler':<34}{'NFE':>5}{'precision':>10}{'recall':>8}{'Frechet':>9}")
for name, (_, _, nfe) in QUALITY_ROWS.items():
    q = speed_quality[name]
    print(
        f"{name:<34}{nfe:>5}{q['precision']:>10.2f}{q['recall']:>8.2f}"
        f"{q['frechet']:>9.1f}"
    )

# %%
SHOWN = {
    "LDDGAN, 1500 steps": "LDDGAN, 1500 steps (lddgan-rec)",
    "LDDGAN, 12000 steps": "LDDGAN (4 steps + decoder)",
    "DDPM, DDIM 100": "DDPM, DDIM 100",
}
fig, axes = plt.subplots(1, 3, figsize=(11, 4))
for ax, (title, name) in zip(axes, SHOWN.items()):
    q = speed_quality[name]
    show_images(
        ax,
        speed_samples[name],
        title=f"{title}\nP {q['precision']:.2f} R {q['recall']:.2f} FD {q['frechet']:.1f}",
    )
plt.tight_layout()
plt.show()

# %% [markdown]
# **Speed: met. Fidelity: comparable. Coverage: not yet.** In the run shown, LDDGAN drew 100 digits
# in 0.12 s with 4 generator calls and one decoder call, more than 30 times faster than DDIM with 100
# steps of the DDPM on the same machine and about 17 times faster than DDIM with 50:
# the 20x we aimed for against DDIM-100 is cleared (the ratio follows the number of network calls, 4
# against 100, since the generator, the decoder and the UNet cost about the same per call on these tiny
# inputs). The quality columns are the other half of the trade-off. Compare them with the noise
# measured in the ablation above (the largest change between two sample sets: 7.0 in Fréchet distance,
# 0.05 in recall):
#
# - **Training longer closed most of the Fréchet gap.** Eight times the steps took the LDDGAN from a
#   Fréchet distance of 35 to 12.1, now 3.2 above DDIM-100's and less than the sample noise away;
#   its recall rose from 0.54 to 0.70, about three times the noise.
# - **Fidelity is as good or better.** Its precision, 0.92, is above DDIM-100's 0.82 by more than the
#   noise: nearly every sample lies among real digits (the grids above: clean, well-formed digits).
# - **Coverage is not.** Its recall, 0.70, is 0.17 below DDIM-100's 0.87, over three times the noise: the
#   GAN's samples leave out a larger share of the held-out digits' styles, the classic weakness of
#   adversarial training that DDGAN's chain reduces but does not remove. (The paper reports recall
#   0.58 for LDDGAN on CIFAR-10 against 0.57 for DDPM and 0.41 for StyleGAN2 without ADA, Table 3; on these
#   digits the DDPM covers more.) The autoencoder is not the cause: the pixel-space DDGAN trained the
#   same way in {doc}`07_ddgan` reaches the same recall, 0.70.
#
# So "as good as DDIM-100, 20 times faster", which the paper reports for CIFAR-10 (4 NFE at FID 2.98
# against DDIM's 50 NFE at 4.67, Table 3), holds here for speed and fidelity after 24 CPU-minutes of
# training, but not for coverage. Each row is one training seed and one sample seed of 1000 samples.
#
# ## What each GAN variant costs
#
# One more side-by-side measurement: a training step (the discriminator's and the generator's phases,
# batch 64) and 100 samples, for DDGAN in pixel space, Wavelet DDGAN and LDDGAN, with the networks of
# the two experiments (timings unchecked by the tests, as above).

# %% tags=["nbval-ignore-output"]
from pdlib.data.images import digits as load_digits  # noqa: E402
from pdlib.train import TrainConfig, Trainer  # noqa: E402

train_images = load_digits(size=8, split="train")[0]
variants = {
    "DDGAN (8x8x1 pixels)": ("ddgan-digits", "ddgan"),
    "Wavelet DDGAN (4x4x4 subbands)": ("ddgan-digits", "wddgan"),
    "LDDGAN (4x4x2 latents)": (NAME, "lddgan-wl"),
}
print(f"{'variant':<32}{'ms per training step':>22}{'s per 100 samples':>19}")
for label, (exp, run) in variants.items():
    cfg = experiments.run_config(exp, run, BUDGET, RESULTS)
    method = load_trained(cfg, RESULTS / exp / f"{run}.safetensors").train()
    trainer = Trainer(
        method,
        train_images,
        TrainConfig(
            steps=10,
            batch_size=64,
            ema_decay=None,
            grad_clip=None,
            device="cpu",
            progress=False,
        ),
    )
    trainer.fit(2)  # warm-up
    start = time.perf_counter()
    trainer.fit(10)
    step_ms = 1000 * (time.perf_counter() - start) / 8
    print(f"{label:<32}{step_ms:>22.0f}{seconds_per_100(method.eval(), {}):>19.3f}")

# %% [markdown]
# In the run shown, a training step of the pixel-space DDGAN cost more than twice as much as the wavelet or
# latent variants' (their networks work on 4x4 maps instead of 8x8), and 100 samples cost 0.20 s
# against 0.08 and 0.09 s. On these tiny digits the autoencoder's decoder costs about as much as the
# saving, which is why LDDGAN is not faster than Wavelet DDGAN here; the paper's LSUN run, with f = 8,
# is where the latent space pays off most (1.02 s against Wavelet DDGAN's 1.54 s per 100 images, Table 5).
#
# ## Summary
#
# - LDDGAN runs DDGAN's few-step chain on the scaled latents of a frozen autoencoder and decodes once;
#   the autoencoder is trained first, with L1, a perceptual term and a patch discriminator, without KL.
# - Decoding random latents is not a generative model; the latent chain is.
# - Weighted learning {eq}`eq-lddgan-wl` fades the generator's L1 term out along an S-curve.
# - Speed must be measured with the decoder, on the same data and machine as the baselines.
#
# ## Exercises
#
# ### 1. Weighted learning
#
# Write $\lambda(e)$ of {eq}`eq-lddgan-wl`.


# %%
def my_weighted_learning(epoch, num_epochs, delta):
    """The reconstruction weight of LDDGAN's weighted learning."""
    # TODO: phi from -delta to +delta, then 1 - sigmoid(phi).
    raise NotImplementedError


_ = check_weighted_learning(my_weighted_learning)  # prints the verdict

# %% [markdown]
# ### 2. Questions
#
# 1. Retrain `lddgan-digits` with two more seeds (`train.seed`) and decide which differences in the
#    ablation table exceed the spread between seeds.
# 2. Train the autoencoder with $f = 4$ (`channel_mult` of length 3 on 16x16 digits,
#    `digits(size=16)`). How do the reconstruction error and LDDGAN's speed change?
# 3. The scale factor: set it to 1 (`method.kwargs.autoencoder.scale_factor=1`). What happens to the
#    first steps of the chain when the latents are not unit-scale?
#
# ## Scaling up
#
# The papers' settings, from the authors' run scripts, as `pdlib` presets: train the autoencoder, then
# LDDGAN in its latent space (the `init_from` of the LDDGAN preset names the autoencoder's run folder).
#
# ```bash
# # CIFAR-10 under data/cifar10 first (data/README.md); LPIPS weights: python -m pdlib weights
# torchrun --nproc_per_node=4 -m pdlib train --config cifar10-autoencoder  # f = 2, 16x16x4
# torchrun --nproc_per_node=4 -m pdlib train --config cifar10-lddgan
# python -m pdlib eval --config cifar10-lddgan --n-samples 50000
# # CelebA-HQ 256 as an image folder under data/celebahq256
# torchrun --nproc_per_node=8 -m pdlib train --config celebahq256-autoencoder  # f = 4, 64x64x3
# torchrun --nproc_per_node=8 -m pdlib train --config celebahq256-lddgan
# ```
#
# Published numbers (the LDDGAN paper, Tables 3, 4, 6 and 7; times on one A100 including the decoder):
#
# | | FID | recall | NFE | s per 100 images |
# |---|---|---|---|---|
# | LDDGAN, CIFAR-10 | 2.98 | 0.58 | 4 | 0.08 |
# | LDDGAN, CelebA-HQ 256 | 5.21 | 0.40 | 2 | 0.55 |
# | Table 6, CIFAR-10: adversarial loss / + rec. / + weighted learning | 3.15 / 3.09 / 3.03 | 0.58 / 0.56 / 0.58 | | |
# | Table 6, CelebA-HQ: same rows | 5.27 / 5.23 / 5.21 | 0.39 / 0.36 / 0.40 | | |
# | Table 7, CIFAR-10: KL / no KL autoencoder | 3.15 / 3.03 | 0.58 / 0.58 | | |
# | Table 7, CelebA-HQ: KL / no KL | 5.88 / 5.83 | 0.37 / 0.40 | | |
#
# The autoencoders' widths in the presets are this project's choice (the paper does not list them);
# the DDGAN side follows the authors' scripts (CIFAR-10: 4 steps, nz 50, batch 256, 2000 epochs;
# CelebA-HQ 256: 2 steps, R1 $\gamma = 2$, batch 32, 500 epochs).
