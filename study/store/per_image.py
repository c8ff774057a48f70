"""The per-image confusion counts of a split: ``per_image_<split>.csv`` (id,tp,fp,fn,tn).

One writer and one reader, so training, the store's integrity check, the
report and the audit agree on the format. The reader parses, it never trusts:
a wrong header, a non-integer, a negative count or a repeated id is an error
naming the file and the line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from study.errors import StudyError

HEADER = ["id", "tp", "fp", "fn", "tn"]


def counts_csv(ids, counts) -> bytes:
    rows = np.asarray(counts, dtype=np.int64).reshape(-1, 4).tolist()
    if len(rows) != len(ids):
        raise ValueError(f"per-image counts: {len(ids)} ids but {len(rows)} rows")
    lines = [",".join(HEADER)] + [f"{i},{a},{b},{c},{d}" for i, (a, b, c, d) in zip(ids, rows)]
    return ("\n".join(lines) + "\n").encode()


def parse_counts(data: bytes, where: str) -> tuple[list[str], np.ndarray]:
    """Image ids and their (n, 4) TP/FP/FN/TN counts."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StudyError(f"{where}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != HEADER:
        raise StudyError(f"{where}: expected the header {','.join(HEADER)}, got {header}")
    ids: list[str] = []
    counts: list[list[int]] = []
    seen: set[str] = set()
    for line_no, line in enumerate(reader, start=2):
        if not line:
            continue
        if len(line) != 5:
            raise StudyError(f"{where} line {line_no}: expected 5 fields, got {len(line)}")
        try:
            values = [int(v) for v in line[1:]]
        except ValueError:
            raise StudyError(f"{where} line {line_no}: a count is not an integer") from None
        if min(values) < 0:
            raise StudyError(f"{where} line {line_no}: a count is negative")
        if line[0] in seen:
            raise StudyError(f"{where} line {line_no}: image id {line[0]!r} appears twice")
        seen.add(line[0])
        ids.append(line[0])
        counts.append(values)
    return ids, np.asarray(counts, dtype=np.int64).reshape(-1, 4)


def read_counts(path: Path) -> tuple[list[str], np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StudyError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_counts(data, str(path))
