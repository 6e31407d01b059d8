"""PNG figures of a search report, drawn with matplotlib's Agg canvas (no display, no pyplot).

* ``pareto.png``: every OK trial coloured by searcher (infeasible ones as crosses) and the
  feasible Pareto front of all trials as a black staircase, on the first two objectives. With
  a single objective it shows the metric against the order in which trials finished.
* ``best_so_far_trials.png`` / ``best_so_far_time.png``: each searcher's best value so far
  (``Report.score_label``) against its finished trials and against wall time.
* ``hypervolume_time.png``: hypervolume of each searcher's feasible trials, and of all of them,
  over wall time. Written only for several objectives: one has no hypervolume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from raynas.report.summary import Report, SearcherSummary

logger = logging.getLogger(__name__)

PARETO = "pareto.png"
BEST_TRIALS = "best_so_far_trials.png"
BEST_TIME = "best_so_far_time.png"
HV_TIME = "hypervolume_time.png"


def _figure() -> tuple[Any, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Any, ax: Axes, path: Path) -> Path:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _colours(report: Report) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s.label: cmap(i % 10) for i, s in enumerate(report.searchers)}


def _axis_label(metric: str, mode: str) -> str:
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def plot_pareto(report: Report, path: Path) -> Path:
    """Trials coloured by searcher and the feasible front of all of them."""
    fig, ax = _figure()
    colours = _colours(report)
    ok = [r for r in report.trials if r["status"] == "OK"]
    if report.multi:
        x_key, y_key = report.metrics[0], report.metrics[1]
        for label, colour in colours.items():
            mine = [r for r in ok if r["searcher"] == label]
            for feasible, marker in ((True, "o"), (False, "x")):
                pts = [r for r in mine if bool(r["feasible"]) == feasible]
                if pts:
                    ax.scatter([r[x_key] for r in pts], [r[y_key] for r in pts], s=18,
                               marker=marker, color=colour, alpha=0.75,
                               label=label if feasible else f"{label} (infeasible)")
        front = sorted(report.pareto_front, key=lambda r: r[x_key])
        if front:
            xs, ys = [r[x_key] for r in front], [r[y_key] for r in front]
            # Between two neighbouring front points the attained boundary follows the left
            # one when x is minimised ("post") and the right one when it is maximised ("pre").
            ax.step(xs, ys, where="post" if report.modes[0] == "min" else "pre",
                    color="black", linewidth=1)
            ax.scatter(xs, ys, s=46, facecolors="none", edgecolors="black",
                       label=f"Pareto front ({len(front)})")
        ax.set_xlabel(_axis_label(x_key, report.modes[0]))
        ax.set_ylabel(_axis_label(y_key, report.modes[1]))
        extra = f", first 2 of {len(report.metrics)} objectives" if len(report.metrics) > 2 else ""
        ax.set_title(f"{report.run_name}: {len(ok)} OK trials{extra}")
    else:
        key = report.metrics[0]
        order = {r["mlflow_run_id"]: n for n, r in enumerate(_finished(report), start=1)}
        for label, colour in colours.items():
            pts = [r for r in ok if r["searcher"] == label]
            if pts:
                ax.scatter([order[r["mlflow_run_id"]] for r in pts], [r[key] for r in pts],
                           s=18, color=colour, alpha=0.75, label=label)
        ax.set_xlabel("trials finished (all searchers)")
        ax.set_ylabel(_axis_label(key, report.modes[0]))
        ax.set_title(f"{report.run_name}: {len(ok)} OK trials (one objective: no front)")
    return _save(fig, ax, path)


def _finished(report: Report) -> list[dict[str, Any]]:
    from raynas.report.summary import _by_end

    return _by_end(report.trials)


def _step(ax: Axes, curve: list[list[float]], column: int, end: float, **kw: Any) -> None:
    """A post-step line through ``curve`` extended flat to ``end`` on the x-axis."""
    if not curve:
        return
    xs = [p[column] for p in curve] + [max(end, curve[-1][column])]
    ys = [p[2] for p in curve] + [curve[-1][2]]
    ax.step(xs, ys, where="post", **kw)
    ax.scatter(xs[:-1], ys[:-1], s=10, color=kw.get("color"))


def _done(summary: SearcherSummary) -> int:
    return summary.trials - summary.running


def plot_best_so_far(report: Report, path: Path, *, against: str) -> Path:
    """Each searcher's best value so far against its finished trials or wall time."""
    fig, ax = _figure()
    column = 0 if against == "trials" else 1
    for s in report.searchers:
        end = float(_done(s)) if column == 0 else max(s.time_s, report.wall_time_s)
        _step(ax, s.best_so_far, column, end, color=_colours(report)[s.label], label=s.label)
    ax.set_xlabel("trials finished by the searcher" if column == 0 else "wall time (s)")
    single = not report.multi and not report.constraints
    ax.set_ylabel(_axis_label(report.metrics[0], report.modes[0]) if single
                  else "best score (higher is better)")
    ax.set_title(f"best so far: {report.score_label}", fontsize="small")
    return _save(fig, ax, path)


def plot_hypervolume(report: Report, path: Path) -> Path:
    """Hypervolume of each searcher's feasible trials, and of all of them, over wall time."""
    fig, ax = _figure()
    colours = _colours(report)
    for s in report.searchers:
        _step(ax, s.hypervolume_curve, 1, report.wall_time_s, color=colours[s.label],
              label=s.label)
    if len(report.searchers) > 1:
        _step(ax, report.overall.hypervolume_curve, 1, report.wall_time_s, color="black",
              linestyle="--", label="all searchers")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("hypervolume")
    ref = np.round(np.asarray(report.reference_point or []), 4).tolist()
    ax.set_title(f"hypervolume of feasible trials, reference point {ref}", fontsize="small")
    return _save(fig, ax, path)


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """Write the figures into ``out_dir``; the hypervolume one only for several objectives."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_pareto(report, out_dir / PARETO),
        plot_best_so_far(report, out_dir / BEST_TRIALS, against="trials"),
        plot_best_so_far(report, out_dir / BEST_TIME, against="time"),
    ]
    if report.multi:
        paths.append(plot_hypervolume(report, out_dir / HV_TIME))
    else:
        logger.info("one objective: no hypervolume plot")
    return paths
