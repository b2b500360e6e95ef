"""Training curves drawn with matplotlib: the loss and its terms per step, and the validation
metrics at the steps where training evaluated.

Reads the two JSON-lines logs a training run leaves in its model dir:

* ``train_log.jsonl``, one line per step: ``step``, ``loss`` (the weighted total), each
  unweighted term (``loss_ce``, ``loss_mask``, ``loss_dice``, and ``loss_ce_0`` ... for the
  auxiliary decoder layers), ``learning_rate``;
* ``eval_log.jsonl``, one line per evaluation: ``step``, ``panoptic/PQ_All``, ``semantic/mIoU``...

The figure is built with matplotlib's object API (no pyplot): nothing global changes, no window
opens, and it renders with the Agg canvas whatever backend is configured.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

LogSource = str | Path | Iterable[Mapping[str, Any]] | None

# The final decoder layer's terms, as the legend names them; the auxiliary layers' terms carry
# the suffix _i and are drawn as their mean over layers (one dashed line per term).
TERMS = {"loss_ce": "class (cross-entropy)", "loss_mask": "mask (focal)",
         "loss_dice": "mask (dice)"}
_AUXILIARY = re.compile(r"^(loss_ce|loss_mask|loss_dice)_(\d+)$")
TERM_COLOURS = {"loss_ce": "tab:orange", "loss_mask": "tab:green", "loss_dice": "tab:purple"}

# Validation metrics drawn when present, in this order: (key, label, colour, line style).
METRICS = (
    ("panoptic/PQ_All", "PQ", "tab:blue", "-"),
    ("panoptic/PQ_Things", "PQ things", "tab:blue", "--"),
    ("panoptic/PQ_Stuff", "PQ stuff", "tab:blue", ":"),
    ("semantic/mIoU", "mIoU", "tab:red", "-"),
    ("instance/AP", "mask AP", "tab:green", "-"),
)


def read_log(source: LogSource) -> list[dict[str, Any]]:
    """The entries of a JSON-lines log by step, sorted; a step logged again (by a resumed run)
    keeps its last entry.

    Args:
        source: a log file (a missing one has no entries), entries with a "step" key, or None.
    """
    if source is None:
        return []
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            return []
        source = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_step = {}
    for entry in source:
        by_step[int(entry["step"])] = dict(entry)
    return [by_step[step] for step in sorted(by_step)]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` entries that skips NaN and inf; shorter windows at
    the ends; NaN where a window holds no finite value.

    Args:
        values: [N] floats.
    Returns:
        [N] floats.
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    index = np.arange(len(values))
    low = np.clip(index - window // 2, 0, len(values))
    high = np.clip(index - window // 2 + window, 0, len(values))
    count = counts[high] - counts[low]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[high] - sums[low]) / np.maximum(count, 1), np.nan)


def _series(entries: list[dict[str, Any]], key: str) -> np.ndarray:
    """[N] floats of `key` per entry; NaN where an entry lacks it; inf kept (callers mask it)."""
    return np.array([float(e.get(key, math.nan)) for e in entries], np.float64)


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def smoothing_window(num_steps: int) -> int:
    """Entries per moving-average window: about a fiftieth of the run, 1 (none) under 100."""
    return max(1, round(num_steps / 50)) if num_steps >= 100 else 1


def plot_training(log: LogSource, path: str | Path | None = None, metrics: LogSource = None,
                  title: str | None = None):
    """A figure of a training run: the losses (top) and validation metrics (below, present
    only when there are evaluations).

    The loss panel (log scale): the total per step (light) and its moving average (dark); the
    final decoder layer's three unweighted terms as moving averages, each with the mean of the
    same term over the auxiliary decoder layers dashed in its colour; steps whose total is NaN
    or inf as red marks along the bottom (the lines break there); the learning rate on the right
    axis. The metric panel: PQ (all, things, stuff), mIoU and mask AP, those present, in
    percent at the steps they were computed.

    Args:
        log: `train_log.jsonl` (its path or entries); a step logged twice keeps its last entry.
        path: where to write the picture (PNG, or any format matplotlib knows by extension).
        metrics: `eval_log.jsonl` (its path or entries), or None.
        title: the figure's title.

    Returns:
        The `matplotlib.figure.Figure`; `fig.axes[0]` is the loss panel, `fig.axes[1]` the
        metric panel when there is one, the learning-rate axis last.
    """
    from matplotlib.figure import Figure

    entries, evaluations = read_log(log), read_log(metrics)
    drawn = [(key, label, colour, style) for key, label, colour, style in METRICS
             if any(math.isfinite(float(e.get(key, math.nan))) for e in evaluations)]
    figure = Figure(figsize=(10, 7.2 if drawn else 4.8), dpi=100, layout="constrained")
    if drawn:
        loss_ax, metric_ax = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    else:
        loss_ax, metric_ax = figure.subplots(1, 1), None
    _plot_losses(loss_ax, entries)
    if metric_ax is not None:
        _plot_metrics(metric_ax, evaluations, drawn)
        metric_ax.set_xlabel("step")
    else:
        loss_ax.set_xlabel("step")
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(path)
    return figure


def _plot_losses(ax, entries: list[dict[str, Any]]) -> None:
    ax.set_title("training loss")
    ax.set_ylabel("loss (log scale)")
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", alpha=0.15)
    if not entries:
        ax.text(0.5, 0.5, "no steps logged", transform=ax.transAxes, ha="center", va="center")
        return
    steps = np.array([e["step"] for e in entries], np.float64)
    window = smoothing_window(len(entries))
    # Markers where a line of a few points would be hard to see (a single step draws none).
    marker = "o" if len(entries) <= 50 else None
    total = _series(entries, "loss")
    if window > 1:
        ax.plot(steps, _finite(total), color="tab:blue", alpha=0.25, linewidth=0.8,
                label="total (per step)")
        ax.plot(steps, moving_average(total, window), color="tab:blue", linewidth=2,
                label=f"total (mean of {window} steps)")
    else:
        ax.plot(steps, _finite(total), color="tab:blue", linewidth=2, marker=marker,
                markersize=4, label="total (per step)")

    auxiliary: dict[str, list[str]] = {}
    for key in entries[-1]:
        match = _AUXILIARY.match(key)
        if match:
            auxiliary.setdefault(match[1], []).append(key)
    for term, label in TERMS.items():
        values = _series(entries, term)
        if not np.isfinite(values).any():
            continue
        ax.plot(steps, moving_average(values, window), color=TERM_COLOURS[term], linewidth=1.5,
                marker=marker, markersize=3, label=f"{label}, last layer")
        if term in auxiliary:
            layers = np.stack([_finite(_series(entries, k)) for k in auxiliary[term]])
            with warnings.catch_warnings():  # "mean of empty slice": every layer NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(layers, axis=0)
            ax.plot(steps, moving_average(mean, window), color=TERM_COLOURS[term],
                    linewidth=1, linestyle="--", alpha=0.8, marker=marker, markersize=2,
                    label=f"{label}, mean of {len(auxiliary[term])} auxiliary layers")

    bad = ~np.isfinite(total)
    if bad.any():
        # Along the bottom, in axes coordinates: a NaN has no height on the loss axis.
        ax.plot(steps[bad], np.full(int(bad.sum()), 0.03), linestyle="none", marker="x",
                color="tab:red", markersize=7, transform=ax.get_xaxis_transform(),
                label=f"total not finite ({int(bad.sum())} steps)")
    ax.set_yscale("log", nonpositive="mask")
    if len(entries) == 1:
        ax.set_xlim(steps[0] - 1, steps[0] + 1)
    ax.xaxis.get_major_locator().set_params(integer=True)

    rate = _series(entries, "learning_rate")
    handles, labels = ax.get_legend_handles_labels()
    if np.isfinite(rate).any():
        rate_ax = ax.twinx()
        (line,) = rate_ax.plot(steps, _finite(rate), color="0.45", linewidth=1,
                               linestyle=":", marker=marker, markersize=2, label="learning rate (right axis)")
        rate_ax.set_ylabel("learning rate")
        rate_ax.set_ylim(bottom=0)
        rate_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        handles, labels = [*handles, line], [*labels, line.get_label()]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.09, 1.0), fontsize=8,
              frameon=False)


def _plot_metrics(ax, evaluations: list[dict[str, Any]], drawn) -> None:
    steps = np.array([e["step"] for e in evaluations], np.float64)
    for key, label, colour, style in drawn:
        values = _finite(_series(evaluations, key))
        last = values[np.isfinite(values)][-1]
        ax.plot(steps, values, color=colour, linestyle=style, marker="o", markersize=4,
                linewidth=2 if style == "-" else 1.2, label=f"{label} (last {last:.1f})")
    ax.set_title("validation")
    ax.set_ylabel("percent")
    ax.set_ylim(-2, 102)  # a point at 0 or 100 stays whole
    ax.set_yticks(range(0, 101, 20))
    ax.grid(True, alpha=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.09, 1.0), fontsize=8, frameon=False)

