"""The factorised forms, one per kind of layer, each with its limits, MACs, new layers and refit.

- `svd` (Dense, and 1x1 Conv2D): Dense(r, linear, no bias) then Dense(out) with the original
  activation; a 1x1 conv likewise becomes two 1x1 convs (the stride on the first).
- `tucker2` (k x k Conv2D): 1x1 conv Cin -> r1, the k x k core r1 -> r2 (the original stride,
  padding and dilation), 1x1 conv r2 -> Cout with the original activation (Kim et al. 2016).
  The input mode is the whitened SVD of the (Cin, k*k*Cout) unfolding; the output mode is the
  principal subspace of the layer's responses on the data (Zhang et al. 2015).
- `spatial` (k x k Conv2D): a kh x 1 conv Cin -> r then a 1 x kw conv r -> Cout (Jaderberg,
  Vedaldi and Zisserman 2014, scheme 2), from the whitened SVD of the (kh*Cin, kw*Cout) kernel.

Every form's last factor has a bias (the input mean folds into it) and is then refit by ridge
regression (graph/lstsq.py) on calibration activations: its inputs are what the new chain
computes on the current model's inputs, its target the ORIGINAL model's pre-activation output,
so the refit also absorbs the error of layers factorised before it. At full rank every form
computes exactly what the layer computed (tests/test_lowrank.py).

MACs follow graph/layers.py: a conv costs output positions x taps x in x out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph import linear
from edgesparse.graph.lstsq import NormalEquations, RidgePath
from edgesparse.passes.lowrank.spectra import Whitener, output_basis, spectrum, truncated

ALPHAS = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)      # ridge strength, relative to the mean eigenvalue
FORMS = ("svd", "tucker2", "spatial")


def _prod(shape) -> int:
    return int(np.prod([d for d in shape if d is not None])) if shape else 1


def _shape(s) -> tuple:
    return tuple(s[0] if isinstance(s, list) else s)


def kind_of(layer) -> str | None:
    """"dense", "conv1x1", "conv" or None (cannot be factorised)."""
    name = type(layer).__name__
    if name == "Dense":
        return "dense"
    if name == "Conv2D":
        return "conv1x1" if tuple(layer.kernel_size) == (1, 1) else "conv"
    return None


def why_not(layer) -> str | None:
    """Why this layer cannot be factorised, or None."""
    if kind_of(layer) is None:
        return f"{type(layer).__name__} cannot be factorised (only Dense and Conv2D layers)"
    return linear.why_not_linear(layer)


def forms_for(layer, method: str) -> list[str]:
    """The forms `method` allows for this layer: a Dense or 1x1 conv is always `svd`; a k x k
    conv is `tucker2` or `spatial`, both under "auto" (whichever has fewer MACs at the chosen
    ranks), none under "svd" (which factorises Dense and 1x1 convs only)."""
    kind = kind_of(layer)
    if kind in ("dense", "conv1x1"):
        return ["svd"]
    if method == "auto":
        return ["tucker2", "spatial"]
    return [] if method == "svd" else [method]


# ----------------------------------------------------------------------------- limits and MACs

def limits(layer, form: str) -> tuple[int, ...]:
    """The largest ranks a form can have: beyond them it is no longer a factorisation."""
    if form == "svd":
        n, m = (int(d) for d in layer.kernel.shape[-2:])
        return (min(n, m),)
    kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
    if form == "tucker2":
        return (cin, cout)
    return (min(kh * cin, kw * cout),)


def macs(layer, form: str, ranks: tuple[int, ...]) -> int:
    """MACs of the factorised form for one sample (graph/layers.py's formulas on the new layers)."""
    inp, out = _shape(layer.input_shape), _shape(layer.output_shape)
    if form == "svd":
        n, m = (int(d) for d in layer.kernel.shape[-2:])
        return _prod(out[1:-1]) * ranks[0] * (n + m)
    kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
    pos_in, pos_out = _prod(inp[1:-1]), _prod(out[1:-1])
    if form == "tucker2":
        r1, r2 = ranks
        return pos_in * cin * r1 + pos_out * kh * kw * r1 * r2 + pos_out * r2 * cout
    (r,) = ranks
    vertical = int(out[1]) * int(inp[2])            # the kh x 1 conv keeps the input width
    return vertical * kh * cin * r + pos_out * kw * r * cout


# ----------------------------------------------------------------------------- the new layers

def _conv(name, filters, kernel, strides=(1, 1), padding="valid", dilation=(1, 1), activation=None,
          bias=False):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                               activation=activation, use_bias=bias, name=name)


def new_layers(layer, form: str, ranks: tuple[int, ...], names: list[str]) -> list:
    """The chain that replaces `layer` (unbuilt); names: one per new layer."""
    act = layer.get_config()["activation"]
    if form == "svd" and kind_of(layer) == "dense":
        return [keras.layers.Dense(ranks[0], use_bias=False, name=names[0]),
                keras.layers.Dense(int(layer.kernel.shape[-1]), activation=act, name=names[1])]
    cout = int(layer.kernel.shape[-1])
    (sh, sw), (dh, dw) = layer.strides, layer.dilation_rate
    if form == "svd":                               # 1x1 conv: the stride goes on the first
        return [_conv(names[0], ranks[0], 1, layer.strides, layer.padding),
                _conv(names[1], cout, 1, activation=act, bias=True)]
    if form == "tucker2":
        return [_conv(names[0], ranks[0], 1),
                _conv(names[1], ranks[1], layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate),
                _conv(names[2], cout, 1, activation=act, bias=True)]
    kh, kw = layer.kernel_size
    return [_conv(names[0], ranks[0], (kh, 1), (sh, 1), layer.padding, (dh, 1)),
            _conv(names[1], cout, (1, kw), (1, sw), layer.padding, (1, dw), activation=act, bias=True)]


def layer_count(form: str) -> int:
    return 3 if form == "tucker2" else 2


# ----------------------------------------------------------------------------- rows

def _sampled(make, arrays: list[np.ndarray], max_rows: int, rng, batch: int = 64) -> list[np.ndarray]:
    """`make(*batches)` -> aligned row matrices; at most `max_rows` rows in all, same rows from each."""
    n = len(arrays[0])
    out: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        parts = make(*[a[start:start + batch] for a in arrays])
        quota = int(np.ceil(max_rows * min(batch, n - start) / n))
        if len(parts[0]) > quota:
            pick = np.sort(rng.choice(len(parts[0]), quota, replace=False))
            parts = [p[pick] for p in parts]
        out.append([np.asarray(p, dtype=np.float64) for p in parts])
    return [np.concatenate(cols) for cols in zip(*out)]


def _whitening_rows(layer, form: str, x: np.ndarray, max_rows: int, rng) -> np.ndarray:
    """The rows the first factor multiplies by its kernel (what whitening must see)."""
    if form == "tucker2":
        return _sampled(lambda a: [a.reshape(-1, a.shape[-1])], [x], max_rows, rng)[0]
    probe = new_layers(layer, form, (1,) * (2 if form == "tucker2" else 1), ["probe_a", "probe_b", "probe_c"])[0]
    if form == "svd" and kind_of(layer) == "conv1x1":
        probe = layer                               # a strided 1x1 conv reads the same rows
    return _sampled(lambda a: [linear.input_rows(probe, a)], [x], max_rows, rng)[0]


def _kernel_and_bias(layer) -> tuple[np.ndarray, np.ndarray]:
    k = layer.kernel.numpy().astype(np.float64)
    return k, linear.bias_vector(layer).astype(np.float64)


def spectra(layer, form: str, x: np.ndarray, max_rows: int, rng, whiten: bool = True) -> list[np.ndarray]:
    """Singular values per mode of the form on the data: what energy and VBMF read."""
    return _factor(layer, form, None, x, max_rows, rng, whiten)[1]


def _factor(layer, form: str, ranks, x: np.ndarray, max_rows: int, rng, whiten: bool):
    """(kernels of every factor but the last, the last kernel, the last bias) and the spectra."""
    k, b = _kernel_and_bias(layer)
    rows = _whitening_rows(layer, form, x, max_rows, rng) if whiten else None
    if form == "svd":
        w = k.reshape(-1, k.shape[-1])
        white = Whitener.of(rows, w.shape[0])
        if ranks is None:
            return None, [spectrum(w, white)]
        a, bb = truncated(w, white, ranks[0])
        bias = b + white.mean @ (w - a @ bb)
        shape = k.shape[:-1]
        return ([a.reshape(shape + (ranks[0],))], bb.reshape((1,) * (k.ndim - 2) + (ranks[0], k.shape[-1])),
                bias), None
    kh, kw, cin, cout = k.shape
    if form == "tucker2":
        white = Whitener.of(rows, cin)
        k_in = k.transpose(2, 0, 1, 3).reshape(cin, -1)          # (Cin, kh*kw*Cout)
        y = _sampled(lambda a: [linear.input_rows(layer, a)], [x], max_rows, rng)[0] @ k.reshape(-1, cout)
        basis, s_out, y_mean = output_basis(y)
        if ranks is None:
            return None, [spectrum(k_in, white), s_out]
        r1, r2 = ranks
        u = np.linalg.svd(white.lt @ k_in, full_matrices=False)[0][:, :r1]
        p, q = white.lit @ u, u.T @ white.lt                     # x ~ mean + (x - mean) p q
        core = np.einsum("ac,ijco->ijao", q, k)                  # (kh, kw, r1, Cout)
        v = basis[:, :r2]
        last = v.T                                               # (r2, Cout)
        # the mean input reaches the output through (I - p q) and (I - v v^T): fold it into the bias
        lost = np.einsum("c,ijco->o", white.mean - white.mean @ p @ q, k)
        bias = b + y_mean @ (np.eye(cout) - v @ v.T) + lost @ v @ v.T
        return ([p.reshape(1, 1, cin, r1), np.einsum("ijao,ob->ijab", core, v)],
                last.reshape(1, 1, r2, cout), bias), None
    m = k.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)     # rows (i, c), columns (j, o)
    white = Whitener.of(rows, kh * cin)
    if ranks is None:
        return None, [spectrum(m, white)]
    (r,) = ranks
    a, bb = truncated(m, white, r)
    vertical = a.reshape(kh, cin, r)[:, None]                    # (kh, 1, Cin, r)
    horizontal = bb.reshape(r, kw, cout).transpose(1, 0, 2)[None]  # (1, kw, r, Cout)
    bias = b + (white.mean @ (m - a @ bb)).reshape(kw, cout).sum(axis=0)
    return ([vertical], horizontal, bias), None


@dataclass
class Factorised:
    layers: list
    record: dict = field(default_factory=dict)


def factorise(layer, form: str, ranks: tuple[int, ...], names: list[str], x_cur: np.ndarray,
              x_ref: np.ndarray, *, max_rows: int, rng, whiten: bool = True, refit: bool = True,
              holdout: float = 0.2) -> Factorised:
    """The chain replacing `layer` at `ranks`, built and weighted, its last factor refit.

    x_cur: the layer's input in the model being factorised (earlier layers already are);
    x_ref: its input in the original model, where the target outputs come from."""
    out = _factor(layer, form, ranks, x_cur, max_rows, rng, whiten)[0]
    firsts, last_k, last_b = out[0], out[1], out[2]
    chain = new_layers(layer, form, ranks, names)
    shape = tuple(_shape(layer.input_shape))
    for new, w in zip(chain[:-1], firsts):
        new.build(shape)
        new.set_weights([w.astype(np.float32)])
        shape = tuple(new.compute_output_shape(shape))
    chain[-1].build(shape)
    chain[-1].set_weights([last_k.astype(np.float32), last_b.astype(np.float32)])

    k, b = _kernel_and_bias(layer)
    k2 = k.reshape(-1, k.shape[-1])

    def pairs(xc, xr):
        z = tf.convert_to_tensor(xc, tf.float32)
        for new in chain[:-1]:
            z = new(z)
        return [linear.input_rows(chain[-1], z.numpy()), linear.input_rows(layer, xr) @ k2 + b]

    n = len(x_cur)
    hold = np.zeros(n, dtype=bool)
    if n > 4:
        hold[rng.permutation(n)[: max(1, int(round(n * holdout)))]] = True
    fit_in, fit_t = _sampled(pairs, [x_cur[~hold], x_ref[~hold]], max_rows, rng)
    hold_in, hold_t = _sampled(pairs, [x_cur[hold], x_ref[hold]], max(max_rows // 4, 1), rng) \
        if hold.any() else (fit_in, fit_t)
    w_last = last_k.reshape(-1, last_k.shape[-1])
    before = _rel_err(hold_in @ w_last + last_b, hold_t)
    record = {"error_before": round(before, 5), "error_after": round(before, 5), "refit": False}
    if refit:
        path = RidgePath(NormalEquations(fit_in, fit_t, center=True))
        best = min(((_rel_err(hold_in @ kk + bb, hold_t), a) for a in ALPHAS
                    for kk, bb in [path.solve(a)]), key=lambda t: t[0])
        if best[0] < before:
            both = RidgePath(NormalEquations(np.concatenate([fit_in, hold_in]),
                                             np.concatenate([fit_t, hold_t]), center=True))
            kk, bb = both.solve(best[1])
            chain[-1].set_weights([kk.reshape(last_k.shape).astype(np.float32), bb.astype(np.float32)])
            record.update(error_after=round(best[0], 5), refit=True, alpha=best[1])
    return Factorised(chain, record)


def _rel_err(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(pred - target) / max(np.linalg.norm(target), 1e-12))
