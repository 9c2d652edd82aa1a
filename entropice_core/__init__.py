"""Entropice core library: grids, ingest, aggregation and models, with no orchestration."""

__version__ = "0.1.0"
