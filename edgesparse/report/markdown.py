"""report.md: the report a person reads first. Only figures that are in report.json."""
from __future__ import annotations

from typing import Any


def fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(r: dict[str, Any]) -> str:
    m, t = r["model"], r["target"]
    out = [f"# edgesparse report: {m['name']} for {t['name']}", ""]
    if r["warnings"]:
        out += ["## Warnings", ""] + [f"- {w}" for w in r["warnings"]] + [""]
    out += [f"Target: {t['title']} ({t['threads']} threads). Recipe: {r['recipe']['name']} "
            f"({r['recipe']['origin']}). Data: {r['data']['source']}."
            + (f" Built in {fmt(r['seconds'])} s." if r.get("seconds") is not None else ""), ""]
    final = m.get("final", {})
    out += ["## Model", "", table(["", "params", "MACs", "Keras accuracy (%)"], [
        ["imported", m.get("params"), m.get("macs"), m.get("accuracy")],
        ["final", final.get("params"), final.get("macs"), final.get("accuracy")],
    ]), ""]
    out += ["## Passes", "", table(["pass", "seconds", "params", "MACs", "accuracy (%)"], [
        [p["name"] + (f" ({p['step']})" if p.get("step") else ""), p["seconds"],
         p["metrics"].get("params"), p["metrics"].get("macs"), p["metrics"].get("accuracy")]
        for p in r["passes"]]), ""]
    if r["artifacts"]:
        out += ["## Artifacts", "",
                "Accuracy, agreement and output difference are measured by running each file in its "
                "own runtime (LiteRT or ONNX Runtime) on the validation split.", "",
                # gzip bytes: what unstructured zeros save (the file itself stays dense-sized; the
                # reports showed the saving nowhere but report.json).
                table(["file", "format", "precision", "I/O", "bytes", "gzip bytes", "accuracy (%)",
                        "top-1 agreement (%)", "max abs diff", "checks"], [
                    [a["path"], a["format"], a["precision"], a["io_dtype"], a["bytes"], a.get("gzip_bytes"),
                     a["accuracy"], a["top1_agreement"], a["max_abs_diff"], _checks(a["checks"])]
                    for a in r["artifacts"]]), ""]
        for a in r["artifacts"]:
            if a.get("note"):
                out.append(f"- `{a['path']}`: {a['note']}")
        out.append("")
    out += _regularize(r) + _grow(r) + _pruning(r) + _lowrank(r) + _sparsity(r) + _budget(r) + _control(r) + _latency(r)
    out += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in r["versions"].items()), ""]
    return "\n".join(out)


def _regularize(r: dict[str, Any]) -> list[str]:
    f = (r.get("facts") or {}).get("regularize")
    if not f or not f.get("trajectory"):
        return []
    return ["## Sparsity learned in training", "",
            f"{f.get('metric')} {fmt(f.get('start'))} → {fmt(f.get('end'))}; target "
            + ("reached." if f.get("reached") else "**missed**."), "",
            table(["epoch", "method", "strength", "kept", "MACs kept", "metric %"],
                  [[t["epoch"], t["method"], f"{t['strength']:.3g}", t["kept"], t.get("macs"), t["metric"]]
                   for t in f["trajectory"]]), "",
            table(["layer", "channels before", "non-zero after"],
                  [[k, v[0], v[1]] for k, v in (f.get("widths") or {}).items()]), ""]


def _grow(r: dict[str, Any]) -> list[str]:
    f = (r.get("facts") or {}).get("grow")
    if not f or not f.get("trajectory"):
        return []
    layers = list(f["trajectory"][0]["widths"])
    return ["## Growing the network", "",
            f"Started at width {f['start_width']:g}" + (f", density {f['start_density']:g}" if f.get("start_density") else "")
            + f" ({f['weights']} weights); target {fmt(f['target_accuracy'])}% ({f['target_source']}) "
            + ("reached" if f["reached"] else "**missed**") + f", stopped by {f['stopped_by']}. Training cost "
            f"{f['mac_epochs']:.3g} MAC-epochs ({f['mac_epochs_per_given_epoch']:g} epochs of the given architecture)"
            + (f"; {f['active_mac_epochs']:.3g} counting only the active connections" if f.get("start_density") else "")
            + ".", "",
            table(["step", "event", "epochs", "val accuracy %", "MACs", "params", "connections", "MAC-epochs", *layers],
                  [[t["step"], t["event"], t["epochs"], t["accuracy"], t["macs"], t["params"], t["connections"],
                    f"{t['mac_epochs']:.3g}", *(t["widths"][k] for k in layers)] for t in f["trajectory"]]), ""]


def _pruning(r: dict[str, Any]) -> list[str]:
    p = (r.get("facts") or {}).get("prune")
    if not p or "channels" not in p:
        return []
    lines = ["## Structured pruning", "",
             f"{p.get('budget', '')}; criterion {p.get('criterion')}, allocation {p.get('allocation')}, "
             f"channel counts rounded to {p.get('round_to')}. MACs {fmt(p.get('macs_before'))} → "
             f"{fmt(p.get('macs_after'))}, params {fmt(p.get('params_before'))} → {fmt(p.get('params_after'))}.", "",
             table(["layer", "channels before", "channels after"],
                   [[name, before, after] for name, (before, after) in p["channels"].items()]), ""]
    for layer, why in (p.get("unprunable_layers") or {}).items():
        lines.append(f"- `{layer}` kept whole: {why}")
    errors = reconstruction_rows(p)
    if errors:
        lines += ["", "Reconstruction (relative output error of each layer that lost input channels, "
                  "before → after the least-squares refit on calibration activations):", "",
                  table(["step", "layer", "error before", "error after", "outcome"], errors), ""]
    return lines + [""]


def _lowrank(r: dict[str, Any]) -> list[str]:
    f = (r.get("facts") or {}).get("lowrank")
    if not f or "layers" not in f:
        return []
    lines = ["## Low-rank factorisation", "",
             f"Method {f.get('method')}, ranks by {f.get('selection')}, rounded to {f.get('round_to')}. "
             f"MACs {fmt(f.get('macs_before'))} → {fmt(f.get('macs_after'))}, params {fmt(f.get('params_before'))} "
             f"→ {fmt(f.get('params_after'))}. Errors: relative output error of each layer on held-out "
             "calibration samples, before → after the least-squares refit of its last factor.", "",
             table(["layer", "form", "rank", "limit", "MACs before", "MACs after", "error before", "error after",
                    "factorised"],
                   [[l["layer"], l["form"], "×".join(map(str, l["ranks"])), "×".join(map(str, l["limits"])),
                     l["macs_before"], l["macs_after"], l["error_before"], l["error_after"],
                     "yes" if l.get("kept", True) else f"no ({fmt(l.get('speedup_host'))}× on this host)"]
                    for l in f["layers"]]), ""]
    if f.get("accuracy_before") is not None:
        # "after the fine-tune" only where one ran (finetune_loss is its record): the default is none.
        tuned = (f" → {fmt(f.get('accuracy_after'))} % after the fine-tune" if f.get("finetune_loss")
                 else " (no fine-tune)")
        lines += [f"Keras validation accuracy: {fmt(f['accuracy_before'])} % → {fmt(f.get('accuracy_refit'))} % "
                  f"after the refit{tuned}.", ""]
    if f.get("measured_on"):
        lines += [f"- {f['measured_on']}", ""]
    return lines


def reconstruction_rows(p: dict[str, Any]) -> list[list[Any]]:
    """One row per layer reconstruction looked at. Layers it cannot refit (a SeparableConv1D, say)
    carry only a reason, no errors: the row says "not refit" and why instead of failing."""
    rows = []
    for step in p.get("reconstruction") or []:
        for layer in step.get("layers") or []:
            if layer.get("refit"):
                outcome = "refit"
            elif layer.get("why"):
                outcome = f"not refit: {layer['why']}"
            else:
                outcome = "not refit: the refit did not beat the plain slice on held-out samples"
            rows.append([step.get("step"), layer.get("layer"), layer.get("error_before"),
                         layer.get("error_after"), outcome])
    return rows


def _sparsity(r: dict[str, Any]) -> list[str]:
    s_ = (r.get("facts") or {}).get("sparsify")
    if not s_ or "layers" not in s_:
        return []
    lines = ["## Sparsity", "",
             f"{s_.get('method')} ({s_.get('pattern')}): {fmt(100 * s_.get('sparsity', 0), 1)}% of kernel "
             f"weights are zero. {s_.get('latency', '')}", "",
             table(["layer", "weights", "zeros", "sparsity", "reconstruction error"],
                   [[l["layer"], l["weights"], l["zeros"], l["sparsity"], l.get("reconstruction_error")]
                    for l in s_["layers"]]), ""]
    return lines


def _budget(r: dict[str, Any]) -> list[str]:
    b = r.get("budget") or {}
    if not b.get("enforced"):
        return []
    lines = ["## Accuracy budget", "",
             f"At most {b['max_accuracy_drop']} points lost against the imported model "
             f"(primary artifact, measured in its runtime). "
             + ("Met." if b["met"] else "**Not met: no artifact shipped.**"), ""]
    if len(b["attempts"]) > 1 or not b["met"]:
        lines += [table(["strength", "accuracy (%)", "points lost", "met", "MACs", "bytes"], [
            [a["strength"], a["accuracy"], a["drop"], "yes" if a["met"] else "no", a["macs"], a["bytes"]]
            for a in b["attempts"]]), ""]
    return lines


def _control(r: dict[str, Any]) -> list[str]:
    c = (r.get("facts") or {}).get("control")
    if not c or "accuracy_from_scratch" not in c:
        return []
    return ["## Control: the same architecture trained from scratch", "",
            table(["model", "epochs", "Keras accuracy (%)"], [
                ["compressed (pruned + recovered)", c["epochs"], c["accuracy_compressed"]],
                ["same architecture from scratch", c["epochs"], c["accuracy_from_scratch"]]]), ""]


def _latency(r: dict[str, Any]) -> list[str]:
    prof = r.get("profile") or {}
    est, measured = prof.get("estimates") or {}, prof.get("measured") or {}
    if not est and not measured:
        return []
    lines = ["## Latency", "",
             f"Rows marked (estimated) are a roofline from the {r['target']['name']} profile's hardware "
             "figures (an estimate, not a measurement; its assumptions are in report.json); rows marked "
             "(measured) ran on the device they name. An estimated energy on a measured row is that "
             "device's latency times the target's power figures.", ""]
    rows = []
    for name, e in est.items():
        rows.append([name, f"{r['target']['name']} (estimated)", sig(e["latency_ms"]), None, None,
                     f"{e['energy'].get('per_inference_mj', 0):.4g} mJ (estimated)" if e.get("energy") else None])
        for d in (measured.get(name) or {}).get("devices", []):
            if not d.get("ok"):
                rows.append([name, d["agent"], None, None, None, "failed: " + d["error"]["message"]])
                continue
            t, en = d["result"]["timing"], d["result"].get("energy") or {}
            where = d["result"].get("device", {}).get("cpu_model") or d["agent"]
            energy = (f"{en['per_inference_mj']:.4g} mJ ({en['method']})"
                      if en.get("per_inference_mj") is not None else en.get("method", "—"))
            rows.append([name, f"{d['agent']}: {where} (measured)", sig(t.get("p50_ms")),
                         sig(t.get("p90_ms")), t.get("n"), energy])
    lines += [table(["artifact", "where", "p50 ms", "p90 ms", "runs", "energy / inference"], rows), ""]
    return lines


def sig(v: float | None) -> str | None:
    """Latencies span µs to s: four significant figures, never a misleading 0.00."""
    return None if v is None else f"{v:.4g}"


def _checks(checks: dict[str, Any]) -> str:
    if not checks:
        return "—"
    failed = [k for k, v in checks.items() if isinstance(v, dict) and v.get("passed") is False]
    not_run = [k for k, v in checks.items() if isinstance(v, dict) and v.get("passed") is None]
    if failed:
        return "failed: " + ", ".join(failed)
    return "passed" + (f" ({', '.join(not_run)} not run)" if not_run else "")
