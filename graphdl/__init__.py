"""graphdl: a graph-compiled dataflow engine for deep learning.

A YAML spec is validated, lowered to a networkx computation graph, optimised by compiler
passes and compiled to Numba kernels; see README.md and DESIGN.md.
"""

__version__ = "0.1.0"


def load(path):
    """Load a spec file as a `Model` (see graphdl.api)."""
    from graphdl.api import load as _load

    return _load(path)
