"""Benchmarks: modules run as `python -m aha_utils.bench.NAME`, each printing a table.

Speed is measured here, on the reader's device, never asserted by timed tests."""
