"""Build graphdl's bundled ``digits`` dataset (dev tool; not part of the runtime).

Reads scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten Digits"
8x8 data and writes ``graphdl/data/builtin/digits.npz`` (``x`` uint8 [1797, 64] with values
0..16, ``y`` uint8 [1797] with labels 0..9) plus ``digits_LICENSE.txt`` next to it.

scikit-learn is only needed to run this tool; graphdl loads the committed ``.npz`` file.

Usage::

    python tools/build_digits.py [--out-dir graphdl/data/builtin]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "graphdl" / "data" / "builtin"

LICENSE_TEXT = """\
graphdl built-in dataset: digits
================================

Source
------
"Optical Recognition of Handwritten Digits" data set, UCI Machine Learning Repository.
  E. Alpaydin and C. Kaynak (1998).
  https://archive.ics.uci.edu/dataset/80
as distributed by scikit-learn (sklearn.datasets.load_digits, which bundles the 8x8 test
split of the UCI data: 1,797 samples).

Licence
-------
Creative Commons Attribution 4.0 International (CC BY 4.0)
  https://creativecommons.org/licenses/by/4.0/
The data are redistributed unchanged apart from the storage format described below.

Contents of digits.npz
----------------------
  x : uint8 [1797, 64]  the 8x8 images flattened row-major; each value is a count 0..16
  y : uint8 [1797]      the digit label 0..9

How the file was built
----------------------
  python tools/build_digits.py
which calls sklearn.datasets.load_digits() (scikit-learn {sklearn_version}), casts the
features and labels to uint8 (lossless: all values are integers in 0..16 and 0..9) and
writes them with numpy.savez_compressed. Sample order is that of scikit-learn's copy.
sha256 of (x bytes + y bytes): {digest}
"""


def build(out_dir: Path) -> Path:
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = np.asarray(bunch.data)
    target = np.asarray(bunch.target)
    if data.shape != (1797, 64) or target.shape != (1797,):
        raise SystemExit(f"unexpected digits shapes {data.shape}, {target.shape}")
    if not np.array_equal(data, np.round(data)) or data.min() < 0 or data.max() > 16:
        raise SystemExit("digits features are not integers in 0..16")
    if set(np.unique(target).tolist()) != set(range(10)):
        raise SystemExit("digits labels are not 0..9")

    x = np.ascontiguousarray(data.astype(np.uint8))
    y = np.ascontiguousarray(target.astype(np.uint8))

    out_dir.mkdir(parents=True, exist_ok=True)
    npz_path = out_dir / "digits.npz"
    np.savez_compressed(npz_path, x=x, y=y)

    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    (out_dir / "digits_LICENSE.txt").write_text(
        LICENSE_TEXT.format(sklearn_version=sklearn.__version__, digest=digest),
        encoding="utf-8",
    )
    return npz_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    path = build(args.out_dir)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
