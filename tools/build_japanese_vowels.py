"""Build graphdl's bundled ``japanese_vowels`` and ``airline`` datasets (dev tool; not part of
the runtime).

Both come from the files inside sktime's wheel, read as plain files from the zip archive
(sktime is never imported or installed, and graphdl never needs it at run time):

- ``sktime/datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts`` and ``..._TEST.ts``: the
  UCI Japanese Vowels set in the UEA/UCR ``.ts`` format, parsed with graphdl's own ``.ts``
  reader (`graphdl.data.sequences.read_ts`);
- ``sktime/datasets/data/Airline/Airline.csv``: the monthly airline passengers 1949-1960.

It writes ``graphdl/data/builtin/japanese_vowels.npz`` with ``japanese_vowels_LICENSE.txt``
and ``airline.npz`` with ``airline_LICENSE.txt``, and checks the facts the tests hold
(counts, lengths, classes).

Usage::

    pip download sktime --no-deps -d /tmp/skt
    python tools/build_japanese_vowels.py /tmp/skt/sktime-*.whl [--out-dir graphdl/data/builtin]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from graphdl.data.sequences import read_ts

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "graphdl" / "data" / "builtin"

TS_MEMBERS = {
    "train": "sktime/datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts",
    "test": "sktime/datasets/data/JapaneseVowels/JapaneseVowels_TEST.ts",
}
AIRLINE_MEMBER = "sktime/datasets/data/Airline/Airline.csv"
SCALE = 1_000_000  # the .ts files give every coefficient with at most 6 decimals

VOWELS_LICENSE = """\
graphdl built-in dataset: japanese_vowels
=========================================

Source
------
"Japanese Vowels" data set, UCI Machine Learning Repository.
  M. Kudo, J. Toyama and M. Shimbo (1999). Multidimensional Curve Classification Using
  Passing-Through Regions. Pattern Recognition Letters 20(11-13), 1103-1111.
  https://archive.ics.uci.edu/dataset/128  (DOI 10.24432/C5NS47)
as distributed in the UEA/UCR time-series classification archive format (.ts,
timeseriesclassification.com), in the copy carried by sktime's wheel
({wheel}: {members}).

Nine male speakers uttered the Japanese vowels /ae/ in succession; each utterance is a
series of 7 to 29 frames of 12 LPC cepstrum coefficients. The task is to tell the speaker.

Licence
-------
Creative Commons Attribution 4.0 International (CC BY 4.0)
  https://creativecommons.org/licenses/by/4.0/
The data are redistributed unchanged apart from the storage format described below.

Contents of japanese_vowels.npz
-------------------------------
The standard split: 270 train utterances (30 per speaker) and 370 test utterances (24 to 88
per speaker), each in the order of its .ts file.
  train_x, test_x             : int32 [frames, 12]  every frame of every utterance, one after
                                the other, in millionths (value = x / 1e6, exactly the
                                6-decimal numbers of the .ts files)
  train_lengths, test_lengths : uint8 [utterances]  frames per utterance (7..29)
  train_y, test_y             : uint8 [utterances]  speaker 0..8 (the .ts class label 1..9,
                                minus one)

How the file was built
----------------------
  python tools/build_japanese_vowels.py <sktime wheel>
which reads both .ts files from the wheel with graphdl's .ts reader, checks that every
value is a whole number of millionths, and writes them with numpy.savez_compressed.
sha256 of the arrays (in the order above, train then test): {digest}
"""

AIRLINE_LICENSE = """\
graphdl built-in dataset: airline
=================================

Source
------
The classic Box & Jenkins airline data: monthly totals of international airline passengers
(in thousands), January 1949 to December 1960, 144 months.
  G. E. P. Box, G. M. Jenkins and G. C. Reinsel (1976). Time Series Analysis, Forecasting
  and Control, third edition. Holden-Day. Series G.
as distributed in sktime's wheel ({wheel}: {member}); the same series is R's
datasets::AirPassengers.

Licence
-------
A published table of historical facts (144 monthly counts), distributed with sktime under
its BSD 3-Clause licence and with R's datasets package; graphdl redistributes the numbers
unchanged.

Contents of airline.npz
-----------------------
  passengers : uint16 [144]  passengers (thousands) per month, in time order
  month      : int32 [144]   the month as yyyymm (194901 .. 196012)

How the file was built
----------------------
  python tools/build_japanese_vowels.py <sktime wheel>
which reads Airline.csv (columns Date, Passengers) from the wheel and writes the arrays with
numpy.savez_compressed.
sha256 of (passengers bytes + month bytes): {digest}
"""


def _read_ts_member(wheel: zipfile.ZipFile, member: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(member).name
        path.write_bytes(wheel.read(member))
        return read_ts(path)


def build_vowels(wheel: zipfile.ZipFile, wheel_name: str, out_dir: Path) -> Path:
    arrays: dict[str, np.ndarray] = {}
    for split, member in TS_MEMBERS.items():
        ts = _read_ts_member(wheel, member)
        if ts.class_names != [str(k) for k in range(1, 10)]:
            raise SystemExit(f"{member}: unexpected classes {ts.class_names}")
        frames = np.concatenate([ts.x[i, : ts.lengths[i]] for i in range(len(ts.lengths))])
        scaled = np.round(frames.astype(np.float64) * SCALE)
        # float32 of the parsed text against float32 of the stored integers: exact
        if not np.array_equal((scaled / SCALE).astype(np.float32), frames):
            raise SystemExit(f"{member}: values are not whole millionths")
        arrays[f"{split}_x"] = scaled.astype(np.int32)
        arrays[f"{split}_lengths"] = ts.lengths.astype(np.uint8)
        arrays[f"{split}_y"] = ts.label.astype(np.uint8)
    counts = {s: len(arrays[f"{s}_y"]) for s in TS_MEMBERS}
    if counts != {"train": 270, "test": 370}:
        raise SystemExit(f"unexpected utterance counts {counts}")
    lengths = np.concatenate([arrays["train_lengths"], arrays["test_lengths"]])
    if (int(lengths.min()), int(lengths.max())) != (7, 29):
        raise SystemExit(f"unexpected lengths {lengths.min()}..{lengths.max()}")
    if np.bincount(arrays["train_y"]).tolist() != [30] * 9:
        raise SystemExit("the train split is not 30 utterances per speaker")

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "japanese_vowels.npz"
    np.savez_compressed(path, **arrays)
    digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in (
        "train_x", "train_lengths", "train_y", "test_x", "test_lengths", "test_y"))).hexdigest()
    (out_dir / "japanese_vowels_LICENSE.txt").write_text(
        VOWELS_LICENSE.format(wheel=wheel_name, members=", ".join(TS_MEMBERS.values()),
                              digest=digest), encoding="utf-8")
    return path


def build_airline(wheel: zipfile.ZipFile, wheel_name: str, out_dir: Path) -> Path:
    text = wheel.read(AIRLINE_MEMBER).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    month = np.asarray([int(r["Date"].replace("-", "")) for r in rows], np.int32)
    passengers = np.asarray([int(float(r["Passengers"])) for r in rows], np.uint16)
    expected = [y * 100 + m for y in range(1949, 1961) for m in range(1, 13)]
    if month.tolist() != expected:
        raise SystemExit("Airline.csv does not hold the months 1949-01 .. 1960-12 in order")
    if (int(passengers[0]), int(passengers[-1]), int(passengers.max())) != (112, 432, 622):
        raise SystemExit("Airline.csv does not hold the classic series")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "airline.npz"
    np.savez_compressed(path, passengers=passengers, month=month)
    digest = hashlib.sha256(passengers.tobytes() + month.tobytes()).hexdigest()
    (out_dir / "airline_LICENSE.txt").write_text(
        AIRLINE_LICENSE.format(wheel=wheel_name, member=AIRLINE_MEMBER, digest=digest),
        encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="sktime's wheel (pip download sktime --no-deps)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        for build in (build_vowels, build_airline):
            path = build(wheel, args.wheel.name, args.out_dir)
            print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
