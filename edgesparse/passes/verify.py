"""verify: run every artifact in its real runtime, measure it, and check it against the target.

Per artifact (in `artifact.metrics`): accuracy on the validation split (labelled data only),
agreement (top-1; the p > 0.5 decision of a single sigmoid output; none for a single linear
output, where argmax would always agree) and max absolute output difference against the Keras
model being exported, bytes, sha256 and the number of samples. Target constraints (static shapes, batch, I/O dtypes,
operators and their versions, Edge TPU mapping and parameter cache) go into `artifact.checks`.

A constraint that fails is recorded and warned about, not raised: the report shows it. An
artifact that does not load or run at all is a failed build (UserError).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from edgesparse.checks import COMPILER_NOT_RUN, check_artifact
from edgesparse.errors import UserError
from edgesparse.train.metrics import predict
from edgesparse.graph.functional import output_activation
from edgesparse.pipeline import ARTIFACTS, Pass, PassConfig, RunContext, Stage, register_pass
from edgesparse.runtime.artifact import RUNTIME_NAMES, open_artifact
from edgesparse.state import ModelState, VerifyFacts
from edgesparse.files import sha256_file


class VerifyConfig(PassConfig):
    max_samples: int | None = Field(None, ge=1, description="cap on samples run per artifact (default: all)")
    run_compiler: bool = Field(True, description="run edgetpu_compiler when it is on PATH")


def evaluation_inputs(data, max_samples: int | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Validation samples (and labels) when labelled; otherwise calibration inputs, no labels."""
    if data.labelled and data.x_val is not None and data.y_val is not None and len(data.x_val):
        x, y, which = data.x_val, data.y_val, "validation"
    elif data.x_val is not None and len(data.x_val):
        x, y, which = data.x_val, None, "validation (unlabelled)"
    else:
        x, y, which = data.x_calib, None, "calibration inputs"
    if max_samples is not None:
        x = x[:max_samples]
        y = None if y is None else y[:max_samples]
    return np.asarray(x, dtype=np.float32), y, which


REGRESSION = ("none: one linear output (regression, or a single logit) has no class to agree on; "
              "compare max_abs_diff")


def output_metrics(out: np.ndarray, ref: np.ndarray, y: np.ndarray | None, head: str = "logits") -> dict:
    """Accuracy (%), agreement with the reference (%), max |out - ref|.

    Agreement compares decisions: the top-1 class of a head with several outputs; the p > 0.5
    decision of a single sigmoid output. A single linear output has no decision (argmax over one
    value always agrees), so its agreement is None and only the output difference is reported.
    `agreement` in the metrics says which of these was measured."""
    out2, ref2 = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
    single = out2.shape[1] == 1
    if not single:
        agree, kind = np.mean(out2.argmax(1) == ref2.argmax(1)), "top-1"
    elif head == "sigmoid":
        agree, kind = np.mean((out2[:, 0] > 0.5) == (ref2[:, 0] > 0.5)), "decision (p > 0.5)"
    else:
        agree, kind = None, REGRESSION
    metrics = {
        "top1_agreement": None if agree is None else round(float(agree) * 100.0, 3),
        "agreement": kind,
        "max_abs_diff": float(np.max(np.abs(out2 - ref2))) if len(out2) else 0.0,
        "n_samples": int(len(out2)),
    }
    metrics["accuracy"] = top1_accuracy(out2, y)
    return metrics


LOW_AGREEMENT = 90.0     # % of decisions; a sound int8 file of a trained model agrees on ~97-100


def agreement_warning(name: str, metrics: dict, reference: np.ndarray) -> str | None:
    """A warning when a file agrees with the Keras model on few decisions, saying which of two
    causes it is. If the reference's own margin between its two top outputs is smaller than the
    file's output difference, the decisions are near ties (an untrained model's near-uniform
    softmax: the probe of stop 28 saw 0% agreement at max |diff| 0.0016) and agreement says
    little. Up to twice the difference too (the top output may drop by it while the second rises
    by it) when that difference is small against the outputs (an untrained ResNet-50: margin
    0.0022 = its diff, blamed on the conversion); otherwise the conversion changed the decisions."""
    agree = metrics.get("top1_agreement")
    if agree is None or agree >= LOW_AGREEMENT or not len(reference):
        return None
    ref = reference.reshape(len(reference), -1)
    if ref.shape[1] == 1:
        margins = np.abs(ref[:, 0] - 0.5)
    else:
        top2 = np.sort(ref, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
    margin, diff = float(np.median(margins)), float(metrics["max_abs_diff"])
    small = diff <= 0.1 * float(np.max(np.abs(ref)))
    if margin < diff or (margin < 2 * diff and small):
        return (f"{name}: {agree:.2f}% decision agreement with the Keras model, whose own decisions are "
                f"near ties (median margin between its top two outputs {margin:.2g}, within twice this "
                f"file's largest output difference {diff:.2g}; an untrained model?): agreement says little "
                "here, read max_abs_diff")
    return (f"{name}: only {agree:.2f}% decision agreement with the Keras model (its median top-two margin "
            f"{margin:.2g}, this file's largest output difference {diff:.2g}): the conversion changed its "
            "decisions; compare the accuracy column, try the fp32 or dynamic variant, or rerun with --debug "
            "and report it")


def top1_accuracy(out: np.ndarray, y: np.ndarray | None) -> float | None:
    """Top-1 accuracy (%) of outputs against class labels; None without labels or with one output."""
    out2 = out.reshape(len(out), -1)
    if y is None or out2.shape[1] == 1:
        return None
    return round(float(np.mean(out2.argmax(1) == y) * 100.0), 3)


@register_pass
class Verify(Pass):
    name = "verify"
    Config = VerifyConfig
    needs = frozenset({ARTIFACTS})
    stage = Stage.VERIFY
    summary = "run each artifact in LiteRT / ONNX Runtime: accuracy, agreement, target checks"

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        cfg: VerifyConfig = self.config
        target = ctx.target
        x, y, which = evaluation_inputs(ctx.data, cfg.max_samples)
        reference = predict(state.model, x)
        keras_accuracy = top1_accuracy(reference, y)
        head = output_activation(state.model)

        task = ctx.progress.task("verify", total=len(state.artifacts))
        for artifact in state.artifacts:
            task.update(description=f"verify {artifact.name}")
            try:
                loaded = open_artifact(artifact.path, threads=target.threads, fmt=artifact.format)
                out = loaded.predict(x)
            except Exception as exc:
                runtime = RUNTIME_NAMES.get(artifact.format, artifact.format)
                raise UserError(f"{artifact.name} does not run in {runtime}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                                "the export is broken, rerun with --debug and report it") from exc
            metrics = output_metrics(out, reference, y, head)
            metrics.update(bytes=artifact.path.stat().st_size, sha256=sha256_file(artifact.path),
                           data=which, keras_accuracy=keras_accuracy)
            artifact.metrics.update(metrics)
            if (warning := agreement_warning(artifact.name, metrics, reference)) is not None:
                state.warn(warning)
            artifact.checks = check_artifact(artifact.path, artifact.format, artifact.precision, target,
                                             run_compiler=cfg.run_compiler)
            for name, check in artifact.checks.items():
                if check.get("passed") is False:
                    state.warn(f"{artifact.name}: {name} check failed: {check.get('reason')}")
                elif check.get("passed") is None and check.get("reason") == COMPILER_NOT_RUN:
                    state.warn(COMPILER_NOT_RUN)
            task.advance(1)
        task.close()

        if any(a.metrics.get("agreement") == REGRESSION for a in state.artifacts):
            state.warn("the model has one linear output (regression): top-1 agreement means nothing there, "
                       "so each artifact is compared with the Keras model by its output difference only "
                       "(max abs diff)")
        if target.deprecation:
            state.warn(target.deprecation)
        state.record(VerifyFacts(
            data=which, n_samples=int(len(x)), keras_accuracy=keras_accuracy,
            artifacts={a.name: {k: a.metrics.get(k) for k in ("accuracy", "top1_agreement", "max_abs_diff")}
                       for a in state.artifacts},
            failed_checks={a.name: [k for k, v in a.checks.items() if v.get("passed") is False]
                           for a in state.artifacts}))
        return state
