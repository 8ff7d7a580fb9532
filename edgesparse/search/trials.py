"""One trial of a search: a point of the space -> a compressed artifact -> measured objectives.

Two fidelities, both real pipelines on the real runtimes:

- `proxy` (cheap, every trial): prune to the point's per-group widths (and drop its residual
  blocks) with least-squares reconstruction and no fine-tune, factorise its rank-knob layers
  (lowrank, no fine-tune), quantize at the point's precision, export TFLite, verify in LiteRT.
  Seconds per trial on small models.
- `full` (the Pareto set only): the target's default recipe with its prune budget replaced by
  the point's per-group widths and blocks (and lowrank right after prune when the point
  factorises), so fine-tuning, distillation and every export run as a build would. The recipe of
  a full trial is what `--pick` writes, and `edgesparse build --recipe` of it reproduces the trial.

A point that factorises nothing runs a plan without lowrank (lowrank refuses an empty `ranks`),
so each fidelity has two plans: `proxy` / `proxy+lowrank`, `full` / `full+lowrank`.

Latency comes from, in order of preference: the agents given (measured on the device), this
machine (`local`: measured, but on the build host, and labelled so), else the target's roofline
estimate (labelled "estimated"). With a per-layer table (`--latency-table`, profile/layer_table.py)
the proxy trials read the table measured once on that device instead ("table (device X)"), and
the Pareto set is measured on the device for real. A trial records where its latency came from.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse.search.space import SearchSpace

LOWRANK = "+lowrank"     # the plan suffix of points that factorise

PROFILE_PARAMS = {"runs": 30, "warmup": 5, "min_seconds": 0.3, "seed": 0}


@dataclass
class TrialResult:
    accuracy: float | None          # % in the artifact's runtime
    latency_ms: float
    latency_source: str             # "agent <url>", "local (build host)", "estimated (roofline)"
    bytes: int
    macs: int | None
    params: int | None
    keras_accuracy: float | None
    recipe: dict[str, Any] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)   # producer -> kept channels
    removed_blocks: list[str] = field(default_factory=list)   # Add names of the dropped blocks
    ranks: dict[str, list[int]] = field(default_factory=dict)  # layer -> rank(s) it was factorised at

    def values(self) -> list[float]:
        return [self.accuracy if self.accuracy is not None else 0.0, self.latency_ms, float(self.bytes)]


@dataclass
class Base:
    """What every trial starts from, loaded once per worker: one checked build plan per fidelity,
    run again and again with the point's per-group widths and precision as overrides."""

    plans: dict[str, Any]           # fidelity -> edgesparse.build_api.BuildPlan
    target: Any
    default_recipe: Any             # the target's default recipe (edgesparse.recipe.Recipe)
    space: SearchSpace
    reference_accuracy: float | None   # Keras validation accuracy of the imported model
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)   # fidelity -> recipe dict
    agents: list[str] = field(default_factory=list)
    token_file: Path | None = None
    local: bool = False
    table: Any = None               # a profile.layer_table.LatencyTable: proxy latency from it
    _fleet: "Fleet | None" = None

    @property
    def name(self) -> str:
        return self.plans["proxy"].name

    def fleet(self) -> "Fleet":
        if self._fleet is None:
            from edgesparse.profile.token import read_token

            self._fleet = Fleet(self.agents, read_token(self.token_file))
        return self._fleet


def proxy_recipe(default_recipe, space: SearchSpace, lowrank: bool = False) -> dict[str, Any]:
    """Prune (widths and blocks come per trial), [lowrank], quantize, export TFLite, verify: no
    training at all."""
    point = space.uniform(1.0)
    passes = [{"pass": "prune", "per_group": space.per_group(point), "reconstruct": True,
               "finetune_epochs": 0}]
    if lowrank:
        passes.append(_lowrank_entry(space, point))
    passes += [{"pass": "quantize", "precisions": [space.default_precision]},
               {"pass": "export", "formats": ["tflite"]},
               {"pass": "verify"}]
    return {"name": "tune-proxy", "seed": default_recipe.spec.seed, "max_accuracy_drop": None,
            "passes": passes}


def _lowrank_entry(space: SearchSpace, point: dict[str, Any]) -> dict[str, Any]:
    """Lowrank at the point's ranks, no fine-tune of its own (prune's and distill's follow or not,
    as the fidelity has them). A plan needs some rank to be valid: with none (the plan's own
    point), the first rank layer at its full rank; each trial's overrides replace it."""
    ranks = space.ranks(point) or {n: min(space.rank_layers[n].inputs, space.rank_layers[n].outputs)
                                   for n in space.rank_names[:1]}
    return {"pass": "lowrank", "ranks": ranks, "finetune_epochs": 0}


def full_recipe(default_recipe, point: dict[str, Any], space: SearchSpace,
                max_accuracy_drop: float | None, lowrank: bool | None = None) -> dict[str, Any]:
    """The target's default recipe with the point's widths, blocks, ranks and precision in place of
    its own budget: what `--pick` writes and `edgesparse build --recipe` runs."""
    lowrank = bool(space.ranks(point)) if lowrank is None else lowrank
    passes, has_prune = [], False
    # Only what differs from each pass's defaults: a picked recipe is read by people, and a full
    # dump printed `blocks: 0` beside the point's choices.
    for p in default_recipe.passes:
        entry = {"pass": p.name, **p.config.model_dump(mode="json", exclude_defaults=True)}
        if entry["pass"] == "prune":
            has_prune = True
            for k in ("ratio", "macs", "params"):
                entry.pop(k, None)
            had_blocks = "blocks" in entry
            entry.update(_prune_fields(space, point))
            if entry.get("blocks") == [] and not had_blocks:
                del entry["blocks"]     # none dropped, as the default says
            entry["steps"] = 1          # the widths are the plan: no gradual path to them
        elif entry["pass"] == "quantize":
            entry["precisions"] = [space.precision_of(point)]
        passes.append({k: v for k, v in entry.items() if v is not None})
        if entry["pass"] == "prune" and lowrank:
            passes.append(_lowrank_entry(space, point))
    if not has_prune:
        passes.insert(0, {"pass": "prune", **_prune_fields(space, point)})
        if lowrank:
            passes.insert(1, _lowrank_entry(space, point))
    recipe = {"name": f"{default_recipe.name}-tuned", "seed": default_recipe.spec.seed, "passes": passes}
    if max_accuracy_drop is not None:
        recipe["max_accuracy_drop"] = max_accuracy_drop
    return recipe


def _prune_fields(space: SearchSpace, point: dict[str, Any]) -> dict[str, Any]:
    fields = {"per_group": space.per_group(point)}
    if space.block_names:
        fields["blocks"] = space.dropped(point)
    return fields


def plan_key(space: SearchSpace, point: dict[str, Any], fidelity: str) -> str:
    return fidelity + (LOWRANK if space.ranks(point) else "")


def overrides(base: Base, point: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {"prune": _prune_fields(base.space, point),
           "quantize": {"precisions": [base.space.precision_of(point)]}}
    ranks = base.space.ranks(point)
    if ranks:
        out["lowrank"] = {"ranks": ranks}
    return out


def run_trial(base: Base, point: dict[str, Any], fidelity: str = "proxy",
              keep_dir: Path | None = None, measured: bool = False) -> TrialResult:
    """Build the point's artifact at `fidelity` and measure it. Raises UserError on bad points.
    A proxy trial reads the latency table when the base has one, unless `measured` asks for the
    device itself; a full trial is always measured."""
    from edgesparse.build_api import run_plan

    folder = Path(tempfile.mkdtemp(prefix="edgesparse-trial-")) if keep_dir is None else keep_dir
    try:
        key = plan_key(base.space, point, fidelity)
        attempt = run_plan(base.plans[key], overrides=overrides(base, point), folder=folder)
        state = attempt.state
        from edgesparse.search.backoff import primary_artifact

        artifact = primary_artifact(state, base.target)
        if base.table is not None and fidelity == "proxy" and not measured:
            latency, source = table_latency(base, point, artifact)
        else:
            latency, source = measure_latency(base, artifact, attempt.macs)
        final = {k: v for r in attempt.records for k, v in r.metrics.items()}
        recipe = (full_recipe(base.default_recipe, point, base.space, None) if fidelity == "full"
                  else base.recipes.get(key, {}))
        prune_facts = _facts(state.facts.get("prune", {}))
        lowrank_facts = _facts(state.facts.get("lowrank", {}))
        return TrialResult(accuracy=attempt.accuracy, latency_ms=latency, latency_source=source,
                           bytes=int(attempt.bytes or 0), macs=attempt.macs, params=attempt.params,
                           keras_accuracy=final.get("accuracy"), recipe=recipe,
                           widths=_widths(prune_facts),
                           removed_blocks=[b["add"] for b in (prune_facts.get("depth") or {}).get("removed", [])],
                           ranks={r["layer"]: list(r["ranks"]) for r in lowrank_facts.get("layers", [])
                                  if r.get("kept")})
    finally:
        if keep_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _facts(facts: Any) -> dict[str, Any]:
    if isinstance(facts, dict):
        return facts
    return dict(getattr(facts, "__dict__", {}) or {})


def _widths(prune_facts: dict[str, Any]) -> dict[str, int]:
    """Kept channels per producer, from prune's facts ({producer: [before, after]})."""
    channels = prune_facts.get("channels") or {}
    return {p: int(v[1]) for p, v in channels.items()}


def table_latency(base: Base, point: dict[str, Any], artifact) -> tuple[float, str]:
    """The table's estimate for the point: its layers' entries at its widths plus the measured
    fixed part."""
    precision = artifact.precision if artifact is not None else base.space.precision_of(point)
    return base.table.estimate(base.space.layer_widths(point), precision), base.table.label


class Fleet:
    """The devices of a search. A measurement leases ONE free device: each agent runs one job at a
    time and answers 409 while busy, so a busy agent is skipped and the next one tried; when all
    are busy the worker waits the shortest Retry-After and tries again. Workers start at
    different agents (by process id), so two workers on two agents rarely collide."""

    def __init__(self, agents: list[str], token: str | None, patience_s: float = 600.0):
        self.agents, self.token, self.patience_s = list(agents), token, patience_s
        self.start = os.getpid() % max(1, len(self.agents))

    def profile(self, artifact: Path) -> dict[str, Any]:
        from edgesparse.profile import client

        deadline = time.monotonic() + self.patience_s
        order = self.agents[self.start:] + self.agents[:self.start]
        while True:
            for url in order:
                try:
                    return client.profile_remote(url, self.token, artifact, busy_retries=0, **PROFILE_PARAMS)
                except client.AgentError as exc:
                    if exc.status != 409:
                        raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"every agent stayed busy for {self.patience_s:.0f} s")
            time.sleep(1.0)       # all busy: one profile takes about a second on small models


LOCAL = "local (build host, not the target)"


def device_latency(base: Base, path: Path | None) -> tuple[float, str]:
    """p50 ms of an artifact file on the search's device (an agent of the fleet, or this host with
    `local`), and the device's label. `path` None: the label only (no measurement)."""
    from edgesparse.profile.collect import collect_profiles

    if base.agents:
        if path is None:
            return 0.0, "agent " + ", ".join(base.agents)
        result = base.fleet().profile(path)
        return float(result["timing"]["p50_ms"]), f"agent {result['agent']}"
    if path is None:
        return 0.0, LOCAL
    summary = collect_profiles(path, agents=[], local=True, params=PROFILE_PARAMS)
    d = summary["devices"][0]
    if not d["ok"]:
        raise RuntimeError(d["error"]["message"])
    return float(d["result"]["timing"]["p50_ms"]), LOCAL


def measure_latency(base: Base, artifact, macs: int | None) -> tuple[float, str]:
    """p50 latency in ms of the artifact, and where the figure comes from."""
    if base.agents or base.local:
        return device_latency(base, artifact.path)
    from edgesparse.profile.estimate import roofline_estimate

    est = roofline_estimate(int(macs or 0), artifact.path.stat().st_size,
                            "int8" if artifact.precision == "int8" else
                            ("fp16" if artifact.precision == "fp16" else "fp32"),
                            base.target.hardware.model_dump(), threads=base.target.threads)
    return float(est["latency_ms"]), "estimated (roofline)"
