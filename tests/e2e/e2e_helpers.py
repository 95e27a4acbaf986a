"""Helpers for the end-to-end tests: specs derived from specs/mlp_digits.yaml, written into
tmp_path.

Specs are derived in two ways:

* ``spec_file(tmp_path, {"train.epochs": 2, ...})`` loads the YAML, sets dotted keys and
  dumps it again (comments and layout are lost);
* ``edit_spec(tmp_path, [(old, new), ...])`` replaces text in the original file, so its
  layout (and every line number) is kept; use it when a test checks a reported line.

All tests keep the model of mlp_digits.yaml (the same layers, optimizer and loss) unless they
need another one, so the compiled kernels are shared and come from the disk cache.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
DIGITS_SPEC = REPO / "specs" / "mlp_digits.yaml"


def base_doc() -> dict:
    return yaml.safe_load(DIGITS_SPEC.read_text(encoding="utf-8"))


def set_key(doc: dict, dotted: str, value) -> None:
    """Set ``doc[a][b][c] = value`` for ``"a.b.c"``."""
    *parents, last = dotted.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def write_doc(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def spec_file(
    directory: Path, overrides: dict | None = None, name: str = "spec.yaml", edit=None
) -> Path:
    """mlp_digits.yaml with dotted-key overrides (and an optional ``edit(doc)``), as a file."""
    doc = copy.deepcopy(base_doc())
    doc["train"]["epochs"] = 2
    for k, v in (overrides or {}).items():
        set_key(doc, k, v)
    if edit is not None:
        edit(doc)
    return write_doc(Path(directory) / name, doc)


def edit_spec(directory: Path, replacements, name: str = "spec.yaml") -> Path:
    """mlp_digits.yaml with text replacements (each must match exactly once)."""
    text = DIGITS_SPEC.read_text(encoding="utf-8")
    for old, new in replacements:
        assert text.count(old) == 1, f"test bug: {old!r} occurs {text.count(old)} times in the spec"
        text = text.replace(old, new)
    path = Path(directory) / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    """1-based number of the only line of ``path`` containing ``needle``."""
    hits = [
        i
        for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
        if needle in line
    ]
    assert len(hits) == 1, f"test bug: {needle!r} on lines {hits}"
    return hits[0]


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def write_csv(path: Path, header: list[str], rows: np.ndarray, delimiter: str = ",") -> Path:
    """A CSV file with a header and the rows of ``rows`` (6 decimals)."""
    lines = [delimiter.join(header)] + [delimiter.join(f"{v:.6f}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def printed_table(out: str) -> list[list[str]]:
    """The rows of the table `graphdl predict` prints (header first)."""
    return [line.split() for line in out.strip().splitlines()]
