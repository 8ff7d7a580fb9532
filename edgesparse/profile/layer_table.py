"""A per-layer latency table, NetAdapt-style (Yang et al. 2018): measured once on the device, then
read by a search instead of measuring every trial.

Every weighted layer is built alone as a one-layer `.tflite` at each (inputs, outputs) width pair
the search can give it, and timed on the device with the profile parameters the trials use. An
entry is the layer model's p50 minus the p50 of the smallest one-op model (`base`: what every
invoke costs whatever the layer). The rest of a network (pooling, reshapes, adds, the invoke) is
one measured constant: `fixed` = the uncompressed model's measured p50 minus its layers' entries.
A point's estimate is `fixed` + the sum of its layers' entries, so the uncompressed point is
exact by construction and every other point shows how additive the device really is (the search
re-measures its Pareto set to say so).

The table also says which widths the device's kernels like: per layer, the widths whose cost per
output channel is within `LIKED_SLACK` of the layer's cheapest (a width just past a SIMD or cache
step costs more per channel than one just below it). Entries under NOISE_FRACTION of `base` are
noise, not a preference: a layer with only such entries likes nothing ("below noise").
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

LIKED_SLACK = 0.10
NOISE_FRACTION = 0.10   # entries below this fraction of `base` are at the timer's noise: no liking them
CALIBRATION_SAMPLES = 16


def key(inputs: int, outputs: int) -> str:
    return f"{inputs}x{outputs}"


@dataclass
class LatencyTable:
    device: str                                   # where it was measured ("agent URL", "local ...")
    params: dict[str, Any]                        # the profile parameters of every entry
    base_ms: dict[str, float] = field(default_factory=dict)                 # precision -> ms
    fixed_ms: dict[str, float] = field(default_factory=dict)                # precision -> ms
    entries: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # precision -> layer -> "inxout" -> ms
    seconds: float = 0.0                          # what measuring the table cost

    @property
    def label(self) -> str:
        return f"table ({self.device})"

    def estimate(self, widths: dict[str, tuple[int, int]], precision: str) -> float:
        """The point's latency in ms: `fixed` plus each layer's entry at its (inputs, outputs).
        A layer missing from `widths` was removed (a dropped block): it costs nothing."""
        from edgesparse.errors import UserError

        if precision not in self.entries:
            raise UserError(f"the latency table has no {precision} entries (it has "
                            f"{', '.join(self.entries)}); measure it again for this search")
        table = self.entries[precision]
        total = self.fixed_ms[precision]
        for layer, (n_in, n_out) in widths.items():
            row = table.get(layer, {})
            if key(n_in, n_out) not in row:
                raise UserError(f"the latency table has no entry for {layer} at {n_in} inputs x {n_out} "
                                "outputs; it was measured for another space: measure it again")
            total += row[key(n_in, n_out)]
        return float(total)

    def liked_widths(self, precision: str) -> dict[str, dict[str, Any]]:
        """Per layer, at its widest input: output width -> µs, and the widths whose µs per output
        channel is within LIKED_SLACK of the cheapest."""
        out = {}
        floor = NOISE_FRACTION * self.base_ms.get(precision, 0.0)
        for layer, row in self.entries.get(precision, {}).items():
            pairs = [tuple(map(int, k.split("x"))) + (v,) for k, v in row.items()]
            widest = max(p[0] for p in pairs)
            curve = sorted((o, ms) for i, o, ms in pairs if i == widest)
            per_channel = {o: ms / o for o, ms in curve if ms > floor}
            best = min(per_channel.values(), default=None)
            out[layer] = {"inputs": widest, "us": {o: round(ms * 1000, 2) for o, ms in curve},
                          "liked": [o for o, c in per_channel.items() if c <= best * (1 + LIKED_SLACK)]
                          if best is not None else [], "below_noise": best is None}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "params": self.params, "base_ms": self.base_ms,
                "fixed_ms": self.fixed_ms, "entries": self.entries, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyTable":
        return cls(d["device"], d["params"], d["base_ms"], d["fixed_ms"], d["entries"], d.get("seconds", 0.0))


def single_layer_model(layer, input_shape: tuple[int, ...], inputs: int, outputs: int):
    """`layer` rebuilt alone (same kind, kernel, strides, activation) reading `inputs` channels and
    writing `outputs`, on the input shape it has in the model (batch 1), random weights."""
    from edgesparse._tf import keras

    config = dict(layer.get_config())
    for width_key in ("filters", "units"):
        if width_key in config:
            config[width_key] = int(outputs)
    clone = type(layer).from_config(config)
    x = keras.Input(shape=tuple(input_shape[:-1]) + (int(inputs),), batch_size=1)
    return keras.Model(x, clone(x))


def smallest_model():
    """One Dense(1) on one input: what an invoke costs with (almost) no work."""
    from edgesparse._tf import keras

    x = keras.Input(shape=(1,), batch_size=1)
    return keras.Model(x, keras.layers.Dense(1)(x))


def measure_table(model, pairs: dict[str, list[tuple[int, int]]], precisions: list[str],
                  full: dict[str, tuple[dict[str, tuple[int, int]], float]],
                  measure: Callable[[Path], float], device: str, params: dict[str, Any],
                  progress=None) -> LatencyTable:
    """Measure the table.

    pairs:   layer name -> the (inputs, outputs) the search can give it.
    full:    precision -> (the uncompressed model's layer widths, its measured p50 in ms).
    measure: an artifact path -> p50 ms on the device (the same call and parameters as the trials).
    """
    import time

    import numpy as np

    from edgesparse.convert.tflite import to_tflite

    started = time.monotonic()
    rng = np.random.default_rng(0)
    table = LatencyTable(device, dict(params))
    total = len(precisions) * (1 + sum(len(v) for v in pairs.values()))
    task = progress.task(f"latency table: {total} one-layer models on {device}", total=total) if progress else None
    with tempfile.TemporaryDirectory(prefix="edgesparse-table-") as tmp:
        def timed(m, precision: str, name: str) -> float:
            shape = tuple(int(d) for d in m.inputs[0].shape[1:])
            calib = rng.standard_normal((CALIBRATION_SAMPLES, *shape)).astype("float32")
            path = Path(tmp) / f"{name}.tflite"
            path.write_bytes(to_tflite(m, precision, x_calib=calib, calibration_samples=CALIBRATION_SAMPLES))
            ms = float(measure(path))
            if task:
                task.advance(1)
            return ms

        for precision in precisions:
            base = timed(smallest_model(), precision, f"base-{precision}")
            table.base_ms[precision] = round(base, 5)
            rows: dict[str, dict[str, float]] = {}
            for name, wanted in pairs.items():
                layer = model.get_layer(name)
                shape = tuple(int(d) for d in layer.input.shape[1:])
                rows[name] = {key(i, o): round(max(0.0, timed(single_layer_model(layer, shape, i, o), precision,
                                                              f"{name}-{i}x{o}-{precision}") - base), 5)
                              for i, o in sorted(set(wanted))}
            table.entries[precision] = rows
            widths, measured = full[precision]
            table.fixed_ms[precision] = round(measured - sum(rows[n][key(*w)] for n, w in widths.items()
                                                             if n in rows), 5)
    if task:
        task.close()
    table.seconds = round(time.monotonic() - started, 1)
    return table
