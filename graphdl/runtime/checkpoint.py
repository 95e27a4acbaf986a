"""Checkpoint files: safetensors tensors plus JSON metadata, written atomically.

Layout: a standard safetensors file (``safetensors.numpy``); the caller's ``meta`` dict is
stored as JSON under the safetensors metadata key ``"graphdl"``. Nothing is pickled, so
loading an untrusted checkpoint cannot run code.

Writes go to a temporary file in the destination directory, which is flushed and fsynced
and then moved over the destination with ``os.replace``: a crash or error mid-write leaves
either the old file or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from graphdl.errors import Diagnostic, GraphdlError

META_KEY = "graphdl"
# safetensors: 8-byte little-endian header length, then that many bytes of JSON header
_HEADER_LEN = struct.Struct("<Q")
_MAX_HEADER = 100 * 1024 * 1024


def _serialize(tensors: dict[str, np.ndarray], meta: dict) -> bytes:
    if not isinstance(meta, dict):
        raise TypeError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    arrays = {}
    for name, arr in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"checkpoint tensor names must be str, got {name!r}")
        arr = np.asarray(arr)
        # (not np.ascontiguousarray: it would turn a 0-d scalar into shape [1])
        arrays[name] = arr if arr.flags.c_contiguous else np.array(arr, order="C")
    meta_json = json.dumps(meta, sort_keys=True, allow_nan=True)
    return safetensors.numpy.save(arrays, metadata={META_KEY: meta_json})


def _write_bytes(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (best effort; not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``tensors`` and ``meta`` to ``path`` atomically (safetensors format).

    ``meta`` must be JSON-serialisable. The parent directory is created if missing. On any
    error the previous file at ``path`` (if any) is left untouched and no temporary file
    remains.
    """
    path = Path(path)
    data = _serialize(tensors, meta)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    try:  # keep the permissions of the file being replaced (mkstemp makes it 0600)
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            _write_bytes(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _corrupt(path: Path, why: str, help: str | None = None) -> GraphdlError:
    return GraphdlError(
        Diagnostic(
            code="E401",
            message=f"cannot load checkpoint '{path}': {why}",
            file=str(path),
            help=help
            or "the file is not a complete graphdl checkpoint (safetensors); it may be "
            "truncated or from another tool: re-create it by training again",
            extra={"checkpoint": str(path)},
        ),
        phase="load",
    )


def _read_metadata(path: Path, data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER_LEN.size:
        raise _corrupt(path, f"file is only {len(data)} bytes")
    (n,) = _HEADER_LEN.unpack_from(data)
    if n > _MAX_HEADER or _HEADER_LEN.size + n > len(data):
        raise _corrupt(path, "bad safetensors header length")
    try:
        header = json.loads(data[_HEADER_LEN.size : _HEADER_LEN.size + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _corrupt(path, f"bad safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "bad safetensors header")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise _corrupt(path, "bad safetensors metadata")
    return meta


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by `save_checkpoint`: ``(tensors, meta)``.

    Tensors come back as writable numpy arrays with their saved dtypes and shapes. A
    safetensors file without graphdl metadata loads with ``meta == {}``. Raises GraphdlError
    E401 (naming the path) when the file is missing, unreadable or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise _corrupt(
            path,
            "file does not exist",
            help="check the path; checkpoints are written by `graphdl train`",
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _corrupt(
            path, e.strerror or str(e), help="check the path and its permissions"
        ) from None
    meta_strs = _read_metadata(path, data)
    try:
        tensors = safetensors.numpy.load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as e:
        raise _corrupt(path, str(e) or type(e).__name__) from None
    raw_meta = meta_strs.get(META_KEY)
    if raw_meta is None:
        meta: dict = {}
    else:
        try:
            meta = json.loads(raw_meta)
        except (TypeError, ValueError) as e:
            raise _corrupt(path, f"graphdl metadata is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise _corrupt(path, "graphdl metadata is not a JSON object")
    out = {}
    for name, arr in tensors.items():
        out[name] = arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr)
    return out, meta
