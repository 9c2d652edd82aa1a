"""Building blocks every page uses: tables with a download button, Bokeh plots, data guards."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import streamlit as st

from entropice_dashboard.data import DataProblem

if TYPE_CHECKING:
    import pandas as pd
    from bokeh.model import Model


def show_problem(problem: DataProblem) -> None:
    """Show a missing or unreadable file on the page: which file, what is wrong, the fix.

    Parameters
    ----------
    problem : DataProblem
        The problem a reader raised.
    """
    st.error(
        f"**{problem.path}** {problem.problem}.\n\nMake it with:\n\n```\n{problem.command}\n```",
        icon=":material/error:",
    )


@contextmanager
def guard() -> Iterator[None]:
    """Show a :class:`DataProblem` raised in the block as a message, then stop the page.

    Yields
    ------
    None
        The block runs inside.
    """
    try:
        yield
    except DataProblem as problem:
        show_problem(problem)
        st.stop()


def show_table(frame: pd.DataFrame, name: str, *, index: bool = False, **kwargs: Any) -> None:
    """Show a table and a button that downloads it as CSV.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table.
    name : str
        File name stem of the download (and the button's key).
    index : bool, optional
        Show and download the index too.
    **kwargs
        Passed to ``st.dataframe``.
    """
    st.dataframe(frame, hide_index=not index, **kwargs)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    st.download_button(
        f"Download {name} (CSV)",
        frame.to_csv(index=index).encode(),
        file_name=f"{stem}.csv",
        mime="text/csv",
        key=f"download-{stem}",
        icon=":material/download:",
    )


def show_plot(figure: Model, key: str) -> None:
    """Render a Bokeh figure through the streamlit-bokeh component.

    Parameters
    ----------
    figure : bokeh.model.Model
        A Bokeh figure or layout.
    key : str
        Unique key on the page (keeps the component mounted across reruns).
    """
    from streamlit_bokeh import streamlit_bokeh

    streamlit_bokeh(figure, use_container_width=True, theme=None, key=key)


def choose(label: str, options: Sequence[str], param: str, **kwargs: Any) -> str:
    """Return a selectbox's choice, preselected from the page URL's query parameter.

    Parameters
    ----------
    label : str
        Widget label.
    options : sequence of str
        Choices (not empty).
    param : str
        Query parameter that preselects (e.g. ``grid_level`` in ``?grid_level=h3_6``); the
        choice is written back so that the URL names what is shown.
    **kwargs
        Passed to ``st.selectbox``.

    Returns
    -------
    str
        The chosen option.
    """
    options = list(options)
    wanted = st.query_params.get(param)
    index = options.index(wanted) if wanted in options else 0
    value = st.selectbox(label, options, index=index, key=f"choose-{param}", **kwargs)
    st.query_params[param] = value
    return str(value)


def need(options: Sequence[str], what: str, command: str) -> None:
    """Stop the page with a message when there is nothing to choose from.

    Parameters
    ----------
    options : sequence of str
        What was found.
    what : str
        What is missing, e.g. ``"training dataset"``.
    command : str
        The command that makes it.
    """
    if not options:
        from entropice_dashboard.data import data_dir

        st.warning(
            f"No {what} under **{data_dir()}**.\n\nMake it with:\n\n```\n{command}\n```",
            icon=":material/info:",
        )
        st.stop()
