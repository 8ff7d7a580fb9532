"""Every model of the test zoo through the default recipe of every target, every report rendered.

The issue's "make internal errors rare by construction": a zoo model that breaks a pass, the
converter or a report renderer fails here, on a tiny model, instead of in front of a user. Each
model is trained for a few seconds on a small generated task it can learn (class templates plus
noise, a few hundred samples), saved as a .keras file, then built with `edgesparse build` and the
target's default recipe (prune, distill, quantize, export, verify), unchanged. The Keras 3 model
is the sample CNN saved by Keras 3 (tests/data), on a slice of the digits set.

The builds are CPU-bound and the suite runs on one core; they run in WORKERS spawned processes
(TensorFlow does not survive a fork), one model (its training and its builds) per task, and each
parametrized test then checks its own build. Only the models of the selected tests are built.
"""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import prune_models as zoo

ROOT = Path(__file__).resolve().parent.parent
KERAS3_CNN = ROOT / "tests" / "data" / "digits_cnn_keras3.keras"
DIGITS = ROOT / "sample_models" / "digits.npz"
TARGETS = ("rpi4", "android-nnapi", "coral")
MODELS = sorted(zoo.ZOO) + ["keras3_cnn"]
SAMPLES_PER_CLASS = 50
TRAIN_EPOCHS = 30
WORKERS = max(1, min(2, os.cpu_count() or 1))
# Every model through every target is 30 builds, about 12 minutes on 2 idle cores: more than the
# whole suite may take. `make test` covers every model and every target once each (model i on
# target i mod 3); `make test-zoo` (EDGESPARSE_ZOO_MATRIX=1, run by .ci/run after the suite)
# builds the whole matrix.
FULL_MATRIX = bool(os.environ.get("EDGESPARSE_ZOO_MATRIX"))
# conv_bn and conv1d have the shapes of digits_cnn and ds_cnn, which the suite builds already.
SAMPLED = [m for m in MODELS if m not in ("conv_bn", "conv1d")]
PAIRS = [(m, t) for m in MODELS for t in TARGETS] if FULL_MATRIX else \
    [(m, TARGETS[i % len(TARGETS)]) for i, m in enumerate(SAMPLED)]


def _task(input_shape: tuple, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class templates (a pattern plus a per-channel offset, so global pooling sees it too) plus
    noise: learnable by every zoo architecture in a few epochs."""
    rng = np.random.default_rng(seed)
    channels = input_shape[-1]
    offsets = rng.normal(size=(classes,) + (1,) * (len(input_shape) - 1) + (channels,))
    templates = rng.normal(size=(classes,) + input_shape) + offsets
    y = np.repeat(np.arange(classes), SAMPLES_PER_CLASS)
    x = templates[y] + 0.5 * rng.normal(size=(len(y),) + input_shape)
    return x.astype(np.float32), y.astype(np.int64)


def _model_and_data(name: str, root: Path) -> tuple[Path, Path]:
    """The model file and data file for one zoo entry (trained here, in the worker)."""
    if name == "keras3_cnn":
        digits = np.load(DIGITS)
        data = root / "keras3_cnn.npz"
        np.savez(data, x_train=digits["x_train"][:400], y_train=digits["y_train"][:400],
                 x_val=digits["x_val"][:100], y_val=digits["y_val"][:100])
        return KERAS3_CNN, data
    from edgesparse._tf import keras
    from edgesparse.graph.functional import outputs_are_probabilities

    model = zoo.ZOO[name]()
    x, y = _task(tuple(model.input_shape[1:]), int(model.output_shape[-1]))
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_are_probabilities(model)))
    model.fit(x, y, epochs=TRAIN_EPOCHS, batch_size=32, verbose=0)
    model.save(root / f"{name}.keras")
    np.savez(root / f"{name}.npz", x=x, y=y)
    return root / f"{name}.keras", root / f"{name}.npz"


def _build_model(name: str, root: str, targets: tuple[str, ...]) -> dict[str, dict]:
    """Worker: train one zoo model, build it for `targets`; exit code, stderr, seconds each."""
    from edgesparse.cli import run as cli

    root_path = Path(root)
    model, data = _model_and_data(name, root_path)
    results = {}
    for target in targets:
        err, started = io.StringIO(), time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli(["build", str(model), "--target", target, "--data", str(data),
                        "--out", str(root_path / f"{name}-{target}")])
        results[target] = {"code": code, "stderr": err.getvalue()[-2000:],
                           "seconds": round(time.perf_counter() - started, 1)}
    return results


@pytest.fixture(scope="module")
def builds(request, tmp_path_factory):
    """(name, target) -> the worker's result, for the models of the selected tests."""
    selected = [(item.callspec.params["name"], item.callspec.params["target"]) for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    wanted = sorted({n for n, _ in selected})
    root = tmp_path_factory.mktemp("zoo")
    # The Keras 3 CNN is the largest: start it first so the workers finish together.
    wanted.sort(key=lambda n: n != "keras3_cnn")
    pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        futures = {name: pool.submit(_build_model, name, str(root),
                                     tuple(t for n, t in selected if n == name)) for name in wanted}
        results = {name: f.result() for name, f in futures.items()}
    return root, {(n, t): r for n, by_target in results.items() for t, r in by_target.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name,target", PAIRS)
def test_zoo_model_builds_for_target(builds, name, target):
    root, results = builds
    result = results[(name, target)]
    assert result["code"] == 0, result["stderr"]
    out = root / f"{name}-{target}"
    report = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in report["passes"]] == ["import", "prune", "distill", "quantize", "export", "verify"]
    assert report["budget"]["met"]
    assert report["model"]["final"]["macs"] < report["model"]["macs"]
    assert report["artifacts"] and all((out / a["path"]).is_file() for a in report["artifacts"])
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Structured pruning" in md and "<h2>Pruning</h2>" in html
    assert not any("could not be rendered" in w for w in report["warnings"])
    for layer in report["facts"]["prune"]["channels"]:
        assert layer in md and layer in html
