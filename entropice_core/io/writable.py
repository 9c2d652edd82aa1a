"""Checking, before any work, that outputs can be written where they are meant to go.

A read-only folder, or a file where a folder should be (``--data-dir`` pointing at a file),
otherwise fails only when the result is written, after the whole computation.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal


class NotWritable(ValueError):
    """An output path cannot be written; the message names the path, the cause and the fix."""


def check_writable(
    target: str | Path, option: str = "--data-dir", kind: Literal["file", "folder"] = "file"
) -> None:
    """Refuse an output path that cannot be written, before anything is computed.

    The nearest existing folder on the way to ``target`` must be a folder (not a file) in
    which a file can be created (probed with a temporary file, so read-only mounts and
    permissions count as the writer will meet them); an existing ``target`` must be of the
    ``kind`` that will replace it.

    Parameters
    ----------
    target : str or Path
        The file or folder (a Zarr store, a model folder) that will be written or replaced.
    option : str
        The command-line option (or setting) that chose the path, for the message.
    kind : {"file", "folder"}
        What ``target`` will be.

    Raises
    ------
    NotWritable
        Naming ``target``, what is in the way, and the fix.
    """
    target = Path(target).absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == target:
        if kind == "file" and target.is_dir():
            raise NotWritable(
                f"cannot write {target}: it is a folder, and a file goes there; give {option} "
                "a file path (or remove the folder)"
            )
        if kind == "folder" and not target.is_dir():
            raise NotWritable(
                f"cannot write {target}: it is a file, and a folder goes there; give {option} "
                "another path (or remove the file)"
            )
        folder = target.parent
    elif not existing.is_dir():
        raise NotWritable(
            f"cannot write {target}: {existing} is a file, not a folder; give {option} a "
            "folder (or move the file away)"
        )
    else:
        folder = existing
    try:
        handle, probe = tempfile.mkstemp(prefix=".entropice-write-check-", dir=folder)
    except OSError as err:
        raise NotWritable(
            f"cannot write {target}: {folder} is not writable ({err.strerror or err}); make it "
            f"writable (e.g. chmod u+w {folder}) or give {option} another folder"
        ) from None
    os.close(handle)
    os.unlink(probe)
