"""Benchmarks; run one as a module, e.g. ``python -m bench.trend_math --quick``."""
