"""Bokeh figures of the pages: pure functions from tables to figures (no Streamlit here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from bokeh.plotting import figure as Figure

#: Tools of every figure (wheel zoom on, so that maps zoom like maps).
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def _palette(n: int) -> list[str]:
    from bokeh.palettes import Category10, Category20

    if n <= 2:
        return ["#1f77b4", "#d62728"][:n]
    return (
        list(Category10[10][:n]) if n <= 10 else list(Category20[20][: min(n, 20)]) * (n // 20 + 1)
    )


def _padded(lower: np.ndarray, upper: np.ndarray) -> tuple[float, float]:
    """Return a range that holds every error bar (Bokeh's auto range ignores whiskers)."""
    lo, hi = float(np.nanmin(lower)), float(np.nanmax(upper))
    pad = 0.05 * (hi - lo) if hi > lo else 0.05
    return lo - pad, hi + pad


def _colorbar(mapper: Any, title: str) -> Any:
    from bokeh.models import ColorBar

    return ColorBar(color_mapper=mapper, title=title, location=(0, 0), width=12)


def score_bars(table: pd.DataFrame, metric: str, label: str) -> Figure:
    """Bars of CV mean ± std per experiment, with the test score and the majority baseline.

    Parameters
    ----------
    table : pandas.DataFrame
        Leaderboard rows (``experiment``, ``cv_{metric}``, ``cv_{metric}_std``,
        ``test_{metric}``, ``baseline_cv_{metric}``).
    metric : str
        E.g. ``f1_macro``.
    label : str
        Axis label with the unit.

    Returns
    -------
    bokeh.plotting.figure
        Horizontal bars, best first.
    """
    from bokeh.models import ColumnDataSource, HoverTool, Whisker
    from bokeh.plotting import figure

    rows = table.sort_values(f"cv_{metric}")
    names = [f"{g} {e}" for g, e in zip(rows["grid_level"], rows["experiment"], strict=True)]
    mean = rows[f"cv_{metric}"].to_numpy(float)
    std = np.nan_to_num(rows[f"cv_{metric}_std"].to_numpy(float))
    source = ColumnDataSource(
        {
            "name": names,
            "mean": mean,
            "lower": mean - std,
            "upper": mean + std,
            "test": rows[f"test_{metric}"].to_numpy(float),
            "baseline": rows[f"baseline_cv_{metric}"].to_numpy(float),
        }
    )
    fig = figure(
        y_range=names,
        x_range=(0.0, float(np.nanmax([*(mean + std), *source.data["test"], 0.1])) * 1.05),
        height=max(220, 28 * len(names) + 80),
        x_axis_label=label,
        tools=TOOLS,
        title=f"CV {metric} (mean ± std over the spatial folds), test and majority baseline",
    )
    fig.hbar(y="name", right="mean", height=0.7, source=source, legend_label="CV mean")
    fig.add_layout(
        Whisker(source=source, base="name", lower="lower", upper="upper", dimension="width")
    )
    fig.scatter("test", "name", source=source, size=9, color="#d62728", legend_label="test blocks")
    fig.scatter(
        "baseline",
        "name",
        source=source,
        size=9,
        marker="x",
        color="black",
        legend_label="majority class (CV)",
    )
    fig.add_tools(
        HoverTool(
            tooltips=[("experiment", "@name"), ("CV", "@mean{0.000}"), ("test", "@test{0.000}")]
        )
    )
    fig.legend.location = "bottom_right"
    return fig


def histogram_by_class(
    values: np.ndarray, classes: np.ndarray, names: Sequence[str], label: str, bins: int = 30
) -> Figure:
    """Overlaid histograms of one feature, one per target class.

    Parameters
    ----------
    values : numpy.ndarray
        The feature per row (NaN skipped).
    classes : numpy.ndarray
        Class code per row (index into ``names``; negative: no class).
    names : sequence of str
        Class names.
    label : str
        Axis label (feature and unit).
    bins : int, optional
        Number of bins.

    Returns
    -------
    bokeh.plotting.figure
        Step-like histograms of the share of each class's rows per bin.
    """
    from bokeh.plotting import figure

    finite = np.isfinite(values)
    edges = np.histogram_bin_edges(values[finite], bins=bins) if finite.any() else np.arange(2.0)
    fig = figure(
        height=320, x_axis_label=label, y_axis_label="share of the class's cells", tools=TOOLS
    )
    for code, (name, color) in enumerate(zip(names, _palette(len(names)), strict=True)):
        subset = values[finite & (classes == code)]
        if not len(subset):
            continue
        counts, _ = np.histogram(subset, bins=edges)
        fig.quad(
            top=counts / len(subset),
            bottom=0,
            left=edges[:-1],
            right=edges[1:],
            fill_alpha=0.35,
            color=color,
            legend_label=f"{name} ({len(subset):,})",
        )
    fig.legend.click_policy = "hide"
    return fig


def bars(
    categories: Sequence[str], counts: Sequence[float] | np.ndarray, label: str, title: str
) -> Figure:
    """Vertical bars (a target distribution, class counts).

    Parameters
    ----------
    categories : sequence of str
        Bar names.
    counts : sequence of float or numpy.ndarray
        Bar heights.
    label : str
        y-axis label with the unit.
    title : str
        Figure title.

    Returns
    -------
    bokeh.plotting.figure
        The bars with a hover of the value.
    """
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    cats = [str(c) for c in categories]
    source = ColumnDataSource({"cat": cats, "count": list(counts)})
    fig = figure(x_range=cats, height=300, y_axis_label=label, title=title, tools=TOOLS)
    fig.vbar(x="cat", top="count", width=0.8, source=source)
    fig.add_tools(HoverTool(tooltips=[("", "@cat"), (label, "@count{0,0.[00]}")]))
    fig.xaxis.major_label_orientation = 0.8 if len(cats) > 6 else 0
    if len(cats) > 40:  # unreadable: the hover names the bar
        fig.xaxis.major_label_text_font_size = "0pt"
    return fig


def scatter_errors(
    x: np.ndarray, y: np.ndarray, err: np.ndarray, x_label: str, y_label: str, log_x: bool
) -> Figure:
    """Points with ± error bars (a CV score against one hyperparameter).

    Parameters
    ----------
    x, y, err : numpy.ndarray
        Positions and half-widths of the bars.
    x_label, y_label : str
        Axis labels.
    log_x : bool
        A logarithmic x axis (log-uniform parameters).

    Returns
    -------
    bokeh.plotting.figure
        The scatter.
    """
    from bokeh.models import ColumnDataSource, HoverTool, Whisker
    from bokeh.plotting import figure

    source = ColumnDataSource({"x": x, "y": y, "lower": y - err, "upper": y + err, "err": err})
    fig = figure(
        y_range=_padded(y - err, y + err),
        height=300,
        x_axis_label=x_label,
        y_axis_label=y_label,
        tools=TOOLS,
        x_axis_type="log" if log_x else "linear",
    )
    fig.add_layout(Whisker(source=source, base="x", lower="lower", upper="upper"))
    fig.scatter("x", "y", source=source, size=9)
    fig.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y{0.000} ± @err{0.000}")]))
    return fig


def importance_bars(table: pd.DataFrame, top: int = 20) -> Figure:
    """Native and permutation importance of the ``top`` features by permutation importance.

    Parameters
    ----------
    table : pandas.DataFrame
        ``feature``, ``native``, ``permutation_mean``, ``permutation_std``.
    top : int, optional
        Features shown.

    Returns
    -------
    bokeh.plotting.figure
        Two bars per feature (native scaled to the permutation range), permutation ± std.
    """
    from bokeh.models import ColumnDataSource, HoverTool, Whisker
    from bokeh.plotting import figure
    from bokeh.transform import dodge

    rows = table.sort_values("permutation_mean", ascending=False).head(top).iloc[::-1]
    names = rows["feature"].astype(str).tolist()
    perm = rows["permutation_mean"].to_numpy(float)
    std = np.nan_to_num(rows["permutation_std"].to_numpy(float))
    source = ColumnDataSource(
        {
            "feature": names,
            "perm": perm,
            "lower": perm - std,
            "upper": perm + std,
            "native": np.nan_to_num(rows["native"].to_numpy(float)),
        }
    )
    fig = figure(
        y_range=names,
        height=max(260, 22 * len(names) + 80),
        tools=TOOLS,
        x_axis_label="importance (permutation: drop in the refit score, F1 macro; native: "
        "the model's own, sums to 1)",
        title=f"Top {len(names)} features by permutation importance on the test blocks",
    )
    fig.hbar(
        y=dodge("feature", 0.18, range=fig.y_range),
        right="perm",
        height=0.35,
        source=source,
        legend_label="permutation (test)",
        color="#1f77b4",
    )
    fig.hbar(
        y=dodge("feature", -0.18, range=fig.y_range),
        right="native",
        height=0.35,
        source=source,
        legend_label="native",
        color="#ff7f0e",
    )
    fig.add_layout(
        Whisker(
            source=source,
            base=dodge("feature", 0.18, range=fig.y_range),
            lower="lower",
            upper="upper",
            dimension="width",
        )
    )
    fig.add_tools(
        HoverTool(
            tooltips=[
                ("feature", "@feature"),
                ("permutation", "@perm{0.0000}"),
                ("native", "@native{0.0000}"),
            ]
        )
    )
    fig.legend.location = "bottom_right"
    return fig


def heatmap(
    values: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str,
    unit: str,
    low: float | None = None,
    high: float | None = None,
) -> Figure:
    """Draw a matrix as coloured cells with a colour bar (eSPA's Lambda, W).

    Parameters
    ----------
    values : numpy.ndarray
        ``(len(y_labels), len(x_labels))``.
    x_labels, y_labels : sequence of str
        Column and row names.
    title : str
        Figure title.
    unit : str
        Colour bar title (what the colour means, with its unit).
    low, high : float, optional
        Colour range (default: the data's).

    Returns
    -------
    bokeh.plotting.figure
        The heat map.
    """
    from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper
    from bokeh.palettes import Viridis256
    from bokeh.plotting import figure

    xs, ys = np.meshgrid(np.asarray(x_labels, dtype=object), np.asarray(y_labels, dtype=object))
    source = ColumnDataSource({"x": xs.ravel(), "y": ys.ravel(), "v": values.ravel()})
    mapper = LinearColorMapper(
        palette=Viridis256,
        low=float(np.nanmin(values)) if low is None else low,
        high=float(np.nanmax(values)) if high is None else high,
    )
    fig = figure(
        x_range=list(x_labels),
        y_range=list(y_labels),
        title=title,
        tools=TOOLS,
        height=max(240, min(900, 16 * len(y_labels) + 120)),
    )
    fig.rect(
        "x",
        "y",
        1,
        1,
        source=source,
        fill_color={"field": "v", "transform": mapper},
        line_color=None,
    )
    fig.add_layout(_colorbar(mapper, unit), "right")
    fig.add_tools(HoverTool(tooltips=[("", "@y / @x"), (unit, "@v{0.000}")]))
    fig.xaxis.major_label_orientation = 1.0
    if len(x_labels) > 40:  # unreadable: the hover names the column
        fig.xaxis.major_label_text_font_size = "0pt"
    return fig


def probability_surface(
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    proba: np.ndarray,
    points: tuple[np.ndarray, np.ndarray, np.ndarray],
    labels: tuple[str, str],
    title: str,
    unit: str,
) -> Figure:
    """Draw a model's probability over a grid of two features, training cells on top.

    Parameters
    ----------
    grid_x, grid_y : numpy.ndarray
        The 1-D grid axes.
    proba : numpy.ndarray
        ``(len(grid_y), len(grid_x))`` probabilities.
    points : tuple of numpy.ndarray
        x, y and class code (0 or 1+) of the training cells.
    labels : tuple of str
        Axis labels.
    title : str
        Figure title.
    unit : str
        Colour bar title.

    Returns
    -------
    bokeh.plotting.figure
        The image, the 0.5 contour's cells and the points.
    """
    from bokeh.models import LinearColorMapper
    from bokeh.palettes import RdBu11
    from bokeh.plotting import figure

    mapper = LinearColorMapper(palette=list(RdBu11), low=0.0, high=1.0)  # red: RTS
    dx, dy = grid_x[-1] - grid_x[0], grid_y[-1] - grid_y[0]
    fig = figure(
        height=420,
        x_axis_label=labels[0],
        y_axis_label=labels[1],
        title=title,
        tools=TOOLS,
        x_range=(float(grid_x[0]), float(grid_x[-1])),
        y_range=(float(grid_y[0]), float(grid_y[-1])),
    )
    fig.image(
        image=[proba],
        x=float(grid_x[0]),
        y=float(grid_y[0]),
        dw=float(dx),
        dh=float(dy),
        color_mapper=mapper,
        alpha=0.8,
    )
    x, y, code = points
    for value, color, name in ((0, "white", "no RTS"), (1, "black", "RTS")):
        chosen = code == value if value == 0 else code >= value
        fig.scatter(
            x[chosen],
            y[chosen],
            size=5,
            color=color,
            line_color="grey",
            legend_label=f"training cells: {name}",
        )
    fig.add_layout(_colorbar(mapper, unit), "right")
    return fig


def cell_map(
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    data: dict[str, Any],
    color: str,
    title: str,
    unit: str,
    tooltips: list[tuple[str, str]],
    categories: Sequence[str] | None = None,
    low: float | None = None,
    high: float | None = None,
    diverging: bool = False,
) -> Figure:
    """Cells as polygons in EPSG:3413, coloured by a column, with a colour bar and hover.

    Parameters
    ----------
    xs, ys : list of numpy.ndarray
        Projected rings (metres), one per cell.
    data : dict
        Columns of the cells (hover fields and the colour column).
    color : str
        The column that colours.
    title : str
        Figure title.
    unit : str
        Colour bar title (the quantity and its unit).
    tooltips : list of (str, str)
        Hover lines, Bokeh syntax.
    categories : sequence of str, optional
        A categorical colour (class names); ``None``: a continuous one.
    low, high : float, optional
        Colour range of a continuous column.
    diverging : bool, optional
        Blue-white-red palette centred on 0 (a difference).

    Returns
    -------
    bokeh.plotting.figure
        The map with equal axes in metres.
    """
    from bokeh.models import (
        CategoricalColorMapper,
        ColumnDataSource,
        HoverTool,
        LinearColorMapper,
        NumeralTickFormatter,
    )
    from bokeh.palettes import RdBu11, Viridis256
    from bokeh.plotting import figure

    # whole metres as plain lists: a third of the JSON of one base64 array per ring
    rings_x = [np.asarray(x, dtype=np.int64).tolist() for x in xs]
    rings_y = [np.asarray(y, dtype=np.int64).tolist() for y in ys]
    source = ColumnDataSource({"xs": rings_x, "ys": rings_y, **data})
    fig = figure(
        title=title,
        match_aspect=True,
        height=620,
        tools=TOOLS,
        active_scroll="wheel_zoom",
        x_axis_label="x (m, EPSG:3413)",
        y_axis_label="y (m, EPSG:3413)",
    )
    line = {"line_color": "white" if len(xs) < 5000 else None, "line_width": 0.3}
    if categories is not None:  # classes: a legend names each colour
        cats = [str(c) for c in categories]
        colours = _palette(len(cats))
        if cats[-1] == "none":  # cells without a prediction: grey, as missing values
            colours = [*_palette(len(cats) - 1), "lightgrey"]
        mapper = CategoricalColorMapper(factors=cats, palette=colours, nan_color="lightgrey")
        fig.patches(
            "xs", "ys", source=source, fill_color={"field": color, "transform": mapper},
            fill_alpha=0.9, legend_field=color, **line,
        )  # fmt: skip
        fig.legend.title = unit
        fig.legend.location = "top_left"
    else:  # a quantity: a colour bar with its unit
        values = np.asarray(data[color], dtype=float)
        finite = values[np.isfinite(values)]
        lo = low if low is not None else (float(finite.min()) if len(finite) else 0.0)
        hi = high if high is not None else (float(finite.max()) if len(finite) else 1.0)
        palette = list(RdBu11) if diverging else Viridis256  # red: more RTS
        linear = LinearColorMapper(palette=palette, low=lo, high=hi, nan_color="lightgrey")
        fig.patches(
            "xs", "ys", source=source, fill_color={"field": color, "transform": linear},
            fill_alpha=0.9, **line,
        )  # fmt: skip
        fig.add_layout(_colorbar(linear, unit), "right")
    fig.add_tools(HoverTool(tooltips=tooltips))
    fig.xaxis.formatter = fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
    fig.xaxis.major_label_orientation = 0.6
    return fig
