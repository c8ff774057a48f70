"""Which tables of a report have runs of their own, said once, and which are shown compactly.

Every ablation table's "Ours" row is the same model as Table 3's, so after
``study run table3`` Tables 2, 4, 5 and 6 each hold one row of numbers, the
runs they share with Table 3. A table *has runs of its own* when some row with
completed runs is not shared with another table of the report; such a table is
rendered in full (Params, FLOPs, IoU, DSC, marks, failures). A table without
runs of its own is rendered compactly: Model, Params and FLOPs (counted from
the models), and the report says once where its shared numbers are.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.report.collect import TableData, dataset_label

METRIC_KINDS = ("metric", "external")


@dataclass(frozen=True)
class Coverage:
    table_id: str
    number: str
    profile: str
    rows: int  # rows of the table
    rows_with_runs: tuple[str, ...]  # names of rows with a completed run
    own: bool  # some row's runs are not shared with another table of the report
    shared_with: tuple[str, ...]  # numbers of the tables (with runs of their own) whose runs it shows

    @property
    def compact(self) -> bool:
        return not self.own

    @property
    def has_runs(self) -> bool:
        return bool(self.rows_with_runs)


def _rows_with_runs(td: TableData):
    return [r for r in td.rows if any(c.kind in METRIC_KINDS and c.key in r.cells for c in td.columns)]


def _hashes(td: TableData, row_id: str) -> set[str]:
    return {c.config_hash for c in td.cell_runs if c.row.id == row_id and c.completed}


def coverage(tables: list[TableData]) -> dict[str, Coverage]:
    """For each table of the report: its rows with runs, and whether any of them are its own."""
    run_rows = {td.id: _rows_with_runs(td) for td in tables}
    hashes = {td.id: {r.id: _hashes(td, r.id) for r in run_rows[td.id]} for td in tables}

    def elsewhere(td: TableData, h: str) -> list[str]:
        return [o.id for o in tables if o.id != td.id and any(h in hs for hs in hashes[o.id].values())]

    own = {td.id: any(not elsewhere(td, h) for hs in hashes[td.id].values() for h in hs) for td in tables}
    out = {}
    for td in tables:
        shared = []
        for hs in hashes[td.id].values():
            for h in hs:
                shared += [o for o in elsewhere(td, h) if own[o] and o not in shared]
        numbers = tuple(o.number for o in tables if o.id in shared)
        out[td.id] = Coverage(td.id, td.number, td.profile, len(td.rows),
                              tuple(r.name for r in run_rows[td.id]), own[td.id], numbers)
    return out


def _numbers(items: list[str]) -> str:
    if len(items) == 1:
        return f"Table {items[0]}"
    return "Tables " + ", ".join(items[:-1]) + " and " + items[-1]


def _profile_phrase(td: TableData, n: int | None) -> str:
    seeds = "" if n is None else f", {n} seed{'s' if n != 1 else ''} per cell"
    data = ", ".join(dataset_label(d) for d in td.datasets)
    return f"profile {td.profile}, {data}{seeds}"


def summary(tables: list[TableData], cover: dict[str, Coverage]) -> list[str]:
    """Plain sentences for the top of the report: which tables have runs, and which are compact and why."""
    groups: dict[str, list[str]] = {}
    for td in tables:
        c = cover[td.id]
        if c.own:
            rows = "every row" if len(c.rows_with_runs) == c.rows else f"{len(c.rows_with_runs)} of {c.rows} rows"
            groups.setdefault(f"{rows}; {_profile_phrase(td, td.typical_n('metric'))}", []).append(td.number)
    out = []
    if groups:
        out.append("Tables with runs: " + "; ".join(f"{_numbers(numbers)} ({what})" for what, numbers in groups.items())
                   + ".")
    else:
        out.append("No table has runs of its own yet.")
    shared = [td for td in tables if not cover[td.id].own and cover[td.id].has_runs]
    empty = [td for td in tables if not cover[td.id].has_runs]
    compact = []
    if shared:
        sources = sorted({n for td in shared for n in cover[td.id].shared_with}, key=_order)
        where = f"the same runs as {_numbers(sources)}, shown there" if sources else "runs another table shares"
        only_ours = all(r.is_reference for td in shared for r in td.rows if r.name in cover[td.id].rows_with_runs)
        what = ("only their “(Ours)” row" if only_ours else
                "only " + ", ".join(sorted({f"“{n}”" for td in shared for n in cover[td.id].rows_with_runs})))
        compact.append(f"{_numbers([td.number for td in shared])} hold {what}: {where}")
    if empty:
        profiles = sorted({td.profile for td in empty})
        under = f" under profile {profiles[0]}" if len(profiles) == 1 else ""
        compact.append(f"{_numbers([td.number for td in empty])} {'has' if len(empty) == 1 else 'have'} "
                       f"no runs{under}")
    if compact:
        out.append("Not shown in full (every row's Params and FLOPs are in the complexity table): "
                   + "; ".join(compact) + ".")
    return out


def _order(number: str):
    return (0, int(number)) if number.isdigit() else (1, number)


def shown_tables(tables: list[TableData], cover: dict[str, Coverage]) -> list[TableData]:
    """The tables a report prints in full: those with runs of their own."""
    return [td for td in tables if cover[td.id].own]
