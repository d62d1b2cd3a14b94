"""The PNG figures of the reports (matplotlib, imported only when a figure is drawn): step ECDFs of per-item forget
truth ratios with their KS distance (:func:`plot_truth_ratio_ecdf`), and forget quality against model utility or
minimum utility retention, one labelled point per run (:func:`plot_fq_vs_mu`, :class:`PlotPoint`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bootstrap import FQ_THRESHOLD, Interval, _split_items

# --- figures and axes -----------------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.6):
    # Figure + Agg canvas, not pyplot: no global backend or state, safe in library code and without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _readable_log_axis(axis, lo: float, hi: float) -> None:
    """Ticks at 1, 2, 5 × 10^k written as plain numbers: "0.2" reads at a glance, a bare 10^-1 with unlabelled
    minor ticks does not. Wide ranges (more than ~4 decades) keep only the decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if hi / max(lo, 1e-300) < 1e4 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


# --- truth-ratio ECDFs ----------------------------------------------------------------------------------------------


def ks_distance(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The two-sample KS statistic ``D = max_x |F_a(x) − F_b(x)|`` and an ``x`` where it is reached."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    gaps = np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))
    i = int(np.argmax(gaps))
    return float(gaps[i]), float(grid[i])


@dataclass
class Curve:
    """One ECDF of a truth-ratio plot."""

    label: str
    ratios: Sequence[float]
    style: dict = field(default_factory=dict)


def plot_truth_ratio_ecdf(
    curves: Sequence[Curve], path: str | Path, title: str, forget_quality: float | None = None
) -> Path:
    """Step ECDFs of per-item forget truth ratios (log x axis); the KS distance between the first two curves
    (model, reference) is drawn where it is largest, with the KS p-value (forget quality) in the title."""
    fig = _figure(7.0, 5.4)
    ax = fig.add_subplot()
    for c in curves:
        r = np.sort(np.asarray([x for x in c.ratios if x > 0 and np.isfinite(x)], dtype=float))
        y = np.arange(1, len(r) + 1) / len(r)
        ax.step(np.r_[r[0], r], np.r_[0.0, y], where="post", label=f"{c.label} (n = {len(r)})", **c.style)
    ax.set_xscale("log")
    _readable_log_axis(ax.xaxis, *ax.get_xlim())
    ax.axvline(1.0, color="0.45", lw=0.9, ls=":", label="R = 1: wrong and right answers equally likely")
    if len(curves) >= 2:
        d, x = ks_distance(curves[0].ratios, curves[1].ratios)
        fa = np.searchsorted(np.sort(curves[0].ratios), x, "right") / len(curves[0].ratios)
        fb = np.searchsorted(np.sort(curves[1].ratios), x, "right") / len(curves[1].ratios)
        ax.plot([x, x], [fa, fb], color="crimson", lw=2.2, alpha=0.7, label=f"KS distance D = {d:.2f}")
    sub = "" if forget_quality is None else f"\nforget quality = KS p-value = {forget_quality:.2g}"
    ax.set_title(title + sub, fontsize=10)
    ax.set_xlabel("truth ratio R = P(perturbed answers) / P(paraphrased answer), per forget item (log scale)")
    ax.set_ylabel("fraction of forget items with ratio ≤ R")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="major", alpha=0.3)
    # below the axes: no corner of an ECDF plot is reliably empty (curves span the whole range in some runs)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    path = Path(path)
    fig.savefig(path)
    return path


def forget_truth_ratios(result: Mapping | None) -> list[float] | None:
    """Per-item forget truth ratios, or None when the result has none (e.g. a raw-text evaluation)."""
    items = _split_items(result or {}, "forget")
    if not items or any(not isinstance(it.get("truth_ratio"), int | float) for it in items):
        return None
    return [float(it["truth_ratio"]) for it in items]


MODEL_STYLE = {"color": "tab:blue", "lw": 1.8}
REFERENCE_STYLE = {"color": "tab:orange", "lw": 1.8, "ls": "--"}
BEFORE_STYLE = {"color": "0.6", "lw": 1.2, "ls": "-."}


# --- forget quality vs model utility --------------------------------------------------------------------------------


@dataclass
class PlotPoint:
    """One run in the forget quality vs model utility plot (``before``: a model before unlearning, e.g. the
    target, drawn apart from the unlearning runs)."""

    label: str
    utility: float
    forget_quality: float
    utility_ci: Interval | None = None
    before: bool = False


def _xerr(p: PlotPoint):
    return None if p.utility_ci is None else [[p.utility - p.utility_ci[0]], [p.utility_ci[1] - p.utility]]


def plot_fq_vs_mu(
    points: Sequence[PlotPoint],
    reference: PlotPoint | None,
    path: str | Path,
    noise_floor: float | None = None,
    xlabel: str | None = None,
) -> Path:
    """Forget quality (log y) against model utility (x), one labelled point per run with its utility interval, the
    reference as a star, a dashed line at ``FQ = 0.05`` and a dotted one at the noise floor (forget quality between
    retrained references) when it is known. Forget quality 0 (underflow) is drawn at the bottom. ``xlabel`` names
    another x quantity (e.g. the minimum utility retention)."""
    fig = _figure(7.6, 5.6)
    ax = fig.add_subplot()
    positive = [p.forget_quality for p in points if p.forget_quality > 0]
    floor = min(positive + [FQ_THRESHOLD]) / 10.0
    for p in points:
        marker = "v" if p.forget_quality <= 0 else ("s" if p.before else "o")
        color = "0.45" if p.before else "tab:blue"
        y = max(p.forget_quality, floor)
        ax.errorbar(p.utility, y, xerr=_xerr(p), fmt=marker, ms=6, capsize=3, color=color, ecolor="0.65", lw=1)
    if reference is not None:
        ax.errorbar(reference.utility, 1.0, xerr=_xerr(reference), fmt="*", ms=16, color="tab:orange", capsize=3)
    ax.axhline(FQ_THRESHOLD, color="crimson", ls="--", lw=1)
    if noise_floor is not None and noise_floor > 0:
        ax.axhline(noise_floor, color="tab:green", ls=":", lw=1.4)
        floor = min(floor, noise_floor / 10.0)
    ax.set_yscale("log")
    ax.set_ylim(floor / 5.0, 4.0)
    xs = [p.utility for p in points] + ([reference.utility] if reference else [])
    lo = min(0.0, min(xs) - 0.02)
    ax.set_xlim(lo, max(xs) + 0.22 * (max(xs) - lo) + 0.05)  # room on the right for the labels
    _annotate_points(fig, ax, points, reference, floor)
    ax.set_xlabel(xlabel or "model utility: harmonic mean of 9 retain / utility numbers (bars: 95 % CI)  →  better")
    ax.set_ylabel("forget quality: KS p-value vs reference (log scale)  →  better")
    what = "model utility" if xlabel is None else "minimum utility retention"
    ax.set_title(f"Forget quality vs {what}: the aim is the top right", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _fq_legend(ax, points, reference, noise_floor)
    path = Path(path)
    fig.savefig(path)
    return path


def _fq_legend(ax, points: Sequence[PlotPoint], reference: PlotPoint | None, noise_floor: float | None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="tab:blue", label="unlearning run")]
    if any(p.before for p in points):
        handles.append(Line2D([], [], marker="s", ls="", color="0.45", label="model before unlearning"))
    if any(p.forget_quality <= 0 for p in points):
        handles.append(Line2D([], [], marker="v", ls="", color="tab:blue", label="forget quality 0 (underflow)"))
    if reference is not None:
        handles.append(Line2D([], [], marker="*", ms=11, ls="", color="tab:orange", label=reference.label))
    handles.append(Line2D([], [], ls="--", color="crimson", lw=1, label=f"forget quality = {FQ_THRESHOLD}"))
    if noise_floor is not None and noise_floor > 0:
        handles.append(
            Line2D(
                [],
                [],
                ls=":",
                color="tab:green",
                lw=1.4,
                label=f"noise floor {noise_floor:.2g} (reference vs reference)",
            )
        )
    ax.figure.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)


def _annotate_points(fig, ax, points: Sequence[PlotPoint], reference: PlotPoint | None, floor: float) -> None:
    """Label each point above and to the right of its marker (clear of its horizontal error bar), moving a label
    up until it overlaps no other label or marker: runs of equal forget quality are common (the KS p-value takes
    few values), and overlapping names would be unreadable. A moved label gets a leader line."""
    fig.canvas.draw()  # fixes the transforms so label extents are known in pixels
    renderer = fig.canvas.get_renderer()
    xys = [(p.utility, max(p.forget_quality, floor)) for p in points]
    if reference is not None:
        xys.append((reference.utility, 1.0))
    marker_boxes = []
    for xy in xys:
        x, y = ax.transData.transform(xy)
        marker_boxes.append(_Box(x - 6, y - 6, x + 6, y + 6))
    placed: list[_Box] = []
    for i in sorted(range(len(points)), key=lambda i: xys[i][1]):
        p, rise = points[i], 4.0
        while True:
            ann = ax.annotate(p.label, xys[i], xytext=(6, rise), textcoords="offset points", **_LABEL_STYLE)
            bb = ann.get_window_extent(renderer)
            box = _Box(bb.x0 - 2, bb.y0 - 1, bb.x1 + 2, bb.y1 + 1)
            clash = any(box.overlaps(o) for o in placed + [m for j, m in enumerate(marker_boxes) if j != i])
            if not clash or rise > 120:
                break
            ann.remove()
            rise += 6.0
        if rise > 4.0:  # moved: connect it to its point
            ann.remove()
            ann = ax.annotate(
                p.label,
                xys[i],
                xytext=(6, rise),
                textcoords="offset points",
                **_LABEL_STYLE,
                arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 0, "shrinkB": 4},
            )
        placed.append(box)


# a light backdrop keeps a label readable where it crosses the threshold line or an error bar
_LABEL_STYLE = {
    "fontsize": 8,
    "va": "bottom",
    "bbox": {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
}


@dataclass
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, o: _Box) -> bool:
        return self.x0 < o.x1 and o.x0 < self.x1 and self.y0 < o.y1 and o.y0 < self.y1
