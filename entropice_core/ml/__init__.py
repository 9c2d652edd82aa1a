"""Datasets, estimators, training and inference."""
