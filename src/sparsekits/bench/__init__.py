"""Benchmark drivers and the measurement helpers they share."""
