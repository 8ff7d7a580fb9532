"""Channel-dependency groups of a functional tf_keras model (the DepGraph idea).

Every tensor in the graph gets a *channel map*: for each position on its channel axis (the
last axis), the id of the *atom* it comes from, or -1 when it cannot be removed. An atom is one
output channel of one prunable producer (Conv1D/2D, SeparableConv2D, Conv2DTranspose, Dense:
the layers whose rule in graph/layers.py has the producer role).

Walking the graph in topological order:

- producers make fresh atoms for their output channels;
- pass-through layers (BatchNorm, depthwise conv with multiplier 1, activations, pooling,
  padding, dropout, ...) hand their input map on unchanged;
- element-wise merges (Add, Multiply, ...) tie position i of every input together: the tied atoms
  must be removed together, so they are merged in a union-find;
- Concatenate on the channel axis concatenates the maps (offsets come for free);
- Flatten tiles the map channels-last: channel c of an (H, W, C) tensor is every C-th input of
  the next Dense.

A *unit* is one class of tied atoms (the thing that is removed or kept); a *group* is the set
of producers whose atoms are tied. Layers we do not understand (Lambda, Reshape, TF-op layers,
custom layers, grouped convs, shared layers, nested models) make every group they touch
unprunable, and we remember their name and why: fail closed, never silently wrong. The model's
outputs keep their width the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.layers import Role, rule_of

# What each layer kind does to channels is decided by its rule in graph/layers.py.

TensorKey = tuple  # (layer name, node index, tensor index)


def tensor_key(t) -> TensorKey:
    h = t._keras_history
    return (h.layer.name, h.node_index, h.tensor_index)


@dataclass
class LayerCall:
    """One call of a layer in the model graph."""

    layer: object
    inputs: list[TensorKey]
    outputs: list[TensorKey]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return type(self.layer).__name__


@dataclass
class Group:
    """Producers whose output channels are tied, and every layer those channels flow through."""

    id: int
    producers: list[str]
    units: list[np.ndarray]            # each unit: the atom ids removed or kept together
    consumers: list[str] = field(default_factory=list)      # layers whose input weights are sliced
    members: list[str] = field(default_factory=list)        # pass-through/merge layers carrying it
    reasons: list[str] = field(default_factory=list)        # why it cannot be pruned (empty: it can)

    @property
    def prunable(self) -> bool:
        return not self.reasons

    @property
    def size(self) -> int:
        return len(self.units)

    def describe(self) -> dict:
        return {"id": self.id, "producers": self.producers, "consumers": self.consumers,
                "members": self.members, "channels": self.size, "prunable": self.prunable,
                "reasons": self.reasons}


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _channels(shape) -> int | None:
    return None if shape is None or len(shape) < 2 else shape[-1]


def _unknown_reason(call: LayerCall, calls_per_layer: dict[str, int], in_shape: tuple,
                    out_shape: tuple) -> str | None:
    """Why this layer call cannot carry prunable channels; None when we understand it."""
    layer = call.layer
    if calls_per_layer.get(layer.name, 0) > 1:
        return f"shared layer used at {calls_per_layer[layer.name]} call sites"
    if isinstance(layer, keras.Model):
        return "nested model that could not be flattened: rebuild it as one flat functional graph"
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return "channels_first data format"
    rule = rule_of(layer)
    if rule.role is None:
        return f"{call.kind} is not understood by the channel analysis"
    return rule.refuse(layer, in_shape, out_shape) if rule.refuse else None


class ChannelGraph:
    """The channel analysis of one model: tensor maps, units, groups, unprunable layers."""

    def __init__(self, model):
        if not getattr(model, "_is_graph_network", False):
            from edgesparse.errors import UserError
            raise UserError("pruning needs a functional or Sequential tf_keras model; "
                            "subclassed models have no graph to analyse")
        self.model = model
        self.calls = _topological_calls(model)
        self.layers = {c.name: c.layer for c in self.calls}
        self.tensors: dict[TensorKey, object] = {}
        for c in self.calls:
            for k, t in zip(c.outputs, tf.nest.flatten(c.layer._inbound_nodes[c.outputs[0][1]].outputs)):
                self.tensors[k] = t
        self.maps: dict[TensorKey, np.ndarray] = {}
        self.atom_producer: list[str] = []
        self.atom_channel: list[int] = []
        self.producer_atoms: dict[str, np.ndarray] = {}
        self.unprunable_layers: dict[str, str] = {}
        self._uf = _UnionFind()
        self._poisoned: dict[int, list[str]] = {}     # atom -> reasons its group cannot be pruned
        self._members: dict[int, set[str]] = {}       # atom -> pass-through layers it flows through
        self._consumers: dict[int, set[str]] = {}
        self._walk()
        self.groups = self._build_groups()

    # ------------------------------------------------------------------ walk

    def _new_atoms(self, producer: str, n: int) -> np.ndarray:
        ids = np.arange(len(self.atom_producer), len(self.atom_producer) + n)
        for c in range(n):
            self._uf.add()
            self.atom_producer.append(producer)
            self.atom_channel.append(c)
        self.producer_atoms[producer] = ids
        return ids

    def _poison(self, m: np.ndarray | None, reason: str) -> None:
        if m is None:
            return
        for a in np.unique(m[m >= 0]):
            self._poisoned.setdefault(int(a), []).append(reason)

    def _note(self, table: dict[int, set[str]], m: np.ndarray | None, name: str) -> None:
        if m is not None:
            for a in np.unique(m[m >= 0]):
                table.setdefault(int(a), set()).add(name)

    def _fixed(self, key: TensorKey) -> np.ndarray | None:
        n = _channels(tuple(self.tensors[key].shape))
        return None if n is None else np.full(n, -1, dtype=np.int64)

    def _walk(self) -> None:
        calls_per_layer: dict[str, int] = {}
        for c in self.calls:
            calls_per_layer[c.name] = calls_per_layer.get(c.name, 0) + 1
        for call in self.calls:
            ins = [self.maps.get(k) for k in call.inputs]
            role = rule_of(call.layer).role
            if role is Role.INPUT:
                self.maps[call.outputs[0]] = self._fixed(call.outputs[0])
                continue
            in_shape = tuple(self.tensors[call.inputs[0]].shape) if call.inputs else ()
            out_shape = tuple(self.tensors[call.outputs[0]].shape)
            reason = _unknown_reason(call, calls_per_layer, in_shape, out_shape)
            if reason is None and len(call.outputs) != 1:
                reason = "layer with several outputs"
            if reason is not None:
                self.unprunable_layers[call.name] = reason
                for m in ins:
                    self._poison(m, f"flows into {call.name} ({reason})")
                for k in call.outputs:
                    self.maps[k] = self._fixed(k)
                continue
            out = call.outputs[0]
            if role is Role.PRODUCER:
                self._note(self._consumers, ins[0], call.name)
                n = int(tuple(self.tensors[out].shape)[-1])
                self.maps[out] = self._new_atoms(call.name, n)
            elif role in (Role.CHANNELWISE, Role.PASS_THROUGH):
                self._note(self._members, ins[0], call.name)
                self.maps[out] = ins[0]
            elif role is Role.MERGE:
                self.maps[out] = self._merge(call, ins)
            elif role is Role.CONCAT:
                self.maps[out] = self._concatenate(call, ins)
            elif role is Role.FLATTEN:
                self.maps[out] = self._flatten(call, ins[0])
        for t in tf.nest.flatten(self.model.outputs):
            self._poison(self.maps.get(tensor_key(t)),
                         f"feeds model output {t._keras_history.layer.name} (outputs keep their width)")

    def _merge(self, call: LayerCall, ins: list) -> np.ndarray | None:
        self._note(self._members, np.concatenate([m for m in ins if m is not None] or [np.zeros(0, int)]),
                   call.name)
        if any(m is None for m in ins):
            for m in ins:
                self._poison(m, f"{call.name}: input channel count unknown")
            return None
        sizes = {len(m) for m in ins}
        if len(sizes) > 1:
            # Broadcast over a 1-channel input ties nothing; any other mismatch we do not model.
            wide = max(sizes)
            if sizes != {1, wide}:
                for m in ins:
                    self._poison(m, f"{call.name}: inputs of different widths {sorted(sizes)}")
                return np.full(wide, -1, dtype=np.int64)
            for m in ins:
                if len(m) == 1:
                    self._poison(m, f"{call.name}: broadcast over channels")
            ins = [m for m in ins if len(m) == wide]
        out = ins[0].copy()
        for m in ins[1:]:
            for i, (a, b) in enumerate(zip(out, m)):
                if a >= 0 and b >= 0:
                    self._uf.union(int(a), int(b))
                elif a >= 0 or b >= 0:
                    self._poison(np.array([max(a, b)]),
                                 f"{call.name}: tied to channels that cannot be removed")
                    out[i] = max(a, b)
        return out

    def _concatenate(self, call: LayerCall, ins: list) -> np.ndarray | None:
        shapes = [tuple(self.tensors[k].shape) for k in call.inputs]
        rank = len(shapes[0])
        self._note(self._members, np.concatenate([m for m in ins if m is not None] or [np.zeros(0, int)]),
                   call.name)
        if call.layer.axis % rank == rank - 1:
            if any(m is None for m in ins):
                for m in ins:
                    self._poison(m, f"{call.name}: input channel count unknown")
                return self._fixed(call.outputs[0])
            return np.concatenate(ins)
        return self._merge(call, ins)      # along a spatial axis: channel i of each input is tied

    def _flatten(self, call: LayerCall, m: np.ndarray | None) -> np.ndarray | None:
        shape = tuple(self.tensors[call.inputs[0]].shape)
        spatial = shape[1:-1]
        if m is None or any(d is None for d in spatial):
            self._poison(m, f"{call.name}: Flatten of an input with unknown spatial size")
            self.unprunable_layers.setdefault(call.name, "unknown spatial size")
            return self._fixed(call.outputs[0])
        self._note(self._members, m, call.name)
        return np.tile(m, int(np.prod(spatial, dtype=np.int64)))   # channels-last order

    # ------------------------------------------------------------------ groups

    def _build_groups(self) -> list[Group]:
        n = len(self.atom_producer)
        roots = np.array([self._uf.find(a) for a in range(n)], dtype=np.int64)
        # Producers are in one group when any of their atoms share a unit.
        puf = _UnionFind()
        pindex = {p: puf.add() for p in self.producer_atoms}
        first_producer_of_root: dict[int, str] = {}
        for a in range(n):
            p, r = self.atom_producer[a], int(roots[a])
            if r in first_producer_of_root:
                puf.union(pindex[p], pindex[first_producer_of_root[r]])
            else:
                first_producer_of_root[r] = p
        by_group: dict[int, list[str]] = {}
        for p in self.producer_atoms:
            by_group.setdefault(puf.find(pindex[p]), []).append(p)
        groups = []
        self.atom_unit = np.full(n, -1, dtype=np.int64)
        self.atom_group = np.full(n, -1, dtype=np.int64)
        for gid, producers in enumerate(by_group.values()):
            atoms = np.concatenate([self.producer_atoms[p] for p in producers])
            unit_roots = sorted({int(roots[a]) for a in atoms})
            unit_of_root = {r: i for i, r in enumerate(unit_roots)}
            units: list[list[int]] = [[] for _ in unit_roots]
            for a in atoms:
                units[unit_of_root[int(roots[a])]].append(int(a))
                self.atom_unit[a] = unit_of_root[int(roots[a])]
                self.atom_group[a] = gid
            reasons = sorted({r for a in atoms for r in self._poisoned.get(int(a), [])})
            consumers = sorted({c for a in atoms for c in self._consumers.get(int(a), ())})
            members = sorted({c for a in atoms for c in self._members.get(int(a), ())})
            groups.append(Group(gid, producers, [np.array(u) for u in units], consumers,
                                members, reasons))
        return groups

    # ------------------------------------------------------------------ queries

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def kept_positions(self, key: TensorKey, atom_keep: np.ndarray) -> np.ndarray | None:
        """Indices along the channel axis of tensor `key` that survive; None: all of them."""
        m = self.maps.get(key)
        if m is None:
            return None
        keep = np.ones(len(m), dtype=bool)
        atoms = m >= 0
        keep[atoms] = atom_keep[m[atoms]]
        return np.flatnonzero(keep)

    def call_of(self, name: str) -> LayerCall:
        for c in self.calls:
            if c.name == name:
                return c
        raise KeyError(name)

    def full_keep(self) -> np.ndarray:
        return np.ones(len(self.atom_producer), dtype=bool)

    def atom_keep_from_units(self, removed: dict[int, np.ndarray]) -> np.ndarray:
        """Atom mask from {group id: indices of removed units}."""
        keep = self.full_keep()
        for gid, units in removed.items():
            g = self.groups[gid]
            for u in np.asarray(units, dtype=np.int64):
                keep[g.units[int(u)]] = False
        return keep

    def describe(self) -> dict:
        return {"groups": [g.describe() for g in self.groups],
                "unprunable_layers": dict(self.unprunable_layers)}


def _topological_calls(model) -> list[LayerCall]:
    """The model's layer calls, inputs first (the order Keras itself runs them in)."""
    calls = []
    for depth in sorted(model._nodes_by_depth.keys(), reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            node_index = layer._inbound_nodes.index(node)
            outs = tf.nest.flatten(node.outputs)
            ins = [tensor_key(t) for t in tf.nest.flatten(node.keras_inputs)]
            calls.append(LayerCall(layer, ins, [(layer.name, node_index, i) for i in range(len(outs))]))
    return calls
