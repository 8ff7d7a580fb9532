"""The plots of report.html, drawn with matplotlib (Agg renderer) and returned as PNG bytes.

PNG rather than SVG: one <img> per plot whose load the browser reports (naturalWidth), small
files, and no fonts to carry (the glyphs are rasterised from matplotlib's bundled DejaVu, so
nothing is fetched when the file is opened). The PNG carries no "Software" stamp, so the same
report gives the same bytes (release tarballs must be reproducible).

Every function takes plain report.json pieces and returns None when there is nothing to draw.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Sequence

DPI = 100
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def available() -> bool:
    """matplotlib ships with the host extra; an agent-only install renders the report without plots."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    # Figure() directly, not pyplot: it renders with Agg whatever backend the caller's pyplot uses
    # (no matplotlib.use() that would change a notebook's backend), and there is no global figure
    # registry to leak or to close.
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")  # twin axes included
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def channels_plot(channels: dict[str, Sequence[int]]) -> bytes | None:
    """Horizontal bars per layer: output channels before (light) and after (dark) pruning."""
    rows = [(name, int(v[0]), int(v[1])) for name, v in channels.items() if len(v) >= 2]
    if not rows:
        return None
    rows = rows[:60]   # a readable figure; the table beside it lists every layer
    fig, axes = _figure(9, max(2.0, 0.32 * len(rows) + 1.2))
    ax = axes[0][0]
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r[1] for r in rows], color="#c6dbef", label="before")
    ax.barh(ys, [r[2] for r in rows], height=0.5, color="#08519c", label="after")
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
    ax.set_xlabel("output channels")
    ax.set_title("channels per layer, before and after pruning")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def regularize_plot(trajectory: list[dict[str, Any]]) -> bytes | None:
    """The regularize pass per epoch: penalty strength (log), units kept and MACs kept, the metric."""
    if not trajectory:
        return None
    epochs = [r["epoch"] for r in trajectory]
    fig, axes = _figure(9, 3.2, 1, 2)
    ax = axes[0][0]
    ax.semilogy(epochs, [max(r["strength"], 1e-12) for r in trajectory], color=COLORS[3], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("penalty strength (mean)")
    ax.set_title("controller")
    ax.grid(alpha=0.3)
    ax = axes[0][1]
    ax.plot(epochs, [100 * r["kept"] for r in trajectory], color=COLORS[0], marker="o", label="kept (units or weights)")
    if any("macs" in r for r in trajectory):
        ax.plot(epochs, [100 * r.get("macs", float("nan")) for r in trajectory], color=COLORS[1], marker="s",
                label="MACs kept")
    ax.plot(epochs, [r["metric"] for r in trajectory], color=COLORS[2], marker="^", label="metric")
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_title("what the penalty kept")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def grow_plot(trajectory: list[dict[str, Any]]) -> bytes | None:
    """The grow pass step by step: validation accuracy and MACs against MAC-epochs spent, and the
    width of every growing layer with the connections (nonzero kernel weights)."""
    if not trajectory:
        return None
    cost = [r["mac_epochs"] for r in trajectory]
    fig, axes = _figure(9, 3.2, 1, 2)
    ax = axes[0][0]
    ax.plot(cost, [r["accuracy"] for r in trajectory], color=COLORS[2], marker="o", label="val accuracy %")
    ax.set_xlabel("training cost spent (MAC-epochs)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("growth trajectory")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.step(cost, [r["macs"] for r in trajectory], where="post", color=COLORS[1], label="MACs")
    twin.set_ylabel("MACs")
    ax = axes[0][1]
    steps = [r["step"] for r in trajectory]
    for i, name in enumerate(trajectory[0].get("widths", {})):
        ax.plot(steps, [r["widths"][name] for r in trajectory], color=COLORS[i % len(COLORS)], marker="o", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("channels")
    ax.set_title("width per layer, connections")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(steps, [r["connections"] for r in trajectory], color=COLORS[7], linestyle="--", label="connections")
    twin.set_ylabel("nonzero kernel weights")
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def sensitivity_plot(sensitivity: dict[str, Any]) -> bytes | None:
    """One curve per channel group: the metric (%) against the fraction of its channels removed."""
    table = sensitivity.get("table") or []
    baseline = sensitivity.get("baseline")
    if not table:
        return None
    fig, axes = _figure(9, 4.2)
    ax = axes[0][0]
    for i, row in enumerate(table):
        points = sorted((float(k), v) for k, v in row.items()
                        if k not in ("group", "channels") and isinstance(v, (int, float)) and _is_ratio(k))
        if baseline is not None:
            points = [(0.0, baseline)] + points
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                color=COLORS[i % len(COLORS)], label=str(row.get("group", f"group {i}")))
    ax.set_xlim(-0.02, 1.0)
    ax.set_xlabel("fraction of the group's channels removed (that group alone, no refit)")
    ax.set_ylabel(f"{sensitivity.get('metric', 'metric')} (%)")
    ax.set_title("prune sensitivity per channel group")
    ax.grid(alpha=0.3)
    if len(table) <= 20:
        ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def _is_ratio(key: str) -> bool:
    try:
        return 0.0 <= float(key) <= 1.0
    except ValueError:
        return False


def split_attempts(trajectory: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The trajectory lists every attempt's pass records in order; each attempt starts at import."""
    attempts: list[tuple[str, list[dict[str, Any]]]] = []
    for record in trajectory:
        if not attempts or record.get("name") == "import" or \
                record.get("step") != attempts[-1][1][-1].get("step"):
            attempts.append((record.get("step") or "full strength", []))
        attempts[-1][1].append(record)
    return attempts


def trajectory_plot(trajectory: list[dict[str, Any]], attempts: list[dict[str, Any]] | None = None) -> bytes | None:
    """Accuracy, MACs and parameters after each pass that changed the model, one line per attempt;
    with budget attempts, the shipped artifact's bytes and runtime accuracy per attempt."""
    series = []
    for label, records in split_attempts(trajectory):
        points = [(r["name"], r.get("metrics") or {}) for r in records if r.get("metrics")]
        if points:
            series.append((label, points))
    if not series:
        return None
    with_bytes = [a for a in (attempts or []) if a.get("bytes") is not None]
    panels = [("accuracy", "Keras validation accuracy (%)"), ("macs", "MACs"), ("params", "parameters")]
    fig, axes = _figure(10, 6.4, 2, 2)
    flat = [axes[0][0], axes[0][1], axes[1][0], axes[1][1]]
    for ax, (key, title) in zip(flat, panels):
        drawn = False
        for i, (label, points) in enumerate(series):
            xs = [j for j, (_, m) in enumerate(points) if m.get(key) is not None]
            ys = [points[j][1][key] for j in xs]
            if ys:
                ax.plot(xs, ys, marker="o", color=COLORS[i % len(COLORS)], label=label)
                drawn = True
        names = [name for name, _ in max((p for _, p in series), key=len)]
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if key != "accuracy" and drawn:
            ax.set_ylim(bottom=0)   # sizes from zero: a 2x cut must look like one
        if not drawn:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        elif key == "accuracy" and len(series) > 1:
            ax.legend(fontsize=7)
    ax = flat[3]
    if with_bytes:
        xs = list(range(len(with_bytes)))
        ax.bar(xs, [a["bytes"] for a in with_bytes], color="#9ecae1")
        ax.set_xticks(xs, [f"s={a.get('strength', '?'):g}" if isinstance(a.get("strength"), (int, float))
                           else "?" for a in with_bytes], fontsize=8)
        ax.set_ylabel("bytes", fontsize=8)
        acc = [(x, a["accuracy"]) for x, a in zip(xs, with_bytes) if a.get("accuracy") is not None]
        if acc:
            twin = ax.twinx()
            twin.plot([p[0] for p in acc], [p[1] for p in acc], "o-", color="#d62728")
            twin.set_ylabel("runtime accuracy (%)", fontsize=8, color="#d62728")
        ax.set_title("shipped artifact per attempt (bytes; accuracy in its runtime)", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no artifact measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    return _png(fig)


def latency_plot(rows: list[tuple[str, dict[str, Any]]]) -> tuple[bytes, str] | None:
    """Latency per (label, timing). A histogram when raw samples are present, else a percentile
    plot. Returns (png, kind) with kind "histogram" or "percentiles"."""
    rows = [(label, t) for label, t in rows if t]
    if not rows:
        return None
    samples = [(label, _samples(t)) for label, t in rows]
    if all(s is not None for _, s in samples):
        fig, axes = _figure(9, 3.6)
        ax = axes[0][0]
        for i, (label, s) in enumerate(samples):
            if isinstance(s, tuple):   # (edges, counts)
                edges, counts = s
                ax.stairs(counts, edges, color=COLORS[i % len(COLORS)], label=label)
            else:
                ax.hist(s, bins=min(60, max(10, len(s) // 10)), histtype="step",
                        color=COLORS[i % len(COLORS)], label=label)
        ax.set_xlabel("latency per inference (ms)")
        ax.set_ylabel("runs")
        ax.set_title("latency histogram")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        return _png(fig), "histogram"
    fig, axes = _figure(9, max(2.2, 0.6 * len(rows) + 1.4))
    ax = axes[0][0]
    ys = list(range(len(rows)))[::-1]
    for y, (label, t) in zip(ys, rows):
        lo, hi = t.get("min_ms"), t.get("max_ms")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color="#999999", lw=1)
        p50, p90 = t.get("p50_ms"), t.get("p90_ms")
        if p50 is not None and p90 is not None:
            ax.barh(y, p90 - p50, left=p50, height=0.35, color="#9ecae1")
        for key, marker in (("p50_ms", "|"), ("p95_ms", "x"), ("p99_ms", "^")):
            if t.get(key) is not None:
                ax.plot([t[key]], [y], marker=marker, color="#08519c", ms=10, ls="none")
        for key in ("min_ms", "max_ms"):
            if t.get(key) is not None:
                ax.plot([t[key]], [y], marker="o", color="#555555", ms=4, ls="none")
    ax.set_yticks(ys, [label for label, _ in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    lows = [t[k] for _, t in rows for k in ("min_ms", "p50_ms") if t.get(k)]
    highs = [t[k] for _, t in rows for k in ("max_ms", "p99_ms", "p50_ms") if t.get(k)]
    scale = ""
    if lows and highs and max(highs) > 20 * min(lows):
        ax.set_xscale("log")   # one slow outlier run must not squash the percentiles into a dot
        ax.set_xlim(min(lows) / 1.5, max(highs) * 1.5)
        scale = ", log scale"
    ax.set_xlabel(f"latency per inference (ms{scale})")
    ax.set_title("latency percentiles per artifact and device")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(handles=[Line2D([], [], marker="o", color="#555555", ls="none", ms=4, label="min / max"),
                        Line2D([], [], marker="|", color="#08519c", ls="none", ms=10, label="p50"),
                        Patch(color="#9ecae1", label="p50 to p90"),
                        Line2D([], [], marker="x", color="#08519c", ls="none", label="p95"),
                        Line2D([], [], marker="^", color="#08519c", ls="none", label="p99")],
               fontsize=8, loc="outside lower center", ncol=5, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig), "percentiles"


def _samples(timing: dict[str, Any]):
    """Raw latencies in ms, or (edges_ms, counts) of a histogram, when the profile carries them."""
    raw = timing.get("latencies_ms") or timing.get("samples_ms")
    if raw:
        return [float(v) for v in raw]
    hist = timing.get("histogram")
    if isinstance(hist, dict) and hist.get("edges_ms") and hist.get("counts") \
            and len(hist["edges_ms"]) == len(hist["counts"]) + 1:
        return [float(v) for v in hist["edges_ms"]], [float(v) for v in hist["counts"]]
    return None
