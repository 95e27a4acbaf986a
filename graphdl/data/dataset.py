"""In-memory datasets: one split (`Dataset`) and the train/val/test triple (`Splits`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphdl.data.ragged import Ragged, take
from graphdl.errors import Diagnostic, GraphdlError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(repr=False)
class Dataset:
    """One split: named arrays that all share their first (sample) dimension; ``ragged``
    says which of them are padded sequences and where their lengths are (batches are cut
    to their own longest sequence: `batch`)."""

    fields: dict[str, np.ndarray]
    ragged: Ragged | None = None

    def __post_init__(self) -> None:
        sizes = {name: arr.shape[0] if arr.ndim else None for name, arr in self.fields.items()}
        if len(set(sizes.values())) > 1 or None in sizes.values():
            raise ValueError(f"Dataset fields must share their first dimension, got {sizes}")

    def __repr__(self) -> str:
        parts = ", ".join(f"{k!r}: {v.dtype}{list(v.shape)}" for k, v in self.fields.items())
        return f"Dataset(n={len(self)}, fields={{{parts}}})"

    def __len__(self) -> int:
        for arr in self.fields.values():
            return int(arr.shape[0])
        return 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def subset(self, idx: np.ndarray) -> Dataset:
        """The samples at ``idx`` (integer indices or a boolean mask), as C-contiguous copies."""
        idx = np.asarray(idx)
        if idx.dtype != bool:
            idx = idx.astype(np.intp, copy=False)
        return Dataset({k: np.ascontiguousarray(v[idx]) for k, v in self.fields.items()},
                       self.ragged)

    def batch(self, idx, names) -> dict[str, np.ndarray]:
        """The feeds of one batch: the fields ``names`` at ``idx`` (indices or a slice), each
        C-contiguous, ragged fields cut to the batch's longest sequence (or max_len)."""
        return take(self.fields, idx, names, self.ragged)

    def steps(self) -> int | None:
        """The padded length of the whole split (its longest sequence, or max_len), None
        when it holds no ragged field."""
        if self.ragged is None or self.ragged.lengths not in self.fields:
            return None
        return self.ragged.steps(self.fields[self.ragged.lengths])


@dataclass
class Splits:
    """The result of `load_data`: train/val/test datasets plus what predict needs later."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int | None
    preprocess_state: dict
    # Diagnostic locations (kwargs for Diagnostic) of data.split.<name>, used by `get`.
    split_locs: dict = field(default_factory=dict, repr=False, compare=False)
    # class index -> name when the source names its classes (image_folder), after data.filter
    class_names: list[str] | None = None
    # split name -> its seasonal-naive forecast (`graphdl.data.forecast.SeasonalNaive`),
    # for windows of a series with data.source.window.season; evaluation scores it beside
    # the model
    baselines: dict = field(default_factory=dict, repr=False, compare=False)

    def get(self, name: str) -> Dataset:
        """The split called ``name`` ("train", "val" or "test"); GraphdlError E507 if absent."""
        where = self.split_locs.get(name) or self.split_locs.get("split") or {}
        if name not in SPLIT_NAMES:
            raise GraphdlError(
                Diagnostic(
                    code="E507",
                    message=f"unknown data split '{name}'",
                    help="use one of 'train', 'val' or 'test'",
                    **where,
                ),
                phase="data",
            )
        ds = getattr(self, name)
        if ds is None or len(ds) == 0:
            raise GraphdlError(
                Diagnostic(
                    code="E507",
                    message=f"the '{name}' split is empty",
                    help=f"give data.split.{name} a fraction > 0 (and make sure the other "
                    "fractions leave room for it), or use another split",
                    **where,
                ),
                phase="data",
            )
        return ds
