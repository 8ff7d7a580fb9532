"""Per-group sensitivity: how much does the model lose when only this group is pruned?

Each prunable group is pruned alone at a few ratios (lowest-scored units first, real surgery, no
reconstruction), and the model is evaluated: accuracy on labelled validation data, or, without
labels, top-1 agreement with the unpruned model on calibration inputs. The table goes into the
report, the plot into the work folder, and `allocation: sensitivity` turns the curves into
per-group ratios (budget.Planner.from_sensitivity).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgesparse.passes.prune.allocation import Planner
from edgesparse.graph.channels import Group
from edgesparse.graph.surgery import shrink

DEFAULT_RATIOS = (0.25, 0.5, 0.75, 0.9)


def group_label(g: Group) -> str:
    more = f" +{len(g.producers) - 1}" if len(g.producers) > 1 else ""
    return f"g{g.id}:{g.producers[0]}{more}"


def analyse(planner: Planner, evaluate: Callable[[object], float], ratios=DEFAULT_RATIOS,
            progress=None) -> dict:
    """{'baseline': metric, 'rows': [{group, channels, ratio -> metric}], 'curves': {gid: (r, drop)}};
    the metric is a percentage (accuracy or agreement), as everywhere."""
    graph = planner.graph
    baseline = evaluate(graph.model)
    rows, curves = [], {}
    for gid, g in planner.groups.items():
        row = {"group": group_label(g), "channels": g.size}
        rs, drops = [0.0], [0.0]
        for r in ratios:
            removed = planner.removal({gid: int(round(r * g.size))})
            if len(removed[gid]) == 0:
                continue
            actual = len(removed[gid]) / g.size
            metric = evaluate(shrink(graph.model, graph, graph.atom_keep_from_units(removed)))
            row[f"{r:g}"] = round(metric, 3)
            rs.append(actual)
            drops.append(max(0.0, baseline - metric))
            if progress is not None:
                progress.advance(1)
        rows.append(row)
        curves[gid] = (np.array(rs), np.maximum.accumulate(np.array(drops)))
    return {"baseline": round(baseline, 3), "rows": rows, "curves": curves}


def plot(result: dict, ratios, path: Path, metric_name: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in result["rows"]:
        xs = [0.0] + [r for r in ratios if f"{r:g}" in row]
        ys = [result["baseline"]] + [row[f"{r:g}"] for r in ratios if f"{r:g}" in row]
        ax.plot(xs, ys, marker="o", label=row["group"])
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel(f"{metric_name} (%)")
    ax.set_title("prune sensitivity per group")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
