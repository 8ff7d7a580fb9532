"""Recipe files (YAML) -> validated pydantic models -> a Pipeline.

    name: my-recipe
    seed: 0
    max_accuracy_drop: 1.0      # points of validation accuracy we may lose (optional)
    passes:
      - pass: prune
        macs: 0.5
        when: labelled          # optional: run only when labelled data is given (also: data, always)
      - pass: quantize
        precisions: [int8]
      - pass: export
      - pass: verify

Every target carries a default recipe of this shape; `--recipe FILE` replaces it. An unknown
key or a wrong type fails with the file, the key and the reason, before any work.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgesparse.errors import ECHO_LIMIT, UserError, describe_validation_error
from edgesparse.passes import load_builtin_passes
from edgesparse.pipeline import TEACHER, Pass, Pipeline, StrictNumbers


class RecipeFile(StrictNumbers):
    """The top level of a recipe; pass entries are validated against the pass registry."""

    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    description: str = ""
    seed: int = 0
    max_accuracy_drop: float | None = Field(
        None, description="points of validation accuracy the final artifact may lose against the imported "
                          "model; default 1.0 when labelled data is given")
    max_backoff_steps: int = Field(3, ge=0, le=10, description="bisection steps of the budget back-off")
    passes: list[Any]          # entries are checked against the pass registry in parse_recipe

    @field_validator("max_accuracy_drop")
    @classmethod
    def _budget_is_a_number(cls, v):
        if v is not None and (math.isnan(v) or v < 0):
            raise ValueError("must be a non-negative number of accuracy points, e.g. 1.0")
        return v


# Passes a recipe may hold once: the artifact is made in these steps, and a second one would
# quantize an int8 model again or overwrite the first export.
ONCE = {"import": "imported", "quantize": "quantized", "export": "exported"}

WHEN = ("always", "data", "labelled")   # a pass entry's `when:` — run it only with real / labelled data


class Recipe:
    def __init__(self, spec: RecipeFile, passes: list[Pass], origin: str, when: list[str] | None = None):
        self.spec = spec
        self.passes = passes
        self.origin = origin
        self.when = when or ["always"] * len(passes)

    def for_data(self, real: bool, labelled: bool) -> tuple["Recipe", list[str]]:
        """The passes whose `when:` holds for this data, and the names of those left out.

        Default recipes mark compression passes `when: labelled`: without labels nothing can
        check that pruning kept the accuracy, so a build without data only quantizes."""
        ok = {"always": True, "data": real, "labelled": labelled}
        kept = [p for p, w in zip(self.passes, self.when) if ok[w]]
        skipped = [p.name for p, w in zip(self.passes, self.when) if not ok[w]]
        return Recipe(self.spec, kept, self.origin), skipped

    def for_model(self, model, target) -> tuple["Recipe", list[str]]:
        """A target's default recipe fitted to the model (`Pass.for_model`), and one note per
        change. A pass that learns from the imported model (a distill) is left out with the
        model-changing passes before it when none of them is left: it would only distil the
        model into itself."""
        kept, when, notes = [], [], []
        left_out, left_why = [], ""     # the passes the last note leaves out, and why
        for p, w in zip(self.passes, self.when):
            fitted, why = p.for_model(model, target)
            if fitted is not None and TEACHER in p.needs and left_out and not any(q.changes_model for q in kept):
                left_out.append(p.name)                     # it goes with them, in their note
                notes[-1] = f"skipped {', '.join(left_out)} from {self.origin}: {left_why}"
                continue
            if fitted is None:
                left_out, left_why = [p.name], why
                notes.append(f"skipped {p.name} from {self.origin}: {why}")
                continue
            if why:
                notes.append(f"{p.name} from {self.origin}: {why}")
            kept.append(fitted)
            when.append(w)
        return Recipe(self.spec, kept, self.origin, when), notes

    @property
    def name(self) -> str:
        return self.spec.name

    def pipeline(self) -> Pipeline:
        return Pipeline(self.passes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "origin": self.origin,
            "seed": self.spec.seed,
            "max_accuracy_drop": self.spec.max_accuracy_drop,
            "max_backoff_steps": self.spec.max_backoff_steps,
            "passes": [{"pass": p.name, **p.config.model_dump(mode="json")} for p in self.passes],
        }




def _echo(value: Any) -> str:
    """A value from the recipe, for an error line: strings and numbers as written, bounded;
    a list or mapping only by its type (formatting a nested one can take forever)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"
    return f"a {type(value).__name__}"


def _describe(exc: ValidationError, cls: type[Pass] | None = None) -> str:
    return describe_validation_error(exc, known=list((cls.Config if cls else RecipeFile).model_fields))


def parse_recipe(raw: Any, origin: str) -> Recipe:
    """Validate a recipe mapping; `origin` (a file name) prefixes every error."""
    if not isinstance(raw, dict):
        raise UserError(f"{origin}: a recipe is a mapping with a 'passes' list; see docs/recipes.md")
    try:
        spec = RecipeFile(**raw)
    except ValidationError as exc:
        raise UserError(f"{origin}: {_describe(exc)}") from None
    registry = load_builtin_passes()
    passes: list[Pass] = []
    when: list[str] = []
    for i, entry in enumerate(spec.passes):
        where = f"{origin}: passes[{i}]"
        if not isinstance(entry, dict) or "pass" not in entry:
            raise UserError(f"{where}: each entry needs a 'pass' key naming the pass, e.g. '- pass: quantize'")
        params = dict(entry)
        name = params.pop("pass")
        when.append(params.pop("when", "always"))
        # Types first, and never echo a value whole: a YAML alias bomb is a few hundred bytes that
        # expand to gigabytes the moment they are formatted.
        if not isinstance(when[-1], str) or when[-1] not in WHEN:
            raise UserError(f"{where}: when: {_echo(when[-1])} is not one of {', '.join(WHEN)}")
        cls = registry.get(name) if isinstance(name, str) else None
        if cls is None:
            raise UserError(f"{where}: unknown pass {_echo(name)}; known passes: {', '.join(sorted(registry))}")
        try:
            passes.append(cls(cls.Config(**params)))
            passes[-1].recipe_index = i
        except ValidationError as exc:
            raise UserError(f"{where} ({name}): {_describe(exc, cls)}") from None
    if not passes:
        raise UserError(f"{origin}: 'passes' is empty, so nothing would be built; list the passes "
                        "to run, e.g. '- pass: quantize', or leave --recipe out for the target's default")
    for name in ONCE:
        at = [i for i, p in enumerate(passes) if p.name == name]
        if len(at) > 1:
            raise UserError(f"{origin}: passes[{at[0]}] and passes[{at[1]}] are both '{name}'; an "
                            f"artifact is {ONCE[name]} once, so keep one of them")
    return Recipe(spec, passes, origin, when)


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error: YAML keeps the last
    one silently, so `macs: 0.5` followed by `macs: 0.9` would build something nobody meant."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)):
            continue                    # an unhashable key: the recipe checks refuse it later
        if key in seen:
            raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: the key {str(key)[:40]!r} is "
                                "given twice in one mapping; keep the one you mean")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise UserError(f"recipe {path} does not exist") from None
    except _DuplicateKey as exc:
        raise UserError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read recipe {path}: {first}; give a YAML file") from None
    return parse_recipe(raw, str(path))


def recipe_for(target, path: str | Path | None) -> Recipe:
    """The recipe file if given, else the target's default recipe."""
    if path is not None:
        return load_recipe(path)
    return parse_recipe(target.recipe, f"default recipe of target {target.name}")
