"""Issue 4: the default recipe recovers accuracy after pruning, distillation works without
labels, a wrong teacher fails before training, and the from-scratch control is reported."""
import json
from pathlib import Path

import numpy as np
import pytest

from edgesparse.cli import run as cli

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "sample_models" / "digits_cnn.keras"
MLP = ROOT / "sample_models" / "digits_mlp.keras"
DATA = ROOT / "sample_models" / "digits.npz"


@pytest.mark.slow
def test_default_rpi4_recipe_compresses_3x_within_one_point(tmp_path):
    out = tmp_path / "out"
    code = cli(["build", str(CNN), "--target", "rpi4", "--data", str(DATA), "--out", str(out),
                "--control-from-scratch"])
    assert code == 0
    r = json.loads((out / "report.json").read_text())
    dense_macs, dense_acc = r["model"]["macs"], r["model"]["accuracy"]
    tflite_int8 = [a for a in r["artifacts"] if a["format"] == "tflite" and a["precision"] == "int8"]
    assert len(tflite_int8) == 1
    final_macs = r["model"]["final"]["macs"]
    assert dense_macs / final_macs >= 3.0, (dense_macs, final_macs)
    # measured by verify in LiteRT on the validation split
    assert tflite_int8[0]["accuracy"] >= dense_acc - 1.0, (tflite_int8[0]["accuracy"], dense_acc)
    assert [p["name"] for p in r["passes"]] == ["import", "prune", "distill", "quantize", "export", "verify"]
    assert all("accuracy" in p["metrics"] for p in r["passes"] if p["name"] in ("import", "prune", "distill"))
    control = r["facts"]["control"]
    assert control["epochs"] > 0 and 0 <= control["accuracy_from_scratch"] <= 100
    assert control["architecture"]["macs"] == final_macs
    assert "trained from scratch" in (out / "report.md").read_text()


def test_pure_distillation_on_unlabelled_inputs(tmp_path):
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.load(DATA)["x_train"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: prune\n    macs: 0.5\n  - pass: distill\n    epochs: 2\n"
                      "  - pass: quantize\n  - pass: export\n    formats: [tflite]\n  - pass: verify\n")
    out = tmp_path / "out"
    assert cli(["build", str(MLP), "--data", str(unlabelled), "--recipe", str(recipe), "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    d = r["facts"]["distill"]
    assert d["labels_used"] is False and d["alpha_used"] == 0.0 and d["epochs_run"] >= 1
    assert r["artifacts"][0]["accuracy"] is None          # no labels: no accuracy claimed
    assert r["artifacts"][0]["top1_agreement"] is not None


def test_teacher_that_does_not_match_fails_before_training(tmp_path, capsys):
    from edgesparse._tf import keras

    inp = keras.Input((8, 8, 1))
    teacher = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp)))
    tpath = tmp_path / "teacher.keras"
    teacher.save(tpath)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"passes:\n  - pass: prune\n    macs: 0.5\n    finetune_epochs: 50\n"
                      f"  - pass: distill\n    teacher: {tpath}\n  - pass: quantize\n  - pass: export\n  - pass: verify\n")
    code = cli(["build", str(CNN), "--data", str(DATA), "--recipe", str(recipe), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "3 outputs but the model has 10" in err
    assert not (tmp_path / "o").exists()


def test_qat_on_a_sparse_model_keeps_the_zeros_in_the_int8_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: sparsify\n    sparsity: 0.9\n  - pass: qat\n    epochs: 1\n"
                      "  - pass: quantize\n  - pass: export\n    formats: [tflite]\n  - pass: verify\n")
    out = tmp_path / "out"
    assert cli(["build", str(MLP), "--data", str(DATA), "--recipe", str(recipe), "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["facts"]["qat"]["preserve_sparsity"] is True
    assert r["artifacts"][0]["accuracy"] >= r["model"]["accuracy"] - 1.0

    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(out / r["artifacts"][0]["path"]))
    it.allocate_tensors()
    zeros = total = 0
    for d in it.get_tensor_details():
        if "MatMul" in d["name"] and d["dtype"] == np.int8 and len(d["shape"]) == 2 and d["shape"][0] > 1:
            w = it.get_tensor(d["index"])   # the constant weight tensors (activations have batch 1)
            if w.ndim == 2:
                zeros, total = zeros + int(np.sum(w == 0)), total + w.size
    assert total == 64 * 256 + 256 * 256 + 256 * 10
    assert zeros / total >= 0.89, zeros / total


def test_softmax_output_is_recognised_through_tfmot_wrappers():
    """QAT's label loss must not treat probabilities as logits (a wrapped Dense hides its softmax)."""
    import tensorflow_model_optimization as tfmot

    from edgesparse._tf import keras
    from edgesparse.graph.functional import outputs_are_probabilities

    model = keras.models.load_model(MLP)
    inp = keras.Input((64,))
    logits = keras.Model(inp, keras.layers.Dense(10)(inp))
    assert outputs_are_probabilities(model)
    assert outputs_are_probabilities(tfmot.quantization.keras.quantize_model(model))
    assert not outputs_are_probabilities(tfmot.quantization.keras.quantize_model(logits))
