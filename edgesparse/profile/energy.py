"""Energy per inference, always labelled with how it was obtained and what it covers.

Agent side: standard library only.

Three outcomes, never mixed up:
- "measured": a sensor on this device was read before and after the timed runs. Linux powercap
  RAPL (CPU package energy counter, microjoules, wraps at max_energy_range_uj) or an hwmon INA2xx
  power monitor (energy*_input counter in microjoules, or power*_input in microwatts sampled
  and integrated). The scope says what the sensor sees: RAPL sees the whole CPU package, with
  every process on it, not just our model.
- "estimated": no readable sensor, but the host passed the target's power figures. Energy =
  latency x (active_power_w - idle_power_w); the assumption is spelled out in the result.
- "unavailable": neither. We say so rather than invent a number.
"""
from __future__ import annotations

import glob
import os
import threading
import time

# hwmon drivers of TI's INA2xx current/power monitors (the usual board power sensors).
INA_DRIVERS = ("ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina233", "ina238",
               "ina260", "ina2xx", "ina3221")

POWER_SAMPLE_INTERVAL_S = 0.005


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Sensor:
    """One readable energy counter or power gauge."""

    def __init__(self, sensor_id: str, kind: str, scope: str, path: str,
                 unit: str, wrap_at: int | None = None):
        self.id = sensor_id
        self.kind = kind          # "rapl" | "hwmon-energy" | "hwmon-power"
        self.scope = scope
        self.path = path
        self.unit = unit          # "uJ" (counter) | "uW" (instantaneous power)
        self.wrap_at = wrap_at    # counter range for wraparound, RAPL only

    @property
    def is_counter(self) -> bool:
        return self.unit == "uJ"

    def read(self) -> int | None:
        return _read_int(self.path)

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "scope": self.scope, "unit": self.unit}


def counter_delta(start: int, end: int, wrap_at: int | None) -> int:
    """end - start for a counter that wraps to 0 after `wrap_at` (RAPL's max_energy_range_uj)."""
    delta = end - start
    if delta < 0 and wrap_at:
        delta += wrap_at + 1  # the counter runs 0..wrap_at inclusive
    return delta


def _rapl_sensors(root: str) -> list[Sensor]:
    sensors = []
    # Top-level zones only (intel-rapl:0, intel-rapl:1): sub-zones (intel-rapl:0:0 = core,
    # uncore, dram) are parts of the package and would be double counted.
    for zone in sorted(glob.glob(os.path.join(root, "intel-rapl:[0-9]*"))):
        if os.path.basename(zone).count(":") != 1:
            continue
        energy = os.path.join(zone, "energy_uj")
        if _read_int(energy) is None:  # root-only since Linux 5.10 (a side channel otherwise)
            continue
        name = (open(os.path.join(zone, "name")).read().strip()
                if os.path.exists(os.path.join(zone, "name")) else os.path.basename(zone))
        sensors.append(Sensor(
            f"rapl:{os.path.basename(zone)}", "rapl",
            f"CPU package '{name}' (RAPL): whole package, all processes on it",
            energy, "uJ", _read_int(os.path.join(zone, "max_energy_range_uj"))))
    return sensors


def _hwmon_sensors(root: str) -> list[Sensor]:
    sensors = []
    for hwmon in sorted(glob.glob(os.path.join(root, "hwmon*"))):
        try:
            with open(os.path.join(hwmon, "name")) as f:
                driver = f.read().strip()
        except OSError:
            continue
        if not driver.startswith(INA_DRIVERS):
            continue
        base = os.path.basename(hwmon)
        for path in sorted(glob.glob(os.path.join(hwmon, "energy*_input"))):
            if _read_int(path) is not None:
                sensors.append(Sensor(f"hwmon:{base}:{os.path.basename(path)}", "hwmon-energy",
                                      f"power rail monitored by {driver} ({base}): whole rail",
                                      path, "uJ"))
        for path in sorted(glob.glob(os.path.join(hwmon, "power*_input"))):
            if _read_int(path) is not None:
                sensors.append(Sensor(f"hwmon:{base}:{os.path.basename(path)}", "hwmon-power",
                                      f"power rail monitored by {driver} ({base}): whole rail",
                                      path, "uW"))
    return sensors


def discover_sensors(powercap_root: str = "/sys/class/powercap",
                     hwmon_root: str = "/sys/class/hwmon") -> list[Sensor]:
    """Every readable energy/power sensor, best first (energy counters before power gauges)."""
    sensors = _rapl_sensors(powercap_root) + _hwmon_sensors(hwmon_root)
    return sorted(sensors, key=lambda s: 0 if s.is_counter else 1)


class EnergyMeter:
    """Energy over an interval from one sensor: counter difference, or integrated power samples."""

    def __init__(self, sensor: Sensor):
        self.sensor = sensor
        self._start_value: int | None = None
        self._start_time = 0.0
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._start_time = time.perf_counter()
        if self.sensor.is_counter:
            self._start_value = self.sensor.read()
            return
        self._samples = []
        self._take_sample()  # bracket the interval with samples so the integral covers it all
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample_power, daemon=True)
        self._thread.start()

    def _take_sample(self) -> None:
        value = self.sensor.read()
        if value is not None:
            self._samples.append((time.perf_counter(), value))

    def _sample_power(self) -> None:
        while not self._stop.wait(POWER_SAMPLE_INTERVAL_S):
            self._take_sample()

    def stop(self) -> tuple[float, float]:
        """(joules, seconds) since start()."""
        duration = time.perf_counter() - self._start_time
        if self.sensor.is_counter:
            end = self.sensor.read()
            if self._start_value is None or end is None:
                raise OSError(f"sensor {self.sensor.id} stopped being readable")
            return counter_delta(self._start_value, end, self.sensor.wrap_at) / 1e6, duration
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._take_sample()
        return integrate_power_uw(self._samples) / 1e6, duration


def integrate_power_uw(samples: list[tuple[float, int]]) -> float:
    """Trapezoidal integral of (time_s, microwatts) samples -> microjoules."""
    total = 0.0
    for (t0, p0), (t1, p1) in zip(samples, samples[1:]):
        total += (p0 + p1) / 2.0 * (t1 - t0)
    return total


def measured_energy(joules: float, seconds: float, inferences: int, sensor: Sensor,
                    idle_power_w: float | None = None) -> dict:
    """Result block for an energy reading over `inferences` timed runs."""
    result = {
        "method": "measured",
        "scope": sensor.scope,
        "sensor": sensor.id,
        "energy_j": joules,
        "duration_s": seconds,
        "avg_power_w": joules / seconds if seconds > 0 else None,
        "per_inference_mj": joules * 1000.0 / inferences if inferences else None,
        "idle_power_w": idle_power_w,
        "note": "total energy seen by the sensor while the timed runs ran, idle power included",
    }
    if idle_power_w is not None and inferences and seconds > 0:
        # What the model adds above the idle floor measured just before, on the same sensor.
        dynamic_j = max(0.0, joules - idle_power_w * seconds)
        result["per_inference_above_idle_mj"] = dynamic_j * 1000.0 / inferences
    return result


def estimated_energy(latency_ms: float, active_power_w: float, idle_power_w: float,
                     latency_from: str = "the roofline estimate") -> dict:
    """Energy per inference from the target's power figures. Never labelled measured.

    latency_from: where the latency comes from. A latency measured on this machine times the
    target's power is a mixed figure (an x86 host's milliseconds at a Coral's watts): it says so.
    """
    added_w = active_power_w - idle_power_w
    per_inference_mj = latency_ms * added_w  # ms x W = mJ
    return {
        "method": "estimated",
        "scope": "whole device, power added above idle (target profile figures)",
        "per_inference_mj": per_inference_mj,
        "active_power_w": active_power_w,
        "idle_power_w": idle_power_w,
        "latency_from": latency_from,
        "assumption": (
            f"energy per inference = latency x (active_power_w - idle_power_w) = "
            f"{latency_ms:.4g} ms x ({active_power_w:g} - {idle_power_w:g}) W = "
            f"{per_inference_mj:.4g} mJ; the latency is {latency_from}, the power figures are the "
            "target profile's, no sensor was read"
        ),
    }


def unavailable_energy(reason: str) -> dict:
    return {"method": "unavailable", "scope": None, "reason": reason}
