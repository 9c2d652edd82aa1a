"""The per-band reduction of the multi-level pass (``spatial.levels``) by sorting: the GPU path.

The CPU pass reduces a band with compiled loops over atoms and a bisection over their sorted
runs (``levels.atom_moments``, ``levels.level_quantiles``): work that is sequential per atom
or per cell. A GPU wants a few large data-parallel steps instead, so this path reduces each
level directly, with operations every array library has (gather, ``sort``, ``searchsorted``,
``bincount``):

- The band's valid values whose pixel centre lies in a cell are keyed by (cell, value): the
  cell index in the high 32 bits, the value's order-preserving key (``levels.to_keys``) in the
  low 32. One sort of these int64 keys (a radix sort on cupy) leaves each cell's values
  sorted and contiguous; ``searchsorted`` finds the runs.
- Count, sum and the sum of squared deviations (two passes) come from ``bincount``; min and
  max are each run's ends; the quantiles read the two order statistics around
  ``(n - 1) q`` and interpolate with numpy's linear rule, as the CPU path does.
- The edge corrections (exact coverage of pixels crossed by a cell boundary) enter as on the
  CPU: weights ``delta`` around a shift (the centre mean), min and max over the edge values
  with coverage above 0.

So the results equal the CPU pass: min, max and quantiles exactly (the same sorted values and
formula), the moments to rounding (other summation orders). The code takes the array module
as an argument; on numpy it runs on the CPU (its tests), on cupy on the GPU. The atoms are
still built on the CPU (``levels.build_level_map``); the level map moves to the device once
per window (:class:`DeviceLevelMap`) and each band once.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from entropice_core.arrays import to_host
from entropice_core.spatial.levels import from_keys

#: Shift that turns the signed 32-bit value keys into unsigned ones below the cell bits.
KEY_OFFSET = 2**31
LOW_BITS = np.int64(2**32 - 1)


@dataclass(frozen=True)
class DeviceLevel:
    """One level's part of a :class:`DeviceLevelMap`, on the device."""

    n_cells: int
    pixel_cell: Any  # cell index of each grouped pixel (``LevelMap.order``), -1 for none
    edge_pixel: Any
    edge_cell: Any
    edge_positive: Any  # coverage above 0: the edge value counts for min and max
    edge_delta: Any


@dataclass(frozen=True)
class DeviceLevelMap:
    """A ``levels.LevelMap`` moved to the device.

    The pixels in atom order and, per level, each of those pixels' cell and the edge entries.
    """

    xp: ModuleType
    order: Any
    levels: tuple[DeviceLevel, ...]

    @classmethod
    def build(cls, lmap: Any, xp: ModuleType) -> DeviceLevelMap:
        """Move ``lmap`` (a ``levels.LevelMap``) to the device of ``xp``."""
        sizes = np.diff(lmap.atom_start)
        atom_of = np.repeat(np.arange(lmap.n_atoms, dtype=np.int32), sizes)
        levels = tuple(
            DeviceLevel(
                n_cells=len(edges.cell_ids),
                pixel_cell=xp.asarray(lmap.atom_cell[i][atom_of]),
                edge_pixel=xp.asarray(edges.pixel),
                edge_cell=xp.asarray(edges.cell.astype(np.int64)),
                edge_positive=xp.asarray(edges.coverage > 0),
                edge_delta=xp.asarray(edges.delta),
            )
            for i, edges in enumerate(lmap.edges)
        )
        return cls(xp=xp, order=xp.asarray(lmap.order), levels=levels)


def value_keys(values: Any, xp: ModuleType) -> Any:
    """Order-preserving int64 keys in ``[0, 2**32)`` of float32 values (no NaN).

    As ``levels.to_keys``: negative floats map to minus their magnitude bits (so -0.0 and
    +0.0 share a key), then shifted by :data:`KEY_OFFSET` to be non-negative.
    """
    bits = values.view(xp.int32).astype(xp.int64)
    return xp.where(bits < 0, -(bits & 0x7FFFFFFF), bits) + KEY_OFFSET


def _sorted_runs(cells: Any, keys: Any, n_cells: int, xp: ModuleType) -> tuple[Any, Any, Any]:
    """Sort values by (cell, value); return each value's cell, the values and the run bounds."""
    composite = xp.sort((cells.astype(xp.int64) << 32) | keys)
    run_cell = composite >> 32
    bounds = xp.searchsorted(run_cell, xp.arange(n_cells + 1, dtype=xp.int64))
    values = from_keys((composite & LOW_BITS) - KEY_OFFSET, xp).astype(xp.float64)
    return run_cell, values, bounds


def _run_ends(x: Any, bounds: Any, n: Any, xp: ModuleType) -> tuple[Any, Any]:
    """First and last value of each run (NaN for empty runs)."""
    if len(x) == 0:
        return xp.full(len(n), np.nan), xp.full(len(n), np.nan)
    first = xp.minimum(bounds[:-1], len(x) - 1)  # empty runs past the end: masked below
    last = xp.maximum(bounds[1:] - 1, 0)
    return xp.where(n > 0, x[first], np.nan), xp.where(n > 0, x[last], np.nan)


def reduce_level(
    values: Any, valid: Any, keys: Any, level: DeviceLevel, q: np.ndarray, xp: ModuleType
) -> tuple[np.ndarray, np.ndarray]:
    """Moments ``(5, cells)`` and quantiles ``(levels, cells)`` of one band on one level.

    ``values`` is the band (flat float32 on the device); ``valid`` and ``keys`` are the
    validity and value keys of its pixels in atom order (``LevelMap.order``). The moments are
    weight ``sum(c)``, mean, ``sum(c (x - mean)^2)``, min and max, as
    ``levels.level_moments`` returns them.
    """
    n_cells = level.n_cells
    member = valid & (level.pixel_cell >= 0)
    run_cell, x, bounds = _sorted_runs(level.pixel_cell[member], keys[member], n_cells, xp)
    n = xp.diff(bounds).astype(xp.float64)
    total = xp.bincount(run_cell, weights=x, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
    centre_mean = xp.where(n > 0, mean, 0.0)
    m2 = xp.bincount(run_cell, weights=(x - centre_mean[run_cell]) ** 2, minlength=n_cells)
    low, high = _run_ends(x, bounds, n, xp)

    # edge entries: weights delta around the shift k (the centre mean, else the mean of the
    # cell's valid edge values), as levels.level_moments corrects them
    xe = values[level.edge_pixel].astype(xp.float64)
    ok = ~xp.isnan(xe)
    cell, xe, delta = level.edge_cell[ok], xe[ok], level.edge_delta[ok]
    edge_n = xp.bincount(cell, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        edge_mean = xp.bincount(cell, weights=xe, minlength=n_cells) / edge_n
    k = xp.where(n > 0, centre_mean, xp.where(edge_n > 0, edge_mean, 0.0))
    d = xe - k[cell]
    sw = xp.bincount(cell, weights=delta, minlength=n_cells)
    sd = xp.bincount(cell, weights=delta * d, minlength=n_cells)
    sdd = xp.bincount(cell, weights=delta * d * d, minlength=n_cells)
    weight = n + sw
    seen = (n > 0) | (edge_n > 0)
    keep = seen & (weight > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = sd / weight
    positive = level.edge_positive[ok]
    _, edge_x, edge_bounds = _sorted_runs(
        cell[positive], value_keys(xe[positive].astype(xp.float32), xp), n_cells, xp
    )
    edge_low, edge_high = _run_ends(edge_x, edge_bounds, xp.diff(edge_bounds), xp)
    low = xp.fmin(low, edge_low)
    high = xp.fmax(high, edge_high)
    moments = xp.stack(
        [
            xp.where(keep, weight, 0.0),
            xp.where(keep, k + shift, np.nan),
            xp.where(keep, xp.maximum(m2 + sdd - weight * shift * shift, 0.0), np.nan),
            xp.where(keep, low, np.nan),
            xp.where(keep, high, np.nan),
        ]
    )
    return to_host(moments), to_host(_quantiles(x, bounds, n, q, xp))


def _quantiles(x: Any, bounds: Any, n: Any, q: np.ndarray, xp: ModuleType) -> Any:
    """Quantiles ``(levels, cells)`` of the sorted runs by numpy's linear rule (NaN if empty)."""
    if len(q) == 0:
        return xp.zeros((0, len(n)))
    if len(x) == 0:
        return xp.full((len(q), len(n)), np.nan)
    count = n.astype(xp.int64)
    position = (count - 1)[None, :] * xp.asarray(q)[:, None]
    below = xp.floor(position).astype(xp.int64)
    above = xp.minimum(below + 1, count - 1)
    t = position - below
    start = bounds[:-1][None, :]
    top = len(x) - 1  # empty runs index out of range: clipped, then masked below
    a = x[xp.clip(start + below, 0, top)]
    b = x[xp.clip(start + above, 0, top)]
    diff = b - a
    out = xp.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return xp.where(count[None, :] > 0, out, np.nan)


def reduce_band(
    values: np.ndarray, device_map: DeviceLevelMap, q: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reduce one band (flat float32, NaN nodata) on every level of ``device_map``.

    Returns per level the moments ``(5, cells)`` and quantiles ``(levels, cells)`` on the
    host, as ``levels._reduce_band`` does on the CPU.
    """
    xp = device_map.xp
    band = xp.asarray(values, dtype=xp.float32)
    grouped = band[device_map.order]
    valid = ~xp.isnan(grouped)
    keys = value_keys(xp.where(valid, grouped, xp.float32(0)), xp)
    moments, quantiles = [], []
    for level in device_map.levels:
        m, qs = reduce_level(band, valid, keys, level, q, xp)
        moments.append(m)
        quantiles.append(qs)
    return moments, quantiles
