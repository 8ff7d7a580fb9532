"""The reports of `edgesparse tune`: report.json (everything), report.md and report.html (the
Pareto plot, both fronts, the baselines, the picked point with its per-layer widths)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgesparse.report import plots
from edgesparse.report.html import STYLE, e, image, table as html_table
from edgesparse.report.markdown import fmt, sig, table as md_table


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: write them as null instead of invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def structure(r: dict[str, Any]) -> str:
    """What a point removed besides channels: its dropped blocks (by Add) and factorised layers."""
    parts = [f"-{a}" for a in r.get("removed_blocks") or []]
    parts += [f"{n}:r{'x'.join(map(str, rk))}" for n, rk in (r.get("ranks") or {}).items()]
    return " ".join(parts) or "—"


def _rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        point = r.get("params") if isinstance(r.get("params"), dict) else {}
        out.append([r.get("number"), r.get("accuracy"), sig(r.get("latency_ms")), r.get("bytes"),
                    r.get("macs"), point.get("precision", "—"), structure(r)])
    return out


HEADERS = ["trial", "accuracy %", "latency ms", "bytes", "MACs", "precision", "blocks removed, ranks"]


def table_section(r: dict[str, Any]) -> list[str]:
    """The per-layer latency table (µs per output width at the widest input; the widths the
    kernels like) and how its estimates compared with the device on the proxy front."""
    t = r.get("latency_table")
    if not t:
        return []
    out = [f"## Latency table ({t['device']})", "",
           f"Measured once ({fmt(t['seconds'])} s): each weighted layer alone as a one-layer .tflite at every "
           "width pair the space can give it, minus the smallest one-op model's p50; `fixed` is the "
           "uncompressed model's measured p50 minus its layers' entries. Liked widths: cost per output "
           "channel within 10% of the layer's cheapest, among entries above the noise (10% of base).", ""]
    for precision, layers in t["liked"].items():
        out += [f"{precision}: base {fmt(t['base_ms'][precision] * 1000, 3)} µs, fixed "
                f"{fmt(t['fixed_ms'][precision] * 1000, 3)} µs.", "",
                md_table(["layer", "inputs", "outputs -> µs", "liked widths"],
                         [[name, row["inputs"], ", ".join(f"{o}: {us}" for o, us in row["us"].items()),
                           ", ".join(map(str, row["liked"])) or "none (below noise)"]
                          for name, row in layers.items()]), ""]
    if r.get("table_check"):
        out += ["### Table vs measured on the device (the proxy front, rebuilt and measured)", "",
                md_table(["trial", "table µs", "measured µs", "error %", "measured on"],
                         [[c["number"], round(c["table_ms"] * 1000, 2), round(c["measured_ms"] * 1000, 2),
                           c["error_pct"], c["measured_on"]]
                          for c in r["table_check"]]), ""]
    return out


def pareto_plot(report: dict[str, Any]) -> bytes | None:
    trials = [t for t in report.get("trials", []) if t.get("accuracy") is not None]
    if not plots.available() or not trials:
        return None
    fig, axes = plots._figure(9, 4.6, 1, 2)
    for ax, key, label in ((axes[0][0], "latency_ms", f"latency p50, ms ({report.get('latency_source')})"),
                           (axes[0][1], "macs", "MACs")):
        ax.scatter([t[key] for t in trials], [t["accuracy"] for t in trials], s=14, color="#bbbbbb",
                   label="proxy trials")
        for rows, color, name in ((report.get("proxy_front", []), "#1f77b4", "proxy front"),
                                  (report.get("full_front", []), "#d62728", "fine-tuned front")):
            rows = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[key])
            if rows:
                ax.plot([r[key] for r in rows], [r["accuracy"] for r in rows], "o-", ms=5, color=color,
                        label=name)
        base = [t for t in report.get("baselines", []) if t.get(key) is not None]
        if base:
            ax.scatter([t[key] for t in base], [t["accuracy"] for t in base], marker="s", s=40,
                       facecolors="none", edgecolors="#2ca02c", label="baselines (uniform, none)")
        if report.get("reference_accuracy") is not None:
            ax.axhline(report["reference_accuracy"], color="#555555", lw=0.8, ls="--",
                       label="imported model (Keras)")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy in the runtime, %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"edgesparse tune: {report['model']} for {report['target']}")
    return plots._png(fig)


def render_markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    out = [f"# edgesparse tune: {r['model']} for {r['target']}", "",
           f"Study `{r['study']}` in `{r['storage']}`: {len(r['trials'])} completed proxy trials "
           f"({r['feasible_trials']} feasible), sampler {s['sampler']}, seed {s['seed']}, "
           f"{fmt(r['seconds'])} s. Latency: {r.get('latency_source')}. The imported model scores "
           f"{fmt(r['reference_accuracy'])}% (Keras, validation split).", "",
           "Constraints: " + ", ".join(f"{k} = {sig(v) if isinstance(v, float) and k == 'max_latency_ms' else fmt(v)}"
                                        for k, v in s.items() if k.startswith("max_")) + ".", "",
           "![Pareto fronts](pareto.png)", "",
           "## Baselines (enqueued, not assumed)", "", md_table(HEADERS, _rows(r["baselines"])), "",
           "## Proxy front (prune + least-squares reconstruction, no fine-tune)", "",
           md_table(HEADERS, _rows(r["proxy_front"])), ""]
    if r["refined"]:
        out += ["## Fine-tuned front (the default recipe's recovery, re-measured)", "",
                md_table(HEADERS + ["proxy accuracy %"],
                         [row + [x.get("proxy", {}).get("accuracy")] for row, x in
                          zip(_rows(r["full_front"]), r["full_front"])]), ""]
    out += table_section(r)
    if r.get("closest_if_infeasible"):
        out += ["## No trial met the constraints; the closest", "",
                (r.get("unmet") or "") + ".", "",
                md_table(HEADERS + ["violations"], [row + [", ".join(f"{c:+.3g}" for c in x["constraints"])]
                                                    for row, x in zip(_rows(r["closest_if_infeasible"]),
                                                                      r["closest_if_infeasible"])]), ""]
    if r.get("picked"):
        p = r["picked"]
        out += [f"## Picked ({r['pick_rule']}): trial {p['number']}", "",
                f"{fmt(p['accuracy'])}% in the runtime, {sig(p['latency_ms'])} ms, {fmt(p['bytes'])} bytes, "
                f"{fmt(p['macs'])} MACs. Its recipe is `picked-recipe.yaml`: "
                "`edgesparse build MODEL --target T --data D --recipe picked-recipe.yaml` reproduces it.", "",
                md_table(["group (producer)", "channels before", "kept"],
                         [[g, r["space"]["groups"].get(g), k] for g, k in (p.get("widths") or {}).items()]), ""]
    return "\n".join(out) + "\n"


def render_html(r: dict[str, Any], png: bytes | None) -> str:
    body = [f"<h1>edgesparse tune: {e(r['model'])} for {e(r['target'])}</h1>",
            f"<p class='meta'>Study <code>{e(r['study'])}</code> in <code>{e(r['storage'])}</code>: "
            f"{len(r['trials'])} proxy trials ({r['feasible_trials']} feasible); latency "
            f"{e(r.get('latency_source'))}; imported model {e(fmt(r['reference_accuracy']))}%.</p>",
            image(png, "Pareto fronts: accuracy against latency and MACs"),
            "<h2>Baselines</h2>", html_table(HEADERS, _rows(r["baselines"])),
            "<h2>Proxy front</h2>", html_table(HEADERS, _rows(r["proxy_front"]))]
    if r["refined"]:
        body += ["<h2>Fine-tuned front</h2>", html_table(HEADERS, _rows(r["full_front"]))]
    if r.get("picked"):
        p = r["picked"]
        body += [f"<h2>Picked ({e(r['pick_rule'])}): trial {e(p['number'])}</h2>",
                 html_table(["group (producer)", "channels before", "kept"],
                            [[g, r["space"]["groups"].get(g), k] for g, k in (p.get("widths") or {}).items()])]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgesparse tune</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_tune_reports(report: dict[str, Any], folder: Path) -> None:
    report = _finite(report)
    png = pareto_plot(report)
    if png is not None:
        (folder / "pareto.png").write_bytes(png)
    (folder / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.html").write_text(render_html(report, png), encoding="utf-8")
