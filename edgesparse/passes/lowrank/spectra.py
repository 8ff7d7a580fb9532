"""Whitened truncated SVD, kept energy, EVBMF and rank rounding: the numpy side of low rank.

Data-aware SVD (as in SVD-LLM / ASVD, and the output-response PCA of Zhang et al. 2015): a layer
computes X W, so what matters is the error ||X (W - A B)||, not ||W - A B||. With the centred
input covariance C = L L^T, ||Xc M||_F^2 = N ||L^T M||_F^2, so the best rank-r A B under the data is
the truncated SVD of L^T W mapped back: A = L^-T U_r, B = S_r V_r^T. The mean of X is folded into
the second factor's bias. Directions the data never uses get no rank.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-8      # relative floor on covariance eigenvalues: constant inputs (digit borders) have none


@dataclass
class Whitener:
    """L^T and L^-T for the centred covariance of the rows, and their mean."""

    lt: np.ndarray
    lit: np.ndarray
    mean: np.ndarray

    @staticmethod
    def of(rows: np.ndarray | None, d: int) -> "Whitener":
        if rows is None:                      # plain SVD: the identity
            return Whitener(np.eye(d), np.eye(d), np.zeros(d))
        rows = np.asarray(rows, dtype=np.float64)
        mean = rows.mean(axis=0)
        xc = rows - mean
        cov = xc.T @ xc / max(len(rows), 1)
        evals, evecs = np.linalg.eigh(cov)
        evals = np.maximum(evals, EPS * max(float(evals.max()), 1e-30))
        root = np.sqrt(evals)
        return Whitener(lt=(evecs * root).T, lit=evecs / root, mean=mean)


def truncated(w: np.ndarray, white: Whitener, r: int) -> tuple[np.ndarray, np.ndarray]:
    """A (d, r), B (r, m) with A B the best rank-r approximation of W under the data."""
    u, s, vt = np.linalg.svd(white.lt @ w, full_matrices=False)
    return white.lit @ u[:, :r], s[:r, None] * vt[:r]


def spectrum(w: np.ndarray, white: Whitener) -> np.ndarray:
    """Singular values of L^T W: the RMS output each direction carries on the data."""
    return np.linalg.svd(white.lt @ w, compute_uv=False)


def output_basis(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions (columns, by decreasing variance), their RMS and the mean of y."""
    y = np.asarray(y, dtype=np.float64)
    mean = y.mean(axis=0)
    yc = y - mean
    evals, evecs = np.linalg.eigh(yc.T @ yc / max(len(y), 1))
    order = np.argsort(evals)[::-1]
    return evecs[:, order], np.sqrt(np.maximum(evals[order], 0.0)), mean


def rank_for_energy(s: np.ndarray, energy: float) -> int:
    """Smallest r whose leading singular values keep `energy` of sum(s^2); at least 1."""
    e = np.cumsum(np.asarray(s, dtype=np.float64) ** 2)
    if e[-1] <= 0:
        return 1
    return int(min(len(s), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


def kept_energy(s: np.ndarray, r: int) -> float:
    e = np.asarray(s, dtype=np.float64) ** 2
    return float(e[:r].sum() / max(e.sum(), 1e-30))


def round_rank(r: int, round_to: int, limit: int) -> int:
    """r rounded up to a multiple of the SIMD width, never above the layer's limit."""
    r = max(1, int(r))
    if round_to > 1:
        r = -(-r // round_to) * round_to
    return min(r, limit)


# ----------------------------------------------------------------------------- EVBMF

def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt(np.maximum((x - (1 + alpha)) ** 2 - 4 * alpha, 0.0)))


def vbmf_rank(s: np.ndarray, shape: tuple[int, int]) -> int:
    """The rank empirical variational Bayesian matrix factorisation keeps for a matrix of this
    shape with singular values s (Nakajima, Sugiyama, Babacan and Tomioka, "Global analytic
    solution of fully-observed variational Bayesian matrix factorization", JMLR 2013), the noise
    variance estimated by minimising its free energy. Scale-free: whitening does not change it."""
    from scipy.optimize import minimize_scalar

    l, m = sorted(int(d) for d in shape)             # l <= m
    s = np.sort(np.asarray(s, dtype=np.float64))[::-1][:l]
    alpha = l / m
    tau_bar = 2.5129 * np.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    residual = 0.0                                   # every singular value is given
    h = len(s)
    e_ub = int(min(np.ceil(l / (1 + alpha)) - 1, h)) - 1
    upper = ((s ** 2).sum() + residual) / (l * m)
    lower = max(s[e_ub + 1] ** 2 / (m * x_bar), np.mean(s[e_ub + 1:] ** 2) / m) if e_ub + 1 < h \
        else upper * 1e-6
    if not upper > lower > 0:
        return h

    def objective(sigma2: float) -> float:
        x = s ** 2 / (m * sigma2)
        z1, z2 = x[x > x_bar], x[x <= x_bar]
        t = _tau(z1, alpha)
        return float(np.sum(z2 - np.log(z2)) + np.sum(z1 - t) + np.sum(np.log((t + 1) / z1))
                     + alpha * np.sum(np.log(t / alpha + 1)) + residual / (m * sigma2) + (l - h) * np.log(sigma2))

    sigma2 = minimize_scalar(objective, bounds=(lower, upper), method="bounded").x
    threshold = np.sqrt(m * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return max(1, int(np.sum(s > threshold)))
