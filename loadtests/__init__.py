"""Load tests and benchmarks (run by hand, not in CI except for smoke runs)."""
