"""Parameter and state initialisation (glorot/he uniform/normal, N(0, 1), zeros), seeded per name.

Each tensor draws from its own stream keyed by (seed, name), so adding a layer does not
change the initial weights of the others.
"""

from __future__ import annotations

import zlib

import numpy as np

from graphdl.ir.graph import Graph, Value


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def init_tensor(init: str, shape: tuple, fan_in: int, fan_out: int, rng) -> np.ndarray:
    if init == "zeros":
        return np.zeros(shape, np.float32)
    if init == "ones":
        return np.ones(shape, np.float32)
    if init == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if init == "glorot_normal":
        return (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(np.float32)
    if init == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if init == "he_normal":
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if init == "uniform_hidden":  # recurrent weights, as torch.nn.RNN/LSTM/GRU: fan_in = hidden
        limit = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if init == "normal":  # N(0, 1): embedding tables, as torch.nn.Embedding
        return rng.standard_normal(shape).astype(np.float32)
    raise ValueError(f"unknown initialiser {init!r}")


def init_params(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    params = {}
    for name, nid in sorted(graph.named("param").items()):
        a = graph.attrs(nid)
        t = graph.type_of(Value(nid))
        params[name] = init_tensor(
            a.get("init", "zeros"), t.shape, a.get("fan_in", 1), a.get("fan_out", 1), _rng(seed, name)
        )
        if "zero_row" in a:  # embedding's padding row starts at zero (as PyTorch)
            params[name][a["zero_row"]] = 0
    return params


def init_state(graph: Graph) -> dict[str, np.ndarray]:
    """Optimiser and layer state, from each node's `init` (zeros or ones, e.g. batch norm's
    running variance); rank-0 state is a 1-element array at run time."""
    state = {}
    for name, nid in sorted(graph.named("state").items()):
        t = graph.type_of(Value(nid))
        fill = {"zeros": 0, "ones": 1}[graph.attrs(nid).get("init", "zeros")]
        state[name] = np.full(t.shape or (1,), fill, t.dtype)
    return state
