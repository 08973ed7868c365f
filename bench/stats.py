"""Summaries of repeated measurements: medians and ratios, nothing that needs a machine."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """The runs of one measurement: the median is what we report, min and max its spread."""

    n: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements to summarise")
        return cls(len(values), statistics.median(values), min(values), max(values))


def ratio(numerator: float, denominator: float) -> float | None:
    """How many times longer `numerator` took; None when the denominator is zero."""
    if denominator == 0:
        return None
    return numerator / denominator


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the values lie (nearest rank, no interpolation)."""
    if not values:
        raise ValueError("no values")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
