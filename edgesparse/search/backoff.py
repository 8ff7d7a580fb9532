"""The accuracy budget: "at most N points lost", enforced by backing off the compression.

Users state what they can afford, not hyper-parameters. After the pipeline runs, the primary
artifact's accuracy (measured by verify in its real runtime) is compared with the imported
model's Keras accuracy on the validation split. If the drop is over budget, every pass that can
be made gentler (`Pass.scaled(strength)`: prune, sparsify) is scaled down and the whole pipeline
runs again from the imported model. The strength is bisected in (0, 1] for a bounded number of
steps; each attempt is recorded, and the strongest attempt that meets the budget wins.

This is the first search strategy: it only decides which strengths to try. Running one attempt
is `build_api.run_plan`, the same call every later strategy makes with per-layer overrides.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgesparse.errors import BudgetError
from edgesparse.pipeline import Pipeline
from edgesparse.state import Artifact, ModelState

if TYPE_CHECKING:
    from edgesparse.build_api import BuildPlan


@dataclass
class Attempt:
    strength: float
    accuracy: float | None          # primary artifact accuracy (runtime-measured), or Keras if none
    drop: float | None
    met: bool
    macs: int | None
    params: int | None
    bytes: int | None
    artifact: str | None
    workdir: Path
    state: ModelState | None = None
    records: list = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"strength": round(self.strength, 4), "accuracy": self.accuracy, "drop": self.drop,
                "met": self.met, "macs": self.macs, "params": self.params, "bytes": self.bytes,
                "artifact": self.artifact}


def primary_artifact(state: ModelState, target) -> Artifact | None:
    """The artifact the target ships by default: int8 in the target's first format, else the first."""
    for a in state.artifacts:
        if a.precision == "int8" and a.format == target.formats[0]:
            return a
    return state.artifacts[0] if state.artifacts else None


def scaled_pipeline(pipeline: Pipeline, strength: float) -> tuple[Pipeline, bool]:
    """A copy of the pipeline with every adjustable pass at `strength`; False if none adjusts."""
    passes, adjusted = [], False
    for p in pipeline.passes:
        q = p.scaled(strength) if strength < 1.0 else None
        adjusted |= q is not None
        passes.append(q or p)
    return Pipeline(passes), adjusted


def can_back_off(pipeline: Pipeline) -> bool:
    return scaled_pipeline(pipeline, 0.5)[1]


def back_off(plan: "BuildPlan", root: Path, run: Callable[..., Attempt]) -> tuple[Attempt | None, list[Attempt]]:
    """The accuracy budget over a build plan: `run(plan, strength, folder=...)` (build_api.run_plan)
    at full strength, then bisected down while the budget is enforced and some pass can scale."""
    return search(lambda strength, sub: run(plan, strength, folder=sub), root, plan.recipe.spec.max_backoff_steps,
                  adjustable=plan.budget is not None and can_back_off(plan.pipeline))


def search(run_attempt: Callable[[float, Path], Attempt], root: Path, max_steps: int,
           adjustable: bool) -> tuple[Attempt | None, list[Attempt]]:
    """Try full strength, then bisect the strength down; return (best attempt that met, all)."""
    attempts = [run_attempt(1.0, root / "attempt-0")]
    if attempts[0].met or not adjustable:
        return (attempts[0] if attempts[0].met else None), attempts
    lo, hi = 0.0, 1.0           # lo: strongest known to meet (0 = uncompressed); hi: known to fail
    for step in range(1, max_steps + 1):
        s = (lo + hi) / 2
        a = run_attempt(s, root / f"attempt-{step}")
        attempts.append(a)
        if a.met:
            lo = s
        else:
            hi = s
    passing = [a for a in attempts if a.met]
    return (max(passing, key=lambda a: a.strength) if passing else None), attempts


def promote(attempt: Attempt | None, workdir: Path) -> None:
    """Move the chosen attempt's files (artifacts, plots) to the top of the output folder and
    drop every other attempt's; with no chosen attempt, no artifact is left at all."""
    if attempt is not None:
        for item in attempt.workdir.iterdir():
            shutil.move(str(item), workdir / item.name)
        for a in attempt.state.artifacts:
            a.path = workdir / a.path.relative_to(attempt.workdir)
    for sub in workdir.glob("attempt-*"):
        shutil.rmtree(sub, ignore_errors=True)


def budget_failure(attempts: list[Attempt], budget: float, adjustable: bool,
                   validation_samples: int | None = None) -> BudgetError:
    tried = "; ".join(f"strength {a.strength:.3g}: {a.drop} points lost" for a in attempts)
    fix = ("loosen max_accuracy_drop, compress less, or add a distill pass if the recipe has none"
           if adjustable else
           "no pass in the recipe can be scaled back (prune, sparsify); loosen max_accuracy_drop "
           "or change the recipe")
    # One sample more or less is the smallest drop a validation split can measure: when that is
    # above the budget, every attempt that changes one decision fails (the probe: 5 samples).
    if validation_samples and budget > 0 and 100.0 / validation_samples > budget:
        fix = (f"the validation split has {validation_samples} samples, so one sample is "
               f"{100.0 / validation_samples:.3g} points, more than the budget: give at least "
               f"{int(-(-100 // budget))} validation samples (x_val/y_val), or {fix}")
    return BudgetError(f"accuracy budget of {budget} points not met ({tried}); {fix}. "
                       "The report in --out shows every attempt")


def budget_summary(budget: float | None, attempts: list[Attempt], best: Attempt | None) -> dict[str, Any]:
    return {"max_accuracy_drop": budget, "enforced": budget is not None,
            "met": best is not None, "chosen_strength": None if best is None else best.strength,
            "attempts": [a.summary() for a in attempts]}
