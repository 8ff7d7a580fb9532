"""ModelState: the working model and everything known about it.

The model inside the pipeline is a functional tf_keras model (DESIGN.md, "The working form").
Passes return a ModelState; they record facts on it rather than printing.

What one pass tells a later one is typed: the quantization plan (`QuantPlan`, set by quantize,
read by export), whether the model was trained quantization-aware (`qat_trained`, set by qat,
carried into the plan by quantize), and the per-pass facts (`Facts` subclasses recorded with
`state.record(facts)`). A free dict hid a bug here once (REVIEW.md F2): quantize replaced the
dict in which qat had set its flag, so export never knew the model was QAT-trained.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar


@dataclass
class Artifact:
    """One exported file, and what verify found out about it."""

    path: Path                  # absolute path while building; reported relative to the out folder
    format: str                 # "tflite" | "onnx"
    precision: str              # "fp32" | "fp16" | "dynamic" | "int8"
    io_dtype: str = "float32"   # dtype of the model's input/output tensors
    note: str = ""              # why this variant exists (e.g. "GPU-delegate variant")
    metrics: dict[str, Any] = field(default_factory=dict)   # accuracy, top1_agreement, max_abs_diff, ...
    checks: dict[str, Any] = field(default_factory=dict)    # target constraint checks (ops, shapes, dtypes)

    @property
    def name(self) -> str:
        return self.path.name


# ----------------------------------------------------------------------------- quantization plan


@dataclass(frozen=True)
class Calibration:
    samples: int                # calibration samples the int8 ranges come from
    source: str                 # "real" | "synthetic"


@dataclass(frozen=True)
class QuantPlan:
    """What export builds: one artifact per precision, with this int8 I/O and calibration.

    qat: the model carries ranges learned in quantization-aware training; export then builds
    int8 only, from those ranges (no re-calibration, no second set of QDQ nodes in ONNX).
    """

    precisions: tuple[str, ...]
    io: str = "float32"
    calibration: Calibration = Calibration(0, "real")
    qat: bool = False


# ----------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Facts:
    """Base of a pass's typed facts. Subclasses name their pass; `as_dict()` is what report.json
    holds under facts[pass_name] (its shape is part of the report schema)."""

    pass_name: ClassVar[str]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


F = TypeVar("F", bound=Facts)


@dataclass(frozen=True)
class ImportFacts(Facts):
    pass_name: ClassVar[str] = "import"
    input_shape: list[int]
    output_shape: list[int | None]
    input_dtype: str
    output_activation: str
    layers: int
    params: int
    macs: int
    converted_to_functional: bool
    source: dict[str, Any] = field(default_factory=dict)   # format, container, translation facts

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        return {**d.pop("source"), **d}      # report.json keeps the source facts at the top level


@dataclass(frozen=True)
class QuantizeFacts(Facts):
    pass_name: ClassVar[str] = "quantize"
    precisions: list[str]
    io: str
    calibration_samples: int
    calibration_source: str
    qat: bool = False


@dataclass(frozen=True)
class QATFacts(Facts):
    pass_name: ClassVar[str] = "qat"
    epochs_run: int
    preserve_sparsity: bool
    sparsity_before: float
    sparsity_after: float
    labels_used: bool
    teacher: str


@dataclass(frozen=True)
class Skipped:
    format: str
    precision: str
    reason: str


@dataclass(frozen=True)
class ExportFacts(Facts):
    pass_name: ClassVar[str] = "export"
    artifacts: list[str]
    skipped: list[Skipped]
    batch: int | None
    opset: int | None


@dataclass(frozen=True)
class VerifyFacts(Facts):
    pass_name: ClassVar[str] = "verify"
    data: str                                   # which split the artifacts ran on
    n_samples: int
    keras_accuracy: float | None                # the Keras model being exported, percent
    artifacts: dict[str, dict[str, Any]]        # name -> accuracy, top1_agreement, max_abs_diff
    failed_checks: dict[str, list[str]]         # name -> target checks that failed


# ----------------------------------------------------------------------------- the state


@dataclass
class ModelState:
    """What a pass receives and returns.

    `model` is the current working model; `reference` is the model as imported, kept untouched
    (the teacher for distillation, the baseline for accuracy budgets and output agreement).
    `facts` is the report's view of what passes recorded (plain dicts, keyed by pass name);
    passes read each other's typed facts with `fact(Kind)`.
    """

    model: Any                              # tf_keras.Model
    name: str
    reference: Any = None                   # tf_keras.Model as imported (never mutated)
    source: dict[str, Any] = field(default_factory=dict)   # path, format, how it was imported
    artifacts: list[Artifact] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    quant_plan: QuantPlan | None = None     # set by the quantize pass, followed by export
    sparse_storage: bool = False            # set by sparsify with a block pattern: export stores weights sparse
    qat_trained: bool = False               # set by the qat pass: the model holds learned int8 ranges
    typed_facts: dict[type, Facts] = field(default_factory=dict, repr=False)

    def record(self, facts: Facts | str, **values: Any) -> None:
        """Record what a pass learned; it goes into the report under that pass.

        Typed: `state.record(QATFacts(...))`. Passes whose facts have no type yet record
        keywords under their name: `state.record("prune", macs_after=...)`."""
        if isinstance(facts, Facts):
            self.typed_facts[type(facts)] = facts
            name, values = facts.pass_name, facts.as_dict()
        else:
            name = facts
        self.facts.setdefault(name, {}).update(values)

    def fact(self, kind: type[F]) -> F | None:
        """The typed facts a pass recorded, or None when it did not run."""
        found = self.typed_facts.get(kind)
        return found if isinstance(found, kind) else None

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
