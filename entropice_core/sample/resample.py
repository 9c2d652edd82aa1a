"""Separable cubic resampling between regular grids.

Every source is drawn from latent fields that live on a coarse grid; writing a 3125 x 3125 DEM
tile then costs two sparse matrix products (four weights per output row and column) instead of
one interpolation per pixel.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _keys_kernel(t: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel with a = -0.5 (Catmull-Rom): interpolating, C1."""
    a = -0.5
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def cubic_weights(positions: np.ndarray, n: int) -> sp.csr_array:
    """Build sparse cubic (Catmull-Rom) weights mapping ``n`` source samples onto ``positions``.

    Parameters
    ----------
    positions : numpy.ndarray
        Positions of the targets in source index units (0 = the first source sample's centre).
    n : int
        Number of source samples; indices beyond the edges are clamped (edge values repeat).

    Returns
    -------
    scipy.sparse.csr_array
        Shape ``(len(positions), n)`` with four weights per row that sum to one.
    """
    base = np.floor(positions).astype(np.int64)
    offsets = np.arange(-1, 3)
    cols = base[:, None] + offsets[None, :]
    weights = _keys_kernel(positions[:, None] - cols)
    rows = np.repeat(np.arange(len(positions)), 4)
    cols = np.clip(cols, 0, n - 1)
    return sp.csr_array(
        (weights.ravel(), (rows, cols.ravel())), shape=(len(positions), n), dtype=np.float64
    )


def resample(field: np.ndarray, row_weights: sp.csr_array, col_weights: sp.csr_array) -> np.ndarray:
    """Resample a 2-D field with separable weights: ``R @ field @ C.T``.

    Parameters
    ----------
    field : numpy.ndarray
        ``(rows, cols)`` source field.
    row_weights : scipy.sparse.csr_array
        ``(out_rows, rows)`` weights from :func:`cubic_weights`.
    col_weights : scipy.sparse.csr_array
        ``(out_cols, cols)`` weights from :func:`cubic_weights`.

    Returns
    -------
    numpy.ndarray
        ``(out_rows, out_cols)`` resampled field.
    """
    rows_done = row_weights @ field
    return np.asarray((col_weights @ rows_done.T).T)
