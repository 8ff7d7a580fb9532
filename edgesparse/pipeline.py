"""The pass contract, the registry, and the Pipeline that validates then runs a recipe.

Modelled on TVM's pass infrastructure: a pass is a small object with a name, a typed config,
what it needs and what it produces, and one method `run(state, ctx) -> state`. Timing, metrics
and progress are *instruments* around `run`, never code inside a pass. Passes do not print.

The whole plan is checked before any work (`Pipeline.validate`): an int8 export without
calibration data, a verify with nothing exported, or a pass that needs labels on unlabelled
data fails in the first second, not after ten minutes of fine-tuning.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Protocol

from pydantic import BaseModel, ConfigDict

from edgesparse.state import ModelState

# What a pass may need. Data needs are checked against the data the user gave;
# state needs ("artifacts", "quant_plan") against what earlier passes produce.
LABELS = "labels"              # labelled training/validation data
CALIBRATION = "calibration"    # input samples (real, or synthetic with a loud warning)
TEACHER = "teacher"            # a reference model to learn from (the imported model by default)
ARTIFACTS = "artifacts"        # exported files
DATA_NEEDS = {LABELS, CALIBRATION, TEACHER}


class PassConfig(BaseModel):
    """Base of every pass config: unknown keys are errors (a recipe typo names the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- progress


class ProgressTask(Protocol):
    def advance(self, n: float = 1) -> None: ...
    def update(self, **fields: Any) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    """How a pass reports long work without printing. The CLI passes a rich implementation."""

    def task(self, description: str, total: float | None = None) -> ProgressTask: ...


class _SilentTask:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class SilentProgress:
    def task(self, description: str, total: float | None = None) -> ProgressTask:
        return _SilentTask()


# ----------------------------------------------------------------------------- contexts


@dataclass
class DataInfo:
    """What validation needs to know about the data, without loading a model."""

    real: bool                      # False when calibration data is synthetic
    labelled: bool
    source: str = "synthetic"
    input_shape: tuple[int, ...] | None = None   # per-sample shape of the model's input
    num_classes: int | None = None               # width of the model's output


@dataclass
class PlanContext:
    """Everything `Pass.check` may look at before any work starts."""

    target: Any                     # edgesparse.targets.Target
    data: DataInfo
    passes: list["Pass"]
    index: int                      # position of the pass being checked

    def earlier(self) -> list["Pass"]:
        return self.passes[: self.index]

    def later(self) -> list["Pass"]:
        return self.passes[self.index + 1:]


@dataclass
class RunContext:
    """What a running pass may use: the target, the data, a private work folder, progress."""

    target: Any                     # edgesparse.targets.Target
    data: Any                       # edgesparse.data.Dataset
    workdir: Path                   # the (temporary) output folder; artifacts go here
    seed: int = 0
    progress: Progress = field(default_factory=SilentProgress)
    options: dict[str, Any] = field(default_factory=dict)   # build-wide options (e.g. control runs)


# ----------------------------------------------------------------------------- passes


class Pass:
    """Base class. Subclasses set the class attributes and implement `run`.

    name:           the key used in recipes.
    Config:         a PassConfig subclass (pydantic): the pass's parameters.
    needs:          subset of {LABELS, CALIBRATION, TEACHER, ARTIFACTS}.
    produces:       what later passes may rely on (e.g. {ARTIFACTS}).
    changes_model:  True when the pass edits the working model (metrics are re-measured after it).
    stage:          passes run in non-decreasing stage order: 0 import, 1 model transforms,
                    2 quantize, 3 export, 4 verify.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]] = PassConfig
    needs: ClassVar[frozenset[str]] = frozenset()
    produces: ClassVar[frozenset[str]] = frozenset()
    changes_model: ClassVar[bool] = False
    stage: ClassVar[int] = 1
    summary: ClassVar[str] = ""

    def __init__(self, config: PassConfig | None = None, **params: Any):
        self.config = config if config is not None else self.Config(**params)

    def check(self, plan: PlanContext) -> list[str]:
        """Extra checks against the target and data, before any work. Return problems."""
        return []

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:  # pragma: no cover - abstract
        raise NotImplementedError

    def scaled(self, strength: float) -> "Pass | None":
        """A gentler copy of this pass at `strength` in (0, 1) for the accuracy-budget back-off
        (1 = as configured, towards 0 = no compression). None: this pass cannot be scaled."""
        return None

    def __repr__(self) -> str:
        return f"{self.name}({self.config.model_dump()})"


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: the one registry. CLI help, recipe validation and docs read it."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in PASSES and PASSES[cls.name] is not cls:
        raise TypeError(f"two passes are named {cls.name!r}")
    PASSES[cls.name] = cls
    return cls


# ----------------------------------------------------------------------------- instruments


@dataclass
class PassRecord:
    """What the report says about one pass run."""

    name: str
    config: dict[str, Any]
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    step: str | None = None        # e.g. "back-off 2" when the pipeline is re-run by a budget search


class Instrument:
    """Observes pass runs. Override what you need; instruments must not change the state."""

    def before_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        pass

    def after_pass(self, p: Pass, state: ModelState, ctx: RunContext, record: PassRecord) -> None:
        pass


class MetricsInstrument(Instrument):
    """After import (the baseline) and after every pass that changes the model: params, MACs
    and (with labels) Keras accuracy."""

    def __init__(self, measure: Callable[[ModelState, RunContext], dict[str, Any]]):
        self.measure = measure

    def after_pass(self, p: Pass, state: ModelState, ctx: RunContext, record: PassRecord) -> None:
        if p.changes_model or p.stage == 0:
            record.metrics.update(self.measure(state, ctx))


class ProgressInstrument(Instrument):
    """One progress line per pass, so the user sees where the build is."""

    def __init__(self, progress: Progress, total: int):
        self.progress = progress
        self.overall = progress.task("build", total=total)

    def before_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        self.overall.update(description=f"pass: {p.name}")

    def after_pass(self, p: Pass, state: ModelState, ctx: RunContext, record: PassRecord) -> None:
        self.overall.advance(1)


# ----------------------------------------------------------------------------- pipeline


class Pipeline:
    """An ordered list of passes; composition is itself a pass-shaped object."""

    def __init__(self, passes: Iterable[Pass]):
        self.passes = list(passes)

    def validate(self, target: Any, data: DataInfo) -> list[str]:
        """Every problem with this plan, found before any work. Empty list: go."""
        problems: list[str] = []
        produced: set[str] = set()
        last_stage = -1
        for i, p in enumerate(self.passes):
            where = f"pass {i + 1} ({p.name})"
            if p.stage < last_stage:
                problems.append(f"{where} cannot run after a later-stage pass; "
                                "order passes as: prune/sparsify/distill, quantize, export, verify")
            last_stage = max(last_stage, p.stage)
            if LABELS in p.needs and not data.labelled:
                problems.append(f"{where} needs labelled data; pass --data with x/y labels "
                                "or remove the pass from the recipe")
            for need in p.needs - DATA_NEEDS:
                if need not in produced:
                    problems.append(f"{where} needs {need} from an earlier pass, and none produces it")
            plan = PlanContext(target=target, data=data, passes=self.passes, index=i)
            problems.extend(f"{where}: {msg}" for msg in p.check(plan))
            produced |= p.produces
        return problems

    def run(self, state: ModelState, ctx: RunContext,
            instruments: Iterable[Instrument] = (), step: str | None = None
            ) -> tuple[ModelState, list[PassRecord]]:
        instruments = list(instruments)
        records: list[PassRecord] = []
        for p in self.passes:
            record = PassRecord(name=p.name, config=p.config.model_dump(mode="json"), step=step)
            for ins in instruments:
                ins.before_pass(p, state, ctx)
            started = time.perf_counter()
            state = p.run(state, ctx)
            record.seconds = round(time.perf_counter() - started, 3)
            for ins in instruments:
                ins.after_pass(p, state, ctx, record)
            records.append(record)
        return state, records
