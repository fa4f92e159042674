"""Convert the original UCI Adult files into the demo dataset shipped with the project.

The originals have no header, ", " separators, "?" for unknown values and, in the test
split, a comment first line and labels ending in a period. This script writes clean,
gzip-compressed CSV files with a header and empty fields for unknown values. It is run by
hand once (its output is committed); the pipeline never needs it.

Usage: python scripts/prepare_adult.py ../shared/datasets/adult data/adult
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
]


def convert(src: Path, dst: Path) -> int:
    """Rewrite one original Adult file as a clean CSV; return the number of rows."""
    rows = 0
    with gzip.open(src, "rt", encoding="utf-8") as fin, gzip.GzipFile(
        dst, "wb", mtime=0  # mtime=0 keeps the compressed bytes reproducible
    ) as raw:
        raw.write((",".join(COLUMNS) + "\n").encode())
        for line in fin:
            line = line.strip()
            if not line or line.startswith("|"):
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != len(COLUMNS):
                raise ValueError(f"{src}: expected {len(COLUMNS)} fields, got {line!r}")
            fields = ["" if f == "?" else f for f in fields]
            fields[-1] = fields[-1].rstrip(".")
            raw.write((",".join(fields) + "\n").encode())
            rows += 1
    return rows


def main() -> None:
    """Convert both splits."""
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    for name, out in (("adult.data.gz", "adult_train.csv.gz"), ("adult.test.gz", "adult_test.csv.gz")):
        print(out, convert(src / name, dst / out))


if __name__ == "__main__":
    main()
