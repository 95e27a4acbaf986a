"""The CPU kernel cache key covers what the generated step's machine code is made of."""

from __future__ import annotations

import inspect

from graphdl.backends.common import cache as common
from graphdl.backends.cpu import cache
from graphdl.ops import conv, elementwise


def test_key_covers_the_jitted_helpers_a_kernel_calls():
    """Numba's cache of a step holds its callees' code: a kernel's key text includes the
    source of the helpers it calls, recursively (conv2d_fwd -> _fwd_block -> _im2col), and
    the module constants they read."""
    text = common.function_source("conv2d_fwd")
    for helper in (conv._fwd_block, conv._im2col, conv._pad_sample, conv._geometry):
        assert inspect.getsource(helper) in text
    assert f"WIDE_LIMIT={conv.WIDE_LIMIT!r}" in text
    assert f"PAR_BLOCKS={conv.PAR_BLOCKS!r}" in text


def test_key_changes_with_a_helper(monkeypatch):
    source = "def step(x):\n    K.conv2d_fwd(x)\n"
    before = cache.source_key(source)
    common.function_source.cache_clear()
    monkeypatch.setattr(conv, "WIDE_LIMIT", conv.WIDE_LIMIT + 1)
    try:
        assert cache.source_key(source) != before
    finally:
        common.function_source.cache_clear()


def test_numba_cache_folder_follows_the_kernel_flags(tmp_path):
    """Numba re-validates a cached kernel against its own source file only: the folder it
    caches into is named by the files holding the flags and constants all kernels are
    compiled with, so changing those cannot serve stale machine code."""
    flags = tmp_path / "registry.py"
    flags.write_text('FASTMATH = {"nsz"}\n')
    before = common.numba_cache_dir(tmp_path, (flags,))
    assert common.numba_cache_dir(tmp_path, (flags,)) == before
    flags.write_text('FASTMATH = {"nsz", "arcp"}\n')
    assert common.numba_cache_dir(tmp_path, (flags,)) != before
    assert before.parent == tmp_path / "numba"


def test_key_covers_a_float32_scalar_function_and_its_helpers():
    """Generated loops call an op's float32 scalar function as ``K.s32_<op>``: its key text
    is that function's source and the helpers it calls (the exp it is built on)."""
    text = common.function_source("s32_sigmoid")
    assert inspect.getsource(elementwise._sigmoid_f32) in text
    assert inspect.getsource(elementwise.exp_nonpositive_f32) in text
    assert common.function_source("s32_relu").startswith("<unknown")  # relu has none
