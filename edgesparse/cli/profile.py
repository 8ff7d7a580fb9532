"""CLI for measuring: `edgesparse agent serve` (on the device) and `edgesparse profile` (host).

`register(app)` is called by edgesparse/cli/__init__.py. Nothing heavy at import time: the agent modules
are standard library, and rich tables are built only when a command runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgesparse.errors import UserError
from edgesparse.files import check_new_file, write_new_file
from edgesparse.profile import agent as profiling_agent, measure  # stdlib only: cheap to import
from edgesparse.profile.collect import collect_profiles

agent_app = typer.Typer(no_args_is_help=True, help="The on-device profiling agent.")


@agent_app.command("serve")
def serve_command(
    token_file: Path = typer.Option(..., "--token-file", help="File holding the bearer token (16+ characters, chmod 600)."),
    host: str = typer.Option(profiling_agent.DEFAULT_HOST, "--host", help="Address to bind; loopback unless you say otherwise."),
    port: int = typer.Option(profiling_agent.DEFAULT_PORT, "--port", help="TCP port (0: any free port)."),
    max_upload_mb: float = typer.Option(profiling_agent.DEFAULT_MAX_UPLOAD_MB, "--max-upload-mb", help="Largest artifact accepted (413 above)."),
    header_timeout: float = typer.Option(profiling_agent.DEFAULT_HEADER_TIMEOUT_S, "--header-timeout", help="Seconds for the request line and headers in total (the connection is closed after)."),
    read_timeout: float = typer.Option(profiling_agent.DEFAULT_READ_TIMEOUT_S, "--read-timeout", help="Seconds one read may wait; also the shortest body deadline (408 after)."),
    min_upload_rate_kb: float = typer.Option(profiling_agent.DEFAULT_MIN_UPLOAD_KIB_S, "--min-upload-rate-kb", help="Slowest upload accepted, KiB/s: the body deadline is max(--read-timeout, size / rate) (408 after)."),
    max_connections: int = typer.Option(profiling_agent.DEFAULT_MAX_CONNECTIONS, "--max-connections", help="Connections handled at once; more are answered 503 and closed."),
    job_timeout: float = typer.Option(measure.DEFAULT_TIME_LIMIT_S, "--job-timeout", help="Wall-clock limit of one measuring child."),
    memory_limit_mb: int = typer.Option(measure.DEFAULT_MEMORY_LIMIT_MB, "--memory-limit-mb", help="Address-space limit of the measuring child (0: none)."),
    allow_delegate: Optional[list[str]] = typer.Option(None, "--allow-delegate", help="NAME=LIBRARY: an external LiteRT delegate clients may ask for by NAME."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Where uploads are written (default: the system temp dir)."),
):
    """Serve the profiling API (docs/agent-api.md) until interrupted."""
    profiling_agent.serve(profiling_agent.config_from_options(
        token_file=token_file, host=host, port=port, max_upload_mb=max_upload_mb,
        header_timeout=header_timeout, read_timeout=read_timeout,
        min_upload_rate_kb=min_upload_rate_kb, max_connections=max_connections,
        job_timeout=job_timeout, memory_limit_mb=memory_limit_mb, work_dir=work_dir,
        allow_delegate=allow_delegate or []))


def profile_command(
    artifact: Path = typer.Argument(..., help="A .tflite or .onnx artifact."),
    agent: Optional[list[str]] = typer.Option(None, "--agent", "-a", help="Agent URL, e.g. http://pi.local:8765 (repeat for several devices)."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", envvar="EDGESPARSE_TOKEN_FILE", help="The agents' bearer token."),
    local: bool = typer.Option(False, "--local", help="Measure on this machine, in a child process, with the agent's code."),
    runs: int = typer.Option(100, "--runs", help="At least this many timed runs."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="Keep timing until this much time has passed."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="litert or onnxruntime (default: by format)."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="LiteRT: 'none' or an agent-allowlisted name; ORT: an execution provider."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic inputs."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="An .npz of inputs (default: synthetic, seeded)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target whose power figures estimate energy where no sensor exists, and whose hardware figures give a roofline estimate with --macs."),
    macs: Optional[int] = typer.Option(None, "--macs", help="MACs per inference, for the roofline estimate."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8 (roofline estimate)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results to this JSON file."),
):
    """Measure an artifact's latency, memory and energy on one or more devices."""
    if json_out:
        check_new_file(json_out, "--json")
    params = {"runs": runs, "warmup": warmup, "min_seconds": min_seconds, "threads": threads,
              "runtime": runtime, "delegate": delegate, "seed": seed}
    hardware = _target_hardware(target) if target else None
    summary = collect_profiles(artifact, agents=agent or [], token_file=token_file, local=local,
                               params=params, inputs=inputs, hardware=hardware, macs=macs,
                               precision=precision)
    render(summary)
    if json_out:
        text = json.dumps(summary, indent=2, default=str)
        write_new_file(json_out, lambda tmp: Path(tmp).write_text(text), "--json")
    failed = [d for d in summary["devices"] if not d["ok"]]
    if failed:
        raise UserError("; ".join(d["error"]["message"] for d in failed))


def _target_hardware(target: str) -> dict:
    from edgesparse.targets import load_target

    return load_target(target).hardware.model_dump()


def _ms(value) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.1f} µs" if value < 1 else f"{value:.3f} ms"


def _mb(value) -> str:
    return "—" if value is None else f"{value:.1f} MiB"


def _energy_line(block: dict) -> str:
    method = block.get("method")
    if method == "measured":
        return (f"measured: {block['per_inference_mj']:.4g} mJ/inference, "
                f"{block['avg_power_w']:.3g} W avg ({block['scope']})")
    if method == "estimated":
        return f"ESTIMATED: {block['per_inference_mj']:.4g} mJ/inference — {block['assumption']}"
    return f"unavailable: {block.get('reason')}"


def _cpu_line(cpu: dict) -> str:
    parts = []
    for when in ("before", "after"):
        snap = cpu.get(when) or {}
        freq, temps = snap.get("freq_mhz_mean"), snap.get("temperature_c")
        temp = max(temps.values()) if temps else None
        parts.append(f"{when}: " + (f"{freq:.0f} MHz" if freq else "freq n/a") + ", "
                     + (f"{temp:.1f} °C" if temp is not None else "temp n/a"))
    return "; ".join(parts)


def device_rows(entry: dict) -> list[tuple[str, str]]:
    """(label, value) rows for one device's result."""
    if not entry["ok"]:
        return [("error", entry["error"]["message"])]
    r = entry["result"]
    t, m, rt, inp = r["timing"], r["memory"], r["runtime"], r["inputs"]
    rows = [
        ("runtime", f"{rt['name']} {rt['version']}, threads {rt['threads'] or 'default'}, "
                    f"delegate {rt['delegate']}"),
        ("inputs", f"synthetic, seed {inp['seed']}" if inp["source"] == "synthetic"
         else f"given ({', '.join(inp.get('keys', []))})"),
        ("init (load)", _ms(t["init_ms"])),
        ("first inference", _ms(t["first_inference_ms"])),
        ("warm-up runs", str(t["warmup_runs"])),
        ("timed runs (n)", str(t["n"])),
        ("mean ± std", f"{_ms(t['mean_ms'])} ± {_ms(t['std_ms'])}"),
        ("min", _ms(t["min_ms"])),
    ]
    for key in ("p50", "p90", "p95", "p99"):
        value = t[f"{key}_ms"]
        rows.append((key, _ms(value) if value is not None else t["not_estimable"][key]))
    rows += [
        ("max", _ms(t["max_ms"])),
        ("throughput", f"{t['throughput_ips']:.1f} inferences/s (one stream)"),
        ("peak RSS (child)", _mb(m["peak_rss_mb"])),
        ("memory added by the model", _mb(m["model_load_added_mb"])),
        ("CPU", _cpu_line(r.get("cpu", {}))),
        ("energy", _energy_line(r["energy"])),
        ("artifact", f"{r['format']}, {r['artifact_bytes']} bytes, sha256 {r['sha256'][:16]}…"),
    ]
    if entry.get("estimate_vs_measured"):
        cmp = entry["estimate_vs_measured"]
        rows.append(("roofline estimate", f"ESTIMATED {_ms(cmp['estimated_ms'])} vs measured "
                     f"{_ms(cmp['measured_ms'])}: error {cmp['relative_error']:+.0%}"))
    return rows


def render(summary: dict) -> None:
    from rich.table import Table

    from edgesparse.console import console

    if summary.get("estimate"):
        est = summary["estimate"]
        console.print(f"[bold]roofline estimate (not a measurement):[/] {_ms(est['latency_ms'])} "
                      f"per inference, {est['bound']}-bound; assumptions: "
                      + "; ".join(est["assumptions"]))
    for entry in summary["devices"]:
        result = entry.get("result") or {}
        name = (result.get("device") or {}).get("cpu_model") or "device"
        table = Table(title=f"{name} — {entry['agent']}", title_justify="left",
                      show_header=False)
        table.add_column("", style="bold")
        table.add_column("")
        for label, value in device_rows(entry):
            table.add_row(label, value, style=None if entry["ok"] else "red")
        console.print(table)


def register(app: typer.Typer) -> None:
    """Add `agent serve` and `profile` to the edgesparse CLI."""
    app.add_typer(agent_app, name="agent")
    app.command("profile")(profile_command)


__all__ = ["register", "render", "device_rows"]
