"""Measurements and estimates that `edgesparse build` attaches to its report.

Every artifact gets a roofline estimate from the target's hardware figures (labelled
"estimated"). With `--profile URL` (repeatable) or `--profile-local`, each artifact is also
measured, and the report shows both and the estimator's error. A device that cannot be reached
fails the build before any work (checked by `check_agents`), not after it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgesparse.errors import UserError

BUILD_PROFILE_PARAMS = {"runs": 50, "warmup": 5, "min_seconds": 0.5, "seed": 0}


def check_agents(agents: list[str], token_file: Path | None) -> None:
    """Fail in the first second when an agent is unreachable or refuses the token."""
    if not agents:
        return
    from edgesparse.profile import client

    if token_file is None:
        raise UserError("--profile needs --token-file (the token the agent was started with)")
    token = client.read_token(token_file)
    for url in agents:
        client.device_info(url, token, timeout=10.0)


def estimates(artifacts, target, macs: int | None) -> dict[str, Any]:
    from edgesparse.profile.estimate import roofline_estimate

    if macs is None:
        return {}
    hw = target.hardware.model_dump()
    return {a.path.name: roofline_estimate(macs, a.path.stat().st_size,
                                           "int8" if a.precision == "int8" else
                                           ("fp16" if a.precision == "fp16" else "fp32"),
                                           hw, threads=target.threads)
            for a in artifacts}


def measure(artifacts, target, macs: int | None, agents: list[str], token_file: Path | None,
            local: bool, progress) -> dict[str, Any]:
    """Profile every artifact on every device: {artifact name: {"devices": [...]}}.

    Agents are taken to be the target device: their results carry the target's power figures for
    an energy estimate (when no sensor is readable) and the roofline's error. `local` measures on
    this host, which is not the target, so neither is attached there.
    """
    from edgesparse.profile.collect import collect_profiles

    if not agents and not local:
        return {}
    hw = target.hardware.model_dump()
    task = progress.task("profiling artifacts", total=len(artifacts))
    out = {}
    for a in artifacts:
        params = dict(BUILD_PROFILE_PARAMS, threads=target.threads)
        precision = "int8" if a.precision == "int8" else "fp32"
        devices = []
        if local:
            here = collect_profiles(a.path, agents=[], local=True, params=params)["devices"]
            for d in here:
                d["note"] = "this host, not the target device: no energy estimate, no estimator error"
            devices += here
        if agents:
            devices += collect_profiles(a.path, agents=agents, token_file=token_file, params=params,
                                        hardware=hw, macs=macs, precision=precision)["devices"]
        out[a.path.name] = {"devices": devices}
        task.advance(1)
    task.close()
    return out
