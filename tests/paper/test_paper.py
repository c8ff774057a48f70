"""paper/: every transcribed table has the paper's shape, row ids shared with
variants/, and -- read against the paper's own text -- the printed values."""

import csv
import re

import pytest
from conftest import SHARED

from study.paper import PAPER_DIR, mismatches
from study.variants import load_tables

PAPER_TEXT = SHARED / "seeds" / "000_3949b1be53b8d13f.txt"
ABLATION_COLUMNS = ["row_id", "name", "params_m", "flops_g", "iou", "dsc"]
TABLE1_COLUMNS = ["row_id", "name", "venue"] + [
    f"{ds}_{m}{s}" for ds in ("isic2017", "isic2018", "ph2") for m in ("iou", "dsc") for s in ("", "_std")
] + ["params_m", "flops_g"]
SHAPES = {"table1": 16, "table2": 4, "table3": 8, "table4": 3, "table5": 6, "table6": 3, "table7": 6}


def _csv(table):
    with (PAPER_DIR / f"{table}.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


@pytest.mark.parametrize("table,n_rows", SHAPES.items())
def test_shape_and_ids(table, n_rows):
    columns, rows = _csv(table)
    assert columns == (TABLE1_COLUMNS if table == "table1" else ABLATION_COLUMNS)
    assert len(rows) == n_rows
    variant_ids = [r.id for r in load_tables()[table].rows]
    assert [r["row_id"] for r in rows] == variant_ids
    for r in rows:
        for key in columns[3 if table == "table1" else 2:]:
            float(r[key])  # every number parses


def _paper_tables():
    """Table number -> list of cell lists, parsed from the paper's text."""
    if not PAPER_TEXT.is_file():
        return None
    lines = PAPER_TEXT.read_text().splitlines()
    tables = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"Table (\d)", line.strip())
        if not m:
            continue
        body = []
        for nxt in lines[i + 1:]:
            if nxt.startswith("|"):
                body.append([c.strip() for c in nxt.strip().strip("|").split("|")])
            elif body:
                break
        # drop header rows and the rule: data rows start with a non-empty name
        tables[int(m.group(1))] = [r for r in body[1:] if r[0] and not set(r[0]) <= set("-")]
    return tables


@pytest.fixture(scope="module")
def paper_tables(real_samples):  # real_samples: ../shared must be present (fails under CI)
    tables = _paper_tables()
    assert tables is not None, f"{PAPER_TEXT} missing"
    return tables


def test_table1_values_match_the_paper_text(paper_tables):
    _, rows = _csv("table1")
    printed = paper_tables[1]
    assert len(printed) == len(rows)
    for ours, cells in zip(rows, printed):
        name = re.sub(r"\s*\[\d+\]", "", cells[0])
        assert ours["name"] == name
        assert ours["venue"] == cells[1]
        values = []
        for cell in cells[2:8]:
            mean, std = cell.split("±")
            values += [mean.strip(), std.strip()]
        values += cells[8:10]
        assert [ours[c] for c in TABLE1_COLUMNS[3:]] == values, ours["row_id"]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_ablation_values_match_the_paper_text(paper_tables, n):
    _, rows = _csv(f"table{n}")
    printed = paper_tables[n]
    assert len(printed) == len(rows)
    for ours, cells in zip(rows, printed):
        assert ours["name"] == cells[0]
        assert [ours[c] for c in ABLATION_COLUMNS[2:]] == cells[1:5], ours["row_id"]


def test_documented_mismatches_name_real_rows():
    ids = {r.id for t in load_tables().values() for r in t.rows}
    assert mismatches(), "paper/differences.toml lists the rows the paper contradicts (kind complexity)"
    for (row, quantity), m in mismatches().items():
        assert row in ids and m.note
