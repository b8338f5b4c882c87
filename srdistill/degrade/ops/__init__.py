"""Degradation ops: the op contract and registry, the image primitives and kernels, and the op library."""
