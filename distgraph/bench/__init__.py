"""Benchmarks (`distgraph bench NAME`): peers measured side by side in one run, ratios printed.

Each module defines a click command `command`; shared helpers for timing and tables are in `_util`.
"""
