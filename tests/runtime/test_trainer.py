"""The trainer through Model.fit: resume, batching, early stopping, schedules, checkpoints,
non-finite losses. Every spec is the digits MLP of specs/mlp_digits.yaml (same layers,
adam, dropout), so the compiled kernels are shared; runs are 1-4 epochs."""

from __future__ import annotations

import copy
import json
import math
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import graphdl
from graphdl.errors import GraphdlError
from graphdl.runtime import trainer as trainer_mod
from graphdl.runtime.checkpoint import load_checkpoint
from graphdl.runtime.schedules import learning_rate
from graphdl.runtime.trainer import Trainer

DIGITS_SPEC = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"
BASE = yaml.safe_load(DIGITS_SPEC.read_text(encoding="utf-8"))


def write_spec(
    directory: Path, train: dict | None = None, data: dict | None = None, name="spec.yaml"
) -> Path:
    """mlp_digits.yaml with train.epochs 2 and the given train/data keys replaced."""
    doc = copy.deepcopy(BASE)
    doc["train"]["epochs"] = 2
    doc["train"].update(train or {})
    doc["data"].update(data or {})
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


# ------------------------------------------------------------------ resume


def test_resume_is_bit_for_bit(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 4})
    assert any(l["type"] == "dropout" for l in BASE["model"]["layers"])  # the dropout seed matters

    whole = graphdl.load(spec)
    h_whole = whole.fit(tmp_path / "whole", progress=False)
    assert len(h_whole) == 4

    first = graphdl.load(spec)
    first.fit(tmp_path / "split", progress=False, epochs=2)
    resumed = graphdl.load(spec)
    h_resumed = resumed.fit(tmp_path / "split", progress=False, epochs=4, resume=True)

    assert set(whole.params) == set(resumed.params)
    for k in whole.params:
        assert whole.params[k].dtype == np.float32
        assert np.array_equal(whole.params[k], resumed.params[k]), k
    for k in whole.state:  # adam moments and step count too
        assert np.array_equal(whole.state[k], resumed.state[k]), k
    assert float(resumed.state["opt.step"][0]) == 4 * math.ceil(len(whole.data().train) / 64)
    assert without_seconds(h_resumed) == without_seconds(h_whole)
    assert without_seconds(metrics(tmp_path / "split")) == without_seconds(
        metrics(tmp_path / "whole")
    )
    assert resumed.evaluate("test") == whole.evaluate("test")


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 2})
    a = graphdl.load(spec)
    a.fit(tmp_path / "run", progress=False)
    b = graphdl.load(spec)
    history = b.fit(tmp_path / "run", progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2]
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert len(metrics(tmp_path / "run")) == 2


def test_resume_after_an_interrupt_before_last_ckpt_keeps_one_line_per_epoch(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, {"epochs": 3})
    real_save = trainer_mod.save_checkpoint

    def save_then_interrupt(path, tensors, meta):
        if Path(path).name == "last.ckpt" and meta["epoch"] == 2:
            raise KeyboardInterrupt  # Ctrl-C while epoch 2's checkpoints are written
        real_save(path, tensors, meta)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        graphdl.load(spec).fit(tmp_path / "run", progress=False)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")[1]["epoch"] == 1

    history = graphdl.load(spec).fit(tmp_path / "run", progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1, 2, 3]


# ------------------------------------------------------------------ batching, determinism


@pytest.fixture
def small_npz(tmp_path):
    """200 digits as an npz file: split 0.5/0.25/0.25 gives exactly 100 training samples."""
    from graphdl.data.sources import _read_builtin

    raw = _read_builtin("digits.npz")
    np.savez(tmp_path / "small.npz", x=np.array(raw["x"][:200]), y=np.array(raw["y"][:200]))
    return {
        "source": {"type": "npz", "path": "small.npz"},
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "shuffle": True, "stratify": False},
    }


@pytest.mark.parametrize("batch_size, steps", [(64, 2), (100, 1), (30, 4), (1000, 1)])
def test_the_last_partial_batch_is_trained_on(tmp_path, small_npz, batch_size, steps):
    spec = write_spec(tmp_path, {"epochs": 1, "batch_size": batch_size}, data=small_npz)
    model = graphdl.load(spec)
    assert len(model.data().train) == 100
    model.fit(tmp_path / "run", progress=False)
    assert float(model.state["opt.step"][0]) == steps  # adam counts its updates
    _tensors, meta = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert meta["step"] == steps


def test_training_is_reproducible_from_the_seed(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 1})
    a, b = graphdl.load(spec), graphdl.load(spec)
    a.fit(tmp_path / "a", progress=False)
    b.fit(tmp_path / "b", progress=False)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    doc = yaml.safe_load(spec.read_text())
    doc["seed"] = 7
    other_spec = tmp_path / "seed7.yaml"
    other_spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    c = graphdl.load(other_spec)
    c.fit(tmp_path / "c", progress=False)
    assert not np.array_equal(a.params["dense_1.kernel"], c.params["dense_1.kernel"])


def test_a_new_run_restarts_metrics_jsonl(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 2})
    graphdl.load(spec).fit(tmp_path / "run", progress=False)
    graphdl.load(spec).fit(tmp_path / "run", progress=False, epochs=1)
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1]


# ------------------------------------------------------------------ early stopping


@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping_stops_when_patience_is_exceeded(tmp_path, patience):
    """min_delta 1e9: no epoch counts as an improvement, so after the first epoch (the
    baseline) the run stops once `patience` epochs in a row brought none (Keras: at least
    one such epoch)."""
    spec = write_spec(
        tmp_path,
        {
            "epochs": 10,
            "early_stopping": {"monitor": "val_loss", "patience": patience, "min_delta": 1e9},
        },
    )
    model = graphdl.load(spec)
    history = model.fit(tmp_path / "run", progress=False)
    assert len(history) < 10
    expected = max(patience, 1) + 1
    assert len(history) == expected
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == list(range(1, expected + 1))
    _, meta = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert meta["epoch"] == expected
    assert meta["wait"] == max(patience, 1)
    assert meta["stopped"] is True


def test_resume_of_an_early_stopped_run_trains_nothing(tmp_path):
    spec = write_spec(
        tmp_path,
        {"epochs": 10, "early_stopping": {"monitor": "val_loss", "patience": 1, "min_delta": 1e9}},
    )
    first = graphdl.load(spec)
    assert len(first.fit(tmp_path / "run", progress=False)) == 2
    again = graphdl.load(spec)
    history = again.fit(tmp_path / "run", progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2]
    for k in first.params:
        assert np.array_equal(first.params[k], again.params[k]), k


def test_no_early_stop_while_improving(tmp_path):
    spec = write_spec(
        tmp_path, {"epochs": 3, "early_stopping": {"monitor": "val_loss", "patience": 0}}
    )
    history = graphdl.load(spec).fit(tmp_path / "run", progress=False)
    losses = [r["val_loss"] for r in history]
    assert len(history) == 3, losses  # val loss falls every epoch at the start of training
    assert losses[0] > losses[1] > losses[2]


def _stub_trainer(tmp_path, early_stopping) -> Trainer:
    spec = types.SimpleNamespace(
        name="stub", seed=0, train={"epochs": 10, "early_stopping": early_stopping}
    )
    return Trainer(types.SimpleNamespace(spec=spec), splits=None, run_dir=tmp_path, progress=False)


def _feed(trainer: Trainer, values) -> list[bool]:
    """What fit() does per epoch: append the record, then ask whether to stop."""
    stops = []
    for v in values:
        record = {"epoch": len(trainer.state.history) + 1, "val_loss": v}
        trainer.state.history.append(record)
        stops.append(trainer._early_stop(record))
    return stops


def test_no_early_stopping_unless_the_spec_asks():
    """A spec without `early_stopping` trains every epoch, however flat val_loss is."""
    for early_stopping in (None, {"monitor": "val_loss", "patience": 1}):
        t = _stub_trainer(Path("."), early_stopping)
        stops = _feed(t, [1.0] * 8)
        assert any(stops) == (early_stopping is not None)


def test_early_stopping_unit_counts_wait():
    t = _stub_trainer(Path("."), {"monitor": "val_loss", "patience": 1})
    assert _feed(t, [1.0, 0.9, 0.95, 0.91, 0.8, 0.85, 0.85]) == [
        False,
        False,
        True,
        True,
        False,
        True,
        True,
    ]


def test_early_stopping_with_min_delta_survives_resume(tmp_path):
    es = {"monitor": "val_loss", "patience": 2, "min_delta": 0.1}
    values = [1.0, 0.95, 0.85, 0.84]
    whole = _stub_trainer(tmp_path, es)
    stops_whole = _feed(whole, values)
    assert stops_whole == [False, False, False, False]  # 0.85 beats the best (1.0) by more than 0.1

    first = _stub_trainer(tmp_path, es)
    _feed(first, values[:2])
    resumed = _stub_trainer(tmp_path, es)  # a new Trainer restored from last.ckpt of epoch 2
    resumed.state.history = list(first.state.history)
    resumed.state.wait = first.state.wait
    resumed.state.es_best = first.state.es_best  # what _restore reads from the checkpoint
    stops_resumed = _feed(resumed, values[2:])
    assert stops_resumed == stops_whole[2:]
    assert resumed.state.wait == whole.state.wait


# ------------------------------------------------------------------ schedules in training


def _steps_per_epoch(model) -> int:
    return math.ceil(len(model.data().train) / int(model.spec.train["batch_size"]))


@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "step", "step_size": 1, "gamma": 0.5},
        {"type": "cosine", "min_lr": 1.0e-4},
        {"type": "warmup_cosine", "warmup_epochs": 1},
    ],
)
def test_lr_in_metrics_follows_the_schedule(tmp_path, schedule):
    spec = write_spec(tmp_path, {"epochs": 3, "schedule": schedule})
    model = graphdl.load(spec)
    history = model.fit(tmp_path / "run", progress=False)
    records = metrics(tmp_path / "run")
    assert records == history
    s = _steps_per_epoch(model)
    for r in records:
        e = r["epoch"] - 1
        # the lr of the epoch's last step
        expected = learning_rate(1e-3, schedule, e + (s - 1) / s, 3)
        assert r["lr"] == pytest.approx(expected, rel=1e-9), (r, expected)
    if schedule["type"] == "step":
        assert [r["lr"] for r in records] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    else:
        assert records[0]["lr"] > records[1]["lr"] > records[2]["lr"]


def test_the_scheduled_lr_is_what_trains(tmp_path):
    """A step schedule that divides the lr by 1e30 after epoch 1 freezes the weights."""
    spec = write_spec(
        tmp_path,
        {
            "epochs": 3,
            "schedule": {"type": "step", "step_size": 1, "gamma": 1e-30},
            "checkpoint": {"save": "every_epoch"},
        },
    )
    graphdl.load(spec).fit(tmp_path / "run", progress=False)
    e1, _ = load_checkpoint(tmp_path / "run" / "epoch_001.ckpt")
    e3, _ = load_checkpoint(tmp_path / "run" / "epoch_003.ckpt")
    init = graphdl.load(spec).compile(("train",)).params
    for k in init:
        assert not np.allclose(e1[f"param/{k}"], init[k]), k  # epoch 1 trained at lr 1e-3
        np.testing.assert_allclose(
            e3[f"param/{k}"], e1[f"param/{k}"], rtol=0, atol=1e-20, err_msg=k
        )


# ------------------------------------------------------------------ checkpoints


def test_save_every_epoch_and_last(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 3, "checkpoint": {"save": "every_epoch"}})
    graphdl.load(spec).fit(tmp_path / "run", progress=False)
    names = sorted(p.name for p in (tmp_path / "run").glob("*.ckpt"))
    assert names == ["epoch_001.ckpt", "epoch_002.ckpt", "epoch_003.ckpt", "last.ckpt"]
    last, meta = load_checkpoint(tmp_path / "run" / "last.ckpt")
    e3, meta3 = load_checkpoint(tmp_path / "run" / "epoch_003.ckpt")
    assert meta["epoch"] == meta3["epoch"] == 3
    for k in last:
        assert np.array_equal(last[k], e3[k]), k


def test_best_ckpt_follows_its_monitor(tmp_path):
    spec = write_spec(
        tmp_path, {"epochs": 3, "checkpoint": {"save": "best", "monitor": "val_accuracy"}}
    )
    history = graphdl.load(spec).fit(tmp_path / "run", progress=False)
    accs = [r["val_accuracy"] for r in history]
    _, meta = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert meta["best_epoch"] == int(np.argmax(accs)) + 1
    assert meta["best"] == max(accs)


# ------------------------------------------------------------------ non-finite loss


def test_non_finite_loss_raises_E601_and_restores_finite_weights(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 2, "optimizer": {"type": "adam", "lr": 1e30}})
    model = graphdl.load(spec)
    with warnings.catch_warnings(), pytest.raises(GraphdlError) as info:
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference interpreter overflows
        model.fit(tmp_path / "run", progress=False)
    (d,) = info.value.diagnostics
    assert d.code == "E601"
    assert info.value.phase == "runtime"
    assert "non-finite loss at step" in d.message and "epoch 1" in d.message
    assert d.file == str(spec) and isinstance(d.line, int)
    assert "no checkpoint yet" in d.note
    assert not (tmp_path / "run" / "last.ckpt").exists()
    for k, v in model.params.items():  # the weights from before the failing epoch
        assert np.isfinite(v).all(), k


# ------------------------------------------------------------------ plateau, restore_best_weights

# an absolute threshold of 1e9: no epoch counts as an improvement, so val_loss "stalls"
STALLING_PLATEAU = {"type": "plateau", "monitor": "val_loss", "patience": 0, "factor": 0.5,
                    "threshold": 1.0e9, "threshold_mode": "abs"}


def test_plateau_reduces_the_lr_when_val_loss_stalls(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 4, "schedule": STALLING_PLATEAU})
    history = graphdl.load(spec).fit(tmp_path / "run", progress=False)
    # epoch 1 sets the best; each later epoch is one bad epoch > patience 0: halve after it
    assert [r["lr"] for r in history] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4], rel=1e-12)
    _, meta = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert meta["schedule"]["lr"] == pytest.approx(1.25e-4, rel=1e-12)


def test_plateau_keeps_a_falling_val_loss_at_the_base_lr(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 3, "schedule": {"type": "plateau", "patience": 0}})
    history = graphdl.load(spec).fit(tmp_path / "run", progress=False)
    assert history[0]["val_loss"] > history[1]["val_loss"] > history[2]["val_loss"]
    assert [r["lr"] for r in history] == [1e-3] * 3


def test_resume_keeps_the_plateau_state_bit_for_bit(tmp_path):
    spec = write_spec(tmp_path, {"epochs": 4, "schedule": STALLING_PLATEAU})
    whole = graphdl.load(spec)
    h_whole = whole.fit(tmp_path / "whole", progress=False)
    graphdl.load(spec).fit(tmp_path / "split", progress=False, epochs=2)
    resumed = graphdl.load(spec)
    h_resumed = resumed.fit(tmp_path / "split", progress=False, epochs=4, resume=True)
    assert without_seconds(h_resumed) == without_seconds(h_whole)
    for k in whole.params:
        assert np.array_equal(whole.params[k], resumed.params[k]), k
    _, m_whole = load_checkpoint(tmp_path / "whole" / "last.ckpt")
    _, m_split = load_checkpoint(tmp_path / "split" / "last.ckpt")
    assert m_split["schedule"] == m_whole["schedule"]


def test_restore_best_weights_leaves_the_best_epochs_weights(tmp_path):
    """mode max on val_loss: the best epoch is the first (val loss falls), not the last."""
    es = {"monitor": "val_loss", "mode": "max", "patience": 10, "restore_best_weights": True}
    spec = write_spec(tmp_path, {"epochs": 3, "early_stopping": es,
                                 "checkpoint": {"save": "every_epoch"}})
    model = graphdl.load(spec)
    history = model.fit(tmp_path / "run", progress=False)
    assert history[0]["val_loss"] == max(r["val_loss"] for r in history)
    e1, _ = load_checkpoint(tmp_path / "run" / "epoch_001.ckpt")
    e3, _ = load_checkpoint(tmp_path / "run" / "epoch_003.ckpt")
    for k in model.params:
        assert np.array_equal(model.params[k], e1[f"param/{k}"]), k
        assert not np.array_equal(model.params[k], e3[f"param/{k}"]), k
    last, _ = load_checkpoint(tmp_path / "run" / "last.ckpt")  # still the last epoch, for --resume
    assert all(np.array_equal(last[k], e3[k]) for k in e3)
    assert model.evaluate("val")["loss"] == pytest.approx(history[0]["val_loss"], rel=1e-6)


def test_restore_best_weights_uses_best_ckpt_when_it_is_the_same_best(tmp_path):
    es = {"monitor": "val_loss", "patience": 10, "restore_best_weights": True}
    spec = write_spec(tmp_path, {"epochs": 2, "early_stopping": es,
                                 "checkpoint": {"save": "best", "monitor": "val_loss"}})
    model = graphdl.load(spec)
    model.fit(tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "early_stopping_best.ckpt").exists()
    best, _ = load_checkpoint(tmp_path / "run" / "best.ckpt")
    for k in model.params:
        assert np.array_equal(model.params[k], best[f"param/{k}"]), k


def test_without_restore_best_weights_the_last_weights_stay(tmp_path):
    es = {"monitor": "val_loss", "mode": "max", "patience": 10}
    spec = write_spec(tmp_path, {"epochs": 2, "early_stopping": es,
                                 "checkpoint": {"save": "every_epoch"}})
    model = graphdl.load(spec)
    model.fit(tmp_path / "run", progress=False)
    e2, _ = load_checkpoint(tmp_path / "run" / "epoch_002.ckpt")
    for k in model.params:
        assert np.array_equal(model.params[k], e2[f"param/{k}"]), k


@pytest.mark.parametrize("optimizer,state", [
    ({"type": "rmsprop", "lr": 1.0e-3}, "opt.square_avg."),
    ({"type": "adagrad", "lr": 0.05, "initial_accumulator_value": 0.1}, "opt.sum."),
])
def test_rmsprop_and_adagrad_train(tmp_path, optimizer, state):
    spec = write_spec(tmp_path, {"optimizer": optimizer})
    model = graphdl.load(spec)
    history = model.fit(tmp_path / "run", progress=False)
    assert history[1]["val_loss"] < history[0]["val_loss"]
    assert history[1]["val_accuracy"] > 0.5
    assert any(k.startswith(state) for k in model.state)
