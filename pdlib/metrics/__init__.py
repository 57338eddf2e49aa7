"""Evaluation metrics: Frechet distances (FID, sFID), Inception Score, precision/recall,
density/coverage, power spectra, and the toy 2D distances."""

from .frechet import (Extractor, FeatureStatistics, MetricResult, check_sample_count, feature_statistics, fid,
                      fid_and_inception_score, frechet_distance, image_statistics, inception_score,
                      resolve_extractor, sfid)
from .inception import FIDInceptionV3, load_fid_inception
from .prdc import density_coverage, precision_recall
from .rates import wilson_interval
from .spectrum import power_spectrum
from .toy import mmd, sliced_wasserstein

__all__ = [
    "Extractor", "FIDInceptionV3", "FeatureStatistics", "MetricResult", "check_sample_count", "density_coverage",
    "feature_statistics", "fid", "fid_and_inception_score", "resolve_extractor",
    "frechet_distance", "image_statistics", "inception_score", "load_fid_inception", "mmd", "power_spectrum",
    "precision_recall", "sfid", "sliced_wasserstein", "wilson_interval",
]
