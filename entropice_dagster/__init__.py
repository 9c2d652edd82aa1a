"""Dagster orchestration of the Entropice asset graph (thin calls into entropice_core)."""
