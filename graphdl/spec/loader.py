"""YAML loading with positions and YAML 1.2 core-schema scalars.

PyYAML's default loaders implement YAML 1.1: ``1e-3`` is a string, ``yes`` is a boolean,
``010`` is octal 8, and a duplicate key silently wins. This loader composes the PyYAML node
tree once (the nodes carry line/column marks) and builds the Python data from the nodes
itself, so that:

* plain scalars follow the YAML 1.2 core schema: ``null``/``~``/empty are None; only
  ``true``/``false`` (and ``True``/``TRUE``/...) are booleans; integers are decimal only
  (``010`` is 10); ``1e-3``, ``1.0e-3``, ``.5``, ``-2E+3``, ``.inf``, ``.nan`` are floats;
  everything else is a string;
* a duplicate key is error E002 (both positions reported);
* a syntax error is error E001 with its line and column;
* every value and every mapping key has a position, stored in a map from YAML path
  (a tuple of keys and list indices) to :class:`Pos`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from graphdl.errors import Diagnostic, GraphdlError, diagnostic_at, format_path

_PLAIN_TAG = "tag:graphdl,2024:plain"  # an untagged plain scalar: resolved by the core schema
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUES = {"true", "True", "TRUE"}
_FALSES = {"false", "False", "FALSE"}
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INF_RE = re.compile(r"^[-+]?\.(inf|Inf|INF)$")
_NAN_RE = re.compile(r"^\.(nan|NaN|NAN)$")


def resolve_plain(text: str):
    """The value of an untagged plain scalar under the YAML 1.2 core schema."""
    if text in _NULLS:
        return None
    if text in _TRUES:
        return True
    if text in _FALSES:
        return False
    if _INT_RE.match(text):
        return int(text, 10)
    if _FLOAT_RE.match(text):
        return float(text)
    if _INF_RE.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN_RE.match(text):
        return math.nan
    return text


class SpecLoader(yaml.SafeLoader):
    """SafeLoader whose untagged plain scalars are left for :func:`resolve_plain`."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN_TAG
        return super().resolve(kind, value, implicit)


@dataclass(frozen=True)
class Pos:
    """1-based line/column and underline width of a key (None for list items) and its value."""

    key: tuple[int, int, int] | None
    value: tuple[int, int, int]


@dataclass
class LoadedYaml:
    data: object
    positions: dict[tuple, Pos]
    source_lines: list[str]
    file: str


def parse_path(text: str) -> tuple:
    """Inverse of :func:`format_path` for plain keys: 'model.layers[0].units'."""
    parts: list = []
    for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", text):
        parts.append(int(m.group(2)) if m.group(2) is not None else m.group(1))
    return tuple(parts)


def _mark_pos(node, lines: list[str]) -> tuple[int, int, int]:
    sm, em = node.start_mark, node.end_mark
    if em.line == sm.line and em.index > sm.index:
        span = em.index - sm.index
    else:
        text = lines[sm.line] if sm.line < len(lines) else ""
        span = len(text[sm.column :].split(" #")[0].rstrip()) or 1
    return (sm.line + 1, sm.column + 1, max(1, span))


class _Builder:
    def __init__(self, file: str, lines: list[str]):
        self.file = file
        self.lines = lines
        self.positions: dict[tuple, Pos] = {}
        self.diags: list[Diagnostic] = []
        self._stack: set[int] = set()

    def _diag(self, code, message, pos, path, **kw) -> None:
        self.diags.append(diagnostic_at(code, message, self.file, pos, path, **kw))

    def build(self, node, path: tuple, key_pos=None):
        vpos = _mark_pos(node, self.lines)
        self.positions[path] = Pos(key_pos, vpos)
        if id(node) in self._stack:
            self._diag("E001", "recursive YAML alias", vpos, path)
            return None
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path, vpos)
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    self._diag("E001", f"unsupported YAML tag '{node.tag}'", vpos, path)
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            if node.tag != _MAP:
                self._diag("E001", f"unsupported YAML tag '{node.tag}'", vpos, path)
            out: dict = {}
            first: dict[str, tuple[int, int, int]] = {}
            for knode, vnode in node.value:
                kpos = _mark_pos(knode, self.lines)
                if not isinstance(knode, yaml.ScalarNode):
                    self._diag("E001", "a mapping key must be a plain scalar", kpos, path)
                    continue
                key = knode.value
                if key in first:
                    fl, fc, _ = first[key]
                    where = f"in {format_path(path)}" if path else "at the top level"
                    self._diag(
                        "E002",
                        f"duplicate key '{key}' {where} (first defined at line {fl}, "
                        f"column {fc})",
                        kpos,
                        path + (key,),
                        note=f"the first '{key}' is at line {fl}; YAML would silently keep "
                        "only one of them",
                        extra={"first_line": fl, "first_col": fc},
                    )
                    continue
                first[key] = kpos
                out[key] = self.build(vnode, path + (key,), kpos)
            return out
        finally:
            self._stack.discard(id(node))

    def _scalar(self, node, path, vpos):
        text = node.value
        tag = node.tag
        if tag == _PLAIN_TAG:
            return resolve_plain(text)
        if tag == _STR:
            return text
        if tag == _NULL:
            return None
        value = resolve_plain(text)
        ok = {
            _INT: isinstance(value, int) and not isinstance(value, bool),
            _FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
            _BOOL: isinstance(value, bool),
        }
        if tag not in ok:
            self._diag("E001", f"unsupported YAML tag '{tag}'", vpos, path)
            return text
        if not ok[tag]:
            self._diag("E001", f"'{text}' is not a valid {tag.rsplit(':', 1)[-1]}", vpos, path)
            return text
        return float(value) if tag == _FLOAT else value


def load_yaml(file: str, text: str) -> LoadedYaml:
    """Parse ``text`` (the contents of ``file``) into data plus a position map.

    Raises GraphdlError(phase="yaml") with E001 (syntax) or E002 (duplicate keys: all of them).
    """
    lines = text.splitlines()
    try:
        root = yaml.compose(text, Loader=SpecLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "invalid YAML"
        msg = f"YAML syntax error: {problem}"
        note = None
        if e.context:
            note = e.context
            if e.context_mark is not None and e.context_mark is not mark:
                cm = e.context_mark
                note += f" (started at line {cm.line + 1}, column {cm.column + 1})"
        help_ = None
        if "\\t" in problem or "tab" in problem:
            help_ = "YAML does not allow tabs for indentation; use spaces"
        raise GraphdlError(
            Diagnostic(
                code="E001",
                message=msg,
                file=file,
                line=mark.line + 1 if mark else None,
                col=mark.column + 1 if mark else None,
                help=help_,
                note=note,
            ),
            phase="yaml",
        ) from None
    except yaml.YAMLError as e:  # non-marked errors (e.g. a reader error on odd bytes)
        raise GraphdlError(
            Diagnostic(code="E001", message=f"YAML error: {e}", file=file), phase="yaml"
        ) from None
    if root is None:
        raise GraphdlError(
            Diagnostic(
                code="E001",
                message="the spec is empty: expected a mapping starting with 'graphdl: 1'",
                file=file,
                line=1,
                col=1,
            ),
            phase="yaml",
        )
    b = _Builder(file, lines)
    data = b.build(root, ())
    if b.diags:
        b.diags.sort(key=lambda d: (d.line or 0, d.col or 0))
        raise GraphdlError(b.diags, phase="yaml")
    return LoadedYaml(data=data, positions=b.positions, source_lines=lines, file=file)


def read_spec_text(path) -> str:
    """Read a spec file as UTF-8, reporting an unreadable file as E001."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise GraphdlError(
            Diagnostic(code="E001", message=f"cannot read spec file '{path}': {reason}",
                       file=str(path)),
            phase="yaml",
        ) from None
