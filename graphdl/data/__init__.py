"""graphdl's data layer: sources (built-in, npz, csv, image folders, sequences), class
filter, splits, preprocessing run through the engine (graphdl.data.pipeline), and ragged
sequences padded per batch (graphdl.data.ragged: `Dataset.batch`).

Public API::

    load_data(spec) -> Splits
    apply_preprocess(spec, fields, state) -> dict[str, np.ndarray]
    read_fields(spec, source=None, *, require_target=False) -> dict[str, np.ndarray]
    read_new_data(spec, inputs) -> NewData  (predict: new files read with data.source's settings)

Error codes (GraphdlError, phase "data"): E501 missing/unreadable data file, E502 a field the
model needs is missing, E503 shape/dtype mismatch with model.inputs (or unusable array),
E504 NaN/inf in the data, E505 malformed csv, E506 unknown built-in dataset, E507 invalid
split, E508 invalid data.source/data.filter/data.preprocess/data.augment settings, E509 a
token id outside its embedding layer's vocabulary.
"""

from graphdl.data.dataset import Dataset, Splits
from graphdl.data.loader import NewData, apply_preprocess, load_data, read_fields, read_new_data
from graphdl.data.sources import BUILTINS

__all__ = [
    "BUILTINS",
    "Dataset",
    "NewData",
    "Splits",
    "apply_preprocess",
    "load_data",
    "read_fields",
    "read_new_data",
]
