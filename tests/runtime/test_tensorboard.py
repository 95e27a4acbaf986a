"""train.log.tensorboard: the trainer's TensorBoard event files (tensorboardX), read back
with the protobuf tensorboardX ships and compared with metrics.jsonl; off by default; a
located E709 when the library is missing. Specs are the digits MLP of tests/runtime/
test_trainer.py (2 epochs), so the compiled kernels are shared."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from test_trainer import metrics, write_spec

import graphdl
from graphdl.errors import GraphdlError

TENSORBOARD_ON = {"log": {"tensorboard": True}}


def read_events(path: Path):
    """The Event protos of one event file: TFRecord framing (length, its CRC, the data, its
    CRC), each record an ``event_pb2.Event``."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    data = path.read_bytes()
    events, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        at += 12  # the length and its masked CRC
        event = event_pb2.Event()
        event.ParseFromString(data[at : at + length])
        events.append(event)
        at += length + 4  # the data and its masked CRC
    return events


def scalars(directory: Path) -> dict[int, dict[str, float]]:
    """Epoch -> {tag: value}, as TensorBoard shows the directory: files in the order they
    were started, and a SessionLog START at step s (a writer's purge_step) drops what
    earlier files wrote at steps >= s."""
    files = [read_events(p) for p in directory.glob("events.out.tfevents.*")]
    files.sort(key=lambda events: events[0].wall_time)
    seen: dict[int, dict[str, float]] = {}
    for events in files:
        for event in events:
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                seen = {step: tags for step, tags in seen.items() if step < event.step}
            for value in event.summary.value:
                tags = seen.setdefault(event.step, {})
                assert value.tag not in tags, f"{value.tag} written twice at epoch {event.step}"
                tags[value.tag] = value.simple_value
    return seen


def expected(records: list[dict]) -> dict[int, dict[str, float]]:
    """metrics.jsonl's floats per epoch, as the float32 an event file holds."""
    return {
        r["epoch"]: {k: float(np.float32(v)) for k, v in r.items() if isinstance(v, float)}
        for r in records
    }


def test_tensorboard_scalars_equal_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboardX")
    spec = write_spec(tmp_path, {**TENSORBOARD_ON, "metrics": ["accuracy", "f1_macro"]})
    run = tmp_path / "run"
    graphdl.load(spec).fit(run, progress=False)

    records = metrics(run)
    assert len(records) == 2
    written = scalars(run / "tensorboard")
    assert written == expected(records)
    for tag in ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr"):
        assert tag in written[1], tag


def test_resume_appends_without_repeating_epochs(tmp_path):
    pytest.importorskip("tensorboardX")
    spec = write_spec(tmp_path, {**TENSORBOARD_ON, "checkpoint": {"save": "every_epoch"}})
    run = tmp_path / "run"
    graphdl.load(spec).fit(run, progress=False)
    # as if the process died after epoch 2 was logged but before last.ckpt was saved
    shutil.copy(run / "epoch_001.ckpt", run / "last.ckpt")
    graphdl.load(spec).fit(run, progress=False, resume=True)

    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    records = metrics(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert scalars(run / "tensorboard") == expected(records)


def test_off_by_default(tmp_path):
    run = tmp_path / "run"
    graphdl.load(write_spec(tmp_path)).fit(run, progress=False)
    assert (run / "metrics.jsonl").exists()
    assert not (run / "tensorboard").exists()


def test_missing_library_is_located_error(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, TENSORBOARD_ON)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    with pytest.raises(GraphdlError) as info:
        graphdl.load(spec).fit(tmp_path / "run", progress=False)

    (d,) = info.value.diagnostics
    assert d.code == "E709"
    assert info.value.phase == "runtime"
    assert d.file == str(spec)
    lines = spec.read_text(encoding="utf-8").splitlines()
    assert lines[d.line - 1].strip() == "tensorboard: true"
    assert "pip install 'graphdl[tensorboard]'" in d.help
    assert not (tmp_path / "run" / "tensorboard").exists()
