"""Surgery: edit the working form and carry the weights over.

- `shrink`: a genuinely smaller dense model with the kept weights copied (below);
- `grow`: a wider producer group, function-preserving (new channels are read by zero rows);
- `replace`: one layer by a chain of layers (low-rank factorisation);
- `insert` / `remove`: training-only layers such as gates and masks.

Shrink in detail:
The new model is the old graph cloned layer by layer (`clone_model`, so Lambda, TF-op and
custom layers are rebuilt by Keras itself), with `filters`/`units` of each pruned producer set
to the number of channels it keeps. Weights are then copied, sliced along the axes that carry
removed channels: producer output columns and biases, BatchNorm vectors, depthwise kernels,
PReLU alphas, and the input rows of every following layer (through Concatenate offsets and
Flatten's channels-last striding, which the channel maps already encode).

`weight_index` says, for one layer, which indices of each weight survive (from the weight axes
of its rule in graph/layers.py). The same function drives both the copy and the parameter count
of a plan (`planned_params`), so the budget and the surgery can never disagree.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.flatten import map_tensors
from edgesparse.graph.functional import clone_with_weights
from edgesparse.graph.layers import IN, OUT, Role, leaf_layers, rule_of, weight_axes

Keep = "np.ndarray | None"    # kept indices along an axis; None: all


def layer_keeps(graph: ChannelGraph, atom_keep: np.ndarray) -> dict[str, tuple]:
    """{layer name: (kept input channels, kept output channels)} for single-tensor layers."""
    keeps = {}
    for call in graph.calls:
        if rule_of(call.layer).role is Role.INPUT or call.name in keeps:
            continue
        inp = graph.kept_positions(call.inputs[0], atom_keep) if len(call.inputs) == 1 else None
        out = graph.kept_positions(call.outputs[0], atom_keep) if len(call.outputs) == 1 else None
        keeps[call.name] = (inp, out)
    return keeps


def _keeps_every_channel(keep, shape) -> bool:
    """`keep` (kept positions of a tensor, None: all) keeps the whole channel axis of `shape`."""
    return keep is None or len(keep) == tuple(shape)[-1]


def weight_index(layer, in_keep, out_keep) -> list[list]:
    """For each weight of `layer` (get_weights order): per axis, kept indices or None (all).

    The axes that carry channels come from the layer's rule (graph/layers.py)."""
    shapes = [tuple(w.shape) for w in layer.weights]
    index = [[None] * len(s) for s in shapes]
    axes = weight_axes(layer)
    if axes is None:
        # A weighted layer without channel axes (LSTM, GRU, attention, a custom layer) must see
        # its channels untouched: the channel analysis makes every group it touches unprunable.
        # Its weights' shapes say nothing about those widths (an LSTM kernel is
        # (in, 4 * units)), so the check is against the tensors it reads and writes.
        # Weightless ones (ReLU, pooling, Add) carry pruned channels, and scalars are not sliced.
        if any(shapes) and not (_keeps_every_channel(in_keep, layer.input_shape)
                and _keeps_every_channel(out_keep, layer.output_shape)):
            raise AssertionError(f"internal: {layer.name} ({type(layer).__name__}) would need slicing")
        return index
    for idx, ax in zip(index, axes):
        for axis, tag in ax.items():
            if tag == OUT:
                idx[axis] = out_keep
            elif tag == IN:
                idx[axis] = in_keep
            elif in_keep is not None:      # In(k): k consecutive positions per input channel
                k = tag.repeat
                idx[axis] = (np.asarray(in_keep)[:, None] * k + np.arange(k)[None, :]).ravel()
    return index


def slice_weights(layer, in_keep, out_keep) -> list[np.ndarray]:
    out = []
    for w, axes in zip(layer.get_weights(), weight_index(layer, in_keep, out_keep)):
        for axis, idx in enumerate(axes):
            if idx is not None:
                w = np.take(w, np.asarray(idx, dtype=np.int64), axis=axis)
        out.append(w)
    return out


def planned_params(model, keeps: dict[str, tuple]) -> int:
    """Parameters of the model that `keeps` describes, without building it."""
    total = 0
    for layer in leaf_layers(model):
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        for w, axes in zip(layer.weights, weight_index(layer, in_keep, out_keep)):
            total += int(np.prod([len(i) if i is not None else d for i, d in zip(axes, w.shape)],
                                 dtype=np.int64))
    return total


def shrink(model, graph: ChannelGraph, atom_keep: np.ndarray):
    """The smaller model: same graph, fewer channels, weights copied. The input is untouched."""
    keeps = layer_keeps(graph, atom_keep)

    def clone_layer(layer):
        config = layer.get_config()
        _, out_keep = keeps.get(layer.name, (None, None))
        resize = rule_of(layer).resize
        if resize is not None and out_keep is not None:
            config = resize(config, len(out_keep))
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in new.layers:
        old = model.get_layer(layer.name)
        if not old.weights:
            continue
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        layer.set_weights(slice_weights(old, in_keep, out_keep))
    return new


# ----------------------------------------------------------------------------- grow

def grow(model, producer_name: str, n_new: int, scale: float = 0.1, split: np.ndarray | None = None,
         seed: int = 0):
    """The model with `n_new` more output channels in the group of `producer_name`, computing
    exactly what `model` computes. The input is untouched.

    Every producer tied to it (through Add, Multiply, ...) grows by the same `n_new`, and so do
    the channel-wise layers the channels flow through (BatchNorm, depthwise convs, PReLU).
    A later ChannelGraph sees the new channels as units of the same group, so `shrink` can take
    them away again. Two ways to fill the new channels:

    - `split` None (zero-contribution units): new output columns are the layer's initialiser
      scaled by `scale` (small and random, so training can move them), channel-wise layers
      start from their initialisers, and the input rows of every layer that reads the new
      channels are ZERO, so nothing downstream sees them until it is trained to;
    - `split` = the old channel each new one copies (Net2WiderNet, Chen et al. 2016): every
      weight of the source channel is copied (producer columns, BatchNorm, depthwise, PReLU),
      and each reader's input row of the source is shared among the source and its copies by
      random positive fractions that sum to 1 per weight (`seed`). The copies compute the
      source's activation, so the sum downstream is unchanged, and the fractions differ per
      weight so the copies' gradients point different ways (equal fractions would give equal
      Adam updates, and the copies would never part).
    """
    from edgesparse.errors import UserError

    graph = ChannelGraph(model)
    group = next((g for g in graph.groups if producer_name in g.producers), None)
    if group is None:
        raise UserError(f"cannot grow {producer_name!r}: it is not a Conv/Dense layer of the model "
                        "(see `edgesparse inspect MODEL` for the producers)")
    if not group.prunable:
        raise UserError(f"cannot grow {producer_name!r}: its channels are fixed ({group.reasons[0]})")
    if n_new < 1:
        raise UserError(f"cannot grow {producer_name!r} by {n_new} channels; ask for at least 1")
    old_width = {p: len(graph.producer_atoms[p]) for p in group.producers}
    if any(len(u) != len(group.producers) for u in group.units) or set(old_width.values()) != {group.size}:
        raise UserError(f"cannot grow {producer_name!r}: its group ties channels of "
                        f"{', '.join(group.producers)} at different offsets (Concatenate then Add); "
                        "grow a producer outside such a block")

    def grown_width(key) -> int | None:
        m = graph.maps.get(key)
        if m is None:
            return None
        mine = np.zeros(len(m), dtype=bool)
        mine[m >= 0] = graph.atom_group[m[m >= 0]] == group.id
        return len(m) + n_new * int(mine.sum()) // group.size

    def clone_layer(layer):
        config = layer.get_config()
        resize = rule_of(layer).resize
        if resize is not None and len(layer._inbound_nodes) == 1:
            width = grown_width(graph.call_of(layer.name).outputs[0])
            if width is not None and width != layer.output_shape[-1]:
                config = resize(config, width)
        return layer.__class__.from_config(config)

    wide = keras.models.clone_model(model, clone_function=clone_layer)
    wide_graph = ChannelGraph(wide)
    is_old = np.array([c < old_width.get(p, c + 1)
                       for p, c in zip(wide_graph.atom_producer, wide_graph.atom_channel)], dtype=bool)
    _check_grown(wide_graph, producer_name, group.size + n_new, is_old)
    keeps = layer_keeps(wide_graph, is_old)
    if split is not None:
        split = np.asarray(split, dtype=np.int64)
        if split.shape != (n_new,) or split.min() < 0 or split.max() >= group.size:
            raise UserError(f"cannot grow {producer_name!r} by splitting: give one source channel in "
                            f"[0, {group.size}) for each of the {n_new} new channels")
        sources = _layer_sources(wide_graph, is_old, old_width, split)
        rng = np.random.default_rng(seed)
    for layer in wide.layers:
        old = model.get_layer(layer.name)
        if not old.weights:
            continue
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        if split is None:
            layer.set_weights(_embed_weights(old, layer, in_keep, out_keep, scale))
        else:
            layer.set_weights(_split_weights(old, layer, *sources.get(layer.name, (None, None)), rng))
    return wide


def _layer_sources(graph: ChannelGraph, is_old: np.ndarray, old_width: dict[str, int],
                   split: np.ndarray) -> dict[str, tuple]:
    """{layer: (input source, output source)}: for every channel position of the grown model's
    tensors, the position in the old model's tensor it copies (None: a tensor without channel
    map, untouched). New channel c of producer p copies channel split[c - old width] of p; in a
    tensor that repeats a channel (Flatten), the k-th copy of a new channel copies the k-th of
    its source."""
    atom_of = {(p, c): a for a, (p, c) in enumerate(zip(graph.atom_producer, graph.atom_channel))}
    source_atom = np.arange(len(is_old))
    for a in np.flatnonzero(~is_old):
        p, c = graph.atom_producer[a], graph.atom_channel[a]
        source_atom[a] = atom_of[(p, int(split[c - old_width[p]]))]

    def source(key):
        m = graph.maps.get(key)
        if m is None:
            return None
        kept = graph.kept_positions(key, is_old)
        old_index = np.full(len(m), -1, dtype=np.int64)
        old_index[kept] = np.arange(len(kept))
        occurrences: dict[int, list[int]] = {}
        for pos, a in enumerate(m):
            occurrences.setdefault(int(a), []).append(pos)
        seen: dict[int, int] = {}
        out = old_index.copy()
        for pos, a in enumerate(m):
            if a >= 0 and not is_old[a]:
                k = seen.get(int(a), 0)
                seen[int(a)] = k + 1
                out[pos] = old_index[occurrences[int(source_atom[a])][k]]
        return out

    sources = {}
    for call in graph.calls:
        if rule_of(call.layer).role is Role.INPUT or call.name in sources:
            continue
        sources[call.name] = (source(call.inputs[0]) if len(call.inputs) == 1 else None,
                              source(call.outputs[0]) if len(call.outputs) == 1 else None)
    return sources


def _split_weights(old, new, in_source, out_source, rng) -> list[np.ndarray]:
    """`new`'s weights as copies of `old`'s along the sources (see `grow`'s split). A weight that
    mixes input channels into outputs (it has an input and an output axis: Dense, Conv, a
    separable's pointwise kernel) shares each source's input rows among its copies; every other
    channel-indexed weight (biases, BatchNorm, depthwise kernels, PReLU) is copied as is."""
    axes = weight_axes(new)
    out = []
    for j, w_old in enumerate(old.get_weights()):
        index, rows = [np.arange(d) for d in w_old.shape], None
        for axis, tag in (axes[j] if axes is not None else {}).items():
            axis = axis % w_old.ndim
            if tag == OUT and out_source is not None:
                index[axis] = out_source
            elif tag != OUT and in_source is not None:
                k = 1 if tag == IN else tag.repeat
                index[axis] = (in_source[:, None] * k + np.arange(k)[None, :]).ravel()
                rows = axis
        w = w_old[np.ix_(*index)]
        mixes = rows is not None and any(t == OUT for t in axes[j].values())
        if mixes and len(index[rows]) > w_old.shape[rows]:
            w = np.moveaxis(w, rows, 0)
            share = rng.uniform(0.5, 1.5, size=w.shape)
            total = np.zeros((w_old.shape[rows],) + w.shape[1:])
            np.add.at(total, index[rows], share)
            w = np.moveaxis(w * (share / total[index[rows]]), 0, rows)
        if w.shape != tuple(new.weights[j].shape):
            raise AssertionError(f"internal: splitting into {new.name} gave {w.shape}, not {tuple(new.weights[j].shape)}")
        out.append(w.astype(w_old.dtype))
    return out


def _check_grown(graph: ChannelGraph, producer: str, size: int, is_old: np.ndarray) -> None:
    """The grown group has the new size, and no unit ties a new channel to an old one."""
    group = next(g for g in graph.groups if producer in g.producers)
    mixed = [u for u in group.units if len(set(is_old[u])) > 1]
    if group.size != size or mixed:
        raise AssertionError(f"internal: growing {producer} gave a group of {group.size} "
                             f"channels ({len(mixed)} mixing old and new), not {size}")


def _embed_weights(old, new, in_keep, out_keep, scale: float) -> list[np.ndarray]:
    """`new`'s weights with `old`'s copied into the positions of the old channels. For a
    producer, new input rows are zero and new output columns its initialiser times `scale`."""
    producer = rule_of(new).role is Role.PRODUCER
    out = []
    old_w = old.get_weights()
    for w, full, ins, outs in zip(new.get_weights(), weight_index(new, in_keep, out_keep),
                                  weight_index(new, in_keep, None), weight_index(new, None, out_keep)):
        w = w * scale if producer else w.copy()
        for axis, idx in enumerate(ins):
            if producer and idx is not None:
                gone = np.setdiff1d(np.arange(w.shape[axis]), idx)
                w[(slice(None),) * axis + (gone,)] = 0.0
        at = np.ix_(*[np.arange(d) if i is None else np.asarray(i, dtype=np.int64)
                      for i, d in zip(full, w.shape)])
        w[at] = old_w[len(out)]
        out.append(w.astype(old_w[len(out)].dtype))
    return out


# ----------------------------------------------------------------------------- edit the graph

def replace(model, layer_name: str, new_layers: list):
    """The model with layer `layer_name` replaced by a chain of layers (applied in order to its
    input), e.g. a Dense by two thinner Dense. Layers built beforehand keep their weights; the
    others start from their initialisers. The input is untouched."""
    _need_single_tensor(model, layer_name, "replace")
    _need_new_names(model, new_layers)

    def chain(layer, args, kwargs):
        x = args[0]
        for new in new_layers:
            x = new(x)
        return x
    return _rebuild(model, {layer_name: chain})


def insert(model, after: str, layer):
    """The model with `layer` applied to the output of layer `after`, which every former reader
    of that output now reads instead (a gate, a mask). The input is untouched."""
    model.get_layer(after)
    _need_new_names(model, [layer])
    return _rebuild(model, {after: lambda old, args, kwargs: layer(old(*args, **kwargs))})


def remove(model, layer_name: str):
    """The model without layer `layer_name`, whose readers read its input instead; it must keep
    its input's shape (a gate, a mask, a dropout). The input is untouched."""
    from edgesparse.errors import UserError

    layer = _need_single_tensor(model, layer_name, "remove")
    if tuple(layer.input_shape) != tuple(layer.output_shape):
        raise UserError(f"cannot remove {layer_name!r}: it changes the shape {layer.input_shape} -> "
                        f"{layer.output_shape}; use replace() instead")
    return _rebuild(model, {layer_name: lambda old, args, kwargs: args[0]})


def _need_single_tensor(model, name: str, what: str):
    from edgesparse.errors import UserError

    try:
        layer = model.get_layer(name)
    except ValueError:
        raise UserError(f"cannot {what} {name!r}: the model has no layer of that name") from None
    if len(layer._inbound_nodes) != 1 or len(tf.nest.flatten(layer.input)) != 1 \
            or len(tf.nest.flatten(layer.output)) != 1:
        raise UserError(f"cannot {what} {name!r}: only a layer called once on one tensor can be edited")
    return layer


def _need_new_names(model, layers: list) -> None:
    from edgesparse.errors import UserError

    taken = {layer.name for layer in model.layers}
    clash = [layer.name for layer in layers if layer.name in taken]
    if clash or len({layer.name for layer in layers}) != len(layers):
        raise UserError(f"layer names must be new and distinct: {', '.join(clash) or 'repeated'}")


def _rebuild(model, substitute: dict):
    """Re-run the graph of a private copy of `model`, calling `substitute[name](layer, args,
    kwargs)` instead of those layers; then copy the result once more, so that every layer of
    the returned model is called exactly once (a copy's layers also sit in the copy's graph)."""
    source = clone_with_weights(model)
    mapping = {id(t): t for t in tf.nest.flatten(source.inputs)}
    for depth in sorted(source._nodes_by_depth.keys(), reverse=True):
        for node in source._nodes_by_depth[depth]:
            layer = node.layer
            if isinstance(layer, keras.layers.InputLayer):
                continue
            args, kwargs = map_tensors((node.call_args, node.call_kwargs), mapping)
            if layer.name in substitute:
                result = substitute[layer.name](layer, args, kwargs)
            else:
                result = layer(*args, **kwargs)
            for original, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(result)):
                mapping[id(original)] = new
    outputs = [mapping[id(t)] for t in tf.nest.flatten(source.outputs)]
    rebuilt = keras.Model(source.inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)
    return clone_with_weights(rebuilt)
