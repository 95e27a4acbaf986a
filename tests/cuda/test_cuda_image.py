"""Image ops on the CUDA backend (graphdl/backends/cuda/kernels/image.py): preprocessing
against the ops' NumPy references, and the seeded augmentations against the references and,
bit for bit, against the CPU backend (the same draws of the counter-based hash, so a run
augments its batches identically on both devices). On the simulator when there is no GPU.

Shapes are tiny but cover a grid-stride loop over more items than the grid has threads,
upscaling and downscaling, kernels wider than the image (reflection and edge repeats past
both sides), and samples an augmentation skips beside samples it changes.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, check_kernel, compile_single, reference

from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph

IMG = T("N", 3, 5, 4)
SEED = T(dtype="int64")


def _images(n=2, c=3, h=5, w=4, seed=0, dtype="float32"):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


# ---------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("size,mode", [((7, 3), "bilinear"), ((2, 6), "bilinear"),
                                       ((7, 3), "nearest"), ((2, 6), "nearest")])
def test_resize(size, mode):
    (out,) = check_kernel("resize", [IMG], [_images(seed=1)], {"size": size, "interpolation": mode},
                          rtol=1e-6, atol=1e-7)
    assert out.shape == (2, 3, *size)


@pytest.mark.parametrize("op", ["grayscale", "rgb_to_yuv"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_colour(op, dtype):
    check_kernel(op, [T("N", 3, 5, 4, dtype=dtype)], [_images(seed=2, dtype=dtype)],
                 rtol=1e-6, atol=1e-7)


def test_select_channels():
    (out,) = check_kernel("select_channels", [IMG], [_images(seed=3)], {"channels": (2, 0, 2)})
    assert out.shape == (2, 3, 5, 4)


def test_normalize_channels():
    r = np.random.default_rng(4)
    mean = r.random(3).astype(np.float32)
    std = (r.random(3) + 0.5).astype(np.float32)
    check_kernel("normalize_channels", [IMG, T(3), T(3)], [_images(seed=4), mean, std],
                 rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel,sigma", [(3, 0.8), (7, 2.0)])  # 7: wider than the image
def test_gaussian_blur(kernel, sigma):
    check_kernel("gaussian_blur", [IMG], [_images(seed=5)], {"kernel": kernel, "sigma": sigma},
                 rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kernel", [3, 5])
def test_median_filter(kernel):
    x = _images(seed=6)
    x[0, 1, 2, :] = x[0, 1, 1, :]  # ties in a window
    (out,) = check_kernel("median_filter", [IMG], [x], {"kernel": kernel})
    np.testing.assert_array_equal(out, reference("median_filter", [x], {"kernel": kernel}, {})[0])


# ---------------------------------------------------------------------------- augmentation

AUGMENT = {
    "random_rotation": {"degrees": 30.0, "p": 0.5, "fill": -1.0, "salt": 1},
    "random_flip": {"horizontal": True, "vertical": True, "p": 0.3, "salt": 2},
    "gaussian_noise": {"std": 0.3, "p": 0.6, "salt": 3},
    "salt_pepper_noise": {"amount": 0.3, "p": 0.7, "salt": 4},
}


@pytest.mark.parametrize("op", sorted(AUGMENT))
def test_augmentation_matches_the_reference(op):
    """Against the NumPy reference for two seeds; with p < 1, some samples are left as
    they are and others changed (checked for one seed)."""
    x = _images(n=5, seed=7)
    prog = compile_single(op, [IMG, SEED], AUGMENT[op])
    for seed in (11, -3):
        got = prog({"x0": x, "x1": np.int64(seed)})["out0"]
        (want,) = reference(op, [x, np.int64(seed)], AUGMENT[op], {})
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{op} seed {seed}")
        if seed == 11:
            same = [np.array_equal(got[a], x[a]) for a in range(5)]
            assert any(same) and not all(same), (op, same)


def _augment_chain() -> Graph:
    """Every augmentation in a row, as data.augment lowers them (one seed, a salt each)."""
    g = Graph()
    v = g.input("x", T("N", 2, 6, 5))
    seed = g.input("seed", SEED)
    for op in ("random_rotation", "random_flip", "gaussian_noise", "salt_pepper_noise"):
        v = g.op(op, v, seed, **AUGMENT[op])
        g.outputs[op] = v
    return g


def test_augmentations_are_the_same_bits_on_both_devices():
    g = _augment_chain()
    cpu = compile_graph(g, "cpu", title="test_augment_chain")
    gpu = compile_graph(g, "cuda", title="test_cuda_augment_chain")
    x = np.random.default_rng(8).random((4, 2, 6, 5)).astype(np.float32)
    for prog in (cpu, gpu):
        prog.bind_params({}, {})
    for seed in (0, 12345):
        feeds = {"x": x, "seed": np.int64(seed)}
        want, got = cpu(feeds), gpu(feeds)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} seed {seed}")
