"""Perceptual distances: LPIPS (Zhang et al. 2018) with offline backbone weights, a labelled stand-in
feature distance for when those weights cannot be had, and the latent perceptual loss (Berrada Ifriqi et al.
2025) on an autoencoder's decoder features."""

from .features import FeatureDistance, SmallFeatureNet, train_feature_net
from .lpips import LPIPS
from .lpl import LatentPerceptualLoss
from .weights import fetch_lpips_weights, load_numpy_pickle

__all__ = ["FeatureDistance", "LPIPS", "LatentPerceptualLoss", "SmallFeatureNet", "fetch_lpips_weights", "load_numpy_pickle",
           "train_feature_net"]
