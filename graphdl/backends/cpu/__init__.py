"""The CPU backend: Numba code generation, the kernel library and the on-disk cache."""
