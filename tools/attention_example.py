"""Draw synthetic attention weights of a sequence-reversal model (tools/img/attention_example.png).

    python tools/attention_example.py                      # the PNG (needs chromium)
    python tools/attention_example.py --html att.html      # also keep the page
    python tools/attention_example.py --svg att.svg        # and the static SVG

The weights are made up, shaped like those of a trained encoder-decoder that reverses its
input: the decoder's cross-attention puts output step i on source token T-1-i (the
anti-diagonal), its causal self-attention looks at the last few steps, and the encoder's
heads attend locally, to their neighbours or to the first token. Nothing is trained.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from graphdl.viz.attention import write_attention

REPO = Path(__file__).resolve().parents[1]

HEADS = 4


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    # subtract the row max so exp never overflows; -inf (masked) becomes exactly 0
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def peaked(targets: np.ndarray, tk: int, sharpness: float, rng: np.random.Generator) -> np.ndarray:
    """Rows that put most weight on key ``targets[i]``, plus a little noise."""
    scores = rng.normal(0.0, 0.6, size=(len(targets), tk))
    scores[np.arange(len(targets)), targets] += sharpness
    return scores


def reverse_sample(digits: list[str], rng: np.random.Generator) -> dict:
    t = len(digits)
    src = digits + ["<eos>"]
    tgt_in = ["<bos>"] + digits[::-1]
    ts, tt = len(src), len(tgt_in)
    pos_s = np.arange(ts)
    pos_t = np.arange(tt)

    # encoder self-attention: head 0 itself, head 1 the previous token, head 2 the next,
    # head 3 mostly the first token and <eos> (a "sink" head)
    enc = []
    for sharp in (3.5, 5.0):
        heads = [
            peaked(pos_s, ts, sharp, rng),
            peaked(np.maximum(pos_s - 1, 0), ts, sharp, rng),
            peaked(np.minimum(pos_s + 1, ts - 1), ts, sharp, rng),
            peaked(np.where(pos_s % 2 == 0, 0, ts - 1), ts, sharp - 1.0, rng),
        ]
        enc.append(softmax_rows(np.stack(heads)))

    # decoder causal self-attention: recent steps
    future = pos_t[None, :] > pos_t[:, None]
    dec_self = []
    for h in range(HEADS):
        back = np.maximum(pos_t - (h % 3), 0)
        scores = peaked(back, tt, 3.0, rng)
        scores[future] = -np.inf
        dec_self.append(scores)
    dec_self = softmax_rows(np.stack(dec_self))

    # cross-attention: output step i (predicting the i-th reversed digit) reads source
    # position T-1-i; the last step (predicting <eos>) reads <eos>
    target = np.where(pos_t < t, t - 1 - pos_t, ts - 1)
    cross = softmax_rows(np.stack([peaked(target, ts, 5.0 - 0.8 * h, rng) for h in range(HEADS)]))

    return {
        "name": "reverse " + " ".join(digits),
        "layers": [
            {"name": "encoder.0.multihead_attention", "kind": "self", "weights": enc[0],
             "query_tokens": src, "key_tokens": src},
            {"name": "encoder.1.multihead_attention", "kind": "self", "weights": enc[1],
             "query_tokens": src, "key_tokens": src},
            {"name": "decoder.0.self_attention", "kind": "causal", "weights": dec_self,
             "query_tokens": tgt_in, "key_tokens": tgt_in},
            {"name": "decoder.0.cross_attention", "kind": "cross", "weights": cross,
             "query_tokens": tgt_in, "key_tokens": src},
        ],
    }


def example_samples(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = (["3", "1", "4", "1", "5", "9", "2", "6", "5", "3"], ["7", "2", "8", "1", "8", "2"])
    return [reverse_sample(list(w), rng) for w in words]


def screenshot(html: Path, png: Path, size: str = "1600,1000", hash_: str = "") -> None:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(n)), None)
    if exe is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="graphdl-chromium-") as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--virtual-time-budget=5000", f"--window-size={size}",
                        f"--user-data-dir={profile}", f"--screenshot={png}", html.as_uri() + hash_],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--png", type=Path, default=REPO / "tools" / "img" / "attention_example.png")
    ap.add_argument("--html", type=Path, help="also keep the HTML page here")
    ap.add_argument("--svg", type=Path, help="also write the static SVG here")
    args = ap.parse_args()
    samples = example_samples()
    title = "attention weights: transformer reversing digit sequences (synthetic)"
    if args.svg:
        write_attention(args.svg, samples, title)
    with tempfile.TemporaryDirectory() as tmp:
        html = args.html or Path(tmp) / "attention.html"
        write_attention(html, samples, title)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        # scrolled to the decoder; the cursor on the cross-attention's mean map, where query 1
        # looks at key T-1-1
        screenshot(html, args.png, hash_="#layer=2&hover=3,mean,1,8")
    print(args.png)


if __name__ == "__main__":
    main()
