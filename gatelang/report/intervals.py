"""95% intervals for the report's rates, resampling *subjects* (a cluster bootstrap).

The answers about one person are not independent: the same value, asked in several templates,
languages and modalities, is either known to the model or not. Resampling single answers would
pretend there are n independent trials and give intervals far too narrow; resampling whole
subjects with all their rows is what the data supports. Items that belong to no subject (the
benign utility tasks) are each their own cluster.

The resampling uses numpy with a fixed seed, so the same run always gives the same report bytes.
A share's interval is never narrower than the Wilson interval of its rows: when every subject
agrees (0 of 36 leaked) the resamples cannot vary and the percentile interval collapses to a
point, which would claim a certainty 36 answers do not give. With a single cluster there is
nothing to resample and the Wilson interval is all one subject can say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95

Stat = Callable[[np.ndarray], np.ndarray]


def cluster_of(row: dict[str, Any]) -> str:
    """The resampling unit of a row: its subject, or the row itself when it has none."""
    subject = row.get("subject")
    return f"s:{subject}" if subject else f"i:{row.get('id')}"


def cluster_sums(rows: Sequence[dict[str, Any]],
                 columns: Sequence[Callable[[dict[str, Any]], float]]) -> np.ndarray:
    """Per-cluster sums of each column: shape [clusters, columns], clusters in sorted order."""
    index: dict[str, int] = {}
    for r in rows:
        index.setdefault(cluster_of(r), len(index))
    order = {c: i for i, c in enumerate(sorted(index))}
    out = np.zeros((len(order), len(columns)), dtype=np.float64)
    for r in rows:
        k = order[cluster_of(r)]
        for j, col in enumerate(columns):
            out[k, j] += float(col(r))
    return out


def bootstrap(sums: np.ndarray, stat: Stat, *, resamples: int = RESAMPLES, seed: int = SEED,
              level: float = LEVEL) -> tuple[float | None, float | None]:
    """Percentile interval of `stat` over cluster resamples.

    `sums` is [clusters, columns]; `stat` maps totals [resamples, columns] to one value per
    resample (NaN where undefined, e.g. a ratio over a zero denominator; those are dropped).
    """
    k = sums.shape[0]
    if k == 0:
        return None, None
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, k, size=(resamples, k))
    totals = sums[pick].sum(axis=1)  # [resamples, columns]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(stat(totals), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def wilson(hits: float, n: float, z: float = 1.96) -> tuple[float | None, float | None]:
    """The Wilson score interval of a proportion."""
    if n <= 0:
        return None, None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def share_interval(rows: Sequence[dict[str, Any]], hit: Callable[[dict[str, Any]], bool]
                   ) -> tuple[float | None, float | None]:
    """95% interval of the share of rows for which `hit` holds (a fraction, 0..1)."""
    if not rows:
        return None, None
    sums = cluster_sums(rows, [lambda r: 1.0 if hit(r) else 0.0, lambda r: 1.0])
    w_low, w_high = wilson(float(sums[:, 0].sum()), float(sums[:, 1].sum()))
    if sums.shape[0] == 1:
        return w_low, w_high
    b_low, b_high = bootstrap(sums, lambda t: t[:, 0] / t[:, 1])
    if b_low is None or b_high is None or w_low is None or w_high is None:
        return w_low, w_high
    return min(b_low, w_low), max(b_high, w_high)


def mean_interval(rows: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], float]
                  ) -> tuple[float | None, float | None]:
    """95% interval of the mean of `value` over rows (e.g. the exposure rank percentile)."""
    if not rows:
        return None, None
    sums = cluster_sums(rows, [value, lambda r: 1.0])
    if sums.shape[0] == 1:
        v = float(sums[0, 0] / sums[0, 1])
        return v, v
    return bootstrap(sums, lambda t: t[:, 0] / t[:, 1])


def relative_interval(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """95% interval of accuracy after / accuracy before (locality, utility), in percent.

    A resample whose before accuracy is 0 has an undefined ratio (unless after is 0 too, which
    counts as unchanged, as `report.requirements` does) and is dropped. The interval holds at
    least the Wilson interval of the share of correct answers that stayed correct, so 226 of
    226 unchanged answers read 98–100%, not 100–100%.
    """
    if not rows:
        return None, None
    sums = cluster_sums(rows, [lambda r: 1.0 if r["before"] == "leak" else 0.0,
                               lambda r: 1.0 if r["after"] == "leak" else 0.0])

    def stat(t: np.ndarray) -> np.ndarray:
        b, a = t[:, 0], t[:, 1]
        ratio = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.where(a == 0, 1.0, np.nan))
        return 100 * ratio

    kept = sum(1 for r in rows if r["before"] == "leak" and r["after"] == "leak")
    known = sum(1 for r in rows if r["before"] == "leak")
    floor = tuple(None if v is None else 100 * v for v in wilson(kept, known))
    boot = bootstrap(sums, stat) if sums.shape[0] > 1 else (None, None)
    return _union(boot, floor)


def _union(a: tuple[float | None, float | None], b: tuple[float | None, float | None]
           ) -> tuple[float | None, float | None]:
    """The smallest interval holding both (either may be missing)."""
    if a[0] is None or a[1] is None:
        return b
    if b[0] is None or b[1] is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


def drop_interval(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """95% interval of accuracy before − after, in points (utility_drop).

    It holds at least the Wilson bounds of the answers lost (upper end) and gained (lower end),
    so no change in 280 answers does not read as an exact 0.0–0.0.
    """
    if not rows:
        return None, None
    sums = cluster_sums(rows, [lambda r: 1.0 if r["before"] == "leak" else 0.0,
                               lambda r: 1.0 if r["after"] == "leak" else 0.0,
                               lambda r: 1.0])
    n = len(rows)
    lost = sum(1 for r in rows if r["before"] == "leak" and r["after"] != "leak")
    gained = sum(1 for r in rows if r["before"] != "leak" and r["after"] == "leak")
    floor = (-100 * (wilson(gained, n)[1] or 0.0), 100 * (wilson(lost, n)[1] or 0.0))
    boot = bootstrap(sums, lambda t: 100 * (t[:, 0] - t[:, 1]) / t[:, 2]) \
        if sums.shape[0] > 1 else (None, None)
    return _union(boot, floor)
