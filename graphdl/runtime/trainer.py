"""The trainer: epochs, seeded shuffling, batching, metrics, validation, early stopping,
learning-rate schedules, checkpoints (atomic, resumable) and a progress bar.

Reproducibility: the shuffle of epoch e draws from (seed, e), the dropout seed of step s is
a function of (seed, s) and the learning rate of a step comes from the schedule, so a run
resumed from the checkpoint of epoch e continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.layers.lower import penalty_graph
from graphdl.runtime.checkpoint import load_checkpoint, save_checkpoint
from graphdl.runtime.schedules import LRSchedule, schedule_settings
from graphdl.spec.metrics import higher_is_better
from graphdl.spec.schema_gen import TRAIN, fill


@dataclass
class EpochStats:
    """What the train graph computes per step, summed over an epoch: the data loss (the
    L1/L2 penalty is reported apart, so train_loss and val_loss are the same quantity)
    and accuracy where train.metrics asks for it."""

    data_loss_sum: float = 0.0
    samples: int = 0
    correct: float = 0.0
    counted: float = 0.0

    def add(self, out: dict, n: int) -> None:
        self.data_loss_sum += float(out["data_loss"][0]) * n
        self.samples += n
        if "correct" in out:  # cross_entropy: labels equal to ignore_index do not count
            self.correct += float(out["correct"][0])
            self.counted += float(out["count"][0])
        elif "accuracy" in out:  # bce: the batch's share of right decisions
            self.correct += float(out["accuracy"][0]) * n
            self.counted += n

    def metrics(self) -> dict:
        samples = max(self.samples, 1)
        m = {"loss": self.data_loss_sum / samples}
        if self.counted:
            m["accuracy"] = self.correct / self.counted
        return m


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    es_best: float | None = None  # early stopping's best monitored value
    stopped: bool = False  # early stopping ended the run
    history: list = field(default_factory=list)


def step_seed(seed: int, step: int) -> np.int64:
    return np.int64(zlib.crc32(f"{seed}:{step}".encode()))


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, 7919, epoch]).permutation(n)


def _mode_for(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if higher_is_better(monitor) else "min"


class Trainer:
    def __init__(self, model, splits, run_dir: Path, *, progress: bool = True, resume: bool = False):
        self.model = model
        self.spec = model.spec
        self.splits = splits
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.resume = resume
        # the spec's defaults (graphdl.spec.schema_gen.TRAIN) for anything left out
        t = self.settings = fill(TRAIN, self.spec.train)
        self.epochs = int(t["epochs"])
        self.batch_size = int(t["batch_size"])
        self.base_lr = float(t["optimizer"]["lr"])
        self.schedule = t["schedule"]
        self.save_mode = t["checkpoint"]["save"]
        self.ckpt_monitor = t["checkpoint"]["monitor"]
        self.early = t["early_stopping"]
        self.tensorboard = bool(t["log"]["tensorboard"])
        self.state = TrainState()
        self.lr_schedule: LRSchedule | None = None  # made by fit(), once epochs is final
        self.first_step_at: float | None = None  # perf_counter() after the first step
        self.first_step_cpu: float | None = None  # process_time() then (every thread's CPU)

    # ------------------------------------------------------------ checkpoints
    def _tensors(self) -> dict[str, np.ndarray]:
        """The current weights and state, on the host (copied back from a GPU first)."""
        self.model.sync_to_host()
        out = {f"param/{k}": v for k, v in self.model.params.items()}
        out.update({f"state/{k}": v for k, v in self.model.state.items()})
        return out

    def _save(self, name: str) -> None:
        s = self.state
        meta = {
            "spec": self.spec.name,
            "epoch": s.epoch,
            "step": s.step,
            "best": s.best,
            "best_epoch": s.best_epoch,
            "wait": s.wait,
            "es_best": s.es_best,
            "stopped": s.stopped,
            "history": s.history,
            "schedule": self.lr_schedule.state_dict() if self.lr_schedule else None,
            "preprocess": self.splits.preprocess_state,
            "class_names": self.splits.class_names,  # for predict in another process
        }
        save_checkpoint(self.run_dir / name, self._tensors(), meta)

    def _restore(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path)
        self.model.assign_tensors(tensors, source=str(path))
        s = self.state
        s.epoch, s.step = int(meta["epoch"]), int(meta["step"])
        s.best, s.best_epoch, s.wait = meta.get("best"), meta.get("best_epoch"), int(meta.get("wait", 0))
        s.es_best, s.stopped = meta.get("es_best"), bool(meta.get("stopped", False))
        s.history = list(meta.get("history", []))
        if self.lr_schedule is not None:
            self.lr_schedule.load_state_dict(meta.get("schedule"))

    # ------------------------------------------------------------ loop
    def fit(self) -> list[dict]:
        steps_per_epoch = math.ceil(len(self.splits.train) / self.batch_size)
        sched = schedule_settings(self.schedule)  # only plateau watches a metric
        mode = _mode_for(sched["monitor"], sched["mode"]) if sched["type"] == "plateau" else "min"
        self.lr_schedule = LRSchedule(self.base_lr, self.schedule, self.epochs, steps_per_epoch,
                                      mode=mode)
        if self.resume:
            last = self.run_dir / "last.ckpt"
            if not last.exists():
                raise GraphdlError(Diagnostic("E703", f"--resume: no checkpoint at {last}",
                                              help="run without --resume to start a new run"))
            self._restore(last)
        # before compiling: a missing library is said at once
        board = self._open_tensorboard() if self.tensorboard else None
        try:
            return self._epochs(steps_per_epoch, board)
        finally:
            if board is not None:
                board.close()

    def _epochs(self, steps_per_epoch: int, board) -> list[dict]:
        """The epochs from the current state on; each epoch's record goes to metrics.jsonl
        and, when ``board`` (a TensorBoard writer) is given, its scalars to the event file."""
        model = self.model
        train = self.splits.train
        target = self.spec.train["target"]
        # each batch's feeds: ragged sequences cut to the batch's longest (Dataset.batch)
        feeds_fields = [n for n in model.spec.model.inputs] + [target]
        n = len(train)
        shuffle = bool(self.settings["shuffle"])
        program = model.train_program()
        # the step computes the data loss only; the L1/L2 penalty of the weights is
        # computed when an epoch reports it (NumPy, `graphdl.backends.reference`)
        penalty = penalty_graph(self.spec, model.compiled("train").lowered)
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.resume:
            # the checkpoint's history is the truth: a line written after it is dropped
            _write_lines(metrics_path, self.state.history)
        else:
            # a new run in an old directory must not report the old run's checkpoints
            for old in [metrics_path, *self.run_dir.glob("*.ckpt")]:
                old.unlink(missing_ok=True)
        if self.state.stopped:
            self._restore_best_weights()
            return self.state.history  # early stopping had ended this run
        for epoch in range(self.state.epoch, self.epochs):
            t0 = time.perf_counter()
            stats = EpochStats()
            order = epoch_order(self.spec.seed, epoch, n, shuffle)
            bar = self._bar(epoch, steps_per_epoch)
            snapshot = {k: v.copy() for k, v in self._tensors().items()}
            step0 = self.state.step
            for b in range(steps_per_epoch):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                feeds = train.batch(idx, feeds_fields)
                lr = self.lr_schedule.lr(epoch, b)
                feeds["lr"] = np.float32(lr)
                feeds["step_seed"] = step_seed(self.spec.seed, self.state.step)
                out = program(feeds)
                if self.first_step_at is None:
                    self.first_step_at = time.perf_counter()
                    self.first_step_cpu = time.process_time()
                loss = float(out["data_loss"][0])
                if not math.isfinite(loss):
                    self._non_finite(snapshot, feeds_fields, order, epoch, b, step0,
                                     steps_per_epoch)
                self.state.step += 1
                stats.add(out, len(idx))
                if bar is not None:
                    m = stats.metrics()
                    post = {"loss": f"{m['loss']:.4f}"}
                    if "accuracy" in m:
                        post["acc"] = f"{m['accuracy']:.3f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
            record = {"epoch": epoch + 1, "lr": lr}
            record.update({f"train_{k}": v for k, v in stats.metrics().items()})
            if penalty is not None:
                # of the weights the epoch ends with
                record["train_penalty"] = self._penalty(penalty)
            if self.splits.val is not None and len(self.splits.val):
                val = model.evaluate_dataset(self.splits.val, metrics=self.settings["metrics"])
                record.update({f"val_{k}": v for k, v in val.items()})
            record["seconds"] = round(time.perf_counter() - t0, 4)
            if bar is not None:
                bar.set_postfix_str(_epoch_summary(record), refresh=False)
                bar.close()  # the epoch's line stays, with its summary
            elif self.progress:
                # not a terminal (a pipe, a log file): one compact line per epoch
                print(f"epoch {epoch + 1}/{self.epochs}  {_epoch_summary(record)}", flush=True)
            self.state.epoch = epoch + 1
            self.state.history.append(record)
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if board is not None:
                _write_scalars(board, record)
            improved = self._track_best(record)
            if self.save_mode == "every_epoch":
                self._save(f"epoch_{epoch + 1:03d}.ckpt")
            if improved and self.save_mode == "best":
                self._save("best.ckpt")
            self.state.stopped = self._early_stop(record)
            if self.lr_schedule.monitor is not None:
                self.lr_schedule.end_epoch(self._metric(record, self.lr_schedule.monitor))
            self._save("last.ckpt")
            if self.state.stopped:
                break
        self._restore_best_weights()
        return self.state.history

    def _penalty(self, graph) -> float:
        """The L1/L2 penalty of the current weights (`graphdl.layers.lower.penalty_graph`)."""
        from graphdl.backends.reference import run_reference

        self.model.sync_to_host()
        outputs = run_reference(graph, {}, dict(self.model.params))[0]
        return float(np.asarray(outputs["penalty"]).reshape(()))

    def _open_tensorboard(self):
        """train.log.tensorboard: a writer of TensorBoard event files in <run dir>/tensorboard/.
        A new run removes an old run's event files (as it does metrics.jsonl); a resumed one
        appends a new file whose purge step tells TensorBoard to drop whatever an earlier
        process wrote past the checkpoint, so no epoch is shown twice. E709 without the
        library, at the key that asked for it."""
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            loc = self.spec.loc("train", "log", "tensorboard")
            raise GraphdlError(Diagnostic(
                "E709", f"train.log.tensorboard needs the tensorboardX library: {e}",
                file=loc.file, line=loc.line, col=loc.col,
                help="install the tensorboard extra: pip install 'graphdl[tensorboard]' (or "
                     "set train.log.tensorboard: false)"), phase="runtime") from None
        directory = self.run_dir / "tensorboard"
        if not self.resume:
            for old in directory.glob("events.out.tfevents.*"):
                old.unlink()
        first = self.state.epoch + 1
        # the library names a file by the second and host only, and overwrites: the first
        # epoch in the name keeps a resume within the same second from erasing earlier epochs
        return SummaryWriter(logdir=str(directory), purge_step=first if self.resume else None,
                             filename_suffix=f".from_epoch_{first:05d}")

    def _best_weights_file(self) -> str:
        """Where early stopping's best weights are kept for restore_best_weights: best.ckpt
        when the checkpoint's notion of best is the same, else a file of its own (so that
        they survive --resume)."""
        es = self.early
        same = (self.save_mode == "best" and es["monitor"] == self.ckpt_monitor
                and _mode_for(es["monitor"], es["mode"]) == _mode_for(self.ckpt_monitor, "auto")
                and float(es["min_delta"]) == 0.0)
        return "best.ckpt" if same else "early_stopping_best.ckpt"

    def _restore_best_weights(self) -> None:
        """early_stopping.restore_best_weights: end training with the best epoch's weights
        (last.ckpt keeps the last epoch's, for --resume)."""
        if not self.early or not self.early.get("restore_best_weights"):
            return
        path = self.run_dir / self._best_weights_file()
        if path.exists():
            tensors, _ = load_checkpoint(path)
            self.model.assign_tensors(tensors, source=str(path))

    def _bar(self, epoch: int, total: int):
        """The epoch's progress bar on a terminal: it redraws itself in place during the
        epoch and stays as the epoch's line. None without progress, or when standard
        output is not a terminal (`fit` then prints one compact line per epoch)."""
        if not self.progress or not sys.stdout.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step", leave=True,
                    dynamic_ncols=True, file=sys.stdout,
                    bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}]{postfix}")

    def _metric(self, record: dict, monitor: str) -> float | None:
        return record.get(monitor, record.get(monitor.replace("val_", "train_")))

    def _track_best(self, record: dict) -> bool:
        value = self._metric(record, self.ckpt_monitor)
        if value is None:
            return False
        mode = _mode_for(self.ckpt_monitor, "auto")
        s = self.state
        if s.best is None or (value > s.best if mode == "max" else value < s.best):
            s.best, s.best_epoch = value, record["epoch"]
            return True
        return False

    def _early_stop(self, record: dict) -> bool:
        """Keras semantics: stop once `patience` epochs in a row brought no improvement
        of at least `min_delta`."""
        es = self.early
        if not es:
            return False
        monitor = es["monitor"]
        value = self._metric(record, monitor)
        if value is None:
            return False
        mode = _mode_for(monitor, es["mode"])
        delta = float(es["min_delta"])
        s = self.state
        better = s.es_best is None or (
            value > s.es_best + delta if mode == "max" else value < s.es_best - delta
        )
        if better:
            s.es_best = value
            s.wait = 0
            if es.get("restore_best_weights") and self._best_weights_file() != "best.ckpt":
                self._save(self._best_weights_file())
            return False
        s.wait += 1
        return s.wait >= int(es["patience"])

    def _non_finite(self, snapshot, names, order, epoch, batch, step0, steps_per_epoch) -> None:
        """Stop on a non-finite loss: replay the epoch to the failing step, then find the
        first op that made a non-finite value with the reference interpreter."""
        from graphdl.backends.reference import run_reference

        model = self.model
        train = self.splits.train
        model.assign_tensors(snapshot, source="epoch snapshot")
        program = model.train_program()
        for b in range(batch):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            feeds = train.batch(idx, names)
            feeds["lr"] = np.float32(self.lr_schedule.lr(epoch, b))
            feeds["step_seed"] = step_seed(self.spec.seed, step0 + b)
            program(feeds)
        idx = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        feeds = train.batch(idx, names)
        feeds["lr"] = np.asarray(self.base_lr, np.float32)
        feeds["step_seed"] = np.asarray(step_seed(self.spec.seed, step0 + batch))
        g = model.compiled("train").lowered
        model.sync_to_host()
        state = {k: v.reshape(()) if v.size == 1 and k.endswith("step") else v for k, v in model.state.items()}
        _, _, values = run_reference(g, feeds, dict(model.params), state, keep_all=True)
        culprit = None
        for nid in g.topo_order():
            for i in range(g.num_outputs(nid)):
                v = values.get((nid, i))
                if v is not None and v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                    culprit = nid
                    break
            if culprit is not None:
                break
        model.assign_tensors(snapshot, source="epoch snapshot")
        step = step0 + batch + 1
        if culprit is None:
            where, line = "the optimiser update", None
        else:
            nd = g.node(culprit)
            if nd["op"] == "input":
                where = f"the input data '{nd['name']}'"
            elif nd["op"] == "param":
                where = f"parameter '{nd['name']}' (made non-finite by the previous update)"
            else:
                where = f"op '{nd['op']}' in layer '{nd['layer']}'"
            line = nd["line"]
        kept = "last.ckpt" if (self.run_dir / "last.ckpt").exists() else "no checkpoint yet"
        raise GraphdlError(
            Diagnostic(
                "E601",
                f"non-finite loss at step {step} (epoch {epoch + 1}, batch {batch + 1}): "
                f"the first non-finite value came from {where}",
                file=self.spec.path,
                line=line,
                help="lower the learning rate, add gradient_clip, or check the data for extreme values",
                note=f"training stopped; the last good weights are kept in {self.run_dir / kept}",
            ),
            phase="runtime",
        )


def _epoch_summary(record: dict) -> str:
    """An epoch's metrics as its progress line ends, Keras-like: ``loss 0.3120 - accuracy
    0.912 - val_loss 0.2801 - val_accuracy 0.926 - 1.2s`` (the penalty and lists left out)."""
    parts = []
    for key, value in record.items():
        if not key.startswith(("train_", "val_")) or not isinstance(value, float):
            continue
        name = key.removeprefix("train_")
        if name.endswith("penalty"):
            continue
        parts.append(f"{name} {value:.4f}")
    seconds = record["seconds"]
    parts.append(f"{seconds:.1f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms")
    return " - ".join(parts)


def _write_scalars(board, record: dict) -> None:
    """Every float of an epoch's record (losses, metrics, lr, seconds) as a TensorBoard
    scalar under its metrics.jsonl name, at the epoch as step; lists and counts are left
    out."""
    for key, value in record.items():
        if isinstance(value, float):
            board.add_scalar(key, value, global_step=record["epoch"])
    board.flush()


def _write_lines(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def check_run_dir(run_dir: Path, spec, option: str | None = None) -> None:
    """Create ``run_dir`` and check it is writable; E702 otherwise, located at ``option``
    (the command-line argument that named it, e.g. "--run-dir") when given, else at
    train.checkpoint.dir when the spec names it, else at the spec file (the default
    runs/<name>)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        message = f"cannot write the run directory {run_dir}: {e.strerror or e}"
        written = ((spec.raw.get("train") or {}).get("checkpoint") or {}).get("dir")
        if option is not None:
            where = {"file": option}
            help_ = f"choose a writable directory with {option}"
        elif written is not None:
            loc = spec.loc("train", "checkpoint", "dir")
            where = {"file": loc.file, "line": loc.line, "col": loc.col}
            help_ = "choose a writable directory with train.checkpoint.dir or --run-dir"
        else:
            where = {"file": spec.path}
            message += " (the default run directory: train.checkpoint.dir is not set)"
            help_ = "choose a writable directory with train.checkpoint.dir or --run-dir"
        raise GraphdlError(Diagnostic("E702", message, help=help_, **where),
                           phase="runtime") from None
