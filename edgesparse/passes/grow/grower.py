"""The grow algorithm (see the package docstring): one `Grower` per run holds the network, its
masks (sparse start), Adam's carried moments and the record of every step."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesparse.errors import UserError
from edgesparse.passes.grow.callbacks import carry_moments, cosine_decay, stop_at_target

if TYPE_CHECKING:
    from edgesparse.passes.grow import GrowConfig

GRADIENT_BATCH = 256        # samples in the dense-gradient batch of connection growth
DISTILL_ALPHA = 0.5         # prune_distill: weight of the labels' cross-entropy in Hinton's loss
PRUNE_UPDATES = 100         # mask updates of the final prune (cubic schedule): 100 measured better than 10, 30, 300




def maskable(model) -> list[str]:
    from edgesparse.graph import linear

    return [l.name for l in model.layers if linear.why_not_linear(l) is None and getattr(l, "kernel", None) is not None]


def _top(score: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """Mask of the k highest scores among `allowed` (ties by position)."""
    flat = np.where(allowed.ravel(), score.ravel().astype(np.float64), -np.inf)
    out = np.zeros(flat.size, dtype=bool)
    if k > 0:
        out[np.argsort(-flat, kind="stable")[:k]] = True
    return out.reshape(score.shape) & allowed


class Grower:
    """One grow run: the network, its masks (sparse start) and the record of every step."""

    def __init__(self, given, c: GrowConfig, data, seed: int, teacher, progress=None):
        from edgesparse.graph.channels import ChannelGraph
        from edgesparse.graph.flatten import flatten_nested
        from edgesparse.graph.stats import count_macs, count_params
        from edgesparse.train.metrics import accuracy
        from edgesparse.train.sparse_init import rescale_to_sparse_fans

        self.c, self.data, self.seed, self.progress = c, data, seed, progress
        self.rng = np.random.default_rng(seed)
        self.warnings: list[str] = []
        given, _, _ = flatten_nested(given)
        graph = ChannelGraph(given)
        self.groups = [g for g in graph.prunable_groups]
        if not self.groups:
            raise UserError(f"grow: {given.name} has no channel group that can grow (run `edgesparse inspect "
                            "MODEL` to see why)")
        self.given_width = {g.producers[0]: g.size for g in self.groups}
        self.macs_given, self.params_given = count_macs(given), count_params(given)
        self.teacher_accuracy = accuracy(teacher, data.x_val, data.y_val)
        if c.target_accuracy is not None:
            self.target, self.target_source = float(c.target_accuracy), "target_accuracy"
        else:
            self.target = self.teacher_accuracy - c.accuracy_budget
            self.target_source = f"given model {self.teacher_accuracy:.2f}% - budget {c.accuracy_budget:g}"
        self.net = self._start(given, graph)
        self.masks: dict[str, np.ndarray] | None = None
        if c.start_density is not None and c.start_density < 1.0:
            self.masks = {n: self.rng.random(tuple(self.net.get_layer(n).kernel.shape)) < c.start_density
                          for n in maskable(self.net)}
            for n, m in self.masks.items():
                m.flat[self.rng.integers(m.size)] = True        # never an empty layer
                # masked alone, a unit keeps ~density of the variance its initialiser meant
                # (stop 27: 122 of fc2's 256 units never fired on digits at 10%, 34 dense)
                rescale_to_sparse_fans(self.net.get_layer(n), m)
        self._check_caps()
        self.trajectory: list[dict[str, Any]] = []
        self.epochs = 0
        self.mac_epochs = 0.0
        self.active_mac_epochs = 0.0      # the same, counting only active connections (active_macs)
        self.teacher_mac_epochs = 0.0     # prune_distill: the teacher's forward passes, not in mac_epochs
        self.moments: dict[str, Any] | None = None       # keep_moments: Adam's state after the last phase

    # ---------------------------------------------------------------- the start

    def _start(self, given, graph):
        from edgesparse._tf import keras
        from edgesparse.graph.surgery import shrink

        removed = {g.id: np.arange(self.start_units(g.size), g.size) for g in self.groups}
        small = shrink(given, graph, graph.atom_keep_from_units(removed))
        keras.utils.set_random_seed(self.seed)
        fresh = keras.models.clone_model(small)          # re-initialised: see the module docstring
        fresh.build(small.input_shape)
        return fresh

    def start_units(self, size: int) -> int:
        return max(1, int(round(self.c.start_width * size)))

    def cap(self) -> tuple[float, float | None]:
        macs = self.c.max_macs * self.macs_given
        params = None if self.c.max_params is None else self.c.max_params * self.params_given
        return macs, params

    def _check_caps(self) -> None:
        macs_cap, params_cap = self.cap()
        macs, params = self.macs(), self.params()
        if macs > macs_cap:
            raise UserError(f"grow: the growth cap max_macs={self.c.max_macs:g} ({macs_cap:,.0f} MACs) is smaller "
                            f"than the starting network ({macs:,} MACs at start_width {self.c.start_width:g}); "
                            "raise max_macs or lower start_width")
        if params_cap is not None and params > params_cap:
            raise UserError(f"grow: the growth cap max_params={self.c.max_params:g} ({params_cap:,.0f} parameters) "
                            f"is smaller than the starting network ({params:,} at start_width "
                            f"{self.c.start_width:g}); raise max_params or lower start_width")
        if self.c.prune_to_params is not None:
            floor = self.prune_floor(self.net)
            if self.c.prune_to_params < floor:
                raise UserError(f"grow: prune_to_params={self.c.prune_to_params} is below {floor}, one weight "
                                "per output unit of every layer of the starting network; ask for more")

    # ---------------------------------------------------------------- measures

    def macs(self, net=None) -> int:
        from edgesparse.graph.stats import count_macs

        return count_macs(net or self.net)

    def active_macs(self) -> float:
        """MACs of the active connections: a masked layer at its mask's density, as sparse
        training's FLOPs are counted (RigL). TensorFlow trains the masks dense here, so on this
        machine a sparse epoch takes a dense epoch's time."""
        from edgesparse.graph.stats import macs_by_layer

        masks = self.masks or {}
        return float(sum(m * (float(masks[n].mean()) if n in masks else 1.0)
                         for n, m in macs_by_layer(self.net).items()))

    def spent(self, epochs: int, active: float | None = None) -> None:
        """Counts `epochs` of training the current network; `active` overrides active_macs."""
        self.epochs += epochs
        self.mac_epochs += float(self.macs()) * epochs
        self.active_mac_epochs += (self.active_macs() if active is None else active) * epochs

    def connections(self, net=None) -> int:
        from edgesparse.graph import linear

        net = net or self.net
        return int(sum(np.count_nonzero(k.numpy()) for l in net.layers for k in linear.kernels_of(l)))

    def params(self, net=None, masks=None) -> int:
        """Parameters, counting only the active connections of masked kernels."""
        from edgesparse.graph.stats import count_params

        net, masks = net or self.net, self.masks if masks is None else masks
        total = count_params(net)
        for name, m in (masks or {}).items():
            total -= int(m.size - m.sum())
        return total

    def widths(self, net=None) -> dict[str, int]:
        net = net or self.net
        return {p: int(net.get_layer(p).output_shape[-1]) for p in self.given_width}

    def accuracy(self) -> float:
        from edgesparse.train.metrics import accuracy

        return accuracy(self.net, self.data.x_val, self.data.y_val)

    def record(self, event: str, **extra) -> None:
        self.trajectory.append({"step": len(self.trajectory), "event": event, "epochs": self.epochs,
                                "mac_epochs": float(self.mac_epochs),
                                "active_mac_epochs": float(self.active_mac_epochs), "accuracy": round(self.accuracy(), 3),
                                "macs": self.macs(), "params": self.params(), "connections": self.connections(),
                                "widths": self.widths(), **extra})

    # ---------------------------------------------------------------- the loop

    def run(self):
        c = self.c
        macs_cap, params_cap = self.cap()
        self.record("start")
        stop = "epochs"
        while self.epochs < c.max_epochs:
            self.train_phase(c.max_epochs - self.epochs)
            if self.trajectory[-1]["accuracy"] >= self.target:
                stop = "target"
                break
            if self.epochs >= c.max_epochs:
                break
            grew = self.grow_connections(params_cap) + self.grow_neurons(macs_cap, params_cap)
            if not grew:
                stop = "cap"
                break
        reached = self.trajectory[-1]["accuracy"] >= self.target
        grown = {"macs": self.macs(), "params": self.params(), "widths": self.widths(),
                 "accuracy": self.trajectory[-1]["accuracy"]}
        if c.prune_to_params is not None:
            self.prune(c.prune_to_params)
        final = self.trajectory[-1]
        if not reached:
            self.warnings.append(f"grow stopped ({'the cap is spent' if stop == 'cap' else 'max_epochs used'}) at "
                                 f"{grown['accuracy']:.2f}% validation accuracy, short of the target "
                                 f"{self.target:.2f}%; raise max_macs/max_params or max_epochs, or lower the target")
        model = self.net                    # the zeros are in the weights; no mask leaves the pass
        facts = {"start_width": c.start_width, "start_density": c.start_density,
                 "weights": "re-initialised", "target_accuracy": round(self.target, 3),
                 "target_source": self.target_source, "teacher_accuracy": round(self.teacher_accuracy, 3),
                 "reached": bool(reached), "stopped_by": stop,
                 "cap": {"max_macs": c.max_macs, "max_params": c.max_params, "macs": int(macs_cap),
                         "params": None if params_cap is None else int(params_cap)},
                 "given": {"macs": self.macs_given, "params": self.params_given, "widths": self.given_width},
                 "grown": grown, "prune_to_params": c.prune_to_params,
                 "final": {"accuracy": final["accuracy"], "macs": final["macs"], "params": final["params"],
                           "connections": final["connections"], "widths": final["widths"]},
                 "epochs": self.epochs, "mac_epochs": float(self.mac_epochs),
                 "active_mac_epochs": float(self.active_mac_epochs),
                 "teacher_mac_epochs": float(self.teacher_mac_epochs),
                 "mac_epochs_per_given_epoch": round(self.mac_epochs / max(self.macs_given, 1), 3),
                 "trajectory": self.trajectory}
        return model, facts

    def _fit(self, epochs: int, masks: dict | None, validate: bool, callbacks=(), label="grow: training",
             patience: int | None = None, loss=None):
        from edgesparse.train.callbacks import MaskUpdate
        from edgesparse.train.losses import CrossEntropy
        from edgesparse.train.masks import Masks
        from edgesparse.train.trainer import train

        bound = Masks(self.net, masks) if masks else None
        # The masks bind to the trainer's optimizer (the sparse optimizer) and hold after every step.
        cbs = ([MaskUpdate(bound, None, net=self.net)] if bound else []) + list(callbacks)
        if self.c.keep_moments:
            cbs.append(carry_moments(self))
        post = [bound.apply] if bound else []
        result = train(self.net, (self.data.x_train, self.data.y_train), loss=loss or CrossEntropy(), epochs=epochs,
                       lr=self.c.learning_rate, batch_size=self.c.batch_size, seed=self.seed + self.epochs,
                       validation=(self.data.x_val, self.data.y_val) if validate else None,
                       patience=(patience or self.c.patience) if validate else None, callbacks=cbs, post_step=post,
                       progress=self.progress, label=label)
        if bound is not None:
            bound.strip()
        self.spent(result.epochs_run)
        return result

    def train_phase(self, epochs: int) -> None:
        """Train until a plateau (`patience` epochs without a better validation accuracy), the
        target, or `epochs`; the best epoch's weights are kept."""
        callbacks, patience = [stop_at_target(self.target)], self.phase_patience()
        if self.c.cap_epochs is not None and not self.can_grow():
            # The net grown to the cap already computes what the smaller one learnt: a short
            # annealed fine-tune, not a plateau search that pays `patience` epochs to end.
            epochs = patience = min(epochs, self.c.cap_epochs)
            steps = max(1, math.ceil(len(self.data.x_train) / self.c.batch_size)) * epochs
            callbacks.append(cosine_decay(self.c.learning_rate, steps))
        result = self._fit(epochs, self.masks, validate=True, callbacks=callbacks, patience=patience)
        self.record("train", epochs_in_phase=result.epochs_run,
                    plateau=bool(result.stopped_early and self.accuracy() < self.target))

    # ---------------------------------------------------------------- growth

    def phase_patience(self) -> int:
        """A plateau that a growth will follow is `grow_patience` epochs; the last phase, at the
        cap, stops on `patience` like the from-scratch control."""
        if self.c.grow_patience != self.c.patience and self.can_grow():
            return self.c.grow_patience
        return self.c.patience

    def can_grow(self) -> bool:
        """Whether a growth is still possible: a connection to grow, or a channel per group
        within the cap."""
        if self.masks is not None and not all(m.all() for m in self.masks.values()):
            return True
        macs_cap, params_cap = self.cap()
        wide, masks = self._widened({p: 1 for p in self.given_width})
        return self.macs(wide) <= macs_cap and (params_cap is None or self.params(wide, masks) <= params_cap)

    def dense_gradients(self, names: list[str]) -> dict[str, np.ndarray]:
        from edgesparse._tf import tf
        from edgesparse.train.losses import CrossEntropy

        x, y = self.data.x_train, self.data.y_train
        idx = self.rng.choice(len(x), size=min(GRADIENT_BATCH, len(x)), replace=False)
        # one dense forward and backward: that fraction of a dense training epoch
        self.active_mac_epochs += float(self.macs()) * len(idx) / len(x)
        kernels = [self.net.get_layer(n).kernel for n in names]
        with tf.GradientTape() as tape:
            value = CrossEntropy()(self.net, tf.constant(np.asarray(x[idx], np.float32)),
                                   tf.constant(np.asarray(y[idx])), training=False)
        return {n: np.abs(g.numpy()) for n, g in zip(names, tape.gradient(value, kernels))}

    def grow_connections(self, params_cap: float | None) -> int:
        """RigL's regrowth without the drop: the inactive positions with the largest dense
        gradient become active (at zero). Returns how many were grown."""
        if self.masks is None or all(m.all() for m in self.masks.values()):
            return 0
        grads = self.dense_gradients(list(self.masks))
        room = None if params_cap is None else int(params_cap - self.params())
        wanted = {n: min(int(math.ceil(self.c.connection_step * m.sum())), int(m.size - m.sum()))
                  for n, m in self.masks.items()}
        if room is not None and sum(wanted.values()) > room:
            scale = max(room, 0) / max(sum(wanted.values()), 1)
            wanted = {n: int(k * scale) for n, k in wanted.items()}
        grown = 0
        for name, k in wanted.items():
            new = _top(grads[name], k, ~self.masks[name])
            self.masks[name] = self.masks[name] | new
            grown += int(new.sum())
        if grown:
            self.record("grow connections", grown=grown)
        return grown

    def grow_neurons(self, macs_cap: float, params_cap: float | None) -> int:
        """Widen every group by grow_step x its given width, or by the largest step below it
        that the cap allows (one channel per group at least). Returns the channels added."""
        def adds_at(step: float) -> dict[str, int]:
            return {p: max(1, int(math.ceil(step * w))) for p, w in self.given_width.items()}

        def fits(adds):
            wide, masks = self._widened(adds)
            ok = self.macs(wide) <= macs_cap and (params_cap is None or self.params(wide, masks) <= params_cap)
            return (wide, masks) if ok else None

        adds = adds_at(self.c.grow_step)
        found = fits(adds)
        if found is None:
            adds = adds_at(0.0)
            found = fits(adds)
            if found is None:
                return 0
            low, high = 0.0, self.c.grow_step          # low fits, high does not
            while adds_at(high) != adds_at(low) and high - low > 1e-3:
                mid = (low + high) / 2
                tried = fits(adds_at(mid))
                if tried is None:
                    high = mid
                else:
                    low, adds, found = mid, adds_at(mid), tried
        wide, masks = found
        if self.moments is not None:
            self.moments = self._widened_moments(adds)
        self.net, self.masks = wide, masks
        added = int(sum(adds.values()))
        self.record("grow neurons", added=adds)
        return added

    def _widened(self, adds: dict[str, int]):
        from edgesparse.graph.functional import clone_with_weights
        from edgesparse.graph.surgery import grow

        wide, splits = self.net, {}
        for producer, n in adds.items():
            if self.c.grow_init == "split":     # Net2WiderNet: every channel copied before any twice
                width = int(wide.get_layer(producer).output_shape[-1])
                splits[producer] = np.concatenate([self.rng.permutation(width)
                                                   for _ in range(-(-n // width))])[:n]
            seed = int(self.rng.integers(2**31)) if producer in splits else 0   # zero units draw nothing
            wide = grow(wide, producer, n, split=splits.get(producer), seed=seed)
        if self.masks is None:
            return wide, None
        # The masks grow the same way: old active = +1, old inactive = -1; a new position is 0
        # (zero-contribution units, scale 0) or its source's mark times a positive share (split).
        marks = clone_with_weights(self.net)
        for name, m in self.masks.items():
            marks.get_layer(name).kernel.assign(np.where(m, 1.0, -1.0).astype(np.float32))
        for producer, n in adds.items():
            marks = grow(marks, producer, n, scale=0.0, split=splits.get(producer))
        masks = {}
        for name, m in self.masks.items():
            mark = marks.get_layer(name).kernel.numpy()
            fresh = (mark == 0) & (self.rng.random(mark.shape) < m.mean())
            masks[name] = (mark > 0) | fresh
            k = wide.get_layer(name).kernel
            k.assign(k.numpy() * masks[name])
        return wide, masks

    def _widened_moments(self, adds: dict[str, int]) -> dict[str, Any]:
        """The carried Adam moments, embedded in the widened network's shapes like its weights
        (graph/surgery.grow does the indexing); the new positions start at zero."""
        from edgesparse.graph.functional import clone_with_weights
        from edgesparse.graph.surgery import grow

        def widened(fill) -> dict[tuple[str, int], np.ndarray]:
            carrier = clone_with_weights(self.net)
            for layer in carrier.layers:
                if layer.weights:
                    layer.set_weights([fill((layer.name, j), w) for j, w in enumerate(layer.get_weights())])
            for producer, n in adds.items():
                carrier = grow(carrier, producer, n, scale=0.0)
            return {(l.name, j): w for l in carrier.layers for j, w in enumerate(l.get_weights())}

        slots = self.moments["slots"]
        # Old positions carry NaN through the widening, new ones whatever grow put there.
        old = {k: np.isnan(w) for k, w in widened(lambda key, w: np.full_like(w, np.nan)).items()}
        kinds = len(next(iter(slots.values()))) if slots else 0
        grown = [widened(lambda key, w, i=i: slots[key][i] if key in slots else np.zeros_like(w)) for i in range(kinds)]
        return {"iterations": self.moments["iterations"],
                "slots": {k: [np.where(old[k], g[k], 0.0).astype(np.float32) for g in grown] for k in slots}}

    # ---------------------------------------------------------------- the final prune

    @staticmethod
    def prune_floor(net) -> int:
        return int(sum(net.get_layer(n).kernel.shape[-1] for n in maskable(net)))

    def prune_masks(self, keep: int, allowed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`keep` connections in all: each layer first keeps its largest weight per output unit,
        the rest go to the globally largest |w| / rms(layer) (layers of different scale compete
        fairly, and none is emptied)."""
        scores, masks = {}, {}
        for name, ok in allowed.items():
            w = np.abs(self.net.get_layer(name).kernel.numpy())
            rms = float(np.sqrt(np.mean(w[ok] ** 2))) if ok.any() else 1.0
            scores[name] = np.where(ok, w / max(rms, 1e-12), -np.inf)
            flat = scores[name].reshape(-1, w.shape[-1])
            m = np.zeros_like(flat, dtype=bool)
            m[np.argmax(flat, axis=0), np.arange(flat.shape[1])] = True
            masks[name] = m.reshape(w.shape) & ok
        rest = keep - sum(int(m.sum()) for m in masks.values())
        if rest > 0:
            pool = np.concatenate([np.where(masks[n], -np.inf, s).ravel() for n, s in scores.items()])
            chosen = np.zeros(pool.size, dtype=bool)
            chosen[np.argsort(-pool, kind="stable")[:rest]] = True
            chosen &= np.isfinite(pool)
            at = 0
            for name, s in scores.items():
                masks[name] |= chosen[at:at + s.size].reshape(s.shape)
                at += s.size
        return masks

    def _drop_and_regrow(self, masks: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
        """RigL's update at a fixed count: each layer drops `fraction` of its active connections
        (smallest |w|, one per output unit kept) and regrows as many where the dense gradient is
        largest; regrown ones start at zero (Masks.update resets their moments)."""
        active = sum(int(m.sum()) for m in masks.values())
        kept = self.prune_masks(int(round(active * (1.0 - fraction))), masks)
        grads = self.dense_gradients(list(masks))
        out = {}
        for name, m in masks.items():
            k = int(m.sum() - kept[name].sum())
            out[name] = kept[name] | _top(grads[name], k, ~kept[name])
        return out

    def prune(self, target: int) -> None:
        from edgesparse.train.callbacks import MaskUpdate
        from edgesparse.train.losses import CrossEntropy
        from edgesparse.train.masks import Masks
        from edgesparse.train.trainer import train

        names = maskable(self.net)
        allowed = {n: (self.masks[n] if self.masks else np.ones(tuple(self.net.get_layer(n).kernel.shape), bool))
                   & (self.net.get_layer(n).kernel.numpy() != 0) for n in names}
        start = sum(int(a.sum()) for a in allowed.values())
        if target >= start:
            self.warnings.append(f"grow: prune_to_params={target} but the grown network has only {start} nonzero "
                                 "kernel weights; nothing was pruned")
            return
        floor = self.prune_floor(self.net)
        if target < floor:
            raise UserError(f"grow: prune_to_params={target} is below {floor}, one weight per output unit of every "
                            "layer of the grown network; ask for more")
        steps = max(1, math.ceil(len(self.data.x_train) / self.c.batch_size)) * self.c.prune_epochs
        last = max(1, int(0.75 * steps))
        every = max(1, last // PRUNE_UPDATES)
        n_updates = max(1, last // every)
        holder: dict[str, Any] = {}
        loss, teacher_macs = CrossEntropy(), 0
        if self.c.prune_distill is not None:
            # The grown network, before its cut, teaches the pruned one: its soft targets carry
            # what 2,000 weights cannot re-learn from 1,221 labels alone.
            from edgesparse.graph.functional import clone_with_weights
            from edgesparse.train.losses import Distillation

            teacher = clone_with_weights(self.net)
            loss = Distillation.hinton(teacher, alpha=DISTILL_ALPHA, temperature=self.c.prune_distill)
            teacher_macs = self.macs(teacher)

        def step(_net, s: int) -> None:
            p = min(1.0, (s // every) / n_updates)
            keep = target if p >= 1.0 else int(round(target + (start - target) * (1.0 - p) ** 3))
            current = {n: holder["masks"].mask(n) for n in names}
            masks = self.prune_masks(keep, current)
            swap = self.c.prune_regrow * 0.5 * (1.0 + math.cos(math.pi * p))    # RigL's cosine decay
            if swap > 0:
                masks = self._drop_and_regrow(masks, swap)
            for n, m in masks.items():
                holder["masks"].update(n, m)

        initial = self.prune_masks(start, allowed)
        bound = Masks(self.net, initial)
        holder["masks"] = bound
        callback = MaskUpdate(bound, step, n=every, last_step=n_updates * every, net=self.net)

        result = train(self.net, (self.data.x_train, self.data.y_train), loss=loss,
                       epochs=self.c.prune_epochs, lr=self.c.learning_rate, batch_size=self.c.batch_size,
                       seed=self.seed + self.epochs, callbacks=[callback], post_step=[bound.apply],
                       progress=self.progress, label="grow: prune")
        self.masks = bound.strip()          # counted as the record's params, then dropped
        self.spent(result.epochs_run, active=float(self.macs()))    # the masks move: counted dense
        self.teacher_mac_epochs += float(teacher_macs) * result.epochs_run
        self.record("prune", active=int(sum(m.sum() for m in self.masks.values())))
        # At the final masks, trained on to a plateau like every phase (the best epoch kept, the
        # pruned start included): the prune's last epoch is not necessarily its best.
        self.moments = None                  # the grow phases' moments predate the prune
        epochs, callbacks, patience = self.c.prune_epochs, [], None
        if self.c.finetune_epochs is not None:      # annealed: settles into the masks' minimum
            epochs = self.c.finetune_epochs
            steps = max(1, math.ceil(len(self.data.x_train) / self.c.batch_size)) * epochs
            callbacks, patience = [cosine_decay(self.c.learning_rate, steps)], epochs
        result = self._fit(epochs, self.masks, validate=True, label="grow: fine-tune", loss=loss,
                           callbacks=callbacks, patience=patience)
        self.teacher_mac_epochs += float(teacher_macs) * result.epochs_run
        self.record("fine-tune", epochs_in_phase=result.epochs_run,
                    active=int(sum(m.sum() for m in self.masks.values())))
        self.masks = None
