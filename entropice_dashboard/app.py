"""The dashboard's entry point: ``streamlit run entropice_dashboard/app.py`` (``make dashboard``).

Five pages, each a script under ``pages/``; the data directory is ``ENTROPICE_DATA_DIR``.
"""

from pathlib import Path

import streamlit as st

from entropice_dashboard import PAGES
from entropice_dashboard.data import data_dir

HERE = Path(__file__).parent

st.set_page_config(page_title="Entropice", page_icon=":material/landslide:", layout="wide")
pages = [
    st.Page(
        HERE / "pages" / f"{slug.replace('-', '_')}.py",
        title=title,
        url_path=slug,
        default=slug == "overview",
    )
    for slug, title in PAGES.items()
]
navigation = st.navigation(pages)
st.sidebar.caption(f"Data directory: `{data_dir()}`")
navigation.run()
