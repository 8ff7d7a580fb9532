"""The import pass: check the model is something every later pass can work on (one input with a
fully known per-sample shape, one output, a functional graph), record its facts, and keep an
untouched copy as the reference (teacher, baseline).

Loading model files is the frontends' job (edgesparse/frontends/); the build loads the model
before the pipeline runs.
"""
from __future__ import annotations

from typing import Any

from edgesparse.frontends.keras import as_functional, check_working_form
from edgesparse.graph.functional import clone_with_weights, output_activation
from edgesparse.graph.stats import model_summary, uncounted_warning
from edgesparse.pipeline import TEACHER, Pass, PassConfig, RunContext, Stage, register_pass
from edgesparse.state import ImportFacts, ModelState


def describe_model(model) -> dict[str, Any]:
    input_shape = [int(d) for d in model.inputs[0].shape[1:]]
    output_shape = [None if d is None else int(d) for d in model.outputs[0].shape[1:]]
    return {
        **model_summary(model),
        "input_shape": input_shape,
        "input_dtype": model.inputs[0].dtype.name,
        "output_shape": output_shape,
        "output_activation": output_activation(model),
        "layers": len(model.layers),
    }


# ----------------------------------------------------------------------------- the pass


class ImportConfig(PassConfig):
    """The import pass has no parameters; the model is loaded before the pipeline starts."""


@register_pass
class ImportPass(Pass):
    name = "import"
    Config = ImportConfig
    stage = Stage.IMPORT   # the metrics measured after import are the baseline (RecordsInstrument)
    produces = frozenset({TEACHER})   # state.reference, the model as imported
    changes_model = False
    summary = "check the model is a single-input single-output functional model; record its facts"

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        where = state.source.get("path", state.name)
        # Converting a Sequential only re-wraps the same layers: outputs do not change.
        model, converted = as_functional(state.model, where)
        check_working_form(model, where)
        state.model = model
        if state.reference is None:
            state.reference = clone_with_weights(model)
        source = {k: state.source[k] for k in ("format", "container", "keras_version", "translated", "check")
                  if k in state.source}
        state.record(ImportFacts(**describe_model(model), source=source, converted_to_functional=converted
                                 or bool(state.source.get("converted_to_functional"))))
        lower_bound = uncounted_warning(model)
        if lower_bound:
            state.warn(lower_bound)
        return state
