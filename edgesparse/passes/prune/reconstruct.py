"""Data-aware reconstruction (Net-Trim / He et al. 2017 in spirit).

After channels are removed, every layer that lost input channels is refit by regularised least
squares so that, on calibration inputs, its output (before its activation) matches what the
UNPRUNED network computed there. No labels are needed. Layers are refit in graph order, each on
the inputs the already-refit pruned network gives it, so later layers also absorb the error of
earlier ones (the cascade).

Convolutions are refit on im2col patches. The ridge strength is chosen on held-out calibration
samples from a small grid, and a refit that does not beat the plain slice on held-out samples is
not applied. The relative error ||Y_pruned - Y_ref|| / ||Y_ref|| before and after goes into the
report.
"""
from __future__ import annotations

import numpy as np

from edgesparse.graph import linear as patches
from edgesparse.graph.layers import Role, in_width, rule_of
from edgesparse.graph.lstsq import NormalEquations, RidgePath

ALPHAS = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)    # ridge strength, relative to mean eigenvalue


def _rel_err(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(pred - target) / max(np.linalg.norm(target), 1e-12))


def refit_layers(reference, pruned, keeps: dict[str, tuple], x: np.ndarray, seed: int = 0,
                 max_rows: int = 20000, holdout: float = 0.2, progress=None) -> list[dict]:
    """Refit, in place, every Dense/Conv1D/Conv2D of `pruned` whose input lost channels.

    `reference` is the model before removal (same layer names); `keeps` maps a layer name to
    its (kept input, kept output) channel indices relative to it.
    """
    lost_inputs = [l for l in pruned.layers if rule_of(l).role is Role.PRODUCER
                   and keeps.get(l.name, (None,))[0] is not None
                   and len(keeps[l.name][0]) < in_width(reference.get_layer(l.name))]
    names = [l.name for l in lost_inputs if patches.has_linear_form(l)]
    skipped = [{"layer": l.name, "refit": False, "why": f"{type(l).__name__} is not refit (only Dense/Conv1D/Conv2D)"}
               for l in lost_inputs if l.name not in names]
    if not names:
        return skipped
    rng = np.random.default_rng(seed)
    n = len(x)
    hold = rng.permutation(n)[: max(1, int(round(n * holdout)))] if n > 4 else np.arange(0)
    is_hold = np.zeros(n, dtype=bool)
    is_hold[hold] = True
    ref_inputs = patches.run(patches.submodel(reference, [patches.layer_input(reference, nm) for nm in names]), x)
    results = []
    for name, ref_in in zip(names, ref_inputs):
        new_layer, ref_layer = pruned.get_layer(name), reference.get_layer(name)
        new_in = patches.run(patches.submodel(pruned, [patches.layer_input(pruned, name)]), x)[0]
        results.append(_refit_one(ref_layer, new_layer, keeps[name][1], ref_in, new_in, is_hold, rng, max_rows))
        if progress is not None:
            progress.advance(1)
    return results + skipped


def _refit_one(ref_layer, new_layer, out_keep, ref_in, new_in, is_hold, rng, max_rows) -> dict:
    ref_w = ref_layer.get_weights()
    k_ref = patches.kernel_2d(ref_w[0]).astype(np.float64)
    b_ref = ref_w[1].astype(np.float64) if ref_layer.use_bias else np.zeros(k_ref.shape[1])
    if out_keep is not None:
        k_ref, b_ref = k_ref[:, out_keep], b_ref[out_keep]
    new_w = new_layer.get_weights()
    k_now = patches.kernel_2d(new_w[0]).astype(np.float64)
    b_now = new_w[1].astype(np.float64) if new_layer.use_bias else np.zeros(k_now.shape[1])

    def rows(mask, limit):
        x_new, x_ref = patches.sampled_rows(new_layer, [new_in[mask], ref_in[mask]], limit, rng)
        return x_new.astype(np.float64), x_ref.astype(np.float64) @ k_ref + b_ref

    xf, tf_ = rows(~is_hold, max_rows)
    xh, th = rows(is_hold, max(max_rows // 4, 1)) if is_hold.any() else (xf, tf_)
    before = _rel_err(xh @ k_now + b_now, th)

    use_bias = bool(new_layer.use_bias)
    best = (before, None, None, None)
    solver = _ridge(xf, tf_, use_bias)
    for alpha in ALPHAS:
        k, b = solver.solve(alpha)
        err = _rel_err(xh @ k + b, th)
        if err < best[0]:
            best = (err, alpha, k, b)
    record = {"layer": new_layer.name, "error_before": round(before, 5), "error_after": round(before, 5),
              "refit": False}
    if best[1] is None:
        return record
    # Refit on every calibration sample with the chosen strength.
    xa = np.concatenate([xf, xh]) if is_hold.any() else xf
    ta = np.concatenate([tf_, th]) if is_hold.any() else tf_
    k, b = _ridge(xa, ta, use_bias).solve(best[1])
    new_w[0] = k.reshape(new_w[0].shape).astype(np.float32)
    if use_bias:
        new_w[1] = b.astype(np.float32)
    new_layer.set_weights(new_w)
    record.update(error_after=round(best[0], 5), refit=True, alpha=best[1])
    return record


def _ridge(x: np.ndarray, y: np.ndarray, use_bias: bool) -> RidgePath:
    """Ridge solutions for several strengths; a bias is fitted by centring."""
    return RidgePath(NormalEquations(x, y, center=use_bias))
