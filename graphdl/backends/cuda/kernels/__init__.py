"""CUDA kernels and emitters of the op families, one module per family (see
graphdl/backends/cuda/registry.py). Importing one of these modules imports CUDA (through
graphdl.backends.cuda.device): only the CUDA backend does.

Kernels here are written to run unchanged on a GPU and under the CUDA simulator: launch
constants come from `device` (compile-time constants), no early `return` before a
`syncthreads()` (out-of-range threads carry a flag and still reach every barrier), typed
constants (``x.dtype.type(...)``) so float32 stays float32, and shared memory well under
48 KB per block.
"""
