"""Helpers shared by lakeio's tests, benchmarks and demo: real image folders and real clusters."""
