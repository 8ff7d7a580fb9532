"""Time tune_device.py's three int8 artifacts again, in one interleaved LiteRT run at 1 thread.

    python benchmarks/tune_device_retime.py [OUT] [DATA]

For a quieter moment than the run itself (the brief asks for the final timing at nice 0 when
the load is lowest); builds nothing, reads OUT/tune_device.json for the artifacts' paths.
"""
import json, os, sys, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved_latency, round_ratio
r = json.load(open((sys.argv[1] if len(sys.argv) > 1 else "out/bench-tune-device32") + "/tune_device.json"))
paths = {k: r["facts"][k]["tflite"] for k in ("picked", "default", "tfmot")}
x = np.load(sys.argv[2] if len(sys.argv) > 2 else "out/bench-device-model/digits32.npz")["x_val"][0]
print("load before", os.getloadavg())
lat = interleaved_latency(paths, "litert", 1, x, 40, 10.0)
print("load after", os.getloadavg())
for k, L in lat.items():
    print(k, L.summary(), "x tfmot", round(L.p50_us / lat["tfmot"].p50_us, 3), "x default", round(L.p50_us / lat["default"].p50_us, 3),
          "round ratio to tfmot p50/p25/p75", [round(v, 3) for v in round_ratio(L, lat["tfmot"])])
