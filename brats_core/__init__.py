"""Shared core of the BraTS toolkit: data access, preprocessing, labels, metrics and evaluation."""

__version__ = "0.1.0"
