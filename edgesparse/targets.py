"""Target profiles: targets/*.yaml -> Target.

A target sets the defaults (artifact formats and precisions, threads, the default recipe), the
constraints an artifact must meet (operators, static shapes, I/O dtypes, memory), and the
hardware figures a latency/energy estimate needs. `--target` takes a built-in name or a path to
a YAML file of the same shape.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt,
                      ValidationError, field_validator)

from edgesparse.errors import UserError, describe_validation_error
from edgesparse.files import NAME_PART, NAME_PART_RULE


class _Strict(BaseModel):
    # Bounds are checked when the target loads, before any work: a negative thread count or a NaN
    # power figure would otherwise surface as an internal error in the middle of a build.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Hardware(_Strict):
    """Figures for the roofline estimate; each one carries its source in the YAML comments."""

    device: str
    cores: PositiveInt
    clock_ghz: PositiveFloat
    peak_fp32_gflops: PositiveFloat
    peak_int8_gops: PositiveFloat
    mem_bandwidth_gbs: PositiveFloat
    memory_mb: PositiveInt
    idle_power_w: NonNegativeFloat
    active_power_w: NonNegativeFloat
    accelerator: str | None = None
    accelerator_peak_int8_gops: PositiveFloat | None = None


class Constraints(_Strict):
    """What every artifact for this target must satisfy; verify checks each one."""

    static_shapes: bool = False             # no dynamic dims anywhere (NNAPI, Edge TPU)
    batch: PositiveInt | None = 1           # fixed batch size of exported artifacts
    int8_io: list[Literal["float32", "int8", "uint8"]] = ["float32"]   # allowed I/O of int8 artifacts
    operator_set: Literal["litert-builtin", "nnapi", "edgetpu"] = "litert-builtin"
    max_effective_dims: PositiveInt | None = None     # Edge TPU: tensors with at most 3 non-1 dims
    parameter_cache_bytes: PositiveInt | None = None  # Edge TPU on-chip parameter cache (~8 MiB)
    max_model_bytes: PositiveInt | None = None        # artifacts larger than this are flagged in the warnings


class Variant(_Strict):
    """One artifact the target's default recipe produces, or offers on request."""

    format: Literal["tflite", "onnx"]
    precision: Literal["int8", "fp32", "fp16", "dynamic"]
    note: str = ""


class Target(_Strict):
    # The name becomes part of file and folder names (out/<model>-<target>/, release tarballs):
    # a slug, so a target file cannot send the output elsewhere ("../../x" climbed out of out/).
    name: str
    title: str
    runtimes: list[Literal["litert", "onnxruntime"]] = Field(min_length=1)
    threads: PositiveInt
    simd_width: PositiveInt = Field(1, description="fp32 lanes of the SIMD unit; pruned channel counts round to it")
    delegate: str | None = None             # the accelerator delegate a deployment would use
    deprecation: str | None = None          # loud notice printed with every build for this target
    notes: list[str] = []
    constraints: Constraints
    hardware: Hardware
    variants_on_request: list[Variant] = []  # extra artifacts a recipe may ask for
    recipe: dict[str, Any]                  # the default recipe (same schema as a recipe file)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not NAME_PART.fullmatch(v):
            raise ValueError(f"{v[:40]!r} cannot be part of a file name; use {NAME_PART_RULE}, e.g. rpi4")
        return v

    @property
    def formats(self) -> list[str]:
        return ["tflite"] + (["onnx"] if "onnxruntime" in self.runtimes else [])


def targets_dir() -> Path:
    """Built-in profiles: inside the wheel (edgesparse/_targets) or the source tree (targets/)."""
    packaged = Path(__file__).parent / "_targets"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "targets"


def builtin_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


@lru_cache(maxsize=None)
def _load_file(path: Path) -> Target:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"cannot read target file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"target file {path} is not UTF-8 text (byte {exc.start} is invalid); "
                        "save it as UTF-8 YAML") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read target file {path}: {first}; give a YAML file") from None
    if not isinstance(raw, dict):
        raise UserError(f"target file {path} is not a mapping of keys; see targets/rpi4.yaml for the shape")
    try:
        return Target(**raw)
    except ValidationError as exc:
        raise UserError(f"target file {path}: {describe_validation_error(exc)}; see targets/rpi4.yaml for the shape") from None


def load_target(name_or_path: str | Path) -> Target:
    """A built-in target by name (rpi4, android-nnapi, coral) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise UserError(f"target file {path} does not exist")
        return _load_file(path.resolve())
    builtin = targets_dir() / f"{text}.yaml"
    if not builtin.is_file():
        raise UserError(f"unknown target {text!r}; choose one of {', '.join(builtin_targets())} "
                        "or give the path of a target YAML file")
    return _load_file(builtin)
