"""Counter-based random numbers: the SplitMix64 hash behind dropout's masks and the
augmentation ops' draws, written once for the CPU kernels, the NumPy references and the
CUDA kernels (graphdl/backends/cuda/kernels/nn.py compiles them as device functions).

A draw is the hash of a key and a counter, so a backward pass recomputes a mask instead of
storing it, a sample's draws do not depend on the batch it is in, and every backend that
evaluates these functions draws the same bits. All of it is uint64 arithmetic modulo
2**64. Numba's CPU and CUDA targets wrap silently; NumPy wraps too but warns when a
*scalar* wraps, so Python callers run the helpers under ``np.errstate(over="ignore")``.
The helpers take uint64 scalars or arrays alike: the references hash a whole counter
array in one call.
"""

from __future__ import annotations

import numpy as np

from graphdl.ops.registry import cpu_helper

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment: 2**64 / the golden ratio
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_FNV = np.uint64(0x100000001B3)  # FNV's 64-bit prime: spreads the seed before the salt is added
_S11, _S27, _S30, _S31, _S40 = (np.uint64(k) for k in (11, 27, 30, 31, 40))
_INV_2_24 = 1.0 / 16777216.0
_INV_2_53 = 1.0 / 9007199254740992.0


@cpu_helper
def mix64(state, counter):
    """SplitMix64's output function of ``state + counter`` + the increment: the hash of draw
    ``counter`` of a stream (uint64 modulo 2**64; ``counter`` may be any integer type)."""
    z = state + np.uint64(counter) + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@cpu_helper
def spread_seed(seed):
    """``seed`` (int64; a negative one wraps) times FNV's prime: the state whose draw
    ``salt`` is the key of (seed, salt)."""
    return np.uint64(seed) * _FNV


@cpu_helper
def seed_key(seed, salt):
    """The key of (seed, salt): dropout keeps element i by ``mix64(key, i)``, and the
    augmentation streams are keyed from it."""
    return mix64(spread_seed(seed), salt)


@cpu_helper
def uniform24(z):
    """A hash's top 24 bits as a float64 in [0, 1) (dropout's keep test)."""
    return np.float64(z >> _S40) * _INV_2_24


@cpu_helper
def uniform53(z):
    """A hash's top 53 bits as a float64 in [0, 1) (exact: float64 has a 53-bit mantissa)."""
    return np.float64(z >> _S11) * _INV_2_53


def hash_counters(key, n: int) -> np.ndarray:
    """``mix64(key, i)`` for i in 0..n-1, as the kernels compute it element by element."""
    with np.errstate(over="ignore"):
        return mix64(np.uint64(key), np.arange(n, dtype=np.uint64))


def python_seed_key(seed: int, salt: int) -> np.uint64:
    """`seed_key` of Python integers (for the references)."""
    with np.errstate(over="ignore"):
        return seed_key(np.int64(seed), np.int64(salt))
