"""One layer's sparse least-squares problem: choose a mask, refit the kept weights.

The layer is `Y ~ X @ W + b` with X (rows, d) the layer's inputs *in the sparse network* and
Y (rows, out) the *dense* network's pre-activations. Everything we need is in the normal
equations of the bias-augmented inputs Xa = [X, 1]:

    H = Xa^T Xa  (d+1, d+1),   G = Xa^T Y  (d+1, out),   yy = sum(Y^2, axis=0)

so the squared error of column j with weights w is  w^T H w - 2 g_j^T w + yy_j,
and the best weights on a support S solve  H[S, S] w_S = g_j[S]  (a small ridge keeps dead
inputs, such as always-zero pixels, from making H singular).

Mask criteria:
  magnitude   |w|                                  (one shot)
  activation  |w| * ||x_i||   (Wanda, Sun et al. 2023; w^2 H_ii is the OBD diagonal)  (one shot)
  obs         w_i^2 / [H_S^-1]_ii: the exact increase of column j's error when weight i is
              removed and the others on S are refit (Optimal Brain Surgeon, Hassibi & Stork
              1993; the same quantity SparseGPT approximates). Applied gradually: a cubic
              schedule removes weights in `steps` rounds, refitting between rounds, so each
              round's choice sees the weights that are really left.
Across the columns of a layer the budget is global (a unit may keep more inputs than another),
which is what lets the error land where it costs least.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesparse.graph.lstsq import NormalEquations, ridge_system, single_threaded_blas, spd_inverse
from edgesparse.passes.sparsify.masks import Pattern, nm_groups, topk_mask

CRITERIA = ("obs", "activation", "magnitude")
# Gradual OBS inverts one (support x support) matrix per unit per round. Above this many
# flops (about 10 s here; a 576x128 kernel at 90% is 8.4e9 flops and took 0.9 s) a layer
# falls back to the activation criterion, whose one refit at the final support stays cheap.
OBS_FLOP_BUDGET = 1e11


def obs_flops(d: int, out: int, keep: int, steps: int, pattern: Pattern) -> float:
    """Rough flop count of gradual OBS on a (d, out) kernel: 2/3 n^3 per Cholesky inverse."""
    total = d * out
    if pattern.structured:
        supports = [d * k / pattern.m for k in range(pattern.m - 1, pattern.n - 1, -1)]
    else:
        supports = [(keep + (total - keep) * (1 - t / steps) ** 3) / out for t in range(1, steps + 1)]
    return float(sum(out * (2 / 3) * n ** 3 for n in supports)) + (2 / 3) * d ** 3


class LayerProblem:
    """Normal equations of one layer, and solves restricted to a mask."""

    def __init__(self, x: np.ndarray, y: np.ndarray, fit_bias: bool, ridge: float):
        y = np.asarray(y, dtype=np.float64)
        eq = NormalEquations(x, y, augment=True)
        self.d, self.out = eq.d, eq.out
        self.fit_bias = fit_bias
        self.h, self.g, self.yy = eq.h, eq.g, eq.yy
        self.variance = float(((y - y.mean(axis=0)) ** 2).sum()) or 1.0
        self.lam = ridge * max(eq.mean_diagonal(), 1e-12)
        self.input_norms = np.sqrt(np.diag(self.h)[: self.d])

    def error(self, w: np.ndarray, b: np.ndarray) -> float:
        """Squared error relative to the targets' variance (0 = exact, 1 = as bad as a constant)."""
        wa = np.vstack([w, b[None]])
        sq = np.einsum("ij,ij->j", wa, self.h @ wa) - 2 * np.einsum("ij,ij->j", self.g, wa) + self.yy
        return float(max(sq.sum(), 0.0) / self.variance)

    def _support(self, mask_col: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(mask_col)
        return np.append(rows, self.d) if self.fit_bias else rows

    def solve(self, mask: np.ndarray, bias: np.ndarray, saliency: bool = False):
        """Least-squares weights on the mask (bias refit too when the layer has one).

        Returns (w, b, sal); sal[i, j] is the OBS saliency of kept weight (i, j) (inf elsewhere)
        when asked for, else None.
        """
        w = np.zeros((self.d, self.out))
        b = np.zeros(self.out) if self.fit_bias else np.asarray(bias, dtype=np.float64).copy()
        sal = np.full((self.d, self.out), np.inf) if saliency else None
        # Without a bias to fit, its fixed contribution moves to the right-hand side.
        g = self.g if self.fit_bias else self.g - np.outer(self.h[:, self.d], b)
        with single_threaded_blas():
            return self._solve(mask, w, b, sal, g)

    def _solve(self, mask, w, b, sal, g):
        saliency = sal is not None
        if mask.all():
            # Every column has the same support: one factorisation serves them all.
            s = self._support(np.ones(self.d, dtype=bool))
            a_inv = spd_inverse(ridge_system(self.h, s, self.lam))
            sol = a_inv @ g[s]
            w[:] = sol[: self.d]
            if self.fit_bias:
                b[:] = sol[self.d]
            if saliency:
                sal[:] = w ** 2 / np.diag(a_inv)[: self.d, None]
            return w, b, sal
        for j in range(self.out):
            s = self._support(mask[:, j])
            if len(s) == 0:
                continue
            a = ridge_system(self.h, s, self.lam)
            if saliency:
                a_inv = spd_inverse(a)
                sol = a_inv @ g[s, j]
                kept = len(s) - (1 if self.fit_bias else 0)
                sal[s[:kept], j] = sol[:kept] ** 2 / np.diag(a_inv)[:kept]
            else:
                sol = np.linalg.solve(a, g[s, j])
            if self.fit_bias:
                w[s[:-1], j], b[j] = sol[:-1], sol[-1]
            else:
                w[s, j] = sol
        return w, b, sal


@dataclass
class LayerFit:
    mask: np.ndarray
    kernel: np.ndarray          # (d, out), zero off the mask
    bias: np.ndarray
    error_mask_only: float      # the mask applied to the original weights, no refit
    error: float                # after the refit (equal to error_mask_only when refit=False)


def _remove_lowest(mask: np.ndarray, score: np.ndarray, count: int) -> np.ndarray:
    """Drop the `count` kept entries with the lowest score, layer-wide."""
    if count <= 0:
        return mask
    score = np.where(mask, score, np.inf)
    flat = np.argsort(score.ravel(), kind="stable")[:count]
    mask = mask.copy()
    mask.ravel()[flat] = False
    return mask


def _nm_round(mask: np.ndarray, score: np.ndarray, groups: np.ndarray, allowed_full: int,
              n: int, m: int) -> np.ndarray:
    """In every (block, column) keep at most `allowed_full` weights (n in short blocks)."""
    mask = mask.copy()
    for gid in np.unique(groups):
        rows = np.flatnonzero(groups == gid)
        allowed = allowed_full if len(rows) == m else min(len(rows), n)
        block_score = np.where(mask[rows], score[rows], -np.inf)
        order = np.argsort(-block_score, axis=0, kind="stable")
        keep = np.zeros((len(rows), mask.shape[1]), dtype=bool)
        np.put_along_axis(keep, order[:allowed], True, axis=0)
        mask[rows] &= keep
    return mask


def _one_shot_score(criterion: str, w: np.ndarray, problem: LayerProblem) -> np.ndarray:
    if criterion == "magnitude":
        return np.abs(w)
    return np.abs(w) * problem.input_norms[:, None]   # activation-aware (Wanda)


def fit_layer(problem: LayerProblem, kernel: np.ndarray, bias: np.ndarray, keep: int,
              pattern: Pattern, c_in: int, criterion: str = "obs", steps: int = 8,
              refit: bool = True) -> LayerFit:
    """Choose a mask keeping `keep` weights (or the N:M pattern) and refit what is kept."""
    kernel = np.asarray(kernel, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {', '.join(CRITERIA)}")
    if criterion == "obs" and not refit:
        raise ValueError("the obs criterion refits as it prunes; use magnitude or activation "
                         "for a mask-only baseline")
    total = kernel.size
    full = np.ones_like(kernel, dtype=bool)
    groups = nm_groups(problem.d, c_in, pattern.m) if pattern.structured else None

    if criterion == "obs":
        # Start from the best dense weights for the (already sparse) inputs, then prune gradually.
        w, b, sal = problem.solve(full, bias, saliency=True)
        mask = full
        if pattern.structured:
            for allowed in range(pattern.m - 1, pattern.n - 1, -1):
                mask = _nm_round(mask, sal, groups, allowed, pattern.n, pattern.m)
                w, b, sal = problem.solve(mask, bias, saliency=True)
        else:
            for t in range(1, steps + 1):
                target = int(round(keep + (total - keep) * (1 - t / steps) ** 3))
                mask = _remove_lowest(mask, sal, int(mask.sum()) - target)
                w, b, sal = problem.solve(mask, bias, saliency=t < steps)
    else:
        score = _one_shot_score(criterion, kernel, problem)
        if pattern.structured:
            mask = _nm_round(full, score, groups, pattern.n, pattern.n, pattern.m)
        else:
            mask = topk_mask(score, keep)
        if refit:
            w, b, _ = problem.solve(mask, bias)
        else:
            w, b = kernel * mask, bias
    mask_only = problem.error(kernel * mask, bias)
    w = w * mask
    return LayerFit(mask=mask, kernel=w, bias=b, error_mask_only=mask_only,
                    error=problem.error(w, b))
