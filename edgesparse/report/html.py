"""report.html: the report with its plots, in one self-contained file.

No external CSS, JavaScript, fonts or images: the style sheet is inline and every plot is a PNG
data URI, so the file can be mailed, attached to a ticket or opened offline and looks the same.
Every string from report.json is escaped (model, layer and file names come from the user's model).
Numbers are formatted as in report.md. A section whose facts are absent is left out.
"""
from __future__ import annotations

import html
from typing import Any, Callable

from edgesparse.report import plots
from edgesparse.report.markdown import fmt, reconstruction_rows, sig

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1100px;padding:16px 24px;color:#1b1b1b}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.changed td{background:#f4f8fd}
.warn{background:#fff4e5;border:1px solid #f0a020;padding:8px 14px;border-radius:4px}
.fail{background:#fdecea;border-color:#d93025}.ok{color:#188038}.bad{color:#d93025;font-weight:600}
.meta{color:#555}img.plot{max-width:100%;height:auto;display:block;margin:8px 0}
code{background:#f3f3f3;padding:0 3px}
"""


def e(value: Any) -> str:
    """Escape anything for HTML text or attributes."""
    return html.escape(str(value), quote=True)


def num(value: Any, nd: int = 2) -> str:
    return e(fmt(value, nd))


def table(headers: list[str], rows: list[list[Any]], left: int = 1,
          row_class: Callable[[list[Any]], str] | None = None) -> str:
    """Cells are escaped here unless they are `Raw`; the first `left` columns align left."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{e(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cls = row_class(row) if row_class else ""
        cells = "".join(f'<td class="{"l" if i < left else ""}">{c if isinstance(c, Raw) else num(c)}</td>'
                        for i, c in enumerate(row))
        body.append(f'<tr class="{cls}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw(str):
    """A table cell that is already HTML."""


def image(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f'<img class="plot" alt="{e(alt)}" src="{plots.data_uri(png)}">'


def render_html(r: dict[str, Any]) -> str:
    m, t = r.get("model", {}), r.get("target", {})
    title = f"edgesparse report: {m.get('name', '?')} for {t.get('name', '?')}"
    draw = plots.available()
    sections = [
        _warnings(r),
        _summary(r),
        _regularize(r.get("facts", {}).get("regularize"), draw),
        _grow(r.get("facts", {}).get("grow"), draw),
        _prune(r.get("facts", {}).get("prune"), draw),
        _lowrank(r.get("facts", {}).get("lowrank")),
        _trajectory(r, draw),
        _artifacts(r.get("artifacts") or []),
        _profile(r, draw),
        _versions(r.get("versions") or {}),
    ]
    if not draw:
        sections.insert(1, '<p class="meta">matplotlib is not installed: plots are left out '
                           '(install edgesparse[host]).</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{e(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{e(title)}</h1>\n"
            + "\n".join(s for s in sections if s) + "\n</body></html>\n")


def _warnings(r: dict[str, Any]) -> str:
    parts = []
    status = r.get("status", "ok")
    if status != "ok":
        parts.append(f'<div class="warn fail"><b>Build {e(status)}</b></div>')
    if r.get("warnings"):
        items = "".join(f"<li>{e(w)}</li>" for w in r["warnings"])
        parts.append(f'<div class="warn" id="warnings"><b>Warnings</b><ul>{items}</ul></div>')
    return "\n".join(parts)


def _summary(r: dict[str, Any]) -> str:
    m, t, rec, d = r.get("model", {}), r.get("target", {}), r.get("recipe", {}), r.get("data", {})
    final = m.get("final", {})
    meta = (f'<p class="meta">Target: {e(t.get("title", t.get("name")))} ({num(t.get("threads"))} threads). '
            f'Recipe: {e(rec.get("name"))} ({e(rec.get("origin"))}). Data: {e(d.get("source"))}. '
            f'Built in {num(r.get("seconds"))} s.</p>')
    rows = [["imported", m.get("params"), m.get("macs"), m.get("accuracy")],
            ["final", final.get("params"), final.get("macs"), final.get("accuracy")]]
    if m.get("macs") and final.get("macs"):
        rows.append(["final / imported", _ratio(final.get("params"), m.get("params")),
                     _ratio(final["macs"], m["macs"]), None])
    return meta + "<h2>Model</h2>" + table(["", "params", "MACs", "Keras accuracy (%)"], rows)


def _ratio(a: Any, b: Any) -> Any:
    return Raw(e(f"{a / b:.1%}")) if a is not None and b else None


def _regularize(f: dict[str, Any] | None, draw: bool) -> str:
    if not f or not f.get("trajectory"):
        return ""
    stages = ", ".join(f"{s['method']} until {s['until']:g} ({s['epochs']} epochs, target {s['target']})"
                       for s in f.get("stages", []))
    out = ["<h2>Sparsity learned in training</h2>",
           f'<p class="meta">{e(stages)}; {e(f.get("metric"))} {e(f.get("start"))} → {e(f.get("end"))}; target '
           f'{"reached" if f.get("reached") else "missed"}.</p>']
    if draw:
        out.append(image(plots.regularize_plot(f["trajectory"]), "penalty strength, units kept, MACs per epoch"))
    out.append(table(["epoch", "method", "strength", "kept", "MACs kept", "metric (%)"],
                     [[r["epoch"], r["method"], f"{r['strength']:.3g}", r["kept"], r.get("macs"), r["metric"]]
                      for r in f["trajectory"]]))
    widths = f.get("widths") or {}
    if widths:
        out.append(table(["layer", "channels before", "non-zero after"], [[k, v[0], v[1]] for k, v in widths.items()]))
    return "\n".join(out)


def _grow(f: dict[str, Any] | None, draw: bool) -> str:
    if not f or not f.get("trajectory"):
        return ""
    layers = list(f["trajectory"][0]["widths"])
    out = ["<h2>Growing the network</h2>",
           f'<p class="meta">Start width {e(f["start_width"])} ({e(f["weights"])} weights); target '
           f'{e(f["target_accuracy"])}% ({e(f["target_source"])}) {"reached" if f["reached"] else "missed"}, '
           f'stopped by {e(f["stopped_by"])}; {e(format(f["mac_epochs"], ".3g"))} MAC-epochs'
           + (f'; {e(format(f["active_mac_epochs"], ".3g"))} counting only the active connections'
              if f.get("start_density") else "") + '.</p>']
    if draw:
        out.append(image(plots.grow_plot(f["trajectory"]), "accuracy and MACs against training cost; widths per step"))
    out.append(table(["step", "event", "epochs", "val accuracy (%)", "MACs", "params", "connections", *layers],
                     [[t["step"], t["event"], t["epochs"], t["accuracy"], t["macs"], t["params"], t["connections"],
                       *(t["widths"][k] for k in layers)] for t in f["trajectory"]]))
    return "\n".join(out)


def _prune(f: dict[str, Any] | None, draw: bool) -> str:
    if not f or not isinstance(f, dict):
        return ""
    out = ["<h2>Pruning</h2>",
           f'<p class="meta">Criterion {e(f.get("criterion"))}, budget: {e(f.get("budget"))}, '
           f'allocation {e(f.get("allocation"))}; accuracies here: {e(f.get("metric", "validation accuracy"))}.</p>']
    if f.get("macs_before") is not None:
        rows = [["MACs", f.get("macs_before"), f.get("macs_after"), _ratio(f.get("macs_after"), f.get("macs_before"))],
                ["parameters", f.get("params_before"), f.get("params_after"),
                 _ratio(f.get("params_after"), f.get("params_before"))]]
        if f.get("accuracy_before") is not None:
            rows.append(["accuracy (%)", f["accuracy_before"], f.get("accuracy_after"), None])
        out.append(table(["", "before", "after", "kept"], rows))
    channels = f.get("channels") or {}
    if channels:
        out.append("<h3>Channels per layer</h3>")
        if draw:
            out.append(image(plots.channels_plot(channels), "channels per layer before and after pruning"))
        rows = [[name, v[0], v[1], _ratio(v[1], v[0])] for name, v in channels.items()]
        out.append(table(["layer", "before", "after", "kept"], rows,
                         row_class=lambda row: "changed" if row[1] != row[2] else ""))
    unprunable = dict(f.get("unprunable_layers") or {})
    for g in f.get("groups") or []:
        if not g.get("prunable", True) and g.get("reasons"):
            unprunable.setdefault(", ".join(g.get("producers", [])), "; ".join(g["reasons"]))
    if unprunable:
        out.append("<p>Kept whole (not prunable):</p><ul>"
                   + "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in unprunable.items()) + "</ul>")
    steps = f.get("steps") or []
    if steps:
        out.append(table(["step", "channels removed", "MACs", "params", "acc. cut (%)", "acc. refit (%)",
                          "acc. fine-tuned (%)"],
                         [[s.get("step"), s.get("removed_channels"), s.get("macs"), s.get("params"),
                           s.get("accuracy_pruned"), s.get("accuracy_reconstructed"),
                           s.get("accuracy_finetuned")] for s in steps]))
    refits = reconstruction_rows(f)
    if refits:
        out.append("<h3>Reconstruction</h3>"
                   '<p class="meta">Relative output error of each layer that lost input channels, before and '
                   "after the least-squares refit on calibration activations.</p>")
        out.append(table(["step", "layer", "error before", "error after", "outcome"], refits))
    out.append(_sensitivity(f.get("sensitivity"), draw))
    return "\n".join(out)


def _lowrank(f: dict[str, Any] | None) -> str:
    if not f or not isinstance(f, dict) or "layers" not in f:
        return ""
    out = ["<h2>Low-rank factorisation</h2>",
           f'<p class="meta">Method {e(f.get("method"))}, ranks by {e(f.get("selection"))}, rounded to '
           f'{e(f.get("round_to"))}. Errors: relative output error on held-out calibration samples, before '
           'and after the least-squares refit of the last factor.</p>',
           table(["", "before", "after", "kept"],
                 [["MACs", f.get("macs_before"), f.get("macs_after"), _ratio(f.get("macs_after"), f.get("macs_before"))],
                  ["parameters", f.get("params_before"), f.get("params_after"),
                   _ratio(f.get("params_after"), f.get("params_before"))],
                  ["accuracy (%)", f.get("accuracy_before"), f.get("accuracy_after"), None]]),
           table(["layer", "form", "rank", "limit", "MACs before", "MACs after", "error before", "error after",
                  "factorised"],
                 [[l["layer"], l["form"], "×".join(map(str, l["ranks"])), "×".join(map(str, l["limits"])),
                   l["macs_before"], l["macs_after"], l["error_before"], l["error_after"],
                   "yes" if l.get("kept", True) else f"no ({l.get('speedup_host')}× on this host)"]
                  for l in f["layers"]])]
    if f.get("measured_on"):
        out.append(f'<p class="meta">{e(f["measured_on"])}</p>')
    return "\n".join(out)


def _sensitivity(s: dict[str, Any] | None, draw: bool) -> str:
    if not s or not s.get("table"):
        return ""
    keys = sorted({k for row in s["table"] for k in row if k not in ("group", "channels") and plots._is_ratio(k)},
                  key=float)
    out = ["<h3>Sensitivity</h3>",
           f'<p class="meta">{e(s.get("metric", "metric"))} with one channel group pruned alone '
           f'(unpruned: {num(s.get("baseline"))} %).</p>']
    if draw:
        out.append(image(plots.sensitivity_plot(s), "prune sensitivity curves per channel group"))
    out.append(table(["group", "channels"] + [f"{float(k):.0%} removed" for k in keys],
                     [[row.get("group"), row.get("channels")] + [row.get(k) for k in keys]
                      for row in s["table"]]))
    return "\n".join(out)


def _trajectory(r: dict[str, Any], draw: bool) -> str:
    trajectory = r.get("trajectory") or r.get("passes") or []
    budget = r.get("budget") or {}
    attempts = budget.get("attempts") or []
    if not trajectory:
        return ""
    out = ["<h2>Trajectory over the passes</h2>"]
    if budget.get("enforced"):
        verdict = "met" if budget.get("met") else "NOT met"
        out.append(f'<p class="meta">Accuracy budget: at most {num(budget.get("max_accuracy_drop"))} points lost, '
                   f'{e(verdict)}; shipped strength {num(budget.get("chosen_strength"))}.</p>')
    if draw:
        out.append(image(plots.trajectory_plot(trajectory, attempts), "accuracy, MACs and size over the passes"))
    rows = []
    for label, records in plots.split_attempts(trajectory):
        for p in records:
            mt = p.get("metrics") or {}
            rows.append([label, p.get("name"), p.get("seconds"), mt.get("params"), mt.get("macs"), mt.get("accuracy")])
    out.append(table(["attempt", "pass", "seconds", "params", "MACs", "accuracy (%)"], rows, left=2))
    if attempts:
        out.append("<h3>Attempts</h3>" + table(
            ["strength", "artifact", "bytes", "accuracy (%)", "points lost", "met"],
            [[a.get("strength"), a.get("artifact"), a.get("bytes"), a.get("accuracy"), a.get("drop"),
              Raw('<span class="ok">yes</span>' if a.get("met") else '<span class="bad">no</span>')]
             for a in attempts]))
    return "\n".join(out)


def _checks_cell(checks: dict[str, Any]) -> Raw:
    if not checks:
        return Raw("—")
    parts = []
    for name, c in checks.items():
        if not isinstance(c, dict) or "passed" not in c:
            continue
        if c["passed"] is False:
            parts.append(f'<span class="bad" title="{e(c.get("reason", ""))}">{e(name)}: '
                         f'{e(c.get("reason") or "failed")}</span>')
    if parts:
        return Raw("<br>".join(parts))
    return Raw(f'<span class="ok">all {len(checks)} passed</span>')


def _artifacts(artifacts: list[dict[str, Any]]) -> str:
    if not artifacts:
        return ""
    rows = [[a.get("path"), a.get("format"), a.get("precision"), a.get("io_dtype"), a.get("bytes"),
             a.get("gzip_bytes"), a.get("accuracy"), a.get("top1_agreement"), a.get("max_abs_diff"),
             _checks_cell(a.get("checks") or {})]
            for a in artifacts]
    notes = "".join(f"<li><code>{e(a.get('path'))}</code>: {e(a['note'])}</li>" for a in artifacts if a.get("note"))
    return ("<h2>Artifacts</h2><p class=\"meta\">Accuracy, agreement and output difference are measured by "
            "running each file in its own runtime (LiteRT or ONNX Runtime) on the validation split.</p>"
            + table(["file", "format", "precision", "I/O", "bytes", "gzip bytes", "accuracy (%)",
                     "top-1 agreement (%)", "max abs diff", "checks"], rows, left=4)
            + (f"<ul>{notes}</ul>" if notes else ""))


def profile_entries(profile: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(artifact, where, device entry) from report["profile"]["measured"]: {artifact name:
    {"devices": [...]}} as `edgesparse build --profile` writes it. A bare `edgesparse profile
    --json` document ({"artifact", "devices"}) is accepted too."""
    if not isinstance(profile, dict):
        return []
    if "devices" in profile:
        measured = {str(profile.get("artifact", "?")).replace("\\", "/").rsplit("/", 1)[-1]: profile}
    else:
        measured = profile.get("measured") or {}
    out = []
    for name, summary in measured.items():
        for d in (summary or {}).get("devices") or []:
            device = ((d.get("result") or {}).get("device") or {}).get("cpu_model")
            out.append((name, str(d.get("agent", "?")) + (f" ({device})" if device else ""), d))
    return out


def _ms(v: Any) -> Any:
    """Latencies span microseconds to seconds: four significant figures, as in report.md."""
    return None if v is None else Raw(e(sig(v)))


def _profile(r: dict[str, Any], draw: bool) -> str:
    profile = r.get("profile") or {}
    estimates = profile.get("estimates") or {} if isinstance(profile, dict) else {}
    entries = profile_entries(profile)
    if not entries and not estimates:
        return ""
    rows, timings = [], []
    for name, est in estimates.items():
        rows.append([name, f"{(r.get('target') or {}).get('name', 'target')}: ESTIMATED (roofline)",
                     None, _ms(est.get("latency_ms")), None, None, None, None,
                     Raw(e(_energy(est.get("energy") or {})))])
    for name, where, d in entries:
        if not d.get("ok"):
            rows.append([name, where, Raw(f'<span class="bad">failed: '
                                          f'{e((d.get("error") or {}).get("message", ""))}</span>')] + [None] * 6)
            continue
        res = d.get("result") or {}
        t, rt = res.get("timing") or {}, res.get("runtime") or {}
        timings.append((f"{name} @ {where}", t))
        tails = [_ms(t.get(k)) if t.get(k) is not None else Raw(e((t.get("not_estimable") or {}).get(k[:3], "—")))
                 for k in ("p90_ms", "p99_ms")]
        rows.append([name, f"{where}: measured, {rt.get('name', '?')} {rt.get('version', '')}, "
                           f"{rt.get('threads') or 'default'} threads",
                     t.get("n"), _ms(t.get("p50_ms")), *tails, _ms(t.get("min_ms")), _ms(t.get("max_ms")),
                     Raw(e(_energy(res.get("energy") or {})))])
    out = ["<h2>Latency</h2>"]
    if not entries:
        out.append('<p class="meta">Not profiled on a device: estimates only (run the build with '
                   "<code>--profile URL</code> or <code>--profile-local</code> to measure).</p>")
    if draw and timings:
        drawn = plots.latency_plot(timings)
        if drawn:
            png, kind = drawn
            out.append(image(png, f"latency {kind}"))
            if kind == "percentiles":
                out.append('<p class="meta">The profile holds summary statistics only (no raw samples), '
                           "so this is a percentile plot rather than a histogram.</p>")
    out.append(table(["artifact", "where", "runs", "p50 (ms)", "p90 (ms)", "p99 (ms)", "min (ms)", "max (ms)",
                      "energy / inference"], rows, left=2))
    return "\n".join(out)


def _energy(block: dict[str, Any]) -> str:
    method = block.get("method")
    if method == "measured" and block.get("per_inference_mj") is not None:
        return f"{block['per_inference_mj']:.4g} mJ (measured)"
    if method == "estimated" and block.get("per_inference_mj") is not None:
        return f"{block['per_inference_mj']:.4g} mJ (ESTIMATED)"
    return "—"


def _versions(v: dict[str, Any]) -> str:
    if not v:
        return ""
    return "<h2>Versions</h2><p class=\"meta\">" + e(", ".join(f"{k} {x}" for k, x in v.items())) + "</p>"
