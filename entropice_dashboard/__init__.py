"""Entropice dashboard: a Streamlit multipage app over the storage layout.

The five pages (Overview, Training Data, Training Analysis, Model State, Inference) read the
files under ``ENTROPICE_DATA_DIR`` through :class:`entropice_core.layout.Layout` and the core
readers; this package never imports dagster. ``make dashboard`` serves it on 127.0.0.1.
"""

from __future__ import annotations

from urllib.parse import urlencode

#: Where ``make dashboard`` serves the app by default (``PORT`` overrides the port).
DEFAULT_PORT = 8501
DASHBOARD_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
#: The pages: URL path -> title, in the order of the navigation.
PAGES: dict[str, str] = {
    "overview": "Overview",
    "training-data": "Training Data",
    "training-analysis": "Training Analysis",
    "model-state": "Model State",
    "inference": "Inference",
}


def page_url(page: str, base: str = DASHBOARD_URL, **params: str) -> str:
    """Return the URL of a dashboard page, with query parameters that preselect its inputs.

    Parameters
    ----------
    page : str
        A key of :data:`PAGES`, e.g. ``"inference"``.
    base : str, optional
        The served app's root URL.
    **params : str
        Query parameters, e.g. ``grid_level="h3_6", experiment="espa-binary"``.

    Returns
    -------
    str
        E.g. ``http://127.0.0.1:8501/inference?grid_level=h3_6&experiment=espa-binary``; the
        Overview is the app's root.

    Raises
    ------
    KeyError
        If the page does not exist.
    """
    if page not in PAGES:
        raise KeyError(f"no dashboard page {page!r}; pages: {', '.join(PAGES)}")
    query = f"?{urlencode(params)}" if params else ""
    path = "" if page == next(iter(PAGES)) else page
    return f"{base.rstrip('/')}/{path}{query}"
