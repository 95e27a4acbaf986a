"""The CPU backend: Numba code generation (`codegen`), the kernel library (`library`),
the kernel cache (`cache`) and the compiled program (`program`)."""
