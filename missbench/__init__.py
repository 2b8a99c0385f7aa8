"""MissBench: a benchmark harness for multi-modal learning with missing modalities."""

__version__ = "0.1.0"
