"""Atomic file replacement: write beside the target, rename over it only when complete.

``os.replace`` is atomic on POSIX within one file system, so readers see either the previous
file or the new one, and a failed or killed run leaves the previous file intact.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Give a temporary path to write to, replacing ``target`` only if the block succeeds.

    The hidden temporary file lies beside ``target`` (same file system) and is renamed onto it
    when the ``with`` block ends without error; otherwise it is deleted and ``target`` is left
    as it was. The temporary name keeps the target's suffix, which GDAL drivers (GeoPackage,
    GeoTIFF) use to choose the format.

    Parameters
    ----------
    target : str or Path
        File to replace; its parent directory is created if missing.

    Yields
    ------
    Path
        Temporary path to write the new file to.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
