"""Bootstrap confidence intervals resampled by subject.

Queries about one subject are not independent: a method that fails on a subject tends to fail
on all of that subject's paraphrases, languages and images. Resampling individual queries would
therefore give intervals that are too narrow; resampling whole subjects (a cluster bootstrap)
keeps that correlation, which is what the benchmark page needs to say whether two methods differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a 95% interval; `lo`/`hi` are None when no interval can be formed."""

    value: float | None
    lo: float | None
    hi: float | None
    n: int
    n_subjects: int

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "value": self.value,
            "lo": self.lo,
            "hi": self.hi,
            "n": self.n,
            "n_subjects": self.n_subjects,
        }


Item = tuple[str, float] | tuple[str, float, float]


def _group(items: Iterable[Item]) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject sums and counts, in a fixed (sorted) subject order for reproducibility.

    An item is `(subject, value)` or `(subject, mean, n)` for a cell of n items already averaged.
    """
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for item in items:
        subject, value = item[0], float(item[1])
        weight = float(item[2]) if len(item) > 2 else 1.0
        sums[subject] = sums.get(subject, 0.0) + value * weight
        counts[subject] = counts.get(subject, 0.0) + weight
    keys = sorted(sums)
    return (
        np.array([sums[k] for k in keys], dtype=float),
        np.array([counts[k] for k in keys], dtype=float),
    )


def bootstrap_mean(
    items: Sequence[Item],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Mean of per-item values with a percentile interval from resampling subjects.

    `items` are `(subject_id, value[, n])` (value 0/1 for rates). The statistic is the pooled
    mean over the items of the resampled subjects, so subjects with more items weigh more, as
    they do in the point estimate.
    """
    sums, counts = _group(items)
    n = int(counts.sum())
    if n == 0:
        return Estimate(None, None, None, 0, 0)
    value = float(sums.sum() / counts.sum())
    k = len(sums)
    if k < 2:
        return Estimate(value, None, None, n, k)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(resamples, k))
    stats = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return Estimate(value, float(lo), float(hi), n, k)


def bootstrap_ratio(
    numerator: Sequence[Item],
    denominator: Sequence[Item],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Ratio of two pooled means (e.g. accuracy after / accuracy before), resampling subjects.

    Both samples are resampled with the same subject draw, so a subject that the unedited model
    already got wrong moves the numerator and the denominator together.
    """
    subjects = sorted({i[0] for i in numerator} | {i[0] for i in denominator})
    if not subjects:
        return Estimate(None, None, None, 0, 0)
    pos = {s: i for i, s in enumerate(subjects)}
    num_s = np.zeros(len(subjects))
    num_c = np.zeros(len(subjects))
    den_s = np.zeros(len(subjects))
    den_c = np.zeros(len(subjects))
    for sums, counts, items in ((num_s, num_c, numerator), (den_s, den_c, denominator)):
        for item in items:
            w = float(item[2]) if len(item) > 2 else 1.0
            sums[pos[item[0]]] += float(item[1]) * w
            counts[pos[item[0]]] += w

    def ratio(ns: np.ndarray, nc: np.ndarray, ds: np.ndarray, dc: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ns / nc) / (ds / dc)

    if den_s.sum() == 0 or num_c.sum() == 0:
        return Estimate(None, None, None, int(num_c.sum()), len(subjects))
    value = float(ratio(num_s.sum(), num_c.sum(), den_s.sum(), den_c.sum()))
    n = int(num_c.sum())
    if len(subjects) < 2:
        return Estimate(value, None, None, n, len(subjects))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(subjects), size=(resamples, len(subjects)))
    stats = ratio(num_s[idx].sum(1), num_c[idx].sum(1), den_s[idx].sum(1), den_c[idx].sum(1))
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return Estimate(value, None, None, n, len(subjects))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return Estimate(value, float(lo), float(hi), n, len(subjects))


def pooled(cells: Iterable[Mapping[str, float]], key: str = "after") -> Estimate:
    """Weighted mean of aggregated cells `{key, n}` when no per-item results exist (no interval)."""
    total = 0.0
    n = 0
    for cell in cells:
        v = cell.get(key)
        c = int(cell.get("n") or 0)
        if v is None or c == 0:
            continue
        total += float(v) * c
        n += c
    if n == 0:
        return Estimate(None, None, None, 0, 0)
    return Estimate(total / n, None, None, n, 0)
