"""Feature scaling that stays finite on constant and near-constant features.

A plain standardisation divides by each feature's standard deviation. A feature that never
varies in the training rows (4 of the 64 digits pixels) has a deviation of about zero, so one
request with that pixel set divides by ~1e-3.5 and drives the softmax to an exact one-hot
answer; the test loss of such a model is meaningless. The scales computed here are clamped:

- a constant feature is scaled by the typical spread of the other features (the median of
  their ranges), so a value inside the data's overall range maps to about one unit;
- any other feature's deviation is raised to at least ``RANGE_SHARE`` of its own range, which
  binds only for features that are almost always one value (a pixel set in 1% of images).

The numbers become the mean and variance of the model's Normalization layer, so the saved
model, and therefore the server, applies exactly the same scaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["RANGE_SHARE", "Scaling", "fit_scaling"]

# Smallest deviation as a share of the feature's own range (a normal feature's deviation is
# about a sixth of its range, a uniform one's about 0.29: untouched).
RANGE_SHARE = 0.1
# A range this small relative to the feature's magnitude is float noise: the feature is constant.
CONSTANT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Scaling:
    """Per-feature mean and (floored) variance, float32, for ``keras.layers.Normalization``."""

    mean: npt.NDArray[np.float32]
    variance: npt.NDArray[np.float32]
    constant: npt.NDArray[np.bool_]


def fit_scaling(features: npt.NDArray[np.floating]) -> Scaling:
    """Mean and safe variance of each column of ``features`` (rows are examples)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty [rows, features] array, got shape {x.shape}")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    spread = x.max(axis=0) - x.min(axis=0)
    constant = spread <= CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(mean))
    varying = spread[~constant]
    typical = float(np.median(varying)) if varying.size else 1.0
    scale = np.where(constant, typical, np.maximum(std, RANGE_SHARE * spread))
    return Scaling(
        mean=mean.astype(np.float32),
        variance=np.square(scale).astype(np.float32),
        constant=constant,
    )
