"""The report's PNG plots (matplotlib, Agg backend, no display needed).

Conventions every plot follows, so a reviewer reads them the same way: the unedited model is
grey and the edited one blue in every plot; the edited bars carry their 95% interval; a
requirement's threshold is a dashed red line labelled with the requirement; legends sit outside
the axes so they never hide a bar; tick labels are rotated when there are several cells; count
axes have integer ticks. PNG metadata omits the matplotlib version, so the bytes depend only on
the data.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

BEFORE_COLOUR = "#9aa5b1"
AFTER_COLOUR = "#2f6fdf"
THRESHOLD_COLOUR = "#c0392b"
COUNT_COLOUR = "#2f6fdf"


@dataclass
class Bar:
    """One cell of a before/after bar plot: values and the after interval, in percent."""

    label: str
    before: float | None
    after: float | None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None  # a per-cell threshold (e.g. 95% of the before value)


@dataclass
class Panel:
    """One axes: a title, its bars, a y label, and an optional threshold across all bars."""

    title: str
    ylabel: str
    bars: list[Bar]
    threshold: float | None = None
    threshold_label: str = ""
    cell_threshold_label: str = ""
    notes: list[str] = field(default_factory=list)


def _png(draw: Callable[[Any], None], panels: int = 1, width: float = 7.5,
         height: float = 3.6) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(panels, 1, figsize=(width, height), dpi=110, squeeze=False)
    try:
        draw([row[0] for row in axes])
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def _draw_panel(ax: Any, panel: Panel, legend: bool) -> None:
    xs = list(range(len(panel.bars)))
    before = [b.before or 0.0 for b in panel.bars]
    after = [b.after or 0.0 for b in panel.bars]
    ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before the edit",
           color=BEFORE_COLOUR, zorder=2)
    ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after the edit", color=AFTER_COLOUR,
           zorder=2)
    ci = [(x + 0.2, b) for x, b in zip(xs, panel.bars, strict=True)
          if b.low is not None and b.high is not None]
    if ci:
        ax.errorbar([x for x, _ in ci], [b.after or 0.0 for _, b in ci],
                    yerr=[[max(0.0, (b.after or 0.0) - b.low) for _, b in ci],
                          [max(0.0, b.high - (b.after or 0.0)) for _, b in ci]],
                    fmt="none", ecolor="#1b2a41", elinewidth=1, capsize=3, zorder=4,
                    label="95% interval (after)")
    if panel.threshold is not None:
        ax.axhline(panel.threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2,
                   label=panel.threshold_label or f"threshold {panel.threshold:g}%", zorder=3)
    cells = [(x, b.threshold) for x, b in zip(xs, panel.bars, strict=True)
             if b.threshold is not None]
    for k, (x, t) in enumerate(cells):
        ax.hlines(t, x - 0.42, x + 0.42, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2,
                  label=panel.cell_threshold_label if k == 0 else None, zorder=3)
    ax.set_xticks(xs)
    # Rotate only when the longest label line would not fit under its bar (about 85
    # characters of 8 pt text span the axes).
    longest = max((len(line) for b in panel.bars for line in b.label.splitlines()), default=0)
    rotate = longest * len(xs) > 85
    ax.set_xticklabels([b.label for b in panel.bars], fontsize=8,
                       rotation=30 if rotate else 0, ha="right" if rotate else "center",
                       rotation_mode="anchor")
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_ylim(0, 105)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel(panel.ylabel, fontsize=9)
    ax.set_title(panel.title, fontsize=10)
    ax.grid(axis="y", color="#e5e5e5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    if legend:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def plot_panels(panels: Sequence[Panel]) -> bytes:
    """Before/after bars, one axes per panel, stacked; each legend right of its axes."""
    def draw(axes: list[Any]) -> None:
        for ax, panel in zip(axes, panels, strict=True):
            _draw_panel(ax, panel, legend=True)

    return _png(draw, panels=len(panels), width=9.0, height=3.3 * len(panels))


def plot_layers(per_layer: dict[str, dict[str, int]], n_layers: int, layer_units: int
                ) -> bytes:
    """MLP units the patch changes in each decoder layer (counts: integer ticks)."""
    from matplotlib.ticker import MaxNLocator

    def draw(axes: list[Any]) -> None:
        ax = axes[0]
        xs = list(range(n_layers))
        ys = [per_layer.get(str(i), {}).get("units", 0) for i in xs]
        ax.bar(xs, ys, color=COUNT_COLOUR, zorder=2)
        for x, y in zip(xs, ys, strict=True):
            if y:
                ax.annotate(str(y), (x, y), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")
        ax.set_xlabel("decoder layer", fontsize=9)
        ax.set_ylabel("MLP units changed", fontsize=9)
        ax.set_title(f"MLP units changed per layer (each layer has {layer_units:,})", fontsize=10)
        ax.set_xticks(xs)
        if n_layers > 24:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(1, max(ys, default=0)) * 1.15)
        ax.grid(axis="y", color="#e5e5e5", zorder=0)
        ax.spines[["top", "right"]].set_visible(False)

    return _png(draw, width=6.5, height=3.0)
