"""The array libraries behind ``config.ArrayBackend``, imported and copied back to the host.

The GPU ones are imported only on request, with the fix in the error where one is missing.

The names and which device each runs on are ``config``'s (``Device``, ``ArrayBackend``,
``resolve_backend``); eSPA's array-API namespaces are ``ml.espa.array_backend``'s.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np


def array_module(backend: str, purpose: str) -> ModuleType:
    """Import the array library ``backend`` (numpy, cupy or torch) itself.

    Parameters
    ----------
    backend : {"numpy", "cupy", "torch"}
        The library.
    purpose : str
        What needs it, for the error message (e.g. ``"TerrainConfig(backend='cupy')"``).

    Returns
    -------
    ModuleType
        The module.

    Raises
    ------
    ValueError
        If the name is none of the three.
    ImportError
        If a GPU library is not installed, naming the extra that brings it.
    """
    if backend not in ("numpy", "cupy", "torch"):
        raise ValueError(f"{purpose}: unknown array library {backend!r}; use numpy, cupy or torch")
    try:
        return importlib.import_module(backend)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs {backend}: install the gpu extra (`uv sync --extra gpu`) on a "
            "machine with CUDA, or stay on the CPU (numpy)"
        ) from err


def to_host(x: Any) -> np.ndarray:
    """Copy an array of any supported backend to host memory.

    Parameters
    ----------
    x : array
        A numpy, cupy, torch or other DLPack array.

    Returns
    -------
    numpy.ndarray
        ``x`` itself if it is already numpy.
    """
    if array_api_compat.is_numpy_array(x):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.from_dlpack(x)
