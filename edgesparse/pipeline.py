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
import types
import typing
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from edgesparse.state import ModelState

if TYPE_CHECKING:
    from edgesparse.data import Dataset
    from edgesparse.targets import Target

# What a pass may need. The data need is checked against the data the user gave; state needs
# against what earlier passes produce. There is no "calibration" need: every build has
# calibration inputs (real ones, or synthetic ones with a warning), so nothing could fail it;
# whether synthetic inputs are good enough is each pass's own `check` (distill, qat, sparsify).
LABELS = "labels"              # labelled training/validation data
TEACHER = "teacher"            # a reference model to learn from: the model as imported
ARTIFACTS = "artifacts"        # exported files
QUANT_PLAN = "quant_plan"      # state.quant_plan: what export builds
DATA_NEEDS = {LABELS}

# How to satisfy a state need nothing earlier produces, in the words of a recipe.
NEED_FIXES = {
    TEACHER: "the import pass keeps the imported model as the teacher; run the pass after import",
    ARTIFACTS: "add an export pass before it",
    QUANT_PLAN: "add a quantize pass before it (precisions: [fp32] for float artifacts only)",
}


class Stage(IntEnum):
    """Passes run in non-decreasing stage order."""

    IMPORT = 0       # the metrics measured after this stage are the baseline
    TRANSFORM = 1    # prune, sparsify, distill: edit or retrain the working model
    QUANTIZE = 2     # qat, quantize: decide and prepare the artifacts' precisions
    EXPORT = 3
    VERIFY = 4


class StrictNumbers(BaseModel):
    """A recipe's mappings: a number must be written as a number."""

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        # Pydantic's lax mode reads `macs: true` as 1.0 and `epochs: "3"` as 3: a recipe that says
        # something else than it means must be refused, not reinterpreted.
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is None or not isinstance(value, (bool, str)):
                    continue
                kinds = _plain_types(field.annotation)
                if kinds & {int, float} and type(value) not in kinds:
                    what = str(value).lower() if isinstance(value, bool) else f"the text {value[:40]!r}"
                    raise ValueError(f"{key}: {what} is not a number; write the number unquoted")
        return data


class PassConfig(StrictNumbers):
    """Base of every pass config: unknown keys are errors (a recipe typo names the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _plain_types(annotation: Any) -> set[type]:
    """int | float | None -> {int, float, NoneType}; Literal and other forms add nothing."""
    if isinstance(annotation, type):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_plain_types(a) for a in typing.get_args(annotation)))
    return set()


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

    target: "Target"
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

    target: "Target"
    data: "Dataset"
    workdir: Path                   # the (temporary) output folder; artifacts go here
    seed: int = 0
    progress: Progress = field(default_factory=SilentProgress)


# ----------------------------------------------------------------------------- passes


class Pass:
    """Base class. Subclasses set the class attributes and implement `run`.

    name:           the key used in recipes.
    Config:         a PassConfig subclass (pydantic): the pass's parameters.
    needs:          subset of {LABELS, TEACHER, ARTIFACTS, QUANT_PLAN}.
    produces:       what later passes may rely on (e.g. {ARTIFACTS}).
    changes_model:  True when the pass edits the working model (metrics are re-measured after it).
    stage:          a `Stage`; passes run in non-decreasing stage order.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]] = PassConfig
    needs: ClassVar[frozenset[str]] = frozenset()
    produces: ClassVar[frozenset[str]] = frozenset()
    changes_model: ClassVar[bool] = False
    stage: ClassVar[Stage] = Stage.TRANSFORM
    summary: ClassVar[str] = ""
    # Its place in the recipe file (passes[i]), for error lines; None for a pass edgesparse adds
    # (the import pass) or one made in code. parse_recipe sets it on the instance.
    recipe_index: int | None = None

    def __init__(self, config: PassConfig | None = None, **params: Any):
        self.config = config if config is not None else self.Config(**params)

    @property
    def label(self) -> str:
        """How an error line names this pass: as the recipe numbers it."""
        return f"passes[{self.recipe_index}] ({self.name})" if self.recipe_index is not None \
            else f"the {self.name} pass"

    def check(self, plan: PlanContext) -> list[str]:
        """Extra checks against the target and data, before any work. Return problems."""
        return []

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:  # pragma: no cover - abstract
        """Do the work and return the state.

        The mutation contract: a pass may change `state` and mutate `state.model` in place
        (train it, replace its weights) and return the same object; it must never touch
        `state.reference` or any model it did not get from the state. The pipeline's owner
        keeps the copies it needs: the build clones the imported model before the first
        attempt and starts every back-off attempt from a fresh clone."""
        raise NotImplementedError

    def for_model(self, model, target: Any) -> "tuple[Pass | None, str | None]":
        """This pass of a target's default recipe fitted to `model`: itself and no note, or a
        milder copy or None (left out) and one line saying why and how to ask for it. A default
        recipe is written for every model, so it gives way where a model cannot meet it; a
        user's recipe is never fitted (its pass fails instead, naming the key to change)."""
        return self, None

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
    """Observes pass runs (TVM's PassInstrument). Override what you need; instruments must not
    change the state. Instruments nest like context managers: `before_pass` hooks run in list
    order, `after_pass` hooks in reverse, so the last instrument sits closest to the pass.
    A nested pipeline is observed pass by pass, not as one pass."""

    def before_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        pass

    def after_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        pass


class RecordsInstrument(Instrument):
    """The report's record of every pass run: config, seconds inside `run` (TVM's
    PassTimingInstrument; list it last so no other hook is timed), and after import (the baseline) and every pass that changes the
    model, the metrics `measure` gives (params, MACs and, with labels, Keras accuracy)."""

    def __init__(self, measure: Callable[[ModelState, RunContext], dict[str, Any]] | None = None,
                 step: str | None = None, baseline: dict[str, Any] | None = None):
        self.measure = measure
        self.step = step
        # The import record's metrics when the caller already measured this very model (a plan run
        # again and again starts from the same weights): measuring them again only costs time.
        self.baseline = baseline
        self.records: list[PassRecord] = []
        self._started = 0.0

    def before_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        self._started = time.perf_counter()

    def after_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        record = PassRecord(name=p.name, config=p.config.model_dump(mode="json"), step=self.step,
                            seconds=round(time.perf_counter() - self._started, 3))
        if p.stage == Stage.IMPORT and self.baseline is not None:
            record.metrics.update(self.baseline)
        elif self.measure is not None and (p.changes_model or p.stage == Stage.IMPORT):
            record.metrics.update(self.measure(state, ctx))
        self.records.append(record)


class ProgressInstrument(Instrument):
    """One progress line per pass, so the user sees where the build is."""

    def __init__(self, progress: Progress, total: int):
        self.progress = progress
        self.overall = progress.task("build", total=total)

    def before_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        self.overall.update(description=f"pass: {p.name}")

    def after_pass(self, p: Pass, state: ModelState, ctx: RunContext) -> None:
        self.overall.advance(1)


# ----------------------------------------------------------------------------- pipeline


class PipelineConfig(PassConfig):
    """A pipeline's parameters are its passes' configs."""


class Pipeline(Pass):
    """An ordered list of passes, and itself a pass: `run(state, ctx) -> state`, with the needs
    its passes do not produce for each other, and what they produce."""

    name = "pipeline"
    Config = PipelineConfig

    def __init__(self, passes: Iterable[Pass]):
        super().__init__()
        self.passes = list(passes)
        produced: set[str] = set()
        needs: set[str] = set()
        for p in self.passes:
            needs |= set(p.needs) - produced
            produced |= p.produces
        self.needs = frozenset(needs)
        self.produces = frozenset(produced)
        self.changes_model = any(p.changes_model for p in self.passes)
        self.stage = min((p.stage for p in self.passes), default=Stage.TRANSFORM)

    def validate(self, target: Any, data: DataInfo) -> list[str]:
        """Every problem with this plan, found before any work. Empty list: go."""
        problems: list[str] = []
        produced: set[str] = set()
        last_stage = -1
        for i, p in enumerate(self.passes):
            where = p.label
            if p.stage < last_stage:
                problems.append(f"{where} cannot run after a later-stage pass; "
                                "order passes as: [import,] prune/sparsify/distill, quantize, export, "
                                "verify (import runs first, added when left out)")
            last_stage = max(last_stage, p.stage)
            if LABELS in p.needs and not data.labelled:
                problems.append(f"{where} needs labelled data; pass --data with x/y labels "
                                "or remove the pass from the recipe")
            for need in sorted(p.needs - DATA_NEEDS):
                if need not in produced:
                    fix = NEED_FIXES.get(need, "add a pass that produces it before this one")
                    problems.append(f"{where} needs {need} from an earlier pass, and none produces it; {fix}")
            plan = PlanContext(target=target, data=data, passes=self.passes, index=i)
            problems.extend(f"{where}: {msg}" for msg in p.check(plan))
            produced |= p.produces
        return problems

    def run(self, state: ModelState, ctx: RunContext, instruments: Iterable[Instrument] = ()) -> ModelState:
        instruments = list(instruments)
        for p in self.passes:
            if isinstance(p, Pipeline):
                state = p.run(state, ctx, instruments)
                continue
            for ins in instruments:
                ins.before_pass(p, state, ctx)
            state = p.run(state, ctx)
            for ins in reversed(instruments):
                ins.after_pass(p, state, ctx)
        return state

    def __repr__(self) -> str:
        return f"Pipeline({self.passes!r})"
