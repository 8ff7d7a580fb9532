"""The `sparsify` pass: unstructured, N:M or 1xb-block weight sparsity.

Routes (`method`):
  refit      (default) post-training, no labels, no gradients: a layer-by-layer cascade that
             chooses masks by Optimal-Brain-Surgeon saliency and refits the kept weights by
             least squares so every layer reproduces the dense network (refit.py).
  magnitude  tfmot's prune_low_magnitude with a labelled fine-tune (magnitude.py).
  gmp, set, rigl  sparse training on our own masks with labels (dynamic.py): gradual magnitude
             pruning on the cubic schedule, or prune-and-regrow at constant sparsity.

Unstructured sparsity makes nothing faster here (DESIGN.md trap 4); the pass records sizes (raw,
gzip, the TFLite sparse encoding) and labels them "size only". A block pattern (block1x4 fp32,
block1x16 int8) is what LiteRT's FULLY_CONNECTED runs sparse: the pass checks in a converted
file that the Dense weights are stored in blocks with no DENSIFY op, and asks export for the
sparse encoding (`state.sparse_storage`). Its speed is measured in benchmarks/block_sparse.py,
not here, so this pass claims none. `pattern: auto-block` does measure: it times every Dense
layer alone, dense and in 1x4 blocks, in LiteRT on this host, blocks only the layers that ran
faster (a speed-up claimed for them, as measured) and trains the rest unstructured, "size only"
(latency.py).
"""
from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgesparse.errors import UserError
from edgesparse.passes.sparsify.blocks import block_size as _block, is_auto_block
from edgesparse.pipeline import Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import ModelState

DEFAULT_SPARSITY = 0.9
TRAINING_METHODS = ("magnitude", "gmp", "set", "rigl")      # fine-tune with labels
MASK_METHODS = ("gmp", "set", "rigl")                       # our masks (dynamic.py)
LATENCY_NOTE = ("size only: latency not measured by this pass, so no speed-up is claimed (XNNPACK's "
                "sparse inference is off on AVX x86 CPUs; TFLite densifies CSR-encoded weights before use)")
BLOCK_LATENCY_NOTE = ("size only in this pass: the Dense weights are stored in 1x{b} blocks that LiteRT's "
                      "FULLY_CONNECTED runs without densifying, but latency was not measured here "
                      "(benchmarks/block_sparse.py measures it)")


class SparsifyConfig(PassConfig):
    sparsity: Optional[float] = Field(
        None, ge=0.0, lt=1.0,
        description="fraction of kernel weights set to zero (biases aside); default 0.9; "
                    "N:M patterns fix it at 1 - N/M")
    pattern: str = Field("unstructured", description="'unstructured', 'N:M' (keep N of every M input channels, e.g. '2:4'), "
                                                     "'block1x4' / 'block1x16' (Dense blocks LiteRT runs sparse; methods gmp/set/rigl), "
                                                     "or 'auto-block' (1x4 blocks on the Dense layers measured faster so in LiteRT here)")
    method: Literal["refit", "magnitude", "gmp", "set", "rigl"] = Field(
        "refit", description="post-training refit; tfmot magnitude pruning; or sparse training on our masks with labels: "
                             "gmp (gradual magnitude, cubic), set (drop and regrow at random), rigl (regrow by gradient)")
    criterion: Literal["obs", "activation", "magnitude"] = Field("obs", description="refit mask: OBS saliency (gradual), |W|*||x||, or |W|")
    allocation: Literal["erk", "uniform"] = Field("erk", description="how the sparsity budget is spread over layers")
    steps: int = Field(8, ge=1, le=100, description="gradual OBS pruning rounds per layer")
    ridge: float = Field(1e-4, gt=0.0, le=1.0, description="least-squares ridge, relative to the mean input energy")
    calibration_samples: int = Field(2048, ge=1, description="calibration inputs used by the refit")
    epochs: int = Field(4, ge=1, description="training epochs (methods magnitude, gmp, set, rigl)")
    update_every: int = Field(100, ge=1, le=100_000, description="steps between mask updates (gmp, set, rigl)")
    drop_fraction: float = Field(0.3, gt=0.0, le=1.0, description="set/rigl: fraction of active weights dropped and regrown "
                                                                  "at the first update, decayed on a cosine to 0")
    end_fraction: float = Field(0.75, gt=0.0, le=1.0, description="gmp/set/rigl: masks change only in this first fraction of training")
    init: Literal["magnitude", "random"] = Field("magnitude", description="set/rigl initial mask: the largest given weights, or random")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    sizes: bool = Field(True, description="convert to TFLite to record raw/gzip/sparse-encoded sizes")
    seed: Optional[int] = Field(None, description="default: the build's seed")

    @field_validator("pattern")
    @classmethod
    def _pattern_parses(cls, v: str) -> str:
        from edgesparse.passes.sparsify.masks import parse_pattern

        if _block(v) is not None or is_auto_block(v):
            return v.strip().lower()
        return str(parse_pattern(v))   # raises ValueError with the fix

    @model_validator(mode="after")
    def _method_fits(self):
        if self.method in MASK_METHODS and self.sparsity is not None and not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"method {self.method} needs a sparsity between 0 and 1 (exclusive), "
                             f"got {self.sparsity:g}; e.g. sparsity: 0.9")
        if (self.block_size() or self.auto_block()) and self.method not in MASK_METHODS:
            raise ValueError(f"pattern {self.pattern} is trained on our masks: use method gmp, set or rigl "
                             f"(not {self.method})")
        if ":" in self.pattern and self.method in MASK_METHODS:
            raise ValueError(f"method {self.method} takes pattern 'unstructured', 'block1x4' or 'block1x16'; "
                             "for N:M use method refit or magnitude")
        return self

    @model_validator(mode="after")
    def _sparsity_matches_pattern(self):
        from edgesparse.passes.sparsify.masks import parse_pattern

        if self.block_size() or self.auto_block():
            return self
        implied = parse_pattern(self.pattern).sparsity
        if implied is not None and self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
            raise ValueError(f"pattern {self.pattern} fixes sparsity at {implied:g}; "
                             f"drop sparsity={self.sparsity:g} or use pattern 'unstructured'")
        return self

    def block_size(self) -> int | None:
        """4 / 16 for a block pattern, None otherwise."""
        return _block(self.pattern)

    def auto_block(self) -> bool:
        """pattern auto-block: 1x4 blocks where measured faster, unstructured elsewhere."""
        return is_auto_block(self.pattern)

    def target_sparsity(self) -> float:
        from edgesparse.passes.sparsify.masks import parse_pattern

        if self.block_size() or self.auto_block():
            return DEFAULT_SPARSITY if self.sparsity is None else self.sparsity
        implied = parse_pattern(self.pattern).sparsity
        if implied is not None:
            return implied
        return DEFAULT_SPARSITY if self.sparsity is None else self.sparsity


@register_pass
class SparsifyPass(Pass):
    """Zero out weights (unstructured, N:M or 1xb blocks): a smaller artifact, and with blocks a
    Dense layer LiteRT runs sparse."""

    name = "sparsify"
    Config = SparsifyConfig
    changes_model = True
    stage = Stage.TRANSFORM
    summary = ("weight sparsity: post-training OBS refit (default), tfmot magnitude pruning, or sparse "
               "training (gmp, set, rigl); block1x4/block1x16 for Dense layers LiteRT runs sparse")

    def check(self, plan: PlanContext) -> list[str]:
        problems = []
        if self.config.method in TRAINING_METHODS and not plan.data.labelled:
            problems.append(f"method '{self.config.method}' trains with labels; give labelled --data "
                            "(x_train/y_train) or use method 'refit', which needs none")
        if self.config.method == "refit" and not plan.data.real:
            problems.append("method 'refit' fits the layers to calibration inputs; give real --data "
                            "(synthetic inputs would fit the model to noise)")
        return problems

    def scaled(self, strength: float) -> "SparsifyPass | None":
        """A gentler sparsify for the accuracy-budget back-off: sparsity x strength.
        N:M patterns have no gentler version (the pattern is the point), so they return None."""
        if not 0 < strength < 1 or self.config.pattern != "unstructured":
            return None
        return SparsifyPass(self.config.model_copy(
            update={"sparsity": self.config.target_sparsity() * strength}))

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        from edgesparse.train.metrics import accuracy
        from edgesparse.passes.sparsify.masks import Pattern, nm_violations, parse_pattern
        from edgesparse.graph import linear

        cfg = self.config
        block = cfg.block_size()
        auto = cfg.auto_block()
        pattern = Pattern() if block or auto else parse_pattern(cfg.pattern)
        sparsity = cfg.target_sparsity()
        seed = ctx.seed if cfg.seed is None else cfg.seed
        data = ctx.data
        facts: dict[str, Any] = {"method": cfg.method, "pattern": cfg.pattern if block or auto else str(pattern),
                                 "target_sparsity": round(sparsity, 6),
                                 "latency": BLOCK_LATENCY_NOTE.format(b=block) if block else LATENCY_NOTE}
        if cfg.method == "refit":
            result = self._refit(state, ctx, pattern, sparsity, seed, facts)
        elif cfg.method == "magnitude":
            result = self._magnitude(state, ctx, pattern, sparsity, seed, facts)
        else:
            result = self._dynamic(state, ctx, block or 1, sparsity, seed, facts)

        sparsified = [r for r in result.layers if r.skipped is None]
        if not sparsified:
            raise UserError(f"{state.name} has no Dense, Conv1D or Conv2D layer to sparsify; "
                            "remove the sparsify pass from the recipe")
        zeros = sum(r.zeros for r in sparsified)
        weights = sum(r.weights for r in sparsified)
        all_zeros = sum(r.zeros for r in result.layers)
        all_weights = sum(r.weights for r in result.layers)
        facts.update(
            layers=[_layer_fact(r) for r in result.layers],
            sparsity=round(zeros / weights, 6),
            sparsity_all_kernels=round(all_zeros / all_weights, 6),
            kernel_weights=all_weights, nonzero_kernel_weights=all_weights - all_zeros,
            skipped={r.layer: r.skipped for r in result.layers if r.skipped})
        if pattern.structured:
            names = {r.layer for r in sparsified}
            facts["nm_violations"] = {
                layer.name: nm_violations(linear.kernel_matrix(layer), linear.input_channels(layer),
                                          pattern.n, pattern.m)
                for layer in result.model.layers if layer.name in names}
            narrow = [layer.name for layer in result.model.layers
                      if layer.name in names and linear.input_channels(layer) <= pattern.n]
            if narrow:
                state.warn(f"sparsify {pattern}: {', '.join(narrow)} ha{'s' if len(narrow) == 1 else 've'} "
                           f"at most {pattern.n} input channels, so their blocks keep every weight")
        elif facts["sparsity"] < sparsity - 0.005:
            state.warn(f"sparsify reached {facts['sparsity']:.1%} zeros, short of the "
                       f"{sparsity:.1%} asked for")
        if data.labelled and data.x_val is not None:
            facts["accuracy_before"] = round(accuracy(state.model, data.x_val, data.y_val), 3)
            facts["accuracy_after"] = round(accuracy(result.model, data.x_val, data.y_val), 3)
        if cfg.sizes:
            try:
                facts["sizes"] = self._sizes(state.model, result.model, data, ctx)
            except UserError as exc:      # what export could not convert has no file to measure
                state.warn(f"sparsify: sizes not measured ({exc}); the sparse model itself is fine, "
                           "turn the measurement off with sizes: false (--no-sizes)")
        chosen = [n for n, c in facts.get("block_choice", {}).items() if c["block"] > 1]
        if block or chosen:
            facts["artifact_check"] = (_block_artifact_check(result.model, block, data.x_calib) if block
                                       else _chosen_blocks_check(result.model, chosen))
            if not facts["artifact_check"]["passed"]:
                state.warn(f"sparsify {cfg.pattern}: {facts['artifact_check']['reason']}")
            state.sparse_storage = True      # export converts with the sparse encoding
        state.record(self.name, **facts)
        state.model = result.model
        return state

    # ------------------------------------------------------------------------------ routes

    def _refit(self, state, ctx, pattern, sparsity, seed, facts):
        from edgesparse.passes.sparsify.refit import sparse_refit

        cfg = self.config
        data = ctx.data
        if not data.real:
            state.warn("sparsify refit ran on synthetic calibration inputs: its masks and weights "
                       "fit noise, not your data")
        # x_calib is the training split (plus any unlabelled extras), shuffled; never validation.
        x = np.asarray(data.x_calib[: cfg.calibration_samples], np.float32)
        result = sparse_refit(state.model, x, sparsity, pattern, criterion=cfg.criterion,
                              allocation=cfg.allocation, steps=cfg.steps, ridge=cfg.ridge,
                              seed=seed, progress=ctx.progress)
        facts.update(criterion=cfg.criterion, allocation=cfg.allocation, steps=cfg.steps,
                     calibration={"split": data.splits.get("calibration", "train"),
                                  "samples": int(len(x))})
        return result

    def _magnitude(self, state, ctx, pattern, sparsity, seed, facts):
        from dataclasses import asdict

        from edgesparse.passes.sparsify.magnitude import magnitude_prune

        cfg = self.config
        data = ctx.data
        if not data.labelled or data.x_train is None:
            raise UserError("sparsify method 'magnitude' needs labelled --data (x_train/y_train); "
                            "use method 'refit' for unlabelled data")
        result = magnitude_prune(state.model, data.x_train, data.y_train, sparsity, pattern,
                                 epochs=cfg.epochs, batch_size=cfg.batch_size,
                                 learning_rate=cfg.learning_rate, seed=seed, progress=ctx.progress)
        facts.update(schedule=asdict(result.schedule), epochs=cfg.epochs,
                     final_train_loss=round(result.history.get("loss", [float("nan")])[-1], 5))
        return result

    def _dynamic(self, state, ctx, block, sparsity, seed, facts):
        from edgesparse.passes.sparsify.dynamic import Settings, sparse_train

        cfg = self.config
        data = ctx.data
        if not data.labelled or data.x_train is None:
            raise UserError(f"sparsify method '{cfg.method}' needs labelled --data (x_train/y_train); "
                            "use method 'refit' for unlabelled data")
        layer_blocks = ()
        if cfg.auto_block():
            layer_blocks = self._choose_blocks(state, ctx, sparsity, seed, facts)
        settings = Settings(method=cfg.method, sparsity=sparsity, allocation=cfg.allocation, block=block,
                            layer_blocks=layer_blocks,
                            update_every=cfg.update_every, drop_fraction=cfg.drop_fraction,
                            end_fraction=cfg.end_fraction, epochs=cfg.epochs, batch_size=cfg.batch_size,
                            learning_rate=cfg.learning_rate, init=cfg.init, seed=seed)
        result = sparse_train(state.model, data.x_train, data.y_train, settings, progress=ctx.progress)
        facts.update(allocation=cfg.allocation, epochs=cfg.epochs, update_every=cfg.update_every,
                     drop_fraction=cfg.drop_fraction, end_fraction=cfg.end_fraction, init=cfg.init,
                     steps=result.total_steps, last_update_step=result.last_update_step,
                     mask_updates=result.updates,
                     final_train_loss=round(result.history.get("loss", [float("nan")])[-1], 5))
        return result

    def _choose_blocks(self, state, ctx, sparsity, seed, facts) -> tuple[tuple[str, int], ...]:
        """auto-block: time each Dense layer dense and 1x4-blocked at its allocated density."""
        from edgesparse.passes.sparsify.dynamic import planned_densities
        from edgesparse.passes.sparsify.latency import choose_blocks

        densities = planned_densities(state.model, sparsity, self.config.allocation)
        task = ctx.progress.task("sparsify auto-block: time layers in LiteRT", total=1)
        choice = choose_blocks(state.model, densities, seed)
        task.advance(1)
        task.close()
        blocked = [n for n, c in choice.items() if c["block"] > 1]
        size_only = [n for n in choice if n not in blocked]
        facts["block_choice"] = choice
        facts["latency"] = ((f"1x4 blocks on {', '.join(blocked)}: measured faster alone in LiteRT fp32 on "
                             "this host (block_choice); " if blocked else "")
                            + (f"size only: {', '.join(size_only)} (unstructured)" if size_only else ""))
        return tuple((n, c["block"]) for n, c in choice.items() if c["block"] > 1)

    def _sizes(self, dense, sparse, data, ctx) -> dict[str, Any]:
        import warnings

        from edgesparse.passes.sparsify.sizes import model_sizes

        task = ctx.progress.task("sparsify: measure sizes", total=2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = {}
                for name, model in (("dense", dense), ("sparse", sparse)):
                    out[name] = model_sizes(model, data.x_calib)
                    task.advance(1)
        finally:
            task.close()
        notes = []
        if out["sparse"].get("int8_sparse_larger"):
            notes.append("the TFLite sparse encoding makes the int8 model larger than plain int8 "
                         "(index overhead per non-zero outweighs 1-byte values): ship plain int8 "
                         "and let gzip/zip take the zeros")
        blocked = [t["tensor"] for t in out["sparse"].get("tflite_fp32_sparse_encoding") or []
                   if "blocks" in t["encoding"]]
        if blocked:
            notes.append(f"the converter stored {', '.join(blocked)} as 1x4 blocks (chosen above "
                         "~96.5% element sparsity), four values per surviving weight of a random mask")
        if notes:
            out["note"] = "; ".join(notes)
        return out


def _block_artifact_check(model, block: int, x_calib) -> dict[str, Any]:
    """Convert with the sparse encoding (fp32 for 1x4, full int8 for 1x16) and read the file:
    are the Dense weights stored in 1xb blocks, with no DENSIFY op?"""
    from edgesparse.checks.sparse import block_sparse_check
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.tflite_file import read_tflite

    precision = "fp32" if block == 4 else "int8"
    check = block_sparse_check(read_tflite(to_tflite(model, precision, sparse=True, x_calib=x_calib)), block)
    check["precision"] = precision
    return check


def _chosen_blocks_check(model, chosen: list[str]) -> dict[str, Any]:
    """auto-block: convert fp32 with the sparse encoding and find each chosen layer's weight
    ([out, in], matched by shape) stored in 1x4 blocks. DENSIFY ops belong to the size-only
    layers (their sparse weights are expanded to dense before use)."""
    from collections import Counter

    from edgesparse.checks.sparse import fully_connected_storage
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.tflite_file import read_tflite

    tfl = read_tflite(to_tflite(model, "fp32", sparse=True))
    rows = fully_connected_storage(tfl)
    have = Counter(tuple(r["shape"]) for r in rows if r["block"] == {1: 4})
    need = Counter(tuple(int(d) for d in model.get_layer(n).kernel.shape[::-1]) for n in chosen)
    missing = [f"{list(s)}" for s, k in need.items() if have[s] < k]
    densify = [op.index for op in tfl.ops if op.name == "DENSIFY"]
    return {"passed": not missing, "precision": "fp32", "blocked_weights": sum(have.values()),
            "chosen_layers": chosen, "densify_ops": densify,
            "reason": (f"weights {', '.join(missing)} of the layers chosen for 1x4 blocks are not stored in "
                       "blocks" if missing else ""),
            "weights": rows}


def _layer_fact(r) -> dict[str, Any]:
    fact = {"layer": r.layer, "kind": r.kind, "shape": r.shape, "weights": r.weights,
            "zeros": r.zeros, "sparsity": r.sparsity}
    if r.criterion:
        fact["criterion"] = r.criterion
    if r.error is not None:
        fact["reconstruction_error"] = r.error
        fact["reconstruction_error_mask_only"] = r.error_mask_only
    if r.skipped:
        fact["skipped"] = r.skipped
    return fact
