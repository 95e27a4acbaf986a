"""model.inputs against the data's layout: channels-last input for channels-first data (and
the reverse) is E503 naming both shapes and the data's layout, before any shape inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from graphdl.data import load_data

DIGITS_IMAGES = {"type": "builtin", "name": "digits", "as_images": True}


def test_channels_last_input_for_channels_first_data(make_spec, expect_error):
    spec = make_spec(source=DIGITS_IMAGES, inputs={"image": ((8, 8, 1), "float32")},
                     target="label")
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "image")
    assert d.message == ("model.inputs.image has shape [8, 8, 1] but the data field 'image' "
                         "has per-sample shape [1, 8, 8]: the data is [1, 8, 8] (channels first)")
    assert d.help.startswith("set model.inputs.image.shape to [1, 8, 8]")
    assert "reshape" not in d.help  # a reshape would scramble the pixels


def test_channels_first_input_for_channels_last_data(make_spec, expect_error, tmp_path):
    x = np.zeros((6, 8, 8, 3), np.float32)
    np.savez(tmp_path / "hwc.npz", x=x, y=np.arange(6) % 2)
    spec = make_spec(source={"type": "npz", "path": "hwc.npz"},
                     inputs={"x": ((3, 8, 8), "float32")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "x")
    assert d.message.endswith("per-sample shape [8, 8, 3]: the data is [8, 8, 3] (channels last)")
    assert "transpose(0, 3, 1, 2)" in d.help and "[N, 3, 8, 8]" in d.help


def test_run_reports_the_layout_before_a_shape_error(tmp_path, capsys):
    """`graphdl run` checks the data first: without that, lowering stops at the conv layer
    with "kernel 3x3 is larger than its 8x1 padded input" (E301)."""
    from graphdl.cli import main

    doc = {
        "graphdl": 1, "name": "channels-last",
        "data": {"source": DIGITS_IMAGES, "split": {"train": 0.8, "val": 0.1, "test": 0.1}},
        "model": {
            "inputs": {"image": {"shape": [8, 8, 1], "dtype": "float32"}},
            "layers": [{"type": "conv2d", "filters": 4, "kernel": 3},
                       {"type": "flatten"}, {"type": "dense", "units": 10}],
        },
        "train": {"target": "label", "epochs": 1, "loss": {"type": "cross_entropy"}},
    }
    spec = Path(tmp_path / "cl.yaml")
    spec.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    rc = main(["run", str(spec), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error[E503]" in err and "E301" not in err, err
    assert "the data is [1, 8, 8] (channels first)" in err
    line = spec.read_text().splitlines().index("    image:") + 1
    assert f"{spec}:{line}:" in err
