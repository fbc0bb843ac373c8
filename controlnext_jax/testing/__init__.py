"""Random-weight PyTorch checkpoints for tests, the self-check and benchmarks (needs the `torch` extra)."""
