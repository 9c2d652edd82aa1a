"""Download, read and derive each data source (one module per source)."""
