"""Batch prediction of every cell of a grid level, the same way for every model.

Features are read from the training dataset (lazy, Dask-backed when opened from Zarr) one batch
of cells at a time, so memory stays at one batch of features plus the small per-cell outputs
(class and probabilities). Cells whose features were dropped (role ``excluded``, see
dataset.py) and grid cells the dataset lacks get no class and NaN probabilities; cells DARTS
never observed (role ``unlabelled``) are predicted, which is what a map is for. A yearly model
predicts each (cell, year) whose yearly features exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

from entropice_core.arrays import to_host
from entropice_core.config import Device
from entropice_core.ml.dataset import ROLES, Time, TrainingData, VariantSpec, as_device_array

#: Default cells per batch: 65,536 cells x 100 float32 features is 25 MiB.
DEFAULT_BATCH_SIZE = 65_536
#: Bytes a model's prediction takes per input byte on the device, beyond the batch itself
#: (device copies, tree or distance temporaries, probabilities): a conservative guess that
#: ``benchmarks/gpu_check.py`` checks against the measured peak.
DEVICE_OVERHEAD = 4


def batch_size_for(memory_bytes: int, n_features: int, per_cell: int = 1) -> int:
    """Find the most cells per batch whose prediction fits a device memory budget.

    Parameters
    ----------
    memory_bytes : int
        Memory the batches may take on the device (e.g. a share of one GPU's).
    n_features : int
        Features per row (float32).
    per_cell : int
        Rows per cell (yearly models: one per year).

    Returns
    -------
    int
        Cells per batch, at least 1: ``memory_bytes / (4 n_features per_cell (1 +
        DEVICE_OVERHEAD))``.
    """
    row = 4 * max(n_features, 1) * max(per_cell, 1) * (1 + DEVICE_OVERHEAD)
    return max(1, int(memory_bytes // row))


def predict_batch(
    model: Any, values: Any, ok: np.ndarray, feature_names: list[str], device: Device
) -> np.ndarray:
    """Predict the class probabilities of the usable rows of one batch of cells.

    The unit of work of :func:`predict_cells`, in this process or as one task on a cluster
    (and what benchmarks/gpu_check.py times on each device).

    Parameters
    ----------
    model : Any
        Fitted classifier with ``predict_proba``.
    values : array
        The batch's features ``(cells, [years,] features)``, numpy or Dask-backed (read
        here: on a worker where the batch runs on a cluster).
    ok : numpy.ndarray
        Boolean ``(cells, per_cell)``: the rows to predict.
    feature_names : list of str
        Column names of the features (the CPU path gives the model a DataFrame).
    device : Device
        ``cpu``, or ``cuda`` to hand the model a device array (cupy).

    Returns
    -------
    numpy.ndarray
        float32 ``(usable rows, classes)``.
    """
    block = np.asarray(values).reshape(ok.shape[0], ok.shape[1], -1)[ok]
    X = (
        pd.DataFrame(block, columns=feature_names)
        if device == "cpu"
        else as_device_array(block, device)
    )
    return to_host(model.predict_proba(X)).astype(np.float32, copy=False)


def probability_columns(classes: list[str]) -> list[str]:
    """Name the output column of each class's probability.

    Parameters
    ----------
    classes : list of str
        Class names, in the model's class order.

    Returns
    -------
    list of str
        ``proba_<class name>`` for each class, in the same order.
    """
    return [f"proba_{name}" for name in classes]


def predict_cells(
    model: Any,
    dataset: xr.Dataset,
    cells: gpd.GeoDataFrame,
    classes: list[str],
    feature_names: list[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: Device = "cpu",
    time: Time = "static",
    progress: Callable[[int, int], None] | None = None,
    client: Any | None = None,
) -> gpd.GeoDataFrame:
    """Predict the class and class probabilities of every cell with ``model.predict_proba``.

    Parameters
    ----------
    model : Any
        Fitted classifier with ``predict_proba``.
    dataset : xarray.Dataset
        A training dataset (``DatasetEnsemble.build``, or the ``training_dataset`` store).
    cells : geopandas.GeoDataFrame
        Grid cells to predict, with ``cell_id`` and ``geometry`` columns.
    classes : list of str
        Class names, in the model's class order.
    feature_names : list of str
        The features the model was trained on, in its order (taken from the dataset by name).
    batch_size : int
        Cells per ``predict_proba`` call.
    device : Device
        Where the model runs (``config.Device``): ``cpu``, or ``cuda`` to send each batch to
        the GPU as an array of the device's default backend, cupy (models that take device
        arrays: XGBoost with device = "cuda").
    time : {"static", "yearly"}
        The model's time mode (its stamp's ``time``): one prediction per cell, or one per cell
        and label year from the yearly features.
    progress : callable, optional
        Called with (cells done, cells in total) after each batch (on a cluster: once, at
        the end).
    client : distributed.Client, optional
        Predict the batches as tasks on this Dask cluster: each task reads its batch of
        features (from the store, where the dataset is Dask-backed) and runs the model, sent
        once to the workers. The result is the same as in this process.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per cell of ``cells`` (yearly: per cell and year, with a ``year`` column; CRS
        of ``cells``) with cell_id, geometry, role,
        predicted_class (the class index, nullable), predicted_label and one
        ``proba_<class>`` column per class; cells without features get no class and NaN
        probabilities.

    Raises
    ------
    ValueError
        If ``batch_size`` is below 1 or the dataset lacks a feature in ``feature_names``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    data = TrainingData(dataset, VariantSpec(time=time))
    absent = sorted(set(feature_names) - set(data.feature_names))
    if absent:
        raise ValueError(
            f"the dataset lacks the features {absent} the model was trained on: retrain the "
            "model on this dataset, or rebuild the dataset with the model's config"
        )
    role = dataset["role"].to_numpy()
    usable = role != ROLES["excluded"]
    if time == "yearly":
        features = dataset["features_yearly"].sel(feature_yearly=list(feature_names))
        usable = usable[:, None] & dataset["yearly_features_ok"].to_numpy()
    else:
        features = dataset["features"].sel(feature=list(feature_names))
        usable = usable[:, None]
    n, per_cell = usable.shape
    proba = np.full((n, per_cell, len(classes)), np.nan, dtype=np.float32)
    batches = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    columns = list(feature_names)
    if client is None:
        for start, stop in batches:
            if usable[start:stop].any():
                values = features.isel(cell_ids=slice(start, stop)).data
                proba[start:stop][usable[start:stop]] = predict_batch(
                    model, values, usable[start:stop], columns, device
                )
            if progress is not None:
                progress(stop, n)
    else:
        import dask

        batches = [(start, stop) for start, stop in batches if usable[start:stop].any()]
        # the model is one key of the graph: sent to each worker once, not once per batch
        shared = dask.delayed(model, pure=False)
        tasks = [
            dask.delayed(predict_batch, pure=True)(
                shared,
                features.isel(cell_ids=slice(start, stop)).data,
                usable[start:stop],
                columns,
                device,
            )
            for start, stop in batches
        ]
        for (start, stop), values in zip(
            batches, dask.compute(*tasks, scheduler=client), strict=True
        ):
            proba[start:stop][usable[start:stop]] = values
        if progress is not None:
            progress(n, n)
    proba = proba.reshape(n * per_cell, len(classes))
    known = ~np.isnan(proba[:, 0])
    best = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
    predicted = pd.array(best, dtype="Int64")
    predicted[~known] = pd.NA
    labels = pd.array(np.asarray(classes, dtype=object)[best], dtype="string")
    labels[~known] = pd.NA
    lowest = min(ROLES.values())
    role_names = np.empty(max(ROLES.values()) - lowest + 1, dtype=object)
    for name, code in ROLES.items():
        role_names[code - lowest] = name
    years = {"year": np.tile(dataset["year"].to_numpy(), n)} if time == "yearly" else {}
    table = pd.DataFrame(
        {
            "cell_id": np.repeat(data.cell_ids, per_cell),
            **years,
            "role": pd.array(
                role_names[np.repeat(role.astype(np.int64), per_cell) - lowest], dtype="str"
            ),
            "predicted_class": predicted,
            "predicted_label": labels,
            **{col: proba[:, i] for i, col in enumerate(probability_columns(classes))},
        }
    )
    frame = cells[["cell_id", "geometry"]].merge(table, on="cell_id", how="left")
    frame["role"] = frame["role"].fillna("excluded")
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=cells.crs)
