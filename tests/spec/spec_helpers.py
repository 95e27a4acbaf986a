"""Shared constants for the spec tests (imported as a plain module, like e2e_helpers)."""

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

# Seven lines; the layers written after it start on line 8.
HEAD = """\
graphdl: 1
data:
  source: {type: builtin, name: digits}
model:
  inputs:
    x: {shape: [64]}
  layers:
"""
