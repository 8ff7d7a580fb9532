"""The lowrank procedure: check, measure spectra, choose ranks, factorise in graph order, fine-tune.

Everything that can be refused is refused first, from the shapes alone (a layer named in
`ranks` that is missing, of a kind that cannot be factorised, or asked a rank above its
limits; a MAC target that even rank 1 misses). Then the spectra are measured on the model as
given, the ranks chosen, and the layers factorised one by one in graph order, each on the
inputs the already-factorised model gives it (so each refit absorbs the earlier layers'
error), each replaced through graph/surgery.replace.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgesparse.errors import UserError
from edgesparse.graph import linear
from edgesparse.graph.flatten import flatten_nested
from edgesparse.graph.stats import count_macs, count_params, layer_macs
from edgesparse.graph.surgery import replace
from edgesparse.passes.lowrank import forms as F
from edgesparse.passes.lowrank import select as S

HOST_NOTE = ("measure: timed in LiteRT fp32 on this build host, which is not the target device; "
             "which layers are factorised, and at which rank widths, follows this host's kernels")


@dataclass
class Settings:
    method: str = "auto"
    macs: float | None = None
    energy: float | None = None
    vbmf: bool = False
    ranks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    round_to: int = 1
    refit: bool = True
    whiten: bool = True               # False: plain SVD of the weights (the benchmark's baseline)
    measure: bool = False
    threads: int = 1
    finetune_epochs: int = 0
    finetune_lr: float = 3e-4
    batch_size: int = 64
    seed: int = 0
    max_rows: int = 20000


@dataclass
class Result:
    model: object
    facts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def candidates(model, s: Settings) -> tuple[list[S.Candidate], dict[str, str]]:
    """Every layer that can be factorised under `s.method` (the pinned ones checked), and why
    the others cannot."""
    names = {layer.name for layer in model.layers}
    missing = sorted(set(s.ranks) - names)
    if missing:
        raise UserError(f"lowrank: ranks names {missing[0]!r}, and the model has no layer of that name "
                        "(see `edgesparse inspect MODEL` for the layer names)")
    out, skipped = [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        why = F.why_not(layer)
        forms = F.forms_for(layer, s.method) if why is None else []
        if why is None and not forms:
            why = f"method {s.method} leaves k x k convolutions whole (use tucker2, spatial or auto)"
        pin = s.ranks.get(layer.name)
        if why is not None:
            if pin is not None:
                raise UserError(f"lowrank: ranks names {layer.name!r}, which cannot be factorised: {why}")
            if F.kind_of(layer) is not None or linear.has_linear_form(layer):
                skipped[layer.name] = why
            continue
        if pin is not None:
            forms = _forms_for_pin(layer, forms, pin)
        out.append(S.Candidate(layer.name, layer, forms, layer_macs(layer), {}, pin))
    return out, skipped


def _forms_for_pin(layer, forms: list[str], pin: tuple[int, ...]) -> list[str]:
    if len(pin) == 2:
        if "tucker2" not in forms:
            raise UserError(f"lowrank: ranks of {layer.name} is {list(pin)}: two ranks are for a Tucker-2 "
                            f"k x k convolution; give one rank for this {type(layer).__name__}")
        forms = ["tucker2"]
    ok = [f for f in forms if all(r <= lim for r, lim in zip((pin[0], pin[-1]), F.limits(layer, f)))]
    if not ok:
        lim = F.limits(layer, forms[0])
        raise UserError(f"lowrank: rank {pin[0] if len(pin) == 1 else list(pin)} for {layer.name} is above "
                        f"its limit {lim[0] if len(lim) == 1 else list(lim)} ({_limit_words(forms[0])}); "
                        "give a smaller rank")
    return ok


def _limit_words(form: str) -> str:
    return {"svd": "min(inputs, outputs)", "tucker2": "[input channels, output channels]",
            "spatial": "min(kh x input channels, kw x output channels)"}[form]


def factorise_model(model, s: Settings, x_calib: np.ndarray, train=None, validation=None,
                    progress=None) -> Result:
    model, flattened, _ = flatten_nested(model)
    cands, skipped = candidates(model, s)
    macs0, params0 = count_macs(model), count_params(model)
    fixed = [S.pinned(c) for c in cands if c.pinned is not None]
    free = [c for c in cands if c.pinned is None] if (s.macs or s.energy or s.vbmf) else []
    if s.macs is not None:
        S.check_reachable(free, fixed, s.macs, macs0, s.round_to)
    if not fixed and not free:
        raise UserError("lowrank: the model has no layer that can be factorised "
                        f"({'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3]) or 'no Dense/Conv2D'})")
    result = Result(model)
    rng = np.random.default_rng(s.seed)
    if free:
        inputs = _inputs(model, [c.name for c in free], x_calib)
        for c in free:
            c.spectra = {f: F.spectra(c.layer, f, inputs[c.name], s.max_rows, rng, s.whiten) for f in c.forms}
    timed, dropped = {}, []
    if s.measure:
        chosen, selection, threshold, timed, dropped = _measured(model, free, fixed, s, macs0)
    else:
        chosen, selection, threshold = _select(free, fixed, s, macs0)
    for ch in chosen:
        if ch.name in s.ranks and ch.macs_after >= ch.macs_before:
            result.notes.append(f"{ch.name} at rank {list(ch.ranks)} costs {ch.macs_after:,} MACs, not fewer "
                                f"than the layer's {ch.macs_before:,}; factorised because ranks names it")
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    chosen.sort(key=lambda ch: order[ch.name])

    evaluate = _evaluator(validation)
    facts = result.facts
    facts.update(method=s.method, selection=selection, round_to=s.round_to, whitened=s.whiten,
                 macs_before=macs0, params_before=params0, skipped=skipped,
                 accuracy_before=evaluate(model))
    if flattened:
        facts["flattened_nested_models"] = flattened
    if s.macs is not None:
        facts["energy_threshold"] = round(threshold, 5)

    current, layers = model, []
    task = progress.task("lowrank: factorise", total=len(chosen)) if progress is not None else None
    ref_inputs = _inputs(model, [ch.name for ch in chosen], x_calib)
    for ch in chosen:
        layer = current.get_layer(ch.name)
        names = _new_names(current, ch.name, F.layer_count(ch.form))
        x_cur = _inputs(current, [ch.name], x_calib)[ch.name]
        made = F.factorise(layer, ch.form, ch.ranks, names, x_cur, ref_inputs[ch.name], max_rows=s.max_rows,
                           rng=rng, whiten=s.whiten, refit=s.refit)
        row = {"layer": ch.name, "form": ch.form, "ranks": list(ch.ranks), "limits": list(ch.limits),
               "macs_before": ch.macs_before, "macs_after": ch.macs_after, "energy": ch.energy,
               "new_layers": names, **made.record}
        if s.measure:
            row["speedup_host"] = next(r for o, r in timed[ch.name] if o.ranks == ch.ranks)
            row["timed"] = _timed_rows(timed[ch.name])
        current = replace(current, ch.name, made.layers)
        row["kept"] = True
        layers.append(row)
        if task:
            task.advance(1)
    if task:
        task.close()
    for ch, ratio in dropped:                  # measured slower: left whole, listed with their timing
        layers.append({"layer": ch.name, "form": ch.form, "ranks": list(ch.ranks), "limits": list(ch.limits),
                       "macs_before": ch.macs_before, "macs_after": ch.macs_after, "energy": ch.energy,
                       "new_layers": [], "error_before": None, "error_after": None, "refit": False,
                       "speedup_host": ratio, "timed": _timed_rows(timed[ch.name]), "kept": False})
    layers.sort(key=lambda r: order[r["layer"]])
    facts["layers"] = layers
    if s.measure:
        facts["measured_on"] = f"{HOST_NOTE}. Timed: {_timed_words(timed, {ch.name: ch for ch in chosen})}"
        result.notes.append(HOST_NOTE)
    facts["accuracy_refit"] = evaluate(current)
    if train is not None and s.finetune_epochs > 0 and any(r["kept"] for r in layers):
        from edgesparse.train.losses import CrossEntropy
        from edgesparse.train.trainer import train as fit

        history = fit(current, train, loss=CrossEntropy(), epochs=s.finetune_epochs, lr=s.finetune_lr,
                      batch_size=s.batch_size, seed=s.seed, progress=progress, label="lowrank: fine-tune")
        facts["finetune_loss"] = [round(v, 4) for v in history.history.get("loss", [])]
    facts["accuracy_after"] = evaluate(current)
    macs1, params1 = count_macs(current), count_params(current)
    predicted = S.total_macs([S.Choice(r["layer"], r["form"], tuple(r["ranks"]), tuple(r["limits"]),
                                       r["macs_before"], r["macs_after"], []) for r in layers if r["kept"]], macs0)
    if predicted != macs1:
        raise AssertionError(f"internal: lowrank predicted {predicted} MACs, the model has {macs1}")
    if s.macs is not None and macs1 > s.macs * macs0:
        result.notes.append(f"the MAC target {s.macs} is missed ({macs1 / macs0:.1%} kept): measure: true "
                            "left some layers whole, and the layers that run faster factorised cannot "
                            "make up for them")
    facts.update(macs_after=macs1, params_after=params1, macs_kept=round(macs1 / max(macs0, 1), 4),
                 params_kept=round(params1 / max(params0, 1), 4))
    result.model = current
    return result


def _select(free: list[S.Candidate], fixed: list[S.Choice], s: Settings, macs0: int):
    """(the choices, pinned ones included; the selection in words; the common energy threshold)."""
    if s.macs is not None:
        threshold, chosen = S.for_macs(free, fixed, s.macs, macs0, s.round_to)
        return fixed + chosen, f"macs {s.macs} (common energy threshold {threshold:.4f})", threshold
    if s.energy is not None:
        return fixed + S.at_energy(free, s.energy, s.round_to), f"energy {s.energy}", None
    if s.vbmf:
        return fixed + S.by_vbmf(free, s.round_to), "vbmf", None
    return list(fixed), "ranks", None


def _measured(model, free: list[S.Candidate], fixed: list[S.Choice], s: Settings, macs0: int):
    """`measure: true`: for each chosen layer, the biggest first, time a few rank settings of its
    factorisation against the layer in one interleaved LiteRT run (select.width_options: the
    chosen ranks and the SIMD-friendly widths near them that keep the model under the MAC
    target) and keep the fastest. That layer is then fixed and the others chosen again, so the
    MACs it frees are spread over them as the fill spreads the rounding's slack.

    When even its fastest setting is not faster than the layer, the layer is left whole and the
    choice starts again among the others (those measured already are measured again at their
    new ranks), so a MAC target is spread over the layers that do run faster. When those cannot
    reach the target any more, the choice stands minus its slower layers (the caller notes the
    missed target).

    Returns (choices, selection, threshold, {name: [(setting, speed-up)] as last timed},
    [(dropped choice, its best speed-up)])."""
    from edgesparse.passes.lowrank.measure import speedups

    target = s.macs * macs0 if s.macs is not None else None
    by_name = {c.name: c for c in free}
    timed: dict[str, list[tuple[S.Choice, float]]] = {}
    done: dict[str, S.Choice] = {}
    dropped: dict[str, tuple[S.Choice, float]] = {}
    reachable = True
    chosen, selection, threshold = _select(free, fixed, s, macs0)
    while True:
        todo = [ch for ch in chosen if ch.name not in done]
        if not todo:
            break
        ch = max(todo, key=lambda x: (x.macs_before, x.name))
        c = by_name.get(ch.name)
        if c is None:                               # pinned: exactly the ranks asked for
            options = [ch]
        else:
            slack = 0 if target is None else max(0, int(target - S.total_macs(chosen, macs0)))
            options = S.width_options(c, ch, s.round_to, None if target is None else ch.macs_after + slack)
        layer = model.get_layer(ch.name)
        names = _new_names(model, ch.name, F.layer_count(ch.form))
        ratios = speedups(layer, [F.new_layers(layer, o.form, o.ranks, names) for o in options], s.threads)
        timed[ch.name] = [(o, round(r, 3)) for o, r in zip(options, ratios)]
        best, ratio = max(timed[ch.name], key=lambda t: t[1])      # ties: the earlier, the chosen first
        if ratio > 1.0:
            done[ch.name] = best
            if not reachable:                       # the target is missed already: no choosing again
                chosen = [best if x.name == ch.name else x for x in chosen]
                continue
        else:
            dropped[ch.name] = (ch, ratio)
            if reachable:
                rest = [x for x in free if x.name not in dropped]
                rest_fixed = [x for x in fixed if x.name not in dropped]
                reachable = target is None or S.least_macs(rest, rest_fixed, macs0, s.round_to) <= target
            if not reachable:
                chosen = [done.get(x.name, x) for x in chosen if x.name not in dropped]
                continue
            done.clear()
        rest = [x for x in free if x.name not in dropped and x.name not in done]
        rest_fixed = [x for x in fixed if x.name not in dropped and x.name not in done] + list(done.values())
        chosen, selection, threshold = _select(rest, rest_fixed, s, macs0)
    return chosen, selection, threshold, timed, list(dropped.values())


def _timed_rows(rows: list[tuple[S.Choice, float]]) -> list[dict]:
    return [{"ranks": list(o.ranks), "macs": o.macs_after, "speedup_host": r} for o, r in rows]


def _timed_words(timed: dict[str, list[tuple[S.Choice, float]]], kept: dict[str, S.Choice]) -> str:
    """What was timed, in the report: per layer every setting with its MACs and speed-up."""
    parts = []
    for name, rows in timed.items():
        settings = ", ".join(f"{list(o.ranks)} {o.macs_after:,} MACs {r:.2f}x" for o, r in rows)
        outcome = f"kept {list(kept[name].ranks)}" if name in kept else "left whole"
        parts.append(f"{name} ({rows[0][0].form}): {settings}; {outcome}")
    return "; ".join(parts)


def _inputs(model, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    if not names:
        return {}
    outs = linear.run(linear.submodel(model, [linear.layer_input(model, n) for n in names]), x)
    return dict(zip(names, outs))


def _new_names(model, name: str, n: int) -> list[str]:
    taken = {layer.name for layer in model.layers}
    base = f"{name}_lr"
    while any(f"{base}{i}" in taken for i in range(1, n + 1)):
        base += "_"
    return [f"{base}{i}" for i in range(1, n + 1)]


def _evaluator(validation):
    if validation is None or validation[1] is None:
        return lambda m: None
    from edgesparse.train.metrics import accuracy

    x, y = validation
    return lambda m: round(accuracy(m, x, y), 3)
