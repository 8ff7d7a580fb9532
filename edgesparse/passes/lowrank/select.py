"""Which layers to factorise, in which form and at which ranks.

Three ways to pick ranks, all rounded UP to the target's SIMD width (a rank is a channel count:
DESIGN trap 17) and capped at the form's limits:

- `energy`: per mode, the smallest rank whose leading singular values (of the whitened matrix,
  so the energy is output energy on the data) keep that fraction of the total;
- `macs`: one common energy threshold for every layer, found by bisection so that the whole
  model keeps at most that fraction of its MACs (the uniform allocation of the prune budgets:
  every layer gives up the same share of its spectrum, so no layer is emptied); rounding makes
  the threshold jump (on digits_cnn at width 8 it kept 42% for a 50% target), so the MACs left
  under the target are then spent one step at a time on the mode that keeps the least energy
  (a layer goes back whole when that fits);
- `vbmf`: per mode, the rank analytic EVBMF keeps (noise-free directions only).

A layer is factorised only when the factorised form has fewer MACs than the layer; with
method auto, a k x k conv takes whichever of Tucker-2 and spatial SVD has fewer MACs. Layers
pinned by `ranks: {layer: r}` take exactly that rank (the search's knob).

With `measure: true`, `width_options` lists the few rank settings of a chosen layer that are
timed (procedure.py keeps the fastest): on a given host a width its kernels like can matter more
than the MACs (digits_cnn's conv2 as Tucker-2 [16, 32] ran 2.3x, [16, 40] 1.45x).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from edgesparse.errors import UserError
from edgesparse.passes.lowrank import forms as F
from edgesparse.passes.lowrank.spectra import kept_energy, rank_for_energy, round_rank, vbmf_rank


@dataclass
class Candidate:
    name: str
    layer: object                       # in the model being factorised
    forms: list[str]
    macs: int                           # the layer as it is
    spectra: dict[str, list[np.ndarray]]
    pinned: tuple[int, ...] | None = None


@dataclass
class Choice:
    name: str
    form: str
    ranks: tuple[int, ...]
    limits: tuple[int, ...]
    macs_before: int
    macs_after: int
    energy: list[float]                 # kept energy per mode


def _choice(c: Candidate, form: str, ranks: tuple[int, ...]) -> Choice:
    spectra = c.spectra.get(form) or []
    return Choice(c.name, form, tuple(int(r) for r in ranks), F.limits(c.layer, form), c.macs,
                  F.macs(c.layer, form, ranks),
                  [round(kept_energy(s, r), 5) for s, r in zip(spectra, ranks)])


def _best(c: Candidate, ranks_of) -> Choice | None:
    """The form with the fewest MACs at the ranks `ranks_of(form)` gives; None: none is cheaper."""
    options = [_choice(c, form, ranks_of(form)) for form in c.forms]
    best = min(options, key=lambda ch: ch.macs_after)
    return best if best.macs_after < c.macs else None


def _rounded(c: Candidate, form: str, ranks, round_to: int) -> tuple[int, ...]:
    return tuple(round_rank(r, round_to, lim) for r, lim in zip(ranks, F.limits(c.layer, form)))


def pinned(c: Candidate) -> Choice:
    """A pinned layer: the form with the fewest MACs at exactly that rank."""
    def ranks_of(form):
        r = c.pinned
        return (r[0], r[-1]) if form == "tucker2" else (r[0],)
    return min((_choice(c, f, ranks_of(f)) for f in c.forms), key=lambda ch: ch.macs_after)


def at_energy(cands: list[Candidate], energy: float, round_to: int) -> list[Choice]:
    out = []
    for c in cands:
        ch = _best(c, lambda form: _rounded(c, form, [rank_for_energy(s, energy) for s in c.spectra[form]],
                                            round_to))
        if ch is not None:
            out.append(ch)
    return out


def smallest(cands: list[Candidate], round_to: int) -> list[Choice]:
    """Every layer at its smallest rank: the fewest MACs any factorisation reaches."""
    out = []
    for c in cands:
        ch = _best(c, lambda form: _rounded(c, form, [1] * len(F.limits(c.layer, form)), round_to))
        if ch is not None:
            out.append(ch)
    return out


def total_macs(choices: list[Choice], model_macs: int) -> int:
    return model_macs - sum(ch.macs_before - ch.macs_after for ch in choices)


def for_macs(cands: list[Candidate], fixed: list[Choice], keep: float, model_macs: int,
             round_to: int, iterations: int = 40) -> tuple[float, list[Choice]]:
    """The largest common energy threshold whose choices keep at most `keep` of the MACs."""
    target = keep * model_macs

    def total(e):
        return total_macs(fixed + at_energy(cands, e, round_to), model_macs)

    if total(1.0) <= target:
        return 1.0, fill(cands, fixed, at_energy(cands, 1.0, round_to), target, model_macs, round_to)
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if total(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo, fill(cands, fixed, at_energy(cands, lo, round_to), target, model_macs, round_to)


def fill(cands: list[Candidate], fixed: list[Choice], chosen: list[Choice], target: float, model_macs: int,
         round_to: int) -> list[Choice]:
    """Spend the MACs left under `target`, one step at a time, on the chosen layer whose mode keeps
    the least energy and has a step that fits. A step is: the whole layer back when it fits (exact,
    and one op instead of two or three: a head Dense factorised 640 -> 592 MACs only adds an op),
    else that mode one SIMD step up while the form still saves MACs. The shares stay as even as
    the rounding allows."""
    by_name = {c.name: c for c in cands}
    chosen = list(chosen)
    while True:
        slack = target - total_macs(fixed + chosen, model_macs)
        steps = []
        for i, ch in enumerate(chosen):
            c = by_name[ch.name]
            for mode, (r, lim) in enumerate(zip(ch.ranks, ch.limits)):
                kept = ch.energy[mode] if mode < len(ch.energy) else 1.0
                if c.macs - ch.macs_after <= slack:
                    steps.append((kept, i, None))
                    continue
                up = round_rank(r + 1, round_to, lim)
                if up <= r:
                    continue
                new = _choice(c, ch.form, ch.ranks[:mode] + (up,) + ch.ranks[mode + 1:])
                if new.macs_after < c.macs and new.macs_after - ch.macs_after <= slack:
                    steps.append((kept, i, new))
        if not steps:
            return chosen
        _, i, new = min(steps, key=lambda t: (t[0], t[1]))
        if new is None:
            del chosen[i]
        else:
            chosen[i] = new


MAX_WIDTHS = 8      # rank settings timed per layer: each one is a LiteRT conversion (~0.5 s)


def width_options(c: Candidate, ch: Choice, round_to: int, budget: int | None) -> list[Choice]:
    """The rank settings `measure: true` times for the chosen `ch`, `ch` itself first.

    Per mode: the chosen rank, the multiple of `round_to` below it, and the multiples of 8 and
    16 at or below it and the next ones up (the widths SIMD kernels like), each still a multiple
    of `round_to` (or the limit); every combination in
    the chosen form that costs fewer MACs than the layer and at most `budget` (the layer's MACs
    plus what the whole model has left under the target). budget None (energy, vbmf): only ranks
    at or above the chosen ones, so the energy asked for is still kept. At most MAX_WIDTHS,
    those keeping the most energy first (the least accuracy given up)."""
    per_mode = []
    for r, lim in zip(ch.ranks, ch.limits):
        near = {r, r - round_to}
        for m in (8, 16):
            near |= {r // m * m, r // m * m + m}
        per_mode.append(sorted(v for v in near if 1 <= v <= lim and (v % round_to == 0 or v == lim)
                               and (budget is not None or v >= r)))
    options = []
    for ranks in itertools.product(*per_mode):
        if ranks == ch.ranks:
            continue
        o = _choice(c, ch.form, ranks)
        if o.macs_after < c.macs and (budget is None or o.macs_after <= budget):
            options.append(o)
    options.sort(key=lambda o: (-float(np.prod(o.energy)) if o.energy else 0.0, o.macs_after, o.ranks))
    return [ch] + options[:MAX_WIDTHS - 1]


def least_macs(cands: list[Candidate], fixed: list[Choice], model_macs: int, round_to: int) -> int:
    """The model's MACs with every candidate at its smallest rank (shapes only)."""
    return total_macs(fixed + smallest(cands, round_to), model_macs)


def check_reachable(cands: list[Candidate], fixed: list[Choice], keep: float, model_macs: int,
                    round_to: int) -> None:
    """Fail before any work when even the smallest ranks keep more than `keep` of the MACs.
    Needs only the shapes, not the data."""
    least = least_macs(cands, fixed, model_macs, round_to)
    if least > keep * model_macs:
        raise UserError(f"lowrank: macs {keep} is out of reach: factorising every Dense/Conv2D layer at "
                        f"rank {round_to} still keeps {least / max(model_macs, 1):.1%} of the MACs "
                        "(the other layers cost the rest); ask for a larger fraction"
                        + (f", a smaller round_to than {round_to}" if round_to > 1 else "")
                        + ", or prune as well")


def by_vbmf(cands: list[Candidate], round_to: int) -> list[Choice]:
    out = []
    for c in cands:
        ch = _best(c, lambda form: _rounded(c, form, [vbmf_rank(s, shape) for s, shape
                                                      in zip(c.spectra[form], vbmf_shapes(c.layer, form))],
                                            round_to))
        if ch is not None:
            out.append(ch)
    return out


def vbmf_shapes(layer, form: str) -> list[tuple[int, int]]:
    """The matrix each spectrum is the singular values of (for the output mode of Tucker-2, the
    responses' covariance stands for the (Cout, kh*kw*Cin) unfolding)."""
    k = tuple(int(d) for d in layer.kernel.shape)
    if form == "svd":
        return [(int(np.prod(k[:-1])), k[-1])]
    kh, kw, cin, cout = k
    if form == "tucker2":
        return [(cin, kh * kw * cout), (cout, kh * kw * cin)]
    return [(kh * cin, kw * cout)]
