"""Profile one artifact on every agent (and locally): the library half of `edgesparse profile`,
also used by the build's `--profile`. No TensorFlow, no CLI."""
from __future__ import annotations

from pathlib import Path

from edgesparse.errors import UserError


def collect_profiles(artifact, *, agents: list[str], token_file=None, local: bool = False,
                     params: dict, inputs=None, hardware: dict | None = None,
                     macs: int | None = None, precision: str = "fp32") -> dict:
    """Profile on every agent (and locally with `local`); one failure does not stop the rest.

    Returns {"artifact", "estimate" (roofline, or None), "devices": [{"agent", "ok", "result" |
    "error", "estimate_vs_measured"}]}. The JSON that `--json` writes.
    """
    from edgesparse.profile import client, estimate, measure

    artifact = Path(artifact)
    if not artifact.is_file():
        raise UserError(f"no such artifact: {artifact}")
    if not agents and not local:
        raise UserError("say where to measure: --agent URL (repeatable) or --local")
    if agents and not token_file:
        raise UserError("--agent needs --token-file (the token the agent was started with)")
    token = client.read_token(token_file) if agents else None
    params = dict(params)
    if hardware:  # used by the device only when it has no readable power sensor
        params.update(idle_power_w=hardware["idle_power_w"],
                      active_power_w=hardware["active_power_w"])
    roofline = None
    if hardware and macs is not None:
        roofline = estimate.roofline_estimate(macs, artifact.stat().st_size, precision, hardware,
                                              threads=params.get("threads"))

    devices = []
    for where in (["local"] if local else []) + list(agents):
        entry: dict = {"agent": where}
        try:
            if where == "local":
                result = measure.profile_local(artifact, inputs_path=inputs, **params)
            else:
                result = client.profile_remote(where, token, artifact, inputs_path=inputs,
                                               **params)
            entry.update(ok=True, result=result)
            if roofline:
                entry["estimate_vs_measured"] = estimate.compare_with_measurement(roofline,
                                                                                  result)
        except measure.ProfileFailure as failure:
            entry.update(ok=False, error={**failure.to_dict(),
                                          "message": f"local: {failure.code}: {failure.message}"})
        except client.AgentError as exc:
            entry.update(ok=False, error={"code": exc.code, "status": exc.status,
                                          "message": str(exc)})
        devices.append(entry)
    if len(devices) == 1 and not devices[0]["ok"] and devices[0]["agent"] != "local" \
            and devices[0]["error"].get("status") is None:
        raise UserError(devices[0]["error"]["message"])  # the one agent is unreachable
    return {"artifact": str(artifact), "params": params, "estimate": roofline, "devices": devices}
