"""The spec language's key tables, and the JSON Schema (draft-07) generated from them.

The tables below, with the layer catalogue (``graphdl.layers``: one ``LayerDef`` per layer
type) and the augment steps (``graphdl.layers.augment.AUGMENT``), are the single source of
truth for which keys exist, their types, ranges, defaults and descriptions; their vocabulary
(``Leaf``, ``Obj``, ``Union`` ...) is ``graphdl.layers.schema``. ``validate.py`` validates
against the generated schema and ``resolve.py`` fills defaults from the same tables.

Run ``python -m graphdl.spec.schema_gen`` to (re)write ``schemas/model.schema.json`` and the
package copy ``graphdl/spec/model.schema.json`` (``--check`` only compares).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from graphdl.layers import COMMON_LAYER_KEYS, LAYERS
from graphdl.layers.augment import AUGMENT
from graphdl.layers.schema import (  # noqa: F401  (the spec front end reads them from here)
    IDENT_PATTERN,
    LAYER_NAME_PATTERN,
    MISSING,
    REF_PATTERN,
    REF_SCHEMA,
    LayerRef,
    Leaf,
    ListOf,
    MapOf,
    Obj,
    Union,
    boolean,
    enum,
    fill,
    fraction,
    int_or_pair,
    integer,
    number,
    string,
    string_list,
)
from graphdl.spec.metrics import MONITORS, metric_names, metrics_doc

SCHEMA_ID = "https://graphdl.dev/schemas/model.schema.json"


# --------------------------------------------------------------------------------------
# the tables
# --------------------------------------------------------------------------------------

METRICS = metric_names()  # the table and which loss has which: graphdl.spec.metrics
SPLITS = ["train", "val", "test"]


def _odd_kernel(doc) -> Leaf:
    return integer(doc + " (odd: 1, 3, 5, ...)", minimum=1, required=True)


_TEST_PATH_DOC = (
    "{what}, relative to the spec file, read with the same settings as path: it becomes the "
    "test split, and data.split divides path into train and val only (data.split.test must "
    "be 0 or absent)"
)

# the keys of every source that can give sequences (graphdl.data.ragged pads them)
_LENGTHS = string("name of the int64 field holding each sequence's length in steps (default: "
                  "lengths); declare it in model.inputs as `{shape: [], dtype: int64}` for "
                  "the layers that read it. Ragged sources need it; fixed-length ones give it "
                  "too (every length the same), so one spec serves both")
_SEQUENCE_KEYS = {
    "lengths": _LENGTHS,
    "max_len": integer("pad every sequence to this many steps (the input's T is then fixed); "
                       "without it each batch is padded to its own longest sequence. A "
                       "longer sequence is an error unless truncate says which steps to drop",
                       minimum=1),
    "truncate": enum("a sequence longer than max_len keeps its last max_len steps (pre: the "
                     "first steps are dropped) or its first (post: the last are dropped)",
                     ["pre", "post"]),
    "pad_value": number("the value of padded steps of the sequence fields (default 0); a "
                        "per-step integer target is padded with train.loss.ignore_index "
                        "(default -100) instead"),
}
BUILTINS_WITH_TEST_SPLIT = ("japanese_vowels",)  # built-ins whose test split is fixed


def fixed_test_split(source) -> str | None:
    """What gives the test split when data.split does not: "data.source.test_path", or a
    built-in's standard test split ("the standard test split of japanese_vowels"); None
    when data.split divides the source into all three."""
    if not isinstance(source, dict):
        return None
    if source.get("test_path") is not None:
        return "data.source.test_path"
    if source.get("type") == "builtin" and source.get("name") in BUILTINS_WITH_TEST_SPLIT:
        return f"the standard test split of {source['name']}"
    return None


SOURCE = Union(
    "where the data comes from",
    "type",
    {
        "builtin": (
            "a dataset shipped with graphdl",
            {
                "name": enum("dataset name: digits (8x8 images as x [64], labels y); "
                             "japanese_vowels (UCI: 9 speakers, utterances of 7 to 29 frames "
                             "of 12 LPC coefficients, x [T, 12] ragged, lengths, y; its "
                             "standard split: 270 utterances for train and val, 370 the test "
                             "split); airline (monthly airline passengers 1949-1960, "
                             "thousands; needs window)",
                             ["digits", "japanese_vowels", "airline"], required=True),
                "as_images": boolean("give the images as channels-first arrays named image "
                                     "(digits: [1, 8, 8]) with labels named label",
                                     default=False),
                "as_sequence": boolean("give each image as a sequence of its rows, x [steps, "
                                       "features] (digits: [8, 8], 8 steps of 8 pixels), with "
                                       "labels y", default=False),
                "window": Obj(
                    "cut a series (airline) into forecasting samples: x float32 [input, 1] "
                    "the values of `input` consecutive steps, y float32 [horizon] the values "
                    "that follow; split in time order (data.split fractions of the windows, "
                    "never shuffled across the splits; the first horizon - 1 windows of val "
                    "and test are left out so that no step is a target in two splits)",
                    {
                        "input": integer("steps the model sees", minimum=1, required=True),
                        "horizon": integer("steps that follow, to forecast", minimum=1,
                                           default=1),
                        "season": integer(
                            "steps in one season (12 for monthly data): evaluation also "
                            "scores the seasonal-naive forecast on the same split (each "
                            "target step forecast by the value one season earlier, taken "
                            "from the input window, so at most input), in the units of the "
                            "model's metrics and, where the target is preprocessed, in the "
                            "series' units too", minimum=1),
                    },
                ),
                **_SEQUENCE_KEYS,
            },
        ),
        "npz": (
            "arrays from a NumPy .npz file",
            {
                "path": string("path of the .npz file, relative to the spec file",
                               required=True),
                "fields": MapOf(
                    "map graphdl field name -> array name in the file (default: every array "
                    "under its own name)",
                    string("name of the array in the .npz file", ref=False),
                ),
                "test_path": string(_TEST_PATH_DOC.format(what="a held-out .npz file")),
                "sequences": string_list("fields holding ragged sequences, stored padded "
                                         "[N, T, ...] with each sample's length in the field "
                                         "named by lengths (an integer array [N])"),
                **_SEQUENCE_KEYS,
            },
        ),
        "csv": (
            "a table from a CSV file with a header row",
            {
                "path": string("path of the .csv file, relative to the spec file",
                               required=True),
                "target": string("column holding the target; it becomes the field of the same "
                                 "name", required=True),
                "features": string_list("feature columns (default: all other columns)"),
                "feature_field": string("name of the field holding the stacked features",
                                        default="x"),
                "delimiter": string("column separator", default=","),
                "test_path": string(_TEST_PATH_DOC.format(what="a held-out .csv file (the same "
                                                          "columns)")),
                "categorical": MapOf(
                    "columns holding categories (text or codes) -> encoding: one_hot (one 0/1 "
                    "feature per category, named column=category) or index (one feature, the "
                    "category's position); categories are the values of the path file, sorted "
                    "(numerically when all are numbers), and saved with the weights. The target "
                    "may be `index`: its categories become the class names",
                    enum("how the column becomes features", ["one_hot", "index"], ref=False),
                    key_pattern="^.+$",
                ),
                "unknown": enum("a category not in the path file (in test_path or new data for "
                                "predict): error (located at its line and column) or ignore (all "
                                "zeros for one_hot, -1 for index)", ["error", "ignore"],
                                default="error"),
                "missing": Obj(
                    "missing feature values (an empty cell, NA, N/A, NaN, null, None): without "
                    "this key they are an error at their line and column",
                    {
                        "fill": Leaf(
                            {"anyOf": [{"type": "string", "enum": ["mean", "median", "zero"]},
                                       {"type": "number"}]},
                            "the value that replaces a missing numeric feature: the column's "
                            "mean or median over the train split (saved with the weights and "
                            "used for test_path and predict), zero, or a number",
                            required=True,
                        ),
                    },
                ),
            },
        ),
        "image_folder": (
            ("images in one folder per class (<path>/<class>/*.png|jpg|jpeg), read with "
             "Pillow: image float32 [C, H, W] in 0..255 and label int64 (the index of the "
             "class folder name in sorted order)"),
            {
                "path": string("the folder holding one sub-folder per class, relative to the "
                               "spec file", required=True),
                "size": int_or_pair("resize every image to this size as it is read (needed when "
                              "the images differ in size): an int or [height, width]"),
                "mode": enum("rgb: 3 channels; grayscale: 1 channel", ["rgb", "grayscale"],
                             default="rgb"),
                "test_path": string(_TEST_PATH_DOC.format(
                    what="a held-out folder of the same class folders (a subset of them)")),
            },
        ),
        "synthetic": (
            ("a seeded sequence task generated from the spec seed (the lengths field holds "
             "each sample's length): adding "
             "gives x float32 [length, 2] (uniform(0,1) values and a marker channel with one 1 "
             "in each half) and y float32 (the sum of the two marked values); copy, reverse "
             "and sort give src int64 [max_len] (tokens in [3, vocab), PAD after the "
             "sample's length), tgt_in (BOS + target) and tgt_out (target + EOS), int64 "
             "[max_len + 1] PAD-filled, with PAD 0, BOS 1, EOS 2"),
            {
                "task": enum("the task: adding (Hochreiter & Schmidhuber's adding problem), or "
                             "the target is src copied, reversed or sorted",
                             ["adding", "copy", "reverse", "sort"], required=True),
                "length": integer("steps per sequence (adding: at least 2); for copy, "
                                  "reverse and sort the same as min_len = max_len = length",
                                  minimum=1),
                "min_len": integer("copy, reverse and sort: the shortest sequence (default 1); "
                                   "each sample's length is drawn from [min_len, max_len]",
                                   minimum=1),
                "max_len": integer("copy, reverse and sort: the longest sequence; src is "
                                   "padded with PAD to max_len tokens", minimum=1),
                "samples": integer("number of sequences", minimum=1, default=10000),
                "vocab": integer("copy, reverse and sort: vocabulary size, the special tokens "
                                 "0-2 included (tokens are drawn from [3, vocab))", minimum=4),
                "lengths": _LENGTHS,
            },
        ),
        "ts": (
            ("a UEA/UCR .ts time-series file (univariate or multivariate, of equal or unequal "
             "lengths): x float32 [T, C] (padded per batch), lengths int64 and, with "
             "@classLabel, label int64 (the class's index in @classLabel order)"),
            {
                "path": string("path of the .ts file (e.g. NAME_TRAIN.ts), relative to the "
                               "spec file", required=True),
                "test_path": string(_TEST_PATH_DOC.format(
                    what="a held-out .ts file (e.g. NAME_TEST.ts; its classes matched by "
                         "label)")),
                **_SEQUENCE_KEYS,
            },
        ),
    },
    required=True,
)

FILTER = Obj(
    "keep only some classes, before splitting",
    {
        "classes": Leaf(
            {"type": "array", "items": {"type": ["integer", "string"]}, "minItems": 1},
            "the class labels to keep (image_folder: also class folder names)",
            required=True,
        ),
        "relabel": boolean("renumber the kept classes 0..k-1 in the listed order",
                           default=False),
    },
)

SPLIT = Obj(
    "how the samples are split into train/val/test; fractions must sum to 1 (missing ones "
    "share what is left; all missing: 0.8/0.1/0.1)",
    {
        "train": fraction("fraction of samples for training", 0.8),
        "val": fraction("fraction of samples for validation", 0.1),
        "test": fraction("fraction of samples for the final test", 0.1),
        "shuffle": boolean("shuffle (with the spec seed) before splitting", default=True),
        "stratify": boolean("keep class proportions equal across splits", default=False),
        "train_subsample": number(
            "keep this seeded, stratified fraction of the train split (after splitting; val "
            "and test are untouched)", exclusive_minimum=0, maximum=1, default=1.0),
    },
    default={},
)

_FIELDS_DOC = "fields to apply it to (default: every floating-point field)"
_IMAGE_FIELDS_DOC = "fields to apply it to (default: every floating-point image field [C, H, W])"
PREPROCESS = ListOf(
    "deterministic transforms applied to every split, in order (statistics from the train "
    "split only); image steps work on channels-first images [C, H, W]",
    Union(
        "a preprocessing step",
        "op",
        {
            "scale": (
                "multiply by a constant",
                {
                    "factor": number("the multiplier", required=True),
                    "fields": string_list(_FIELDS_DOC),
                },
            ),
            "normalize": (
                ("normalization with statistics from the train split: per channel for "
                 "images [C, H, W], per feature otherwise"),
                {
                    "mode": enum("zscore: (x - mean) / std; minmax: (x - min) / (max - min)",
                                 ["zscore", "minmax"], default="zscore"),
                    "stats": enum("where the statistics come from", ["from_train"],
                                  default="from_train"),
                    "fields": string_list(_FIELDS_DOC),
                },
            ),
            "resize": (
                "resize images (half-pixel centres, as PyTorch align_corners=False and Pillow)",
                {
                    "size": int_or_pair("the new size: an int (square) or [height, width]",
                                  required=True),
                    "interpolation": enum("how new pixels are computed", ["bilinear", "nearest"],
                                          default="bilinear"),
                    "fields": string_list(_IMAGE_FIELDS_DOC),
                },
            ),
            "grayscale": (
                "RGB -> one luma channel (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B)",
                {"fields": string_list(_IMAGE_FIELDS_DOC)},
            ),
            "rgb_to_yuv": (
                "RGB -> YUV (BT.601); Y is the luma channel 0",
                {"fields": string_list(_IMAGE_FIELDS_DOC)},
            ),
            "select_channels": (
                "keep some channels, in the given order",
                {
                    "channels": Leaf(
                        {"type": "array", "items": {"type": "integer", "minimum": 0},
                         "minItems": 1},
                        "channel indices to keep, e.g. [0]", required=True),
                    "fields": string_list(_IMAGE_FIELDS_DOC),
                },
            ),
            "gaussian_blur": (
                "Gaussian blur of each channel (reflect padding at the edges)",
                {
                    "kernel": _odd_kernel("window size in pixels"),
                    "sigma": number("standard deviation in pixels", exclusive_minimum=0,
                                    required=True),
                    "fields": string_list(_IMAGE_FIELDS_DOC),
                },
            ),
            "median_filter": (
                "median of each window of each channel (removes salt-and-pepper noise)",
                {
                    "kernel": _odd_kernel("window size in pixels"),
                    "fields": string_list(_IMAGE_FIELDS_DOC),
                },
            ),
            "pca": (
                ("principal component analysis fitted on the train split: each sample "
                 "(flattened) -> its first `components` coordinates"),
                {
                    "components": integer("number of components kept", minimum=1,
                                          required=True),
                    "whiten": boolean("scale every component to unit variance", default=False),
                    "fields": string_list(_FIELDS_DOC),
                },
            ),
        },
    ),
    default=[],
)

DATA = Obj(
    "the data: source, class filter, split, preprocessing and augmentation",
    {"source": SOURCE, "filter": FILTER, "split": SPLIT, "preprocess": PREPROCESS,
     "augment": AUGMENT},
    required=True,
)

INPUT = Obj(
    "a model input",
    {
        "shape": Leaf(
            {"type": "array",
             "items": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "T"}]}},
            "shape of one sample, without the batch axis (images channels-first); a sequence "
            "starts with T, its number of steps, which may differ from batch to batch "
            "([T, 12], or [T] for token ids); [] is one number per sample (a lengths input)",
            required=True,
        ),
        "dtype": enum("element type", ["float32", "int64"], default="float32"),
    },
)

MODEL = Obj(
    "the network",
    {
        "inputs": MapOf("the model inputs: name -> shape and dtype; names match data fields",
                        INPUT, required=True, min_props=1),
        "layers": ListOf("the layers, in order; a plain list is a sequential model",
                         LayerRef(), min_items=1, required=True),
        "outputs": string_list("names of the layers whose outputs the model returns "
                               "(default: the last layer)", ref=False),
        "init": Obj(
            "initialise weights from a checkpoint (transfer learning), by layer name",
            {
                "checkpoint": string("checkpoint file (a graphdl .ckpt), relative to the "
                                     "spec file", required=True),
                "include": string_list("globs on layer names to load (default: every layer)",
                                       ref=False),
                "exclude": string_list("globs on layer names not to load (freshly "
                                       "initialised instead)", ref=False),
                "rename": MapOf("checkpoint layer name -> this model's layer name",
                                string("the layer name in this model", ref=False),
                                key_pattern=LAYER_NAME_PATTERN),
                "strict": boolean("any missing, unexpected or mis-shaped tensor is an error",
                                  default=True),
            },
        ),
    },
    required=True,
)

_LR_DOC = "learning rate"
_WD_DOC = "weight decay"
_BETAS = Leaf(
    {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
     "minItems": 2, "maxItems": 2},
    "decay rates [beta1, beta2] of the moment estimates",
    default=[0.9, 0.999],
)

LOSS = Union(
    "the training loss",
    "type",
    {
        "cross_entropy": (
            "softmax cross-entropy on logits with integer class targets",
            {
                "label_smoothing": number("label smoothing in [0, 1)", minimum=0,
                                          exclusive_maximum=1, default=0.0),
                "ignore_index": integer("target value that contributes no loss (e.g. padding)"),
            },
        ),
        "mse": ("mean squared error", {}),
        "bce_with_logits": ("binary cross-entropy on logits", {}),
    },
    default_variant="cross_entropy",
)

OPTIMIZER = Union(
    "the optimizer",
    "type",
    {
        "sgd": (
            "plain stochastic gradient descent",
            {
                "lr": number(_LR_DOC, exclusive_minimum=0, required=True),
                "weight_decay": number(_WD_DOC + " (L2, added to the gradient)", minimum=0,
                                       default=0.0),
            },
        ),
        "momentum": (
            "SGD with momentum",
            {
                "lr": number(_LR_DOC, exclusive_minimum=0, required=True),
                "momentum": number("momentum coefficient in [0, 1)", minimum=0,
                                   exclusive_maximum=1, default=0.9),
                "nesterov": boolean("use Nesterov momentum", default=False),
                "weight_decay": number(_WD_DOC + " (L2, added to the gradient)", minimum=0,
                                       default=0.0),
            },
        ),
        "adam": (
            "Adam",
            {
                "lr": number(_LR_DOC, exclusive_minimum=0, default=1e-3),
                "betas": _BETAS,
                "eps": number("term added to the denominator", exclusive_minimum=0,
                              default=1e-8),
                "weight_decay": number(_WD_DOC + " (L2 coupled: added to the gradient)",
                                       minimum=0, default=0.0),
            },
        ),
        "adamw": (
            "Adam with decoupled weight decay",
            {
                "lr": number(_LR_DOC, exclusive_minimum=0, default=1e-3),
                "betas": _BETAS,
                "eps": number("term added to the denominator", exclusive_minimum=0,
                              default=1e-8),
                "weight_decay": number(_WD_DOC + " (decoupled)", minimum=0, default=0.01),
            },
        ),
        "rmsprop": (
            "RMSprop (PyTorch's form, without momentum or centring)",
            {
                "lr": number(_LR_DOC, exclusive_minimum=0, default=1e-2),
                "alpha": number("smoothing constant of the squared-gradient average",
                                minimum=0, exclusive_maximum=1, default=0.99),
                "eps": number("term added to the denominator", exclusive_minimum=0,
                              default=1e-8),
                "weight_decay": number(_WD_DOC + " (L2, added to the gradient)", minimum=0,
                                       default=0.0),
            },
        ),
        "adagrad": (
            "Adagrad (PyTorch's form)",
            {
                "lr": number(_LR_DOC, exclusive_minimum=0, default=1e-2),
                "lr_decay": number("the step-t learning rate is lr / (1 + (t - 1) * lr_decay)",
                                   minimum=0, default=0.0),
                "eps": number("term added to the denominator", exclusive_minimum=0,
                              default=1e-10),
                "initial_accumulator_value": number(
                    "starting value of the sum of squared gradients", minimum=0, default=0.0),
                "weight_decay": number(_WD_DOC + " (L2, added to the gradient)", minimum=0,
                                       default=0.0),
            },
        ),
    },
    default_variant="adam",
)

def optimizer_settings(optimizer: dict) -> dict:
    """A train.optimizer mapping (with its ``type``) with every default of its type filled in
    from `OPTIMIZER`: code that reads an optimizer's settings takes its defaults from here."""
    return fill(OPTIMIZER, optimizer)


_INTERVAL = enum(
    "step: recompute the learning rate at every optimiser step, from the fractional epoch; "
    "epoch: hold it for the whole epoch (PyTorch's scheduler.step() once per epoch)",
    ["step", "epoch"], default="step")

SCHEDULE = Union(
    "the learning-rate schedule, evaluated before every optimiser step",
    "type",
    {
        "constant": ("keep the learning rate constant", {}),
        "step": (
            "multiply the learning rate by gamma every step_size epochs",
            {
                "step_size": integer("epochs between decays", minimum=1, required=True),
                "gamma": number("decay factor", exclusive_minimum=0, default=0.1),
                "interval": _INTERVAL,
            },
        ),
        "exponential": (
            ("multiply the learning rate by gamma every epoch: lr * gamma ** epoch (PyTorch's "
             "ExponentialLR)"),
            {
                "gamma": number("decay factor per epoch", exclusive_minimum=0, required=True),
                "interval": _INTERVAL,
            },
        ),
        "cosine": (
            "cosine decay from lr to min_lr over the epochs",
            {
                "min_lr": number("final learning rate", minimum=0, default=0.0),
                "interval": _INTERVAL,
            },
        ),
        "warmup_cosine": (
            "linear warmup, then cosine decay to min_lr (per step)",
            {
                "warmup_epochs": integer("epochs of linear warmup", minimum=0, required=True),
                "min_lr": number("final learning rate", minimum=0, default=0.0),
            },
        ),
        "plateau": (
            ("multiply the learning rate by factor when the monitored metric has not improved "
             "for more than patience epochs (PyTorch's ReduceLROnPlateau, checked after each "
             "epoch)"),
            {
                "monitor": enum("metric to watch", MONITORS, default="val_loss"),
                "mode": enum("min, max, or auto (max for accuracy, min for loss)",
                             ["auto", "min", "max"], default="auto"),
                "factor": number("multiplier of the learning rate at each reduction",
                                 exclusive_minimum=0, exclusive_maximum=1, default=0.1),
                "patience": integer("epochs without improvement tolerated before reducing",
                                    minimum=0, default=10),
                "threshold": number("smallest change that counts as an improvement",
                                    minimum=0, default=1e-4),
                "threshold_mode": enum("rel: relative to the best value; abs: absolute",
                                       ["rel", "abs"], default="rel"),
                "cooldown": integer("epochs to wait after a reduction before counting again",
                                    minimum=0, default=0),
                "min_lr": number("the learning rate never goes below this", minimum=0,
                                 default=0.0),
            },
        ),
        "one_cycle": (
            ("the 1cycle policy per step (PyTorch's OneCycleLR, without momentum cycling): "
             "from lr / div_factor up to lr (the peak, torch's max_lr), then down to "
             "lr / div_factor / final_div_factor"),
            {
                "pct_start": number("fraction of the steps spent increasing the learning rate",
                                    exclusive_minimum=0, exclusive_maximum=1, default=0.3),
                "div_factor": number("initial learning rate = lr / div_factor",
                                     exclusive_minimum=0, default=25.0),
                "final_div_factor": number("final learning rate = initial / final_div_factor",
                                           exclusive_minimum=0, default=1e4),
                "anneal_strategy": enum("shape of each phase", ["cos", "linear"],
                                        default="cos"),
                "three_phase": boolean("a third phase: back to the initial learning rate, then "
                                       "down to the final one", default=False),
            },
        ),
    },
    default_variant="constant",
)

TRAIN = Obj(
    "how to train",
    {
        "target": string("the data field holding the training target", required=True),
        "epochs": integer("number of passes over the training split", minimum=1, default=10),
        "batch_size": integer("samples per step", minimum=1, default=32),
        "loss": LOSS,
        "optimizer": OPTIMIZER,
        "schedule": SCHEDULE,
        "regularization": Obj(
            "l1/l2 penalty added to the loss, on weights only (not biases)",
            {
                "l1": number("l1 penalty coefficient", minimum=0, default=0.0),
                "l2": number("l2 penalty coefficient", minimum=0, default=0.0),
            },
            default={},
        ),
        "gradient_clip": Obj(
            "clip the global gradient norm",
            {"max_norm": number("maximum global L2 norm of the gradients",
                                exclusive_minimum=0, required=True)},
        ),
        "early_stopping": Obj(
            "stop when a monitored metric stops improving",
            {
                "monitor": enum("metric to watch: val_<a metric in train.metrics>, "
                                "val_loss, train_loss or train_accuracy", MONITORS,
                                default="val_loss"),
                "patience": integer("epochs without improvement before stopping", minimum=0,
                                    default=5),
                "min_delta": number("smallest change that counts as an improvement",
                                    minimum=0, default=0.0),
                "mode": enum("min, max, or auto (min for loss, mae and rmse; max for the "
                             "others)",
                             ["auto", "min", "max"], default="auto"),
                "restore_best_weights": boolean(
                    "at the end of training, put back the weights of the epoch with the best "
                    "monitored value", default=False),
            },
        ),
        "metrics": string_list("metrics reported each epoch, as val_<name> (the train split "
                               "reports loss, penalty and accuracy); the loss is always "
                               "reported; by loss: " + metrics_doc() + " (default: [accuracy] "
                               "for cross_entropy, else [])", enum_values=METRICS, min_items=0),
        "checkpoint": Obj(
            "where and when to save weights",
            {
                "dir": string("run directory (checkpoints, metrics.jsonl, results.json), "
                              "relative to the spec file (default: runs/<name> in the "
                              "working directory)"),
                "save": enum("best: best monitored value; last: end of training; "
                             "every_epoch: one file per epoch", ["best", "last", "every_epoch"],
                             default="best"),
                "monitor": enum("metric deciding the best checkpoint (as early_stopping's "
                                "monitor)", MONITORS,
                                default="val_loss"),
            },
            default={},
        ),
        "log": Obj(
            "where each epoch's metrics are written besides metrics.jsonl",
            {
                "tensorboard": boolean(
                    "also write every scalar of each epoch's metrics.jsonl line (step: the "
                    "epoch) as TensorBoard event files in <run dir>/tensorboard/; needs the "
                    "tensorboard extra: pip install 'graphdl[tensorboard]'", default=False),
            },
            default={},
        ),
        "freeze": string_list("globs on layer names whose weights stay fixed: no gradient "
                              "is computed for them, and frozen batch norm stays in "
                              "evaluation mode; a glob matching no layer is an error",
                              ref=False),
        "device": enum("where to run", ["auto", "cpu", "cuda"], default="auto"),
        "shuffle": boolean("reshuffle the training split every epoch", default=True),
    },
)

EVALUATE = Obj(
    "how to evaluate after training",
    {
        "split": enum("which split to evaluate on", SPLITS, default="test"),
        "metrics": string_list("metrics reported for the evaluated split in results.json "
                               "(the loss always; the same names as train.metrics; default: "
                               "train.metrics)",
                               enum_values=METRICS, min_items=0),
        "decode": enum("sequence-to-sequence models: none scores the model fed the true "
                       "previous tokens (teacher forcing, as in training); greedy feeds it "
                       "its own most likely token, step by step; beam keeps the `beam` most "
                       "likely sequences", ["none", "greedy", "beam"], default="none"),
        "beam": integer("decode: beam: how many sequences the search keeps", minimum=1,
                        default=4),
        "eos": integer("the end-of-sequence token: a decoded sequence that emits it is "
                       "finished (beam search stops adding to its score); predict cuts "
                       "sequences after it", minimum=0),
        "decode_input": string("the model input fed back while decoding (e.g. tgt_in: the "
                               "previous tokens, starting with the data's first token); "
                               "default: the one int64 input only causal layers read"),
    },
)

_SCALAR_OR_LIST = ["number", "string", "boolean", "array"]

BLOCK = Obj(
    "a reusable sub-graph; its name becomes a new layer type",
    {
        "params": MapOf(
            "parameters with their defaults, referenced inside the block as $name and "
            "overridable per use as layer keys (a null default makes the key required)",
            Leaf({"type": _SCALAR_OR_LIST + ["null"], "items": {"type": ["number", "string",
                                                                          "boolean"]}},
                 "default value of the parameter", ref=False),
        ),
        "inputs": string_list("formal input names (default: [x]); with repeat the first is "
                              "chained copy to copy and the others are shared",
                              item_pattern=IDENT_PATTERN, default=["x"], ref=False),
        "layers": ListOf("the block's layers, in order", LayerRef(), min_items=1,
                         required=True),
        "doc": string("free text describing the block", ref=False),
    },
)

TOP: dict = {
    "graphdl": Leaf({"const": 1}, "spec format version; must be 1", required=True, ref=False),
    "name": string("run name (default: the file name without extension)"),
    "description": string("free text", ref=False, default=""),
    "seed": integer("global random seed", minimum=0, default=0),
    "vars": MapOf(
        "spec-wide constants, referenced anywhere as $name",
        Leaf({"type": _SCALAR_OR_LIST, "items": {"type": ["number", "string", "boolean"]}},
             "a constant: number, string, boolean or a list of them", ref=False),
    ),
    "blocks": MapOf("reusable sub-graphs; each becomes a new layer type", BLOCK),
    "data": DATA,
    "model": MODEL,
    "train": TRAIN,
    "evaluate": EVALUATE,
}

TOP_DOC = "A graphdl spec: what to build, what data to use, how to train and evaluate it."


# --------------------------------------------------------------------------------------
# schema generation
# --------------------------------------------------------------------------------------


def layer_variant(type_name: str) -> dict:
    definition = LAYERS[type_name]
    doc, fields = definition.doc, definition.fields
    props: dict = {"type": {"const": type_name, "description": f"layer type '{type_name}': {doc}"}}
    props.update({k: v.to_schema() for k, v in COMMON_LAYER_KEYS.items()})
    props.update({k: v.to_schema() for k, v in fields.items()})
    return {
        "title": f"{type_name} layer",
        "description": doc,
        "type": "object",
        "properties": props,
        "required": ["type"] + [k for k, v in fields.items() if v.required],
        "additionalProperties": False,
    }


BLOCK_USE_TITLE = "block use"


def generic_block_variant() -> dict:
    """Editor-only stand-in for layers whose type is a user block (replaced per document)."""
    props: dict = {
        "type": {
            "type": "string",
            "pattern": IDENT_PATTERN,
            "not": {"enum": list(LAYERS)},
            "description": "the name of a block defined under blocks:",
        }
    }
    props.update({k: v.to_schema() for k, v in COMMON_LAYER_KEYS.items()})
    return {
        "title": BLOCK_USE_TITLE,
        "description": "a use of a block defined under blocks:; other keys set its params",
        "type": "object",
        "properties": props,
        "patternProperties": {
            IDENT_PATTERN: {
                "description": "a block parameter",
                "type": _SCALAR_OR_LIST,
            }
        },
        "required": ["type"],
        "additionalProperties": False,
    }


def block_variant(name: str, params: dict) -> dict:
    """The layer variant for a use of block ``name`` (with ``params``: name -> default)."""
    props: dict = {"type": {"const": name, "description": f"block '{name}'"}}
    props.update({k: v.to_schema() for k, v in COMMON_LAYER_KEYS.items()})
    required = ["type"]
    for p, default in params.items():
        if p in props:
            continue  # a clash with a common key is reported by validate
        props[p] = {
            "description": f"parameter of block '{name}' (default: {default!r})",
            "type": _SCALAR_OR_LIST,
        }
        if default is None:
            required.append(p)
    return {
        "title": f"{name} block",
        "description": f"a use of block '{name}'",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def build_schema() -> dict:
    top = Obj(TOP_DOC, TOP).to_schema()
    layer = {
        "description": "a layer; its type picks the allowed keys",
        "anyOf": [layer_variant(t) for t in LAYERS] + [generic_block_variant()],
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "graphdl spec",
        **top,
        "definitions": {"layer": layer},
    }


def schema_json() -> str:
    return json.dumps(build_schema(), indent=2) + "\n"


REPO_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "model.schema.json"
PACKAGE_SCHEMA = Path(__file__).resolve().parent / "model.schema.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = schema_json()
    targets = [REPO_SCHEMA, PACKAGE_SCHEMA]
    if "--check" in argv:
        stale = [str(p) for p in targets if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"out of date: {p}", file=sys.stderr)
        return 1 if stale else 0
    for p in targets:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
