"""Tensor types: a shape of ints and named symbols (batch ``N``) and a dtype."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | str
DTYPES = ("float32", "float64", "int64", "bool")


@dataclass(frozen=True)
class TensorType:
    """The static type of one value: ``shape`` holds ints and symbols such as ``"N"``."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def is_concrete(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def symbols(self) -> set[str]:
        return {d for d in self.shape if isinstance(d, str)}

    def bind(self, bindings: dict[str, int]) -> tuple[int, ...]:
        """Concrete shape under ``bindings`` for the symbols."""
        return tuple(bindings[d] if isinstance(d, str) else d for d in self.shape)

    def numel(self, bindings: dict[str, int] | None = None) -> int:
        n = 1
        for d in self.bind(bindings or {}):
            n *= d
        return n

    def nbytes(self, bindings: dict[str, int] | None = None) -> int:
        return self.numel(bindings) * np.dtype(self.dtype).itemsize

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict) -> TensorType:
        return TensorType(tuple(d["shape"]), d["dtype"])


def broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """NumPy broadcasting decided statically; ``None`` when the shapes cannot broadcast.

    A symbol broadcasts only against itself or a literal 1.
    """
    out: list[Dim] = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db:
            out.append(da)
        elif da == 1:
            out.append(db)
        elif db == 1:
            out.append(da)
        else:
            return None
    return tuple(reversed(out))
