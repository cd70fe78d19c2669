"""The ground floor of the BraTS toolkit: data access, preprocessing, labels, metrics, evaluation, provenance.

It imports no model package, API, UI or application layer (tests/test_architecture.py)."""

__version__ = "0.1.0"
