"""Pixel-sample overviews of the terrain rasters: every ``s``-th pixel, stored once.

The per-cell terrain statistics take every ``s``-th pixel from ``s // 2`` in each direction
(``features/terrain.py``). Read from the full-resolution rasters, that sample still
decompresses every chunk however large ``s`` is, so each grid level cost one full read of
the derivatives (about 9 GB for the sample region). Strides are therefore taken from a
short series (1, 2, 3, 4, 6, 8, 12, ... 64: from 2 on each step is at most 1.5x, so a
level keeps at most 2.25x the pixels it asks for), and the overviews hold the samples for
the strides from 3 up, stored beside the rasters in the same Icechunk commit (group
``overviews``): a level sampled at stride ``s`` reads about ``1/s**2`` of the data, and the
overviews together add about a quarter of the rasters' size (stride 2 is left out: it alone
would add another quarter).
They are samples, not averages: a statistic over an overview equals the statistic over the
same pixels of the full raster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # kept light: the Dagster definitions import the strides
    import xarray as xr

#: The strides a sample may take (the coarsest grid levels sample every 64th pixel).
SAMPLE_STRIDES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Strides stored as overviews.
STRIDES = SAMPLE_STRIDES[2:]
#: Icechunk group of the overviews, beside the full-resolution rasters in the root group.
GROUP = "overviews"
#: Chunk edge of the full-resolution rasters, in pixels.
CHUNK = 1024


def chunk_edge(stride: int) -> int:
    """Chunk edge of the overview at ``stride``, in samples.

    As many samples as :data:`CHUNK` pixels at stride 3 and 4, fewer beyond, so that a chunk
    spans 3 or 4 tiles per axis whatever the stride: a chunk is written once the samples of
    every tile it spans are taken, and a 1024-sample chunk at stride 64 would wait for 64 x 64
    tiles (the whole mosaic's width, docs/scaling.md, where memory is bounded).

    Parameters
    ----------
    stride : int
        One of :data:`STRIDES`.

    Returns
    -------
    int
        ``CHUNK`` x (3 or 4, whichever divides ``stride``) / ``stride``.
    """
    tiles = 3 if stride % 3 == 0 else 4
    return min(CHUNK, CHUNK * tiles // stride)


def pixel_sample(rasters: xr.Dataset, stride: int) -> xr.Dataset:
    """Take every ``stride``-th pixel from ``stride // 2`` in both directions.

    Parameters
    ----------
    rasters : xarray.Dataset
        Rasters with rioxarray spatial dims.
    stride : int
        Sampling step in pixels (1: every pixel).

    Returns
    -------
    xarray.Dataset
        The sampled rasters, with their coordinates (pixel centres) and CRS.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if stride <= 1:
        return rasters
    sample = slice(stride // 2, None, stride)
    return rasters.isel({rasters.rio.y_dim: sample, rasters.rio.x_dim: sample})


def block_sample(block: np.ndarray, origin: tuple[int, ...], stride: int) -> np.ndarray:
    """Take from one block of a raster the pixels that :func:`pixel_sample` keeps, as a copy.

    :func:`entropice_core.io.icechunk.commit_raster` samples each block in the task that
    writes it, so the full-resolution block is released at once. A lazy strided slice of the
    raster would keep every block in memory until the sample's chunk (:func:`chunk_edge`),
    which spans 3 or 4 rows of blocks, could be assembled (docs/scaling.md, where memory is
    bounded).

    Parameters
    ----------
    block : numpy.ndarray
        One block; its last two axes are y and x.
    origin : tuple of int
        Index of the block's first pixel in the raster along its last two axes.
    stride : int
        Sampling step in pixels.

    Returns
    -------
    numpy.ndarray
        The block's sampled pixels (possibly none along an axis), contiguous.
    """
    first = [(stride // 2 - start) % stride for start in origin]
    return np.ascontiguousarray(block[..., first[0] :: stride, first[1] :: stride])


def sample_chunks(chunks: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """Count the pixels :func:`block_sample` takes from each block along one axis.

    Parameters
    ----------
    chunks : tuple of int
        Block lengths along the axis, in order.
    stride : int
        Sampling step in pixels.

    Returns
    -------
    tuple of int
        Sampled pixels per block (0 for a short block that holds none).
    """
    counts, start = [], 0
    for length in chunks:
        first = (stride // 2 - start) % stride
        counts.append(max(0, -(-(length - first) // stride)))
        start += length
    return tuple(counts)


def overview_pyramid(rasters: xr.Dataset, strides: tuple[int, ...] = STRIDES) -> xr.Dataset:
    """Build the pixel samples of ``rasters`` at each stride as one dataset, lazily.

    Each variable ``v`` at stride ``s`` becomes ``v_s{s}`` on dims ``y_s{s}``/``x_s{s}``.
    :func:`entropice_core.io.icechunk.commit_raster` writes the layout (names, shapes, chunks,
    coordinates) from it and takes the values from the blocks it writes (:func:`block_sample`).

    Parameters
    ----------
    rasters : xarray.Dataset
        Full-resolution rasters with a CRS.
    strides : tuple of int
        Strides to keep, each at least 2.

    Returns
    -------
    xarray.Dataset
        The overviews, with the CRS (WKT) and the strides in ``attrs``.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    if "spatial_ref" in rasters.data_vars:  # as read back from Zarr
        rasters = rasters.set_coords("spatial_ref")
    y, x = rasters.rio.y_dim, rasters.rio.x_dim
    crs = rasters.rio.crs
    rasters = rasters.drop_vars("spatial_ref", errors="ignore")
    variables = {}
    for stride in strides:
        dims = {y: f"y_s{stride}", x: f"x_s{stride}"}
        # the source's stored chunks (its encoding, as read from Zarr) are not the overview's
        sample = pixel_sample(rasters, stride).rename(dims).drop_encoding()
        sample = sample.chunk(dict.fromkeys(dims.values(), chunk_edge(stride)))
        for name, values in sample.data_vars.items():
            variables[f"{name}_s{stride}"] = values
    pyramid = xr.Dataset(variables)
    pyramid.attrs.update(crs=crs.to_wkt(), strides=list(strides))
    return pyramid


def stored_sample(overviews: xr.Dataset, stride: int) -> xr.Dataset | None:
    """Read the sample at ``stride`` back from the overviews, as ``pixel_sample`` gives it.

    Parameters
    ----------
    overviews : xarray.Dataset
        The stored overviews (see :func:`overview_pyramid`).
    stride : int
        Sampling step in pixels.

    Returns
    -------
    xarray.Dataset or None
        The sampled rasters with their original names, dims ``y``/``x`` and CRS; None when
        the overviews do not hold that stride.
    """
    if stride not in overviews.attrs.get("strides", ()):
        return None
    suffix = f"_s{stride}"
    names = [str(v) for v in overviews.data_vars if str(v).endswith(suffix)]
    sample = overviews[names].rename({n: n.removesuffix(suffix) for n in names})
    sample = sample.rename({f"y{suffix}": "y", f"x{suffix}": "x"})
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    return sample.rio.write_crs(overviews.attrs["crs"])


def sample_stride(stride: int) -> int:
    """Round a sampling stride down to one of ``SAMPLE_STRIDES``.

    Parameters
    ----------
    stride : int
        Any stride.

    Returns
    -------
    int
        The largest of ``SAMPLE_STRIDES`` not above ``stride`` (1 for anything below 2).
    """
    return max(s for s in SAMPLE_STRIDES if s <= max(stride, 1))
