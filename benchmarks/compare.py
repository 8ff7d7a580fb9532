"""edgesparse against what a user would do anyway: the TF Model Optimization guide's recipe.

    python benchmarks/compare.py                      # both sample models, target rpi4 (`make bench`)
    python benchmarks/compare.py --model my.keras --data my.npz [--target rpi4] [--out DIR] [--quick]

For each model, four variants:
  (a) dense fp32            edgesparse.build with quantize [fp32] + export [tflite, onnx] + verify
  (b) tfmot guide           prune_low_magnitude, PolynomialDecay 0 -> 80% sparsity, labelled
                            fine-tune, strip_pruning, full-integer int8 PTQ (written here with
                            tfmot / TFLiteConverter / tf2onnx / onnxruntime directly, not edgesparse).
                            It fine-tunes for as many epochs as (d)'s recipe trains (prune steps x
                            finetune_epochs + distill epochs), so neither side wins by training longer.
  (c) int8 PTQ              (b) without the pruning
  (d) edgesparse default    edgesparse.build(model, target, data): the target's default recipe
All artifacts have a fixed batch of 1 and float inputs/outputs (the rpi4 target's int8 form);
(b), (c) and (d) calibrate on the same first samples of the same shuffled training split.

Measured in this one process: validation accuracy in LiteRT and ONNX Runtime; artifact bytes
and gzip -9 bytes; MACs, params and non-zero params of the Keras model behind each variant;
p50 latency (p25-p75, n) in both runtimes at 1 thread and the target's thread count, variants
interleaved (benchmarks/common.py); build seconds. Writes OUT/compare.md, OUT/compare.json and
OUT/compare_pareto.png, prints the markdown, and ends each model with verdict lines.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, SAMPLE_DATA, SAMPLE_MODELS, Latency, gzip_size, interleaved_latency,  # noqa: E402
                    keras_accuracy, machine_info, machine_lines, nonzero_params, round_ratio,
                    runtime_accuracy)

from edgesparse._tf import keras, tf  # noqa: E402
from edgesparse.convert import quiet  # noqa: E402
from edgesparse.errors import UserError  # noqa: E402
from edgesparse.graph.stats import count_macs, model_summary  # noqa: E402
from edgesparse.pipeline import Instrument  # noqa: E402

TITLES = {"a": "(a) dense fp32", "b": "(b) tfmot 80% sparse + int8", "c": "(c) int8 PTQ",
          "d": "(d) edgesparse default"}
RUNTIMES = ("litert", "onnxruntime")
DENSE_FP32_RECIPE = """name: dense-fp32
passes:
  - pass: quantize
    precisions: [fp32]
  - pass: export
    formats: [tflite, onnx]
  - pass: verify
"""


@dataclass
class Settings:
    finetune_epochs: int | None = None   # (b); None: the epochs (d)'s recipe trains (equal budget)
    batch_size: int = 64
    final_sparsity: float = 0.8
    calibration_samples: int = 200    # as edgesparse's quantize pass
    rounds: int = 40                  # latency rounds (each runs every variant k times)
    block_ms: float = 10.0            # about this long per variant per round
    thread_counts: tuple[int, ...] | None = None   # None: (1, target.threads)
    recipe_d: Path | None = None      # None: the target's default recipe
    seed: int = 0


@dataclass
class Variant:
    key: str
    tflite: Path
    onnx: Path
    model: object                     # the Keras model behind the artifacts
    build_s: float
    facts: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- (a) and (d): edgesparse


class _KeepModels(Instrument):
    """Remembers the working model after each pass, to count (d)'s MACs on the real thing."""

    def __init__(self):
        self.models = []

    def after_pass(self, p, state, ctx):
        self.models.append(state.model)


def edgesparse_variant(key, model_path, data_path, target, recipe, out: Path, precision: str) -> Variant:
    import edgesparse

    keep = _KeepModels()
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    result = edgesparse.build(model_path, target, data_path, recipe=recipe, out=out, instruments=[keep])
    seconds = time.perf_counter() - started

    def pick(fmt):
        found = [a for a in result.artifacts if a.format == fmt]
        best = [a for a in found if a.precision == precision] or found
        if not best:
            raise UserError(f"the {key} build made no {fmt} artifact; its recipe must export tflite and onnx")
        return best[0].path

    final = result.report["model"].get("final") or result.report["model"]
    model = next((m for m in reversed(keep.models) if count_macs(m) == final.get("macs")), keep.models[-1])
    facts = {"passes": [p["name"] for p in result.report["passes"]], "recipe": result.report["recipe"].get("name"),
             "budget_met": result.report["budget"].get("met"), "warnings": result.warnings}
    return Variant(key, pick("tflite"), pick("onnx"), model, seconds, facts)


# ----------------------------------------------------------------------------- (b) and (c): the guide


def guide_tflite_int8(model, x_calib: np.ndarray, path: Path) -> Path:
    """Full-integer post-training quantization as the TFLite guide writes it, batch fixed to 1."""
    spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)   # trap 6
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in x_calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with quiet():
        path.write_bytes(converter.convert())
    return path


def guide_onnx_int8(model, x_calib: np.ndarray, path: Path) -> Path:
    """tf2onnx with an explicit input signature (trap 7), then onnxruntime static QDQ int8."""
    import onnx
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    spec = (tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32, name="input"),)
    fp32, pre = path.with_suffix(".fp32.onnx"), path.with_suffix(".pre.onnx")
    with quiet():
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(fp32))
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        name = onnx.load(str(pre)).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter({name: s[None]} for s in x_calib)

            def get_next(self):
                return next(self.items, None)

        quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    fp32.unlink()
    pre.unlink()
    return path


def tfmot_pruned(model, data, s: Settings) -> tuple[object, dict]:
    """The guide's magnitude pruning with the two traps handled (DESIGN trap 2)."""
    import tensorflow_model_optimization as tfmot

    from edgesparse.graph.functional import clone_with_weights
    from edgesparse.train.losses import sparse_cross_entropy as loss_fn

    sp = tfmot.sparsity.keras
    clone = clone_with_weights(model)              # wrapping the original would prune it too
    steps_per_epoch = math.ceil(len(data.x_train) / s.batch_size)
    end_step = s.finetune_epochs * steps_per_epoch
    frequency = max(1, end_step // 20)             # the default 100 never fires in a short fine-tune
    schedule = sp.PolynomialDecay(initial_sparsity=0.0, final_sparsity=s.final_sparsity,
                                  begin_step=0, end_step=end_step, frequency=frequency)
    pruned = sp.prune_low_magnitude(clone, pruning_schedule=schedule)
    keras.utils.set_random_seed(s.seed)            # weights are given; this fixes the shuffling
    pruned.compile(optimizer=keras.optimizers.Adam(), loss=loss_fn(model))
    pruned.fit(data.x_train, data.y_train, batch_size=s.batch_size, epochs=s.finetune_epochs,
               callbacks=[sp.UpdatePruningStep()], verbose=0, shuffle=True)
    wrapped = [w.layer.name for w in pruned.layers if type(w).__name__ == "PruneLowMagnitude"]
    stripped = sp.strip_pruning(pruned)
    kernels = [v.numpy() for name in wrapped for v in stripped.get_layer(name).weights if "kernel" in v.name]
    zeros, total = sum(int(np.sum(k == 0)) for k in kernels), sum(k.size for k in kernels)
    facts = {"pruned_layers": wrapped, "end_step": end_step, "frequency": frequency,
             "epochs": s.finetune_epochs, "target_sparsity": s.final_sparsity,
             "kernel_sparsity": round(zeros / max(total, 1), 4)}   # checked after strip_pruning
    return stripped, facts


def guide_variants(model, data, s: Settings, out: Path) -> list[Variant]:
    out.mkdir(parents=True, exist_ok=True)
    x_calib = np.asarray(data.x_calib[: s.calibration_samples], dtype=np.float32)
    started = time.perf_counter()
    pruned, facts = tfmot_pruned(model, data, s)
    b = Variant("b", guide_tflite_int8(pruned, x_calib, out / "b-sparse-int8.tflite"),
                guide_onnx_int8(pruned, x_calib, out / "b-sparse-int8.onnx"), pruned, 0.0, facts)
    b.build_s = time.perf_counter() - started
    started = time.perf_counter()
    c = Variant("c", guide_tflite_int8(model, x_calib, out / "c-int8.tflite"),
                guide_onnx_int8(model, x_calib, out / "c-int8.onnx"), model, 0.0)
    c.build_s = time.perf_counter() - started
    return [b, c]


# ----------------------------------------------------------------------------- one model


def describe(v: Variant, data) -> dict:
    stats = model_summary(v.model)
    return {"title": TITLES[v.key], "tflite": str(v.tflite), "onnx": str(v.onnx),
            "accuracy_keras": keras_accuracy(v.model, data.x_val, data.y_val),
            "accuracy_litert": runtime_accuracy(v.tflite, data.x_val, data.y_val),
            "accuracy_onnxruntime": runtime_accuracy(v.onnx, data.x_val, data.y_val),
            "macs": stats["macs"], "params": stats["params"], "nonzero_params": nonzero_params(v.model),
            "tflite_bytes": v.tflite.stat().st_size, "tflite_gzip_bytes": gzip_size(v.tflite),
            "onnx_bytes": v.onnx.stat().st_size, "onnx_gzip_bytes": gzip_size(v.onnx),
            "build_s": round(v.build_s, 2), "facts": v.facts}


def latency_rows(variants: dict[str, Variant], sample: np.ndarray, threads: tuple[int, ...], s: Settings) -> list[dict]:
    rows = []
    for runtime in RUNTIMES:
        for n in threads:
            paths = {k: (v.tflite if runtime == "litert" else v.onnx) for k, v in variants.items()}
            lat: dict[str, Latency] = interleaved_latency(paths, runtime, n, sample, s.rounds, s.block_ms)
            for k, L in lat.items():
                row = {"runtime": runtime, "threads": n, "variant": k, **L.summary(),
                       "ratio_to": {ref: round(L.p50_us / lat[ref].p50_us, 3) for ref in ("a", "b", "c")}}
                if k == "d":   # d vs b side by side, round by round: the spread of the headline ratio
                    mid, lo, hi = round_ratio(L, lat["b"])
                    row["d_over_b_rounds"] = {"p50": round(mid, 3), "p25": round(lo, 3), "p75": round(hi, 3),
                                              "rounds": len(L.round_p50_us)}
                rows.append(row)
    return rows


def verdict(result: dict) -> list[str]:
    """Does (d) beat (b) on latency at equal or better accuracy? Said plainly, per setting."""
    v, name, n_val = result["variants"], result["model"], result["n_val"]
    b, d = v["b"], v["d"]
    lines, wins = [], []
    acc_ok = all(d[f"accuracy_{r}"] >= b[f"accuracy_{r}"] for r in RUNTIMES)
    delta = d["accuracy_litert"] - b["accuracy_litert"]
    lines.append(f"{name}: accuracy (d) {d['accuracy_litert']}% LiteRT / {d['accuracy_onnxruntime']}% ORT vs "
                 f"(b) {b['accuracy_litert']}% / {b['accuracy_onnxruntime']}%: (d) is "
                 f"{'equal or better' if acc_ok else 'WORSE'} ({delta:+.2f} points in LiteRT = "
                 f"{round(delta * n_val / 100):+d} of {n_val} validation samples; each variant trained once)")
    for row in (r for r in result["latency"] if r["variant"] == "d"):
        q = row["d_over_b_rounds"]
        faster = q["p75"] < 1.0
        slower = q["p25"] > 1.0
        wins.append(faster)
        word = "faster" if faster else "SLOWER" if slower else "no clear difference"
        lines.append(f"{name}: {row['runtime']} {row['threads']} thread(s): (d)/(b) p50 ratio {q['p50']:.2f} "
                     f"(rounds p25-p75 {q['p25']:.2f}-{q['p75']:.2f}) -> (d) {word}")
    fewest = min(result["threads"])
    at = {(r["runtime"], r["variant"]): r["ratio_to"] for r in result["latency"] if r["threads"] == fewest}
    sparse = ", ".join(f"{rt} {at[rt, 'b']['c']:.2f}" for rt in RUNTIMES)
    int8 = ", ".join(f"{rt} {at[rt, 'c']['a']:.2f}" for rt in RUNTIMES)
    lines.append(f"{name}: measured, not assumed ({fewest} thread(s)): what 80% unstructured sparsity buys, "
                 f"(b)/(c) p50 = {sparse} (DESIGN trap 4); int8 against fp32, (c)/(a) p50 = {int8} (trap 5).")
    if acc_ok and all(wins):
        lines.append(f"{name}: YES - (d) beats (b) on latency in every runtime/thread setting at equal or better accuracy.")
    else:
        why = [] if acc_ok else ["its accuracy is lower"]
        if not all(wins):
            why.append(f"it is clearly faster in only {sum(wins)} of {len(wins)} runtime/thread settings")
        lines.append(f"{name}: NO - (d) does not beat (b) outright: {'; '.join(why)}.")
    return lines


def recipe_training_epochs(target, recipe: Path | None) -> int:
    """Epochs of training (d)'s recipe schedules: prune steps x finetune_epochs + distill epochs.
    (b) gets as many, so neither side wins by training longer; at least the guide's 2."""
    from edgesparse.recipe import recipe_for

    total = 0
    for p in recipe_for(target, recipe).passes:
        if p.name == "prune":
            total += p.config.steps * p.config.finetune_epochs
        elif p.name == "distill":
            total += p.config.epochs
    return max(2, total)


def compare_model(model_path: Path, data_path: Path, target_name: str, out: Path, s: Settings) -> dict:
    from edgesparse.data import load_data
    from edgesparse.frontends.keras import load_model
    from edgesparse.targets import load_target

    target = load_target(target_name)
    s = replace(s, finetune_epochs=s.finetune_epochs or recipe_training_epochs(target, s.recipe_d))
    model, _ = load_model(model_path)
    shape, classes = tuple(int(d) for d in model.input_shape[1:]), int(model.output_shape[-1])
    data = load_data(data_path, shape, classes, seed=0)    # seed 0: the split the builds use
    if not data.labelled or data.x_val is None:
        raise UserError(f"{data_path}: compare needs labelled data (x_train/y_train, or x/y); "
                        "(b) fine-tunes on labels and every variant is scored on the validation split")
    name = model_path.stem
    work = out / "artifacts" / name
    log = lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    recipe_a = work / "dense-fp32.yaml"
    work.mkdir(parents=True, exist_ok=True)
    recipe_a.write_text(DENSE_FP32_RECIPE)
    log("(a) dense fp32 build")
    a = edgesparse_variant("a", model_path, data_path, target, recipe_a, work / "a", "fp32")
    log("(b) tfmot guide + (c) int8 PTQ")
    b, c = guide_variants(model, data, s, work / "guide")
    log(f"(d) edgesparse {'recipe ' + str(s.recipe_d) if s.recipe_d else 'default recipe'}")
    d = edgesparse_variant("d", model_path, data_path, target, s.recipe_d, work / "d", "int8")
    variants = {v.key: v for v in (a, b, c, d)}
    threads = s.thread_counts or tuple(sorted({1, int(target.threads)}))
    log(f"accuracy and latency ({s.rounds} rounds, threads {threads})")
    described = {k: describe(v, data) for k, v in variants.items()}
    return {"model": name, "path": str(model_path), "data": str(data_path), "target": target.name,
            "n_val": int(len(data.x_val)), "threads": list(threads), "variants": described,
            "latency": latency_rows(variants, data.x_val[0], threads, s)}


# ----------------------------------------------------------------------------- output


def render(results: list[dict], machine: dict, s: Settings, command: str) -> str:
    out = ["# edgesparse vs the TF Model Optimization guide", "", f"Command: `{command}`", "",
           *machine_lines(machine), ""]
    over = [r for r in results if max(r["threads"]) > machine["cores_usable"]]
    if over:
        out += [f"Note: this machine has {machine['cores_usable']} usable cores; the target's "
                f"{max(over[0]['threads'])} threads oversubscribe it, so multi-thread figures here say "
                "little about the device.", ""]
    out += ["Variants: (a) dense fp32; (b) tfmot guide: prune_low_magnitude to "
            f"{s.final_sparsity:.0%} sparsity with a labelled fine-tune (as many epochs as (d)'s recipe trains, "
            "unless --epochs), strip_pruning, int8 PTQ; (c) int8 PTQ only; (d) edgesparse "
            f"{'recipe ' + str(s.recipe_d) if s.recipe_d else 'default recipe for the target'}. All batch 1, "
            "float I/O; each variant trained once (one seed). MACs count the dense arithmetic: (b)'s zeros are "
            "masks, so its MACs stay those of (a). Latency: p50 of single inferences, variants interleaved "
            "round by round; x(a), x(b), x(c) are ratios of p50s within one runtime and thread count.", ""]
    for r in results:
        v = r["variants"]
        out += [f"## {r['model']} (target {r['target']}, {r['n_val']} validation samples)", "",
                "| variant | acc LiteRT % | acc ORT % | MACs | params | nonzero params | .tflite B | gzip B "
                "| .onnx B | gzip B | build s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, x in v.items():
            out.append(f"| {x['title']} | {x['accuracy_litert']} | {x['accuracy_onnxruntime']} | {x['macs']:,} "
                       f"| {x['params']:,} | {x['nonzero_params']:,} | {x['tflite_bytes']:,} | "
                       f"{x['tflite_gzip_bytes']:,} | {x['onnx_bytes']:,} | {x['onnx_gzip_bytes']:,} | {x['build_s']} |")
        f = v["b"]["facts"]
        out += ["", f"(b): {f['epochs']}-epoch fine-tune; kernel sparsity after strip_pruning "
                f"{f['kernel_sparsity']:.2%} (end_step {f['end_step']}, frequency {f['frequency']}).", "",
                "| runtime | threads | variant | p50 µs | p25-p75 µs | n | x(a) | x(b) | x(c) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for row in r["latency"]:
            q = row["ratio_to"]
            out.append(f"| {row['runtime']} | {row['threads']} | {TITLES[row['variant']]} | {row['p50_us']:.1f} | "
                       f"{row['p25_us']:.1f}-{row['p75_us']:.1f} | {row['n']} | {q['a']:.2f} | {q['b']:.2f} | {q['c']:.2f} |")
        out += ["", "Verdict:", ""] + [f"- {line}" for line in r["verdict"]] + [""]
    return "\n".join(out)


def plot_pareto(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4.2 * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        lat = {(x["runtime"], x["variant"]): x["p50_us"] for x in r["latency"] if x["threads"] == 1}
        for runtime, marker in zip(RUNTIMES, "os"):
            acc_key = f"accuracy_{runtime}"
            for k, v in r["variants"].items():
                row[0].scatter(lat[runtime, k], v[acc_key], marker=marker, color=f"C{'abcd'.index(k)}")
                row[0].annotate(k, (lat[runtime, k], v[acc_key]), textcoords="offset points", xytext=(4, 4))
        for kind, marker in (("tflite_bytes", "o"), ("tflite_gzip_bytes", "^")):
            for k, v in r["variants"].items():
                row[1].scatter(v[kind] / 1024, v["accuracy_litert"], marker=marker, color=f"C{'abcd'.index(k)}")
                row[1].annotate(k, (v[kind] / 1024, v["accuracy_litert"]), textcoords="offset points", xytext=(4, 4))
        row[0].set(title=f"{r['model']}: accuracy vs p50 latency, 1 thread (o LiteRT, s ORT)",
                   xlabel="p50 latency (µs)", ylabel="validation accuracy (%)")
        row[1].set_xscale("log")
        row[1].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        row[1].xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if str(x)[0] in "25" else ""))
        row[1].set(title=f"{r['model']}: accuracy vs .tflite size (o raw, ^ gzip -9)",
                   xlabel="KiB (log scale)", ylabel="validation accuracy (%, LiteRT)")
        for ax in row:
            ax.grid(alpha=0.3)
    fig.text(0.01, 0.003, "a dense fp32 | b tfmot 80% sparse + int8 | c int8 PTQ | d edgesparse default", fontsize=9)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(models: list[Path], data: Path, target: str, out: Path, s: Settings, command: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    results = []
    for m in models:
        r = compare_model(m, data, target, out, s)
        r["verdict"] = verdict(r)
        results.append(r)
    machine["load_average_at_end"] = machine_info()["load_average_1_5_15"]
    report = {"command": command, "machine": machine, "settings": {k: (str(v) if isinstance(v, Path) else v)
              for k, v in vars(s).items()}, "results": results}
    md = render(results, machine, s, command)
    (out / "compare.md").write_text(md + "\n")
    (out / "compare.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot_pareto(results, out / "compare_pareto.png")
    report["markdown"] = md
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", type=Path, help="models to compare (default: both sample models)")
    p.add_argument("--data", type=Path, help="labelled .npz or image folder (default: the sample digits)")
    p.add_argument("--target", default="rpi4")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--recipe", type=Path, help="a recipe for (d) instead of the target's default")
    p.add_argument("--epochs", type=int, help="fine-tune epochs of (b) (default: as many as (d)'s recipe "
                   "trains; --quick 4)")
    p.add_argument("--rounds", type=int, help="latency rounds (default 40; --quick 8)")
    p.add_argument("--quick", action="store_true", help="fewer fine-tune epochs and latency rounds")
    args = p.parse_args(argv)
    if args.model and not args.data:
        p.error("--model needs --data: a labelled .npz (x_train/y_train[/x_val/y_val]) for that model")
    s = Settings(recipe_d=args.recipe)
    if args.quick:
        s.finetune_epochs, s.rounds, s.block_ms = 4, 8, 4.0
    s.finetune_epochs = args.epochs or s.finetune_epochs
    s.rounds = args.rounds or s.rounds
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        report = run(args.model or SAMPLE_MODELS, args.data or SAMPLE_DATA, args.target, args.out, s, command.strip())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report["markdown"])
    print(f"\nwrote {args.out / 'compare.md'}, compare.json, compare_pareto.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
