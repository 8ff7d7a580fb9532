"""Does the channel analysis and surgery hold up on real architectures?

Untrained `keras.applications` models (no weights are downloaded) at a small input size,
random calibration inputs: groups found, what is prunable, MACs before and after a prune at the
given budget, and the wall time. This checks scale and coverage, not accuracy.

    python benchmarks/prune_architectures.py
    python benchmarks/prune_architectures.py --models MobileNetV2 ResNet50 --macs 0.5 --criterion thinet
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from edgesparse._tf import keras
from edgesparse.graph.stats import count_macs
from edgesparse.passes.prune.allocation import Budget
from edgesparse.graph.channels import ChannelGraph
from edgesparse.passes.prune.procedure import Data, Settings, prune

BUILDERS = {
    "MobileNetV2": lambda s: keras.applications.MobileNetV2(input_shape=s, alpha=0.35, weights=None, classes=10),
    "EfficientNetB0": lambda s: keras.applications.EfficientNetB0(input_shape=s, weights=None, classes=10),
    "DenseNet121": lambda s: keras.applications.DenseNet121(input_shape=s, weights=None, classes=10),
    "ResNet50": lambda s: keras.applications.ResNet50(input_shape=s, weights=None, classes=10),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(BUILDERS))
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--calibration", type=int, default=128)
    args = p.parse_args()
    shape = (args.size, args.size, 3)
    x = np.random.default_rng(0).random((args.calibration,) + shape, dtype=np.float32)
    print(f"keep <= {args.macs:.0%} of MACs, criterion {args.criterion}, round_to 4, input {shape}, "
          f"{args.calibration} random calibration inputs")
    print("| model | layers | prunable groups | MACs before | MACs after | layers refit | seconds | not understood |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model = BUILDERS[name](shape)
        graph = ChannelGraph(model)
        started = time.perf_counter()
        res = prune(model, Settings(Budget("macs", args.macs), criterion=args.criterion, round_to=4), Data(x))
        seconds = time.perf_counter() - started
        refit = res.facts["reconstruction"][0]["layers"]
        unknown = ", ".join(sorted(graph.unprunable_layers)) or "—"
        print(f"| {name} | {len(model.layers)} | {len(graph.prunable_groups)} of {len(graph.groups)} | "
              f"{count_macs(model)} | {count_macs(res.model)} | {sum(r['refit'] for r in refit)} of {len(refit)} | "
              f"{seconds:.1f} | {unknown} |", flush=True)


if __name__ == "__main__":
    main()
