"""Metrics of a whole split, computed exactly in NumPy from the eval program's outputs
(logits or values) and the targets: accuracy, top-k accuracy, precision / recall / F1
(binary, macro, per class), ROC AUC, the confusion matrix, MAE, RMSE and R².

Which metric exists for which loss is `graphdl.spec.metrics` (the spec refuses the
others). Conventions follow scikit-learn, and the tests hold them to it: a precision or
recall of 0/0 is 0; macro averages run over the classes present in the targets or the
predictions; the confusion matrix has a row per true class and a column per predicted
class; R² averages over output units, and is 1 for a perfect fit of a constant target
(else 0). AUC of a split holding one class only is None (undefined).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100  # cross_entropy's ignore_index when the spec gives none (the loss's own)


def split_metrics(loss: str, names: list[str], outputs: np.ndarray, targets: np.ndarray,
                  ignore_index: int | None = None) -> dict:
    """The metrics ``names`` (spec names; "loss" is skipped: the program computes it) of
    one split's ``outputs`` (one row per sample) against its ``targets``, as JSON values
    (float, list or None). For cross_entropy the outputs are logits [..., C] and the
    targets labels [...]: one per sample, or one per step ([N, T, C] and [N, T]); every
    position whose label is ``ignore_index`` (None: -100, as the loss) is left out, so
    accuracy, top-k, precision/recall/F1 and the confusion matrix count the labelled
    positions only, as the loss does."""
    wanted = [n for n in names if n != "loss"]
    if not wanted:
        return {}
    outputs = np.asarray(outputs, np.float64)
    if loss == "mse":
        return _regression(wanted, outputs, np.asarray(targets, np.float64).reshape(outputs.shape))
    if loss == "cross_entropy":
        classes = outputs.shape[-1]
        labels = np.asarray(targets).astype(np.int64).reshape(outputs.shape[:-1])
        keep = labels != (IGNORE_INDEX if ignore_index is None else ignore_index)
        hit = (outputs.argmax(axis=-1) == labels) | ~keep
        out = {}
        if "sequence_accuracy" in wanted:  # exact match over each sample's labelled positions
            per_sample = hit.reshape(len(hit), -1).all(axis=1) if hit.ndim > 1 else hit
            out["sequence_accuracy"] = float(per_sample.mean()) if per_sample.size else 0.0
        rest = [n for n in wanted if n != "sequence_accuracy"]
        if "token_accuracy" in rest:
            rest = [n if n != "token_accuracy" else "accuracy" for n in rest]
        outputs, labels = outputs.reshape(-1, classes)[keep.reshape(-1)], labels[keep]
        scored = _classification(rest, outputs.argmax(axis=-1), labels, classes, scores=outputs,
                                 binary=False) if rest else {}
        if "token_accuracy" in wanted:
            out["token_accuracy"] = scored["accuracy"]
            if "accuracy" not in wanted:
                del scored["accuracy"]
        return {n: {**scored, **out}[n] for n in wanted}
    # bce_with_logits: every output unit is one binary decision (multi-label: pooled)
    logits = outputs.reshape(-1)
    truth = (np.asarray(targets, np.float64).reshape(-1) > 0.5).astype(np.int64)
    return _classification(wanted, (logits > 0).astype(np.int64), truth, 2, scores=logits,
                           binary=True)


def _classification(wanted, pred, true, classes, scores, binary) -> dict:
    cm = confusion_matrix(true, pred, classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, actual)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (predicted + actual) > 0  # sklearn averages over labels seen in either
    out: dict = {}
    for name in wanted:
        if name == "accuracy":
            out[name] = float(tp.sum() / max(cm.sum(), 1))
        elif name.startswith("top_"):
            k = int(name.split("_")[1])
            out[name] = top_k_accuracy(scores, true, k)
        elif name in ("precision", "recall", "f1"):  # the positive class of a binary loss
            out[name] = float({"precision": precision, "recall": recall, "f1": f1}[name][1])
        elif name.endswith("_macro"):
            per = {"precision": precision, "recall": recall, "f1": f1}[name[: -len("_macro")]]
            out[name] = float(per[present].mean()) if present.any() else 0.0
        elif name.endswith("_per_class"):
            per = {"precision": precision, "recall": recall, "f1": f1}[name[: -len("_per_class")]]
            out[name] = [float(v) for v in per]
        elif name == "confusion_matrix":
            out[name] = cm.tolist()
        elif name == "auc" and binary:
            out[name] = roc_auc(true, scores)
        else:
            raise ValueError(f"metric {name!r} is not a classification metric")
    return out


def _regression(wanted, pred, true) -> dict:
    err = pred - true
    out: dict = {}
    for name in wanted:
        if name == "mae":
            out[name] = float(np.abs(err).mean())
        elif name == "rmse":
            out[name] = float(np.sqrt(np.square(err).mean()))
        elif name == "r2":
            out[name] = r2_score(true, pred)
        else:
            raise ValueError(f"metric {name!r} is not a regression metric")
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (sklearn's zero_division default, without its warning)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """int64 [classes, classes]: row = true class, column = predicted class."""
    flat = true.astype(np.int64) * classes + pred.astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label's score is among the k largest. A tie at the k-th place
    counts against the label (the label must beat all but k - 1 others)."""
    if not len(labels):
        return 0.0
    mine = scores[np.arange(len(labels)), labels]
    above = (scores > mine[:, None]).sum(axis=1)
    return float((above < k).mean())


def roc_auc(true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic: the chance that a random
    positive scores above a random negative, ties counting one half."""
    positives = int(true.sum())
    negatives = len(true) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(scores)
    return float((ranks[true == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # runs of equal values: each gets the mean of the ranks it spans
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def r2_score(true: np.ndarray, pred: np.ndarray) -> float:
    """R² per output unit, averaged (sklearn's uniform_average)."""
    true = true.reshape(len(true), -1)
    pred = pred.reshape(len(pred), -1)
    ss_res = np.square(true - pred).sum(axis=0)
    ss_tot = np.square(true - true.mean(axis=0)).sum(axis=0)
    perfect = ss_res == 0
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.where(perfect, 1.0, 0.0))
    return float(r2.mean())
