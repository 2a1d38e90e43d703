"""Scenario generator, demo, benchmarks (perf, memory, continual learning) and reports."""
