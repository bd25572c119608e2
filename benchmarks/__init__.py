"""Benchmarks: scripts run as `python3 -m benchmarks.NAME` from the repository root; each prints a table
and writes JSON under benchmarks/results/."""
