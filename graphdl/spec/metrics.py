"""The metric table: which metrics exist, for which loss, and which can be monitored; and
the spec check that refuses (located) a metric or monitor that cannot exist for the loss.

A metric's name in the spec (`train.metrics`, `evaluate.metrics`) is the name it is
reported under, prefixed by its split: `f1_macro` is `val_f1_macro` in metrics.jsonl and
`f1_macro` under the evaluated split in results.json. The loss is always reported (as
`loss`; a training epoch also reports `train_penalty`, the L1/L2 term, when there is one).

Where the numbers come from: the train graph computes per step only what is cheap there
(loss, data loss, accuracy), so a `train_` record has those; every metric of a `val_`
record and of the final evaluation is computed exactly over the whole split from the eval
program's outputs (graphdl.runtime.metrics).

A target with one label per step (cross_entropy on [N, T, classes] logits) is scored per
position: "sample" below reads "labelled step", the steps whose label is
train.loss.ignore_index (a ragged target's padding) left out, as the loss leaves them. A
per-step mse or bce target is scored over the steps the sequences have.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphdl.errors import Diagnostic

CLASSIFICATION = ("cross_entropy", "bce_with_logits")
BINARY = ("bce_with_logits",)
MULTICLASS = ("cross_entropy",)
REGRESSION = ("mse",)
ALL_LOSSES = CLASSIFICATION + REGRESSION

TOP_K = (2, 3, 5, 10)  # top_<k>_accuracy


@dataclass(frozen=True)
class Metric:
    name: str
    doc: str
    losses: tuple[str, ...]
    higher_is_better: bool = True
    scalar: bool = True  # False: a list (per class) or a matrix, never monitored
    per_step: bool = False  # computed by the train graph, so also reported as train_<name>


_METRICS = [
    Metric("loss", "the data loss (always reported)", ALL_LOSSES, higher_is_better=False,
           per_step=True),
    Metric("accuracy", "share of samples (labelled steps of a per-step target) classified "
           "right (bce: logit > 0 against target > 0.5, per output unit)", CLASSIFICATION,
           per_step=True),
    Metric("token_accuracy", "share of labelled positions predicted right, over every "
           "step of every sample (the same as accuracy; the name sequence models use)",
           MULTICLASS),
    Metric("sequence_accuracy", "share of samples whose every labelled position is "
           "predicted right (exact match; ignore_index positions are left out)", MULTICLASS),
    *[Metric(f"top_{k}_accuracy", f"share of samples whose label is among the {k} largest "
             "logits", MULTICLASS) for k in TOP_K],
    Metric("precision", "precision of the positive class", BINARY),
    Metric("recall", "recall of the positive class", BINARY),
    Metric("f1", "F1 score of the positive class", BINARY),
    Metric("auc", "area under the ROC curve", BINARY),
    Metric("precision_macro", "precision averaged over the classes present", CLASSIFICATION),
    Metric("recall_macro", "recall averaged over the classes present", CLASSIFICATION),
    Metric("f1_macro", "F1 averaged over the classes present", CLASSIFICATION),
    Metric("precision_per_class", "precision of each class (a list)", CLASSIFICATION,
           scalar=False),
    Metric("recall_per_class", "recall of each class (a list)", CLASSIFICATION, scalar=False),
    Metric("f1_per_class", "F1 of each class (a list)", CLASSIFICATION, scalar=False),
    Metric("confusion_matrix", "counts, a row per true class and a column per predicted class",
           CLASSIFICATION, scalar=False),
    Metric("mae", "mean absolute error", REGRESSION, higher_is_better=False),
    Metric("rmse", "root mean squared error", REGRESSION, higher_is_better=False),
    Metric("r2", "coefficient of determination (R², averaged over outputs)", REGRESSION),
]
METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}

# every name a monitor may take: val_<any scalar metric>, train_<a per-step metric>
MONITORS: list[str] = (
    [f"val_{m.name}" for m in _METRICS if m.scalar]
    + [f"train_{m.name}" for m in _METRICS if m.per_step]
)


def metric_names() -> list[str]:
    """The spec's metric names, for the schema's enum."""
    return list(METRICS)


def metrics_doc() -> str:
    """One line per loss: the metrics it has (for the schema's description and README)."""
    parts = []
    for loss in ALL_LOSSES:
        names = [m.name for m in _METRICS if loss in m.losses and m.name != "loss"]
        parts.append(f"{loss}: {', '.join(names)}")
    return "; ".join(parts)


def higher_is_better(monitor: str) -> bool:
    """For a monitor's `mode: auto`: max for accuracy, F1, AUC, R² ...; min for losses and
    errors."""
    name = monitor.partition("_")[2]
    metric = METRICS.get(name)
    return metric.higher_is_better if metric is not None else False


def metrics_for(loss: str) -> list[str]:
    return [m.name for m in _METRICS if loss in m.losses]


def check_metrics(raw: dict, train: dict, evaluate: dict, split: dict, r) -> list[Diagnostic]:
    """E107, located at the key: a metric in train.metrics / evaluate.metrics that the loss
    has not (accuracy of an mse model), or a checkpoint / early-stopping / schedule monitor
    that no
    epoch will report (val_accuracy of an mse model, val_f1_macro without f1_macro in
    train.metrics, a val_ metric with no val split). ``r`` is the spec's Reporter."""
    if "train" not in raw:
        return []
    loss = train["loss"]["type"]
    have = metrics_for(loss)
    diags = []
    given = raw.get("train") or {}
    sections = [("train", train["metrics"], "metrics" in given)]
    sections.append(("evaluate", evaluate["metrics"], "metrics" in (raw.get("evaluate") or {})))
    for section, names, written in sections:
        if not written:
            continue  # a default is always valid; evaluate's copies train's, checked there
        for i, name in enumerate(names):
            metric = METRICS.get(name)
            if metric is None or loss in metric.losses:
                continue  # an unknown name is the schema's error (E103)
            diags.append(r.at(
                "E107", f"metric '{name}' does not exist for the loss {loss}: "
                f"{_kind(loss)}",
                (section, "metrics", i),
                help=f"{loss} has: {', '.join(n for n in have if n != 'loss')}",
                note=_other_loss(metric)))
    reported = set(train["metrics"]) | {"loss"}
    monitors = [(("train", "checkpoint", "monitor"), train["checkpoint"]["monitor"])]
    if train.get("early_stopping"):
        monitors.append((("train", "early_stopping", "monitor"), train["early_stopping"]["monitor"]))
    schedule = train.get("schedule") or {}
    if schedule.get("monitor") is not None:  # reduce-on-plateau
        monitors.append((("train", "schedule", "monitor"), schedule["monitor"]))
    for path, monitor in monitors:
        diag = _check_monitor(monitor, loss, have, reported, split, path, r)
        if diag is not None:
            diags.append(diag)
    return diags


def _check_monitor(monitor, loss, have, reported, split, path, r) -> Diagnostic | None:
    prefix, _, name = monitor.partition("_")
    metric = METRICS.get(name)
    if metric is None:
        return None  # not a monitor name: the schema's error
    if loss not in metric.losses:
        return r.at("E107", f"monitor '{monitor}' can never be reported: {name} does not exist "
                    f"for the loss {loss}", path,
                    help=f"monitor val_loss, or a metric of {loss}: "
                    + ", ".join(f"val_{n}" for n in have if METRICS[n].scalar))
    if name not in reported:
        return r.at("E107", f"monitor '{monitor}' is never reported: '{name}' is not in "
                    "train.metrics", path,
                    help=f"add {name} to train.metrics, or monitor val_loss")
    if prefix == "val" and split["val"] == 0 and not metric.per_step:
        # with no val split a val_ monitor falls back to train_<name>, which only the
        # per-step metrics have
        return r.at("E107", f"monitor '{monitor}' is never reported: data.split.val is 0, so "
                    f"there is no val split, and {name} is not computed on the train split",
                    path, help="give data.split.val a fraction above 0, or monitor "
                    "train_loss" + (" or train_accuracy" if "accuracy" in have else ""))
    return None


def _kind(loss: str) -> str:
    if loss in REGRESSION:
        return "it is a regression loss (no classes)"
    if loss in BINARY:
        return "it is a binary (or multi-label) classification loss"
    return "it is a multi-class classification loss"


def _other_loss(metric: Metric) -> str:
    return f"{metric.name} is a metric of {' and '.join(metric.losses)}"
