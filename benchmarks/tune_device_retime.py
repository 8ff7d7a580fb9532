"""Time tune_device.py's three int8 artifacts again, in one interleaved LiteRT run at 1 thread.

    python benchmarks/tune_device_retime.py [OUT] [DATA]

For a quieter moment than the run itself (the final timing at nice 0 when the load is lowest);
builds nothing: reads OUT/tune_device.json for the artifacts' paths and times them with
tune_device.py's own step 5 (`time_here`).
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tune_device import time_here  # noqa: E402


def main(argv: list[str]) -> int:
    out = argv[0] if argv else "out/bench-tune-device32"
    data = argv[1] if len(argv) > 1 else "out/bench-device-model/digits32.npz"
    r = json.load(open(os.path.join(out, "tune_device.json")))
    paths = {k: r["facts"][k]["tflite"] for k in ("picked", "default", "tfmot")}
    print("load before", os.getloadavg())
    local = time_here(paths, np.load(data)["x_val"][0], 40, 10.0)
    print("load after", os.getloadavg())
    for k, row in local.items():
        t, d = row["ratio_to"]["tfmot"], row["ratio_to"]["default"]
        print(f"{k}: p50 {row['p50_us']:.1f} us (p25-p75 {row['p25_us']:.1f}-{row['p75_us']:.1f}); "
              f"x tfmot {t['p50']} (per round p25/p50/p75 {t['rounds_p25_p50_p75']}); x default {d['p50']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
