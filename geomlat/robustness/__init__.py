"""Robustness: adversarial attacks, common corruptions and mCE, Parseval retraction.

- :mod:`.attacks`: FGSM (fixed or SNR budget), PGD (Madry et al. 2018); the PGD training objective is
  :class:`geomlat.objectives.PGDTraining`.
- :mod:`.corruptions`: the 15 CIFAR-10-C corruptions x 5 severities (Hendrycks & Dietterich 2019).
- :mod:`.mce`: corruption errors, mCE and relative mCE.
- :mod:`.parseval`: Parseval retraction (Cisse et al. 2017) and simplex projection.
"""
from .attacks import cross_entropy_sum, fgsm, pgd, snr_to_eps
from .corruptions import (
    APPROXIMATIONS,
    CIFAR10C_PARAMS,
    CORRUPTION_NAMES,
    CORRUPTIONS,
    NON_MONOTONE,
    RANDOM_CORRUPTIONS,
    SEVERITIES,
    SMALL_IMAGE_NOTES,
    STORAGE_ROUNDING,
    corrupt,
    frost_texture,
    to_uint8,
)
from .mce import corruption_errors, error_rate, evaluate_corruptions, mce
from .parseval import ParsevalRetraction, parseval_step, project_aggregation_weights, project_simplex

__all__ = [
    "APPROXIMATIONS",
    "CIFAR10C_PARAMS",
    "CORRUPTIONS",
    "CORRUPTION_NAMES",
    "ParsevalRetraction",
    "NON_MONOTONE",
    "RANDOM_CORRUPTIONS",
    "SEVERITIES",
    "SMALL_IMAGE_NOTES",
    "STORAGE_ROUNDING",
    "corrupt",
    "corruption_errors",
    "cross_entropy_sum",
    "error_rate",
    "evaluate_corruptions",
    "fgsm",
    "frost_texture",
    "mce",
    "parseval_step",
    "pgd",
    "project_aggregation_weights",
    "project_simplex",
    "snr_to_eps",
    "to_uint8",
]
