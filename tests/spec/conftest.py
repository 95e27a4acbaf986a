import textwrap
from pathlib import Path

import pytest
from spec_helpers import FIXTURES

from graphdl.errors import GraphdlError
from graphdl.spec import load_spec


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def write_spec(tmp_path):
    def _write(text: str, name: str = "spec.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return p

    return _write


@pytest.fixture
def load(write_spec):
    def _load(text: str, name: str = "spec.yaml"):
        return load_spec(write_spec(text, name))

    return _load


@pytest.fixture
def spec_error(write_spec):
    """Load a bad spec; return the GraphdlError (checking its phase when given)."""

    def _err(text: str, phase: str | None = None) -> GraphdlError:
        p = write_spec(text)
        with pytest.raises(GraphdlError) as ei:
            load_spec(p)
        if phase is not None:
            assert ei.value.phase == phase, ei.value.format()
        return ei.value

    return _err
