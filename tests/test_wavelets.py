"""Tests of pdlib.wavelets: exact inversion, orthonormality, the band layout and signs, errors, and
agreement with PyWavelets when it is installed."""

import pytest
import torch

from pdlib.wavelets import haar_dwt, haar_idwt


def test_inverse_is_exact_both_ways():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 6, generator=g, dtype=torch.float64)
    y = haar_dwt(x)
    assert y.shape == (2, 12, 4, 3)
    torch.testing.assert_close(haar_idwt(y), x, atol=1e-6, rtol=0)
    bands = torch.randn(2, 8, 5, 4, generator=g)
    out = haar_idwt(bands)
    assert out.shape == (2, 2, 10, 8)
    torch.testing.assert_close(haar_dwt(out), bands, atol=1e-6, rtol=0)


def test_orthonormal():
    x = torch.randn(3, 2, 6, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(haar_dwt(x).pow(2).sum(), x.pow(2).sum())
    # the transform is linear: each output is a unit vector of the pixel basis' image
    basis = torch.eye(4, dtype=torch.float64).reshape(4, 1, 2, 2)
    matrix = haar_dwt(basis).reshape(4, 4)
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(4, dtype=torch.float64))


def test_constant_image_has_only_ll():
    y = haar_dwt(torch.full((1, 3, 4, 4), 0.7))
    torch.testing.assert_close(y[:, :3], torch.full((1, 3, 2, 2), 1.4))  # LL = 2 * value
    assert torch.equal(y[:, 3:], torch.zeros(1, 9, 2, 2))


def test_band_layout_and_signs():
    # one 2x2 block a b / c d, two channels: LL, LH, HL, HH of channel 0 then 1 are channels [0, 2, 4, 6]
    block = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    x = torch.stack([block, 10 * block])[None]  # [1, 2, 2, 2]
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    expected = torch.tensor([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d]) / 2
    y = haar_dwt(x).flatten()
    torch.testing.assert_close(y[[0, 2, 4, 6]], expected)
    torch.testing.assert_close(y[[1, 3, 5, 7]], 10 * expected)


def test_edges_land_in_the_documented_bands():
    # a horizontal edge inside each 2x2 block (rows alternate 1, 0): top minus bottom, only LL and LH
    horizontal = torch.zeros(1, 1, 4, 4)
    horizontal[..., 0::2, :] = 1.0
    y = haar_dwt(horizontal)
    torch.testing.assert_close(y[:, 0], torch.ones(1, 2, 2))
    torch.testing.assert_close(y[:, 1], torch.ones(1, 2, 2))  # LH = (a + b - c - d) / 2 = 1
    assert torch.equal(y[:, 2:], torch.zeros(1, 2, 2, 2))
    # the transposed image (a vertical edge) puts the same energy in HL instead
    v = haar_dwt(horizontal.transpose(-1, -2))
    torch.testing.assert_close(v[:, 2], torch.ones(1, 2, 2))
    assert torch.equal(v[:, 1], torch.zeros(1, 2, 2)) and torch.equal(v[:, 3], torch.zeros(1, 2, 2))
    # a checkerboard is all HH
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None]).remainder(2).float()[None, None]
    c = haar_dwt(checker)
    torch.testing.assert_close(c[:, 3], -torch.ones(1, 2, 2))  # a = 0, b = c = 1, d = 0: (0 - 1 - 1 + 0) / 2
    assert torch.equal(c[:, 1:3], torch.zeros(1, 2, 2, 2))


def test_gradients_flow():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    haar_idwt(haar_dwt(x)).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


def test_bad_inputs():
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt(torch.zeros(1, 3, 4, 7))
    with pytest.raises(ValueError, match="4 C channels"):
        haar_idwt(torch.zeros(1, 6, 4, 4))
    with pytest.raises(ValueError, match="4 dimensions"):
        haar_dwt(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        haar_dwt(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        haar_idwt([[0.0]])


def test_matches_pywavelets():
    pywt = pytest.importorskip("pywt")
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ll, (ch, cv, cd) = pywt.dwt2(x.numpy(), "haar", axes=(-2, -1))
    y = haar_dwt(x)
    for i, band in enumerate((ll, ch, cv, cd)):
        torch.testing.assert_close(y[:, 3 * i:3 * i + 3], torch.from_numpy(band))
