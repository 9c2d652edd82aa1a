"""Features of several grid levels in one store: a tree with a child per grid level.

What a one-pass asset (``terrain_statistics``, ``alphaearth_statistics``) writes, and how each
level's per-level asset takes its part out of it.
"""

from __future__ import annotations

from collections.abc import Mapping

import xarray as xr


def statistics_tree(features: Mapping[str, xr.Dataset]) -> xr.DataTree:
    """Gather the features of several levels into one tree, a child per grid level key.

    Parameters
    ----------
    features : mapping of str to xarray.Dataset
        Per level key, its features.

    Returns
    -------
    xarray.DataTree
        The features under ``/<grid level>``; the root's attrs list the levels.
    """
    tree = xr.DataTree.from_dict(dict(features))
    tree.attrs["grid_levels"] = list(features)
    return tree


def level_features(statistics: xr.DataTree, key: str, asset: str) -> xr.Dataset:
    """Return one grid level's features out of a :func:`statistics_tree`.

    Parameters
    ----------
    statistics : xarray.DataTree
        The features of several levels.
    key : str
        Grid level key, e.g. ``h3_5``.
    asset : str
        The asset that wrote the tree, named in the error.

    Returns
    -------
    xarray.Dataset
        The level's features.

    Raises
    ------
    KeyError
        If the tree lacks the level; the message names the levels it holds and the fix.
    """
    if key not in statistics.children:
        levels = statistics.attrs.get("grid_levels", list(statistics.children))
        held = ", ".join(sorted(levels)) or "none"
        raise KeyError(
            f"{asset} holds the grid levels {held}, not {key}: materialise {asset} with {key} "
            "among its grid_levels (default: every level whose grid_cells exist)"
        )
    return statistics.children[key].to_dataset(inherit=False)
