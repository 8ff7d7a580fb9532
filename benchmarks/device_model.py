"""A CNN big enough for MACs to show in int8 LiteRT latency, and the check that they do.

    python benchmarks/device_model.py [--out DIR] [--epochs 15] [--rounds 40]

digits_cnn (8x8 input, 0.33 M MACs) runs in ~11 µs in int8 whatever its width: per-operator
overhead decides its latency, so no pruning can make it faster (docs/benchmarks.md, issue 13).
This writes a model whose convolutions dominate:

  digits32.npz        scikit-learn's digits (ships with the package: no download), upsampled 4x
                      bilinearly to 32x32, the same stratified 80/20 split (seed 0) as
                      sample_models/digits.npz
  digits32_cnn.keras  tf_keras CNN: conv 32 @32x32, conv 64 @32x32 + pool, conv 128 @16x16 +
                      pool, conv 256 @8x8 + pool (Conv2D+BatchNorm+ReLU), global average pool,
                      Dense 64, Dense 10 softmax: ~57 M MACs, ~0.3 ms int8 at 1 thread on an
                      AVX-512 x86 core; trained seeded, single-threaded. BatchNorm momentum 0.9
                      (PyTorch's default): at 45 steps an epoch Keras' 0.99 left the moving
                      statistics so far behind that validation accuracy swung 10-97% (measured)

and then times the architecture at uniform width multipliers 1.0 / 0.5 / 0.3 (every layer's
channels x k, rounded to 4) as full-integer int8 .tflite in one interleaved LiteRT run at 1
thread (benchmarks/common.py), so the table says whether latency follows MACs on this host.
The narrower models are freshly initialised: a dense int8 kernel's time does not depend on
the weight values, only on the shapes. Writes OUT/scaling.md and OUT/scaling.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, interleaved_latency, machine_info, machine_lines  # noqa: E402

SEED = 0
UPSAMPLE = 4                      # 8x8 -> 32x32
CONVS = ((32, False), (64, True), (128, True), (256, True))   # (channels, max-pool after)
FC = 64
KEEPS = (1.0, 0.5, 0.3)
MODEL_NAME, DATA_NAME = "digits32_cnn.keras", "digits32.npz"


def make_data() -> dict[str, np.ndarray]:
    """The sample digits split, every image upsampled bilinearly (scipy, order 1)."""
    sys.path.insert(0, str(ROOT / "sample_models"))
    from make_samples import make_data as digits_split
    from scipy.ndimage import zoom

    data = digits_split()
    for k in ("x_train", "x_val"):
        x = zoom(data[k][..., 0], (1, UPSAMPLE, UPSAMPLE), order=1)
        data[k] = np.clip(x, 0.0, 1.0).astype(np.float32)[..., None]
    return data


def rounded(channels: int, keep: float) -> int:
    return max(4, int(round(channels * keep / 4)) * 4)


def build_cnn(keras, size: int = 8 * UPSAMPLE, keep: float = 1.0):
    layers = keras.layers
    inputs = keras.Input(shape=(size, size, 1), name="image")
    x = inputs
    for i, (channels, pool) in enumerate(CONVS, start=1):
        # No conv bias: the BatchNorm that follows has its own shift.
        x = layers.Conv2D(rounded(channels, keep), 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(rounded(FC, keep), activation="relu", name="fc1")(x)
    x = layers.Dropout(0.25, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="digits32_cnn")


def make_model(out: Path, epochs: int) -> dict:
    """Train the full-width model seeded and single-threaded; save it and its data in OUT."""
    sys.path.insert(0, str(ROOT / "sample_models"))
    from make_samples import save_without_optimizer, train

    from edgesparse._tf import keras, tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    out.mkdir(parents=True, exist_ok=True)
    data = make_data()
    np.savez_compressed(out / DATA_NAME, **data)
    keras.utils.set_random_seed(SEED)
    model = build_cnn(keras)
    started = time.perf_counter()
    accuracy = train(model, keras, data["x_train"], data["y_train"], data["x_val"], data["y_val"], epochs)
    save_without_optimizer(model, keras, out / MODEL_NAME)
    return {"keras_val_accuracy": round(100 * accuracy, 3), "epochs": epochs,
            "train_seconds": round(time.perf_counter() - started, 1),
            "n_train": int(len(data["x_train"])), "n_val": int(len(data["x_val"]))}


def scaling(out: Path, rounds: int) -> dict:
    """int8 p50 of the architecture at each uniform width multiplier, interleaved in one run."""
    from edgesparse._tf import keras
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.graph.stats import count_macs

    x_train = np.load(out / DATA_NAME)["x_train"]
    paths, macs = {}, {}
    for keep in KEEPS:
        keras.utils.set_random_seed(SEED)
        model = keras.models.load_model(out / MODEL_NAME) if keep == 1.0 else build_cnn(keras, keep=keep)
        path = out / f"width-{keep}.int8.tflite"
        path.write_bytes(to_tflite(model, "int8", x_calib=x_train))
        paths[str(keep)], macs[str(keep)] = path, count_macs(model)
    machine = machine_info()
    lat = interleaved_latency(paths, "litert", 1, x_train[0], rounds, 10.0)
    machine["load_average_at_end"] = machine_info()["load_average_1_5_15"]
    full = lat["1.0"]
    rows = [{"keep": float(k), "macs": macs[k], "bytes": paths[k].stat().st_size, **L.summary(),
             "macs_ratio": round(macs[k] / macs["1.0"], 3), "p50_ratio": round(L.p50_us / full.p50_us, 3),
             "round_ratio_p50": round(float(np.median(np.asarray(L.round_p50_us) / np.asarray(full.round_p50_us))), 3)}
            for k, L in lat.items()]
    return {"machine": machine, "rounds": rounds, "rows": rows}


def render(model_facts: dict, s: dict, command: str) -> str:
    lines = [f"Command: `{command}`", "", *machine_lines(s["machine"]),
             f"- load average at the end of the timing: {s['machine']['load_average_at_end']}", "",
             f"Model: {model_facts['keras_val_accuracy']:.2f}% Keras validation accuracy after "
             f"{model_facts['epochs']} epochs ({model_facts['train_seconds']} s, {model_facts['n_train']} train / "
             f"{model_facts['n_val']} validation images).", "",
             f"| width multiplier | MACs | x MACs | int8 bytes | p50 µs (p25-p75), 1 thread | x p50 | x p50 per round (median) |",
             "|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['keep']} | {r['macs']:,} | {r['macs_ratio']:.3f} | {r['bytes']:,} | {r['p50_us']:.1f} "
                     f"({r['p25_us']:.1f}-{r['p75_us']:.1f}) | {r['p50_ratio']:.3f} | {r['round_ratio_p50']:.3f} |")
    lines += ["", f"{s['rounds']} interleaved rounds of ~10 ms per variant; n = {s['rows'][0]['n']} inferences each."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench-device-model")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--reuse", action="store_true", help="keep OUT's trained model; only time again")
    a = p.parse_args(argv)
    command = "python benchmarks/device_model.py " + " ".join(sys.argv[1:] if argv is None else argv)
    facts_path = a.out / "model.json"
    if a.reuse and facts_path.exists():
        facts = json.loads(facts_path.read_text())
    else:
        facts = make_model(a.out, a.epochs)
        facts_path.write_text(json.dumps(facts, indent=1) + "\n")
    s = scaling(a.out, a.rounds)
    (a.out / "scaling.json").write_text(json.dumps({"model": facts, **s}, indent=1, default=str) + "\n")
    text = render(facts, s, command.strip())
    (a.out / "scaling.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
