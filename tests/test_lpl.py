"""pdlib.perceptual.lpl: the latent perceptual loss (Berrada Ifriqi et al. 2025, eq. 3), checked against an
independent re-computation, with its SNR gate, outlier mask, depth weights and frozen decoder."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from pdlib.diffusion import GaussianDiffusion
from pdlib.nets import AutoEncoder
from pdlib.perceptual.lpl import (DEFAULT_SNR_THRESHOLD, LatentPerceptualLoss, binary_closing, binary_opening,
                                  depth_weights, outlier_mask, quantile_bounds, scaled_kernel)
from pdlib.schedules import beta_schedule

MODES = ("predicted", "target", "separate")


def _ae(seed=0, channel_mult=(1, 2, 4)):
    """A tiny random autoencoder: factor 4, so 8x8 latents give maps of 8, 16, 32 and 32 pixels."""
    torch.manual_seed(seed)
    return AutoEncoder(in_channels=1, latent_channels=2, channels=4, channel_mult=channel_mult, num_res_blocks=1,
                       norm_groups=4)


def _latents(batch=3, seed=1, size=8):
    """A target latent and a prediction near it, with a bright 2x2 patch (gives the masks something to do)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 2, size, size, generator=g)
    zp = z + 0.3 * torch.randn(batch, 2, size, size, generator=g)
    zp[:, :, 2:4, 2:4] += 8.0
    return zp, z


class ToyDecoder(nn.Module):
    """A decoder whose maps are the latent itself upsampled (nearest) 1x, 2x and 4x: an outlier planted in the
    latent is an outlier blob in every map."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def decoder_features(self, z):
        h = z * self.gain
        return [h, F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(h, scale_factor=4, mode="nearest")]


# ---------------------------------------------------------------- the independent re-computation

def _ref_mask(f, closing, opening):
    """The outlier keep-mask written out with torch.quantile and scipy's min/max filters ('nearest' borders,
    which is the same as ignoring positions outside the map)."""
    flat = f.double().flatten(-2)
    lo = torch.quantile(flat, 0.02, dim=-1, interpolation="lower")[..., None, None]
    hi = torch.quantile(flat, 0.98, dim=-1, interpolation="higher")[..., None, None]
    sd = flat.std(-1, correction=0)[..., None, None]
    keep = ((f.double() >= lo - 2 * sd) & (f.double() <= hi + 2 * sd)).numpy().astype(np.uint8)
    size = (1, 1, closing, closing)
    keep = ndimage.minimum_filter(ndimage.maximum_filter(keep, size=size, mode="nearest"), size=size, mode="nearest")
    size = (1, 1, opening, opening)
    keep = ndimage.maximum_filter(ndimage.minimum_filter(keep, size=size, mode="nearest"), size=size, mode="nearest")
    return torch.from_numpy(keep.astype(bool))


def _standardise(f, stats_of, keep):
    """(f - mean) / sqrt(var + 1e-6), mean and variance of `stats_of` per sample and channel over kept positions."""
    w = keep.double()
    n = w.sum((-2, -1), keepdim=True).clamp_min(1)
    mean = (stats_of * w).sum((-2, -1), keepdim=True) / n
    var = ((stats_of - mean) ** 2 * w).sum((-2, -1), keepdim=True) / n
    return (f - mean) / torch.sqrt(var + 1e-6)


def _ref_lpl(ae, zp, z, normalize="predicted", mask=True, weighted=True, layers=None):
    """Eq. 3 written out: decode, mask the predicted map's outliers, standardise, square, mask, spatial mean,
    channel mean, weight by r_1 / r_l, sum over layers. Kernels for maps of 8, 16, 32, 32 pixels (image 32):
    closing 3 / opening 5 scaled by 1/4, 1/2, 1, 1 to the nearest odd size."""
    kernels = [(1, 1), (1, 3), (3, 5), (3, 5)]
    weights = [1.0, 0.5, 0.25, 0.25] if weighted else [1.0] * 4
    with torch.no_grad():
        fp = [m.double() for m in ae.decoder_features(zp)]
        ft = [m.double() for m in ae.decoder_features(z)]
    assert [m.shape[-1] for m in fp] == [8, 16, 32, 32]
    total, masked = 0.0, 0
    for l in (range(4) if layers is None else layers):
        p, t = fp[l], ft[l]
        keep = _ref_mask(p, *kernels[l]) if mask else torch.ones(p.shape, dtype=torch.bool)
        masked += int((~keep).sum())
        if normalize == "predicted":
            ps, ts = _standardise(p, p, keep), _standardise(t, p, keep)
        elif normalize == "target":
            ps, ts = _standardise(p, t, keep), _standardise(t, t, keep)
        else:
            ps, ts = _standardise(p, p, keep), _standardise(t, t, keep)
        sq = (keep.double() * (ts - ps)) ** 2
        c = p.shape[1]
        total = total + weights[l] / c * sq.mean((-2, -1)).sum(1)
    return total, masked


@pytest.mark.parametrize("normalize", MODES)
@pytest.mark.parametrize("mask", [True, False])
def test_forward_matches_eq3_written_out(normalize, mask):
    ae = _ae()
    zp, z = _latents()
    lpl = LatentPerceptualLoss(ae, normalize=normalize, outlier_mask=mask)
    got = lpl(zp, z)
    want, masked = _ref_lpl(ae, zp, z, normalize, mask)
    assert got.shape == (3,) and got.dtype == torch.float32
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6), (got, want)
    if mask:
        assert masked > 0  # the masked path really ran


def test_layers_selects_maps_and_keeps_their_weights():
    ae = _ae()
    zp, z = _latents()
    got = LatentPerceptualLoss(ae, layers=[1, 3])(zp, z)
    want, _ = _ref_lpl(ae, zp, z, layers=[1, 3])
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got, LatentPerceptualLoss(ae)(zp, z))


# ---------------------------------------------------------------- zero, positive, normalisation modes

@pytest.mark.parametrize("normalize", MODES)
def test_zero_for_equal_latents_and_positive_otherwise(normalize):
    ae = _ae()
    zp, z = _latents()
    lpl = LatentPerceptualLoss(ae, normalize=normalize)
    assert torch.equal(lpl(z.clone(), z), torch.zeros(3))
    assert (lpl(zp, z) > 0).all()


def test_normalisation_modes_differ():
    ae = _ae()
    zp, z = _latents()
    values = [LatentPerceptualLoss(ae, normalize=m)(zp, z) for m in MODES]
    for i in range(3):
        for j in range(i):
            assert not torch.allclose(values[i], values[j], rtol=1e-3), (MODES[i], MODES[j])


def test_separate_statistics_ignore_a_channel_affine_change_shared_do_not():
    """Each map standardised with its own statistics cannot see phihat = 2 phi + 1; the paper's shared ones can."""
    dec = ToyDecoder()
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    zp = 2 * z + 1
    assert torch.allclose(LatentPerceptualLoss(dec, normalize="separate", outlier_mask=False)(zp, z),
                          torch.zeros(2), atol=1e-5)
    assert (LatentPerceptualLoss(dec, normalize="predicted", outlier_mask=False)(zp, z) > 0.1).all()


# ---------------------------------------------------------------- depth weights

def test_depth_weights_inverse_upscaling_factor():
    assert depth_weights([4, 8, 16, 16]) == [1.0, 0.5, 0.25, 0.25]
    assert depth_weights([2, 4, 8, 16, 16]) == [1.0, 0.5, 0.25, 0.125, 0.125]  # the example's 2^-min(i, 3)
    ae = _ae()  # three levels: maps at h, 2h, 4h, 4h
    zp, z = _latents()
    lpl = LatentPerceptualLoss(ae)
    terms, omegas = lpl.layer_losses(zp, z)
    assert omegas == [1.0, 0.5, 0.25, 0.25]
    assert torch.allclose(lpl(zp, z), sum(w * t for w, t in zip(omegas, terms)))
    uniform = LatentPerceptualLoss(ae, depth_weights=False)
    assert uniform.layer_losses(zp, z)[1] == [1.0] * 4
    assert torch.allclose(uniform(zp, z), sum(terms))
    want, _ = _ref_lpl(ae, zp, z, weighted=False)
    assert torch.allclose(uniform(zp, z).double(), want, rtol=1e-4)
    # weights are relative to the decoder's first map, not to the first selected one
    assert LatentPerceptualLoss(ae, layers=(2, 3)).layer_losses(zp, z)[1] == [0.25, 0.25]


# ---------------------------------------------------------------- SNR gate

def _counting(ae):
    calls = []
    original = ae.decoder_features

    def counted(z):
        calls.append(z.shape[0])
        return original(z)

    ae.decoder_features = counted  # reached through Frozen's attribute forwarding
    return calls


def test_snr_gate_zero_below_ungated_above_and_no_decoder_work():
    ae = _ae()
    zp, z = _latents(batch=4)
    lpl = LatentPerceptualLoss(ae, snr_threshold=2.0)
    ungated = lpl(zp, z)
    calls = _counting(ae)
    snr = torch.tensor([5.0, 0.5, 2.0, 1.999])  # the threshold itself is inside the gate
    gated = lpl(zp, z, snr=snr)
    assert calls == [2, 2]  # prediction and target, each decoded for the two gated-in samples only
    assert gated[1] == 0 and gated[3] == 0
    assert torch.allclose(gated[[0, 2]], ungated[[0, 2]], rtol=1e-5, atol=1e-7)
    calls.clear()
    out = lpl(zp, z, snr=torch.full((4,), 0.1, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(4)) and calls == []
    # no threshold: snr is checked but gates nothing
    assert torch.allclose(LatentPerceptualLoss(ae, snr_threshold=None)(zp, z, snr=snr), ungated)


def test_gated_out_samples_may_be_non_finite():
    """An x0 estimate at (near) zero SNR can be inf; a gated-out row must stay exactly 0 with finite gradients."""
    ae = _ae()
    zp, z = _latents(batch=2)
    zp[1] = float("inf")
    zp.requires_grad_(True)
    loss = LatentPerceptualLoss(ae, snr_threshold=1.0)(zp, z, snr=torch.tensor([10.0, 0.0]))
    assert loss[1] == 0 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(zp.grad).all() and (zp.grad[1] == 0).all() and zp.grad[0].abs().sum() > 0


def test_default_threshold_is_the_authors_t_below_200_gate():
    process = GaussianDiffusion(beta_schedule("quadratic", 1000))
    snr = process.snr(torch.arange(1000))
    inside = (snr >= DEFAULT_SNR_THRESHOLD).nonzero().squeeze(1)
    assert inside.tolist() == list(range(200))
    assert LatentPerceptualLoss(_ae()).snr_threshold == DEFAULT_SNR_THRESHOLD
    # float32 SNRs, as a training loop might pass them, give the same gate
    lpl = LatentPerceptualLoss(_ae())
    assert lpl.gate(snr[195:205].float()).tolist() == [True] * 5 + [False] * 5


# ---------------------------------------------------------------- outlier mask

def test_morphology_helpers():
    iso = torch.zeros(1, 1, 7, 7)
    iso[0, 0, 3, 3] = 1
    assert not binary_opening(iso, 3).any()          # opening removes an isolated set pixel
    assert torch.equal(binary_closing(iso, 3), iso.bool())  # closing keeps it
    hole = torch.ones(1, 1, 7, 7)
    hole[0, 0, 3, 3] = 0
    assert binary_closing(hole, 3).all()              # closing fills a one-pixel hole
    assert torch.equal(binary_opening(hole, 3), hole.bool())  # opening does not
    corner = torch.ones(1, 1, 7, 7)
    corner[0, 0, 0, 0] = 0                            # a hole on the border is filled too (outside is ignored)
    assert binary_closing(corner, 3).all()
    block = torch.zeros(1, 1, 7, 7)
    block[0, 0, 2:5, 2:5] = 1
    assert torch.equal(binary_opening(block, 3), block.bool())  # a 3x3 block survives a 3x3 opening
    assert not binary_opening(block, 5).any()
    ones = torch.ones(2, 3, 5, 6, dtype=torch.bool)
    for k in (1, 3, 5, 7):
        assert binary_opening(ones, k).all() and binary_closing(ones, k).all()
    # vectorised: every plane on its own
    planes = torch.stack([iso[0, 0], hole[0, 0]])[None]
    assert torch.equal(binary_opening(planes, 3)[0, 0], torch.zeros(7, 7, dtype=torch.bool))
    assert torch.equal(binary_closing(planes, 3)[0, 1], torch.ones(7, 7, dtype=torch.bool))


def test_kernel_scaling_and_quantiles():
    assert [scaled_kernel(3, s) for s in (1, 0.5, 0.25, 0.125)] == [3, 1, 1, 1]
    assert [scaled_kernel(5, s) for s in (1, 0.5, 0.25, 0.125)] == [5, 3, 1, 1]
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    lo, hi = quantile_bounds(x, 0.02)
    assert torch.equal(lo, torch.quantile(x.flatten(-2), 0.02, dim=-1, interpolation="lower"))
    assert torch.equal(hi, torch.quantile(x.flatten(-2), 0.98, dim=-1, interpolation="higher"))
    for scale, (c, o) in [(1.0, (3, 5)), (0.5, (1, 3)), (0.25, (1, 1))]:
        assert torch.equal(outlier_mask(x, scale), _ref_mask(x, c, o))


def test_outlier_mask_drops_isolated_detections_and_masks_blobs():
    x = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    lone = [(12, 14), (14, 12), (14, 17), (17, 18), (18, 14), (18, 16)]  # six scattered one-pixel outliers
    for r, c in lone:
        x[0, 0, r, c] = 500.0
    x[0, 1, 10:13, 20:23] = 500.0  # a 3x3 outlier blob
    keep = outlier_mask(x, 1.0)
    # full resolution: the closing (first) drops every lone detection; opening first would have merged these
    # six into a masked region that the closing could no longer fill
    assert keep[0, 0].all()
    assert not binary_closing(binary_opening(keep[0, 0].clone().index_put_(
        tuple(torch.tensor(lone).T), torch.tensor(False)), 5), 3).all()
    assert not keep[0, 1, 10:13, 20:23].any() and int((~keep[0, 1]).sum()) == 9
    coarse = outlier_mask(x, 0.25)  # quarter resolution: no morphology, each lone outlier is masked
    assert int((~coarse[0, 0]).sum()) == 6 and not any(coarse[0, 0, r, c] for r, c in lone)
    flat = torch.full((1, 1, 4, 4), 3.0)
    assert outlier_mask(flat).all()  # a constant channel is kept whole


def test_planted_outlier_is_masked_and_otherwise_dominates():
    dec = ToyDecoder()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 16, 16, generator=g)
    zp = z + 0.1 * torch.randn(2, 3, 16, 16, generator=g)
    planted = zp.clone()
    planted[:, 1, 5:7, 5:7] = 1000.0  # a 2x2 blob in the latent: 4x4 and 8x8 blobs in the finer maps
    with torch.no_grad():
        maps = dec.decoder_features(planted)
    for m, scale in zip(maps, (0.25, 0.5, 1.0)):
        r = m.shape[-1] // 16
        keep = outlier_mask(m, scale)
        assert not keep[:, 1, 5 * r:7 * r, 5 * r:7 * r].any()
    masked = LatentPerceptualLoss(dec)
    clean, dirty = masked(zp, z), masked(planted, z)
    assert ((dirty - clean).abs() < 0.1 * clean).all(), (clean, dirty)
    unmasked = LatentPerceptualLoss(dec, outlier_mask=False)
    assert (unmasked(planted, z) > 10 * unmasked(zp, z)).all()


# ---------------------------------------------------------------- frozen decoder

def test_gradients_reach_z_pred_never_the_decoder():
    ae = _ae()
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    lpl = LatentPerceptualLoss(ae)
    assert not ae.training and all(not p.requires_grad for p in ae.parameters())
    zp, z = _latents()
    zp = zp.clone().requires_grad_(True)
    z = z.clone().requires_grad_(True)
    opt = torch.optim.SGD([zp], lr=0.1)
    lpl(zp, z).sum().backward()
    assert zp.grad is not None and torch.isfinite(zp.grad).all() and zp.grad.abs().sum() > 0
    assert z.grad is None  # the target is a constant: decoded without gradient
    assert all(p.grad is None for p in ae.parameters())
    z_before = zp.detach().clone()
    opt.step()
    assert not torch.equal(zp.detach(), z_before)
    for k, v in ae.state_dict().items():
        assert torch.equal(v, before[k]), k
    lpl.train()
    assert not ae.training  # Frozen keeps it in eval mode


def test_decoder_hidden_from_holder():
    ae = _ae()

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 2)
            self.lpl = LatentPerceptualLoss(ae)

    h = Holder()
    assert set(h.state_dict()) == {"net.weight", "net.bias"}
    assert len(list(h.parameters())) == 2
    assert list(h.lpl.state_dict()) == []
    h.load_state_dict(Holder().state_dict())
    # an already Frozen autoencoder is used as it is
    from pdlib.train import Frozen

    frozen = Frozen(_ae())
    assert LatentPerceptualLoss(frozen).decoder is frozen


# ---------------------------------------------------------------- errors

def test_bad_arguments():
    ae = _ae()
    with pytest.raises(ValueError, match="normalize"):
        LatentPerceptualLoss(ae, normalize="shared")
    with pytest.raises(TypeError, match="depth_weights"):
        LatentPerceptualLoss(ae, depth_weights=1)
    with pytest.raises(TypeError, match="outlier_mask"):
        LatentPerceptualLoss(ae, outlier_mask="yes")
    with pytest.raises(ValueError, match="out of range"):
        LatentPerceptualLoss(ae, layers=[0, 4])
    with pytest.raises(ValueError, match="out of range"):
        LatentPerceptualLoss(ae, layers=[-1])
    with pytest.raises(ValueError, match="repeat"):
        LatentPerceptualLoss(ae, layers=[1, 1])
    with pytest.raises(ValueError, match="at least one"):
        LatentPerceptualLoss(ae, layers=[])
    with pytest.raises(TypeError, match="ints"):
        LatentPerceptualLoss(ae, layers=[1.0])
    with pytest.raises(TypeError, match="sequence"):
        LatentPerceptualLoss(ae, layers=2)
    with pytest.raises(ValueError, match="snr_threshold"):
        LatentPerceptualLoss(ae, snr_threshold=-1.0)
    with pytest.raises(TypeError, match="snr_threshold"):
        LatentPerceptualLoss(ae, snr_threshold=True)
    with pytest.raises(TypeError, match="pass the AutoEncoder"):
        LatentPerceptualLoss(ae.decoder)
    with pytest.raises(TypeError, match="decoder_features"):
        LatentPerceptualLoss(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="out of range"):  # a decoder whose map count is only known in forward
        LatentPerceptualLoss(ToyDecoder(), layers=[3])(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        binary_opening(torch.ones(1, 1, 4, 4), 2)


def test_bad_inputs():
    lpl = LatentPerceptualLoss(_ae())
    zp, z = _latents()
    with pytest.raises(ValueError, match="same shape"):
        lpl(zp, z[:2])
    with pytest.raises(ValueError, match="4 dimensions"):
        lpl(zp[0], z[0])
    with pytest.raises(TypeError, match="float"):
        lpl(zp.long(), z.long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        lpl(zp.numpy(), z)
    with pytest.raises(ValueError, match="shape"):
        lpl(zp, z, snr=torch.ones(2))
    with pytest.raises(ValueError, match="1 dimensions"):
        lpl(zp, z, snr=torch.ones(3, 1))
    with pytest.raises(ValueError, match="NaN"):
        lpl(zp, z, snr=torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(TypeError, match="real"):
        lpl(zp, z, snr=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="latent_channels|shape"):
        lpl(torch.zeros(3, 5, 8, 8), torch.zeros(3, 5, 8, 8))
    assert lpl(zp[:0], z[:0]).shape == (0,)
