"""Benchmarks: modules run as `python -m benchmarks.NAME`, each printing a table.

Speed is measured here, on the reader's device, never asserted by timed tests."""
