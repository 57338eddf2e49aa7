"""Perceptual distances: LPIPS (Zhang et al. 2018) with offline backbone weights, and a labelled
stand-in feature distance for when those weights cannot be had."""

from .features import FeatureDistance, SmallFeatureNet, train_feature_net
from .lpips import LPIPS
from .weights import fetch_lpips_weights, load_numpy_pickle

__all__ = ["FeatureDistance", "LPIPS", "SmallFeatureNet", "fetch_lpips_weights", "load_numpy_pickle",
           "train_feature_net"]
