"""GradMax: new neurons whose outgoing weights maximise the gradient on their incoming weights.

Evci et al., "GradMax: Growing Neural Networks using Gradient Information" (ICLR 2022), as in
google-research/growneuron (growers.AddGradmax, layers.grow_new_layer). For a Dense producer
read by one Dense layer, k new producer units with zero incoming weights and outgoing rows W
(k x m, m the reader's units) get, with f'(pre-activation) = 1, the incoming-weight gradient

    dL/dW_in = X^T Delta W^T = G W^T,     G = X^T Delta   (in x m)

X the producer's input, Delta = dL/d(the reader's pre-activation) on a batch. Under a bound
on W's rows, ||G W^T|| is largest when W's rows are the top right singular vectors of G.

Three choices, and why:
- f'(0) = 0: TensorFlow's ReLU has gradient 0 at 0, so units with zero incoming weights and zero
  bias would get no gradient at all (the zero-init failure GradMax is meant to fix).
  growneuron swaps the activation for `relu1` = maximum(x, 0) (gradient 1 at 0); we cannot
  change a user's model's activation. Instead the new units get a small positive bias
  (`GRADMAX_BIAS`): every sample's pre-activation is then eps > 0, where ReLU's gradient is 1,
  and the units output the constant f(eps), which we subtract from the reader's bias
  (f(eps) x W's column sums). The function is unchanged exactly, and the gradient is the one
  GradMax maximises. eps is small so that a unit that later dies leaves the reader's bias only
  f(eps) x W off.
- The norm: growneuron (`scale_method='mean_norm'`) scales each new outgoing row to `scale` x
  the mean L2 norm of the old units' outgoing rows; its CIFAR configs use scale 0.5.
- More new units than G has directions (G's rank is at most min(in, m), and 9 into 10 logits
  under a softmax): the first `rank` units take the top singular vectors (GradMax proper); the
  rest take random unit directions in the span of those vectors. A repeated direction would
  make two units identical forever (same zero incoming weights, same outgoing row, same
  gradients), and a null direction gets no gradient; growneuron's svds cannot give more
  vectors than that (k < min(G's shape)), and its growth steps are small enough never to ask.
"""
from __future__ import annotations

import numpy as np

GRADMAX_BIAS = 1e-3          # the new units' bias: ReLU's gradient is 1 there (see above)
RANK_TOL = 1e-6              # singular values below this x the largest count as zero


def why_not(model, producer: str) -> str | None:
    """Why gradmax cannot widen `producer` (None: it can): a Dense with a bias read directly
    by exactly one Dense with a bias, nothing in between."""
    from edgesparse.graph.channels import ChannelGraph

    graph = ChannelGraph(model)
    group = next(g for g in graph.groups if producer in g.producers)
    reader = _reader(graph, producer)
    layer = model.get_layer(producer)
    if type(layer).__name__ != "Dense" or not layer.use_bias:
        return f"{producer} is a {type(layer).__name__}{'' if layer.use_bias else ' without bias'}, not a Dense with a bias"
    if len(group.producers) != 1 or group.members:
        return f"{producer}'s channels flow through {', '.join(group.producers[1:] + group.members)}"
    if reader is None:
        return f"{producer} is read by {', '.join(group.consumers) or 'nothing'}, not by exactly one Dense"
    if not model.get_layer(reader).use_bias:
        return f"{producer}'s reader {reader} has no bias to take the new units' constant output"
    return None


def _reader(graph, producer: str) -> str | None:
    """The one Dense that reads `producer`'s output directly, if there is exactly one."""
    outs = {k for c in graph.calls if c.name == producer for k in c.outputs}
    readers = [c for c in graph.calls if set(c.inputs) & outs]
    if len(readers) != 1 or readers[0].kind != "Dense" or len(readers[0].inputs) != 1:
        return None
    return readers[0].name


def widen(model, producer: str, n_new: int, x, y, scale: float, rng) -> tuple[object, dict]:
    """`model` with `n_new` more units in `producer`, GradMax-initialised on the batch (x, y);
    the function is unchanged. Returns the model and what the growth saw (G's rank, how many
    units got a singular vector)."""
    from edgesparse.graph.channels import ChannelGraph
    from edgesparse.graph.surgery import grow

    reader = _reader(ChannelGraph(model), producer)
    old = int(model.get_layer(producer).units)
    s, vt = np.linalg.svd(growth_matrix(model, producer, reader, x, y), full_matrices=False)[1:]
    rank = int((s > RANK_TOL * s[0]).sum()) if s.size and s[0] > 0 else 0
    top = min(n_new, rank)
    rows = vt[:top]
    if n_new > top:                     # beyond G's directions: random ones in their span
        basis = vt[:rank] if rank else np.eye(vt.shape[1])
        extra = rng.standard_normal((n_new - top, basis.shape[0])) @ basis
        rows = np.concatenate([rows, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
    kernel = model.get_layer(reader).kernel.numpy()[:old]
    rows = rows * scale * float(np.mean(np.linalg.norm(kernel, axis=1)))
    wide = grow(model, producer, n_new, scale=0.0)      # zero incoming weights, zero reader rows
    read_out(wide, producer, reader, old, rows)
    return wide, {"rank": rank, "singular": top, "random": n_new - top}


def growth_matrix(model, producer: str, reader: str, x, y) -> np.ndarray:
    """G = X^T Delta (producer input x reader units) on the batch: the incoming-weight
    gradient of `m` units read out through the identity. That is how it is measured: a copy
    with m such units, whose producer-kernel gradient in the new columns is G, so G comes from
    the same loss and the same TensorFlow gradients as training."""
    from edgesparse._tf import tf
    from edgesparse.graph.surgery import grow
    from edgesparse.train.losses import CrossEntropy

    old = int(model.get_layer(producer).units)
    m = int(model.get_layer(reader).units)
    probe = grow(model, producer, m, scale=0.0)
    read_out(probe, producer, reader, old, np.eye(m, dtype=np.float32))
    kernel = probe.get_layer(producer).kernel
    with tf.GradientTape() as tape:
        loss = CrossEntropy()(probe, tf.constant(np.asarray(x, np.float32)), tf.constant(np.asarray(y)),
                              training=False)
    return tape.gradient(loss, kernel).numpy()[:, old:].astype(np.float64)


def read_out(wide, producer: str, reader: str, old: int, rows: np.ndarray) -> None:
    """Give `wide`'s new units of `producer` (positions old.., zero incoming weights) the bias
    GRADMAX_BIAS and the outgoing rows `rows`, and take their constant output f(eps) x rows
    out of the reader's bias: the function stays the same (see the module docstring)."""
    from edgesparse._tf import tf

    layer, read = wide.get_layer(producer), wide.get_layer(reader)
    bias = layer.bias.numpy()
    bias[old:] = GRADMAX_BIAS
    layer.bias.assign(bias)
    out = float(layer.activation(tf.constant([GRADMAX_BIAS], tf.float32)).numpy()[0])
    kernel = read.kernel.numpy()
    kernel[old:old + len(rows)] = rows
    read.kernel.assign(kernel)
    read.bias.assign((read.bias.numpy() - out * np.asarray(rows).sum(axis=0)).astype(np.float32))
