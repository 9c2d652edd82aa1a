"""Compiled segment reductions: the inner loop of the aggregation engine.

One pass per band gathers the values of the (pixel, cell) entries of each cell's segment and
reduces them to all moments at once, where numpy needs one temporary and one pass per statistic
and per band. The sum of squares uses the shifted-data rule: deviations are taken from the
segment's first valid value ``k``, ``m2 = sum(w (x - k)^2) - sum(w (x - k))^2 / sum(w)``, which
stays accurate (unlike ``sum(w x^2) - W mean^2``) because ``k`` is one of the values, so
``(mean - k)^2`` is of the order of the variance. ``nogil`` lets dask threads run blocks in
parallel.
"""

from __future__ import annotations

import numba
import numpy as np

#: Rows of :func:`segment_moments`' output, in order.
MOMENTS = ("weight", "weighted_sum", "m2", "count", "total", "minimum", "maximum")


@numba.njit(cache=True, nogil=True)
def segment_moments(
    values: np.ndarray,
    pixel: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    share: np.ndarray,
    coverage: np.ndarray,
    row_area: np.ndarray,
    width: int,
) -> np.ndarray:
    """Reduce each segment of (pixel, cell) entries to all its moments in one pass per band.

    Entry ``j`` reads pixel ``pixel[j]``. Its weight is
    ``w = share[j] * row_area[pixel[j] // width]`` (for means and the sum of squares) and its
    coverage ``c = coverage[j]`` (for ``count`` and ``total``); an empty ``share``,
    ``coverage`` or ``row_area`` stands for ones. NaN values are skipped.

    Parameters
    ----------
    values : numpy.ndarray
        ``(bands, pixels)`` values, NaN for nodata.
    pixel : numpy.ndarray
        Flat pixel index of each entry.
    start, stop : numpy.ndarray
        Segment ``s`` is the entries ``start[s]:stop[s]``.
    share : numpy.ndarray
        Weight of each entry, or empty for ones.
    coverage : numpy.ndarray
        Coverage of each entry, or empty for ones.
    row_area : numpy.ndarray
        Area of each pixel row, or empty for ones.
    width : int
        Pixels per row (to find an entry's row).

    Returns
    -------
    numpy.ndarray
        ``(7, bands, segments)``, rows named by :data:`MOMENTS`: ``weight = sum(w)``,
        ``weighted_sum = sum(w x)``, ``m2 = sum(w (x - mean)^2)``, ``count = sum(c)``,
        ``total = sum(c x)``, minimum and maximum (``+inf``/``-inf`` where none is valid).
    """
    n_bands, n_segments = values.shape[0], len(start)
    by_share, by_coverage, by_row = len(share) > 0, len(coverage) > 0, len(row_area) > 0
    out = np.empty((7, n_bands, n_segments))
    for b in range(n_bands):
        row = values[b]
        for s in range(n_segments):
            w_sum = wx_sum = wd_sum = wdd_sum = c_sum = cx_sum = 0.0
            low, high = np.inf, -np.inf
            shift = np.nan
            for j in range(start[s], stop[s]):
                p = pixel[j]
                x = np.float64(row[p])
                if x != x:
                    continue
                if shift != shift:
                    shift = x
                w = share[j] if by_share else 1.0
                if by_row:
                    w *= row_area[p // width]
                c = coverage[j] if by_coverage else 1.0
                d = x - shift
                w_sum += w
                wx_sum += w * x
                wd_sum += w * d
                wdd_sum += w * d * d
                c_sum += c
                cx_sum += c * x
                low = min(low, x)
                high = max(high, x)
            out[0, b, s] = w_sum
            out[1, b, s] = wx_sum
            out[2, b, s] = max(wdd_sum - wd_sum * wd_sum / w_sum, 0.0) if w_sum > 0 else 0.0
            out[3, b, s] = c_sum
            out[4, b, s] = cx_sum
            out[5, b, s] = low
            out[6, b, s] = high
    return out
