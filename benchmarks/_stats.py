"""Medians, ranges and the units the tables print."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Series:
    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> Series:  # noqa: ANN001
        return cls(tuple(float(v) for v in values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        m = self.median
        return (self.hi - self.lo) / m if m else float("nan")


def seconds(s: float) -> str:
    if s != s:  # nan
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.0f} ms" if s >= 0.1 else f"{s * 1e3:.1f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e9:.0f} ns"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def rate(per_s: float) -> str:
    return f"{per_s:.0f} jobs/s" if per_s >= 10 else f"{per_s:.2f} jobs/s"


def ratio_series(num: Series, den: Series) -> Series:
    """Ratios of paired repeats (same round), so shared noise cancels."""
    return Series(tuple(a / b for a, b in zip(num.values, den.values, strict=False) if b))


def fmt_range(series: Series, unit=seconds) -> str:  # noqa: ANN001
    if series.n == 0:
        return "–"
    if series.n == 1:
        return unit(series.lo)
    return f"{unit(series.lo)} – {unit(series.hi)}"


def fmt_ratio(x: float) -> str:
    if x != x:
        return "–"
    return f"{x:.2f}×" if x >= 0.1 else f"{x * 100:.1f}%"
