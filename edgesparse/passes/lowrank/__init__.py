"""The `lowrank` pass: a layer becomes two or three thinner ones (docs/lowrank.md).

- `spectra`: the numpy side: whitening, truncated SVDs, kept energy, EVBMF, rank rounding;
- `forms`: one factorised form per kind (Dense SVD, Tucker-2, spatial SVD): limits, MACs,
  the new layers with their weights, and the least-squares refit of the last factor;
- `select`: ranks from kept energy, a MAC target (bisection of one energy threshold) or VBMF,
  and the rank widths `measure: true` times;
- `measure`: optional per-layer LiteRT timing of those widths on this host;
- `pass_`: the pass, its config and the procedure.
"""
