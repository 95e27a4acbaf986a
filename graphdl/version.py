"""graphdl's version: part of every kernel cache key and of generated code headers."""

__version__ = "0.1.0"
