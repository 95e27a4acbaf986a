"""graphdl: a graph-compiled dataflow engine for deep learning.

A YAML spec is validated, lowered to a networkx computation graph, optimised by compiler
passes and compiled to Numba kernels; see README.md and ARCHITECTURE.md.
"""

from graphdl.version import __version__

__all__ = ["__version__", "load"]


def load(path):
    """Load a spec file as a `Model` (see graphdl.api)."""
    from graphdl.api import load as _load

    return _load(path)
