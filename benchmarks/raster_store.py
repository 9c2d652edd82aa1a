"""Committing terrain rasters with their overviews: ``commit_raster`` vs the plain Icechunk path.

Builds ``--vars`` lazy float32 rasters of ``--size`` x ``--size`` pixels in EPSG:3413 (smooth
relief plus texture, 2 % NaN, 1024 px chunks, each chunk costing a few array operations as a
derivative would) and commits them with the pixel-sample overviews of ``terrain.overviews``:

- ours: ``io.icechunk.commit_raster``: one dask pass computes each chunk once for both the
  raster and the overviews, chunks LZ4 + byte shuffle;
- plain: what the Icechunk docs show: ``to_icechunk`` of the rasters (Zarr's default Zstd),
  then the overviews built from the rasters read back from the session, ``to_icechunk``
  again, one commit (the implementation before this one).

It also prints the codec ratio and speeds on one chunk of each variable.

Run: ``.venv/bin/python benchmarks/raster_store.py [--size 6000] [--vars 6]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import icechunk
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from icechunk.xarray import to_icechunk
from numcodecs import Blosc, Zstd
from rich.console import Console
from rich.table import Table
from zarr.codecs import ZstdCodec  # Zarr's default compressor

from entropice_core.io.icechunk import commit_raster
from entropice_core.terrain.overviews import GROUP, STRIDES, overview_pyramid


def rasters(size: int, n_vars: int) -> xr.Dataset:
    """Lazy rasters whose chunks cost some arithmetic, like terrain derivatives."""

    def block(template: np.ndarray, offset: float, block_info=None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[0]["array-location"]
        y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        z = 300 * np.sin(y / 900 + offset) * np.cos(x / 700) + 5 * np.sin(x * y / 5e4)
        rng = np.random.default_rng(int(y0 * 7 + x0 + offset))
        z += rng.normal(0, 1, z.shape).astype(np.float32)
        z[rng.random(z.shape) < 0.02] = np.nan
        return z.astype(np.float32)

    template = da.zeros((size, size), chunks=1024, dtype=np.float32)
    y = 1_000_000 - 32 * (np.arange(size) + 0.5)
    x = -1_500_000 + 32 * (np.arange(size) + 0.5)
    variables = {
        f"v{i}": (("y", "x"), template.map_blocks(block, float(i), dtype=np.float32))
        for i in range(n_vars)
    }
    return xr.Dataset(variables, coords={"y": y, "x": x}).rio.write_crs("EPSG:3413")


def plain(dataset: xr.Dataset, repo: Path) -> str:
    session = icechunk.Repository.create(icechunk.local_filesystem_storage(str(repo)))
    session = session.writable_session("main")
    to_icechunk(dataset, session, mode="w")
    with dask.config.set(scheduler="threads"):
        written = xr.open_zarr(session.store, consolidated=False, zarr_format=3)
        to_icechunk(overview_pyramid(written), session, group=GROUP, mode="w")
    return session.commit("plain")


def size_on_disk(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def codec_table(dataset: xr.Dataset) -> Table:
    chunks = [dataset[v].data.blocks[1, 1].compute() for v in dataset.data_vars]
    raw = sum(c.nbytes for c in chunks)
    table = Table(title="Codec on one 1024 x 1024 chunk per variable")
    for column in ("codec", "ratio", "encode MB/s", "decode MB/s"):
        table.add_column(column, justify="right")
    zstd_level = ZstdCodec().level
    for name, codec in (
        (f"Zstd level {zstd_level} (Zarr default)", Zstd(level=zstd_level)),
        ("Blosc LZ4 + shuffle (ours)", Blosc("lz4", 5, Blosc.SHUFFLE)),
    ):
        started = time.perf_counter()
        encoded = [codec.encode(c) for c in chunks]
        encode = time.perf_counter() - started
        started = time.perf_counter()
        for e in encoded:
            codec.decode(e)
        decode = time.perf_counter() - started
        ratio = raw / sum(len(e) for e in encoded)
        table.add_row(
            name, f"{ratio:.2f}", f"{raw / encode / 1e6:,.0f}", f"{raw / decode / 1e6:,.0f}"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6000, help="raster edge in pixels")
    parser.add_argument("--vars", type=int, default=6, help="number of raster variables")
    args = parser.parse_args()
    dataset = rasters(args.size, args.vars)
    console = Console()
    console.print(codec_table(dataset))
    table = Table(title=f"Commit {args.vars} rasters of {args.size}² px with overviews")
    for column in ("path", "wall s", "Mpx/s", "GB on disk", "speed-up"):
        table.add_column(column, justify="right")
    pixels = args.vars * args.size**2 / 1e6
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (
            ("plain to_icechunk + re-read", lambda repo: plain(dataset, repo)),
            (
                "commit_raster (ours)",
                lambda repo: commit_raster(dataset, repo, "ours", STRIDES),
            ),
        ):
            repo = Path(tmp) / name.split()[0]
            started = time.perf_counter()
            run(repo)
            times[name] = time.perf_counter() - started
            base = next(iter(times.values()))
            table.add_row(
                name, f"{times[name]:.1f}", f"{pixels / times[name]:.1f}",
                f"{size_on_disk(repo):.2f}", f"{base / times[name]:.2f}x",
            )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
