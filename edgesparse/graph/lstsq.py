"""Regularised least squares on a layer's matrix form: the one core behind every refit.

Pruning's reconstruction (passes/prune/reconstruct.py), the sparse refit
(passes/sparsify/solver.py) and later low-rank fits all solve  min ||X W + b - Y||^2 + lam ||W||^2
for X the rows of graph/linear.py. Everything they need is in the normal equations:

- `NormalEquations(x, y, center=True)`: the covariance of centred inputs and targets, for a
  bias that is fitted in closed form (b = mean(Y) - mean(X) W);
- `NormalEquations(x, y, augment=True)`: the Gram matrix of the bias-augmented inputs [X, 1],
  for solves restricted to a support (a sparsity mask), with the bias as one more unknown;
- `RidgePath`: one eigendecomposition, then the solution at any ridge strength (a grid search
  costs one factorisation);
- `spd_inverse` / `solve`: one support's solve, by Cholesky when the inverse is wanted.

Numbers are float64 throughout; the operations are exactly those the two refits did before they
shared this module, so every figure they produce is unchanged.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from scipy.linalg import lapack

from edgesparse.errors import UserError

try:  # ships with scikit-learn
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


class NormalEquations:
    """h = X^T X, g = X^T Y (of centred or bias-augmented X), and what solves need besides."""

    def __init__(self, x: np.ndarray, y: np.ndarray, center: bool = False, augment: bool = False):
        if center and augment:
            raise ValueError("centre the inputs or augment them with a bias column, not both")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            # NaN/inf here come from float32 overflowing on data of the wrong scale (finite inputs
            # around 1e30 do it); LAPACK would fail with "Eigenvalues did not converge".
            raise UserError("a layer's activations on the data are NaN or infinite, so its least-squares "
                            "refit cannot run: float32 overflows on inputs far outside the usual range; "
                            "the data's scale is likely wrong: check its range (e.g. pixels in [0, 1], "
                            "or standardised features)")
        self.d, self.out = x.shape[1], y.shape[1]
        self.x_mean = x.mean(axis=0) if center else np.zeros(x.shape[1])
        self.y_mean = y.mean(axis=0) if center else np.zeros(y.shape[1])
        if center:
            x, y = x - self.x_mean, y - self.y_mean
        elif augment:
            x = np.hstack([x, np.ones((len(x), 1))])
        self.h = x.T @ x
        self.g = x.T @ y
        self.yy = (y ** 2).sum(axis=0)

    def mean_diagonal(self) -> float:
        """The mean of h's diagonal over the inputs (not the bias): the ridge strength's unit."""
        return float(np.mean(np.diag(self.h)[: self.d])) if self.d else 1.0


class RidgePath:
    """min ||X W + b - Y||^2 + lam ||W||^2 for several lam from one eigendecomposition of the
    centred normal equations; lam is given relative to the mean eigenvalue."""

    def __init__(self, eq: NormalEquations):
        self.x_mean, self.y_mean = eq.x_mean, eq.y_mean
        self.evals, self.evecs = np.linalg.eigh(eq.h)
        self.proj = self.evecs.T @ eq.g
        self.scale = max(float(np.mean(np.abs(self.evals))), 1e-12)

    def solve(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        inv = 1.0 / np.maximum(self.evals + alpha * self.scale, 1e-12)
        k = self.evecs @ (inv[:, None] * self.proj)
        b = self.y_mean - self.x_mean @ k
        return k, b


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix by Cholesky (3x cheaper than LU)."""
    c, info = lapack.dpotrf(a, lower=0, clean=0)
    if info == 0:
        inv, info = lapack.dpotri(c, lower=0)
        if info == 0:
            upper = np.triu(inv)
            return upper + np.triu(upper, 1).T
    return np.linalg.inv(a)   # not positive definite to working precision: plain LU


def ridge_system(h: np.ndarray, support: np.ndarray, lam: float) -> np.ndarray:
    """h restricted to a support, with the ridge on its diagonal."""
    return h[np.ix_(support, support)] + lam * np.eye(len(support))


def single_threaded_blas():
    """Per-unit solves are small (a few hundred rows): multi-threaded BLAS spends longer
    handing them out than solving them, 17x longer on a busy 2-core machine (measured)."""
    return threadpool_limits(limits=1, user_api="blas") if threadpool_limits else nullcontext()
