"""The declarative variant registry: ``variants/*.toml`` -> tables of rows.

``base.toml`` holds the protocol every row starts from; each other file is one
table whose rows state only what differs from the base. A user adds a table by
adding a file. Errors name the file, the row and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from study.canonical import check_row_id, check_table_id
from study.canonical import reject_unknown as _unknown
from study.config import RunConfig, merge
from study.errors import ConfigError, did_you_mean
from study.models.registry import get_entry, make_config
from study.settings import current, own_study_folder

VARIANTS_DIR = current().variants

TABLE_KEYS = {"title", "datasets", "external", "reference", "role", "figure"}
# What a table is for, which decides how the report treats it:
#   "ablation": rows varied against the table's reference; the claims audit asks whether the
#               reference ("Ours") is really the best (the paper's Tables 2-7, and a lab's own by default);
#   "comparison": methods side by side, no claim to audit (the paper's Table 1);
#   "differences": the switches between the paper's text and the authors' release, measured (Table R).
TABLE_ROLES = ("ablation", "comparison", "differences")
FIGURES = ("fig2",)  # a table may be drawn as the paper's Fig. 2 (DSC against Params and FLOPs)
SECTIONS = ("model", "data", "train", "distill")
ROW_KEYS = {"id", "name", "compare_with", "null_row", "presets", *SECTIONS}
BASE_KEYS = {*SECTIONS, "profiles", "presets"}
NOT_TABLES = ("base.toml", "datasets.toml")  # the protocol and the datasets, beside the table files
PROFILES = ("paper", "smoke")
# Only runs trained on these get the table's external evaluation (PH2).
EXTERNAL_FOR = ("isic2017", "isic2018")


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    table: str
    source: Path
    unavailable: str | None = None  # why the row cannot be built yet
    sections: dict = field(default_factory=dict)  # base merged with the row: model, data, train, distill
    datasets: tuple[str, ...] = ("isic2017",)
    external: tuple[str, ...] = ()
    profiles: dict = field(default_factory=dict)
    # The row this one is measured against, where not the table's reference (Table R's students).
    compare_with: str | None = None
    # A null row: the config of the row it is compared with, trained on the seeds after the ones
    # asked for (n..2n-1 for seeds 0..n-1). Its verdict is what seed noise alone gives.
    null_row: bool = False

    @property
    def model(self) -> dict:
        """Resolved model options: the base's merged with the row's own."""
        return self.sections["model"]

    @property
    def arch(self) -> str:
        return self.model["arch"]

    @property
    def model_options(self) -> dict:
        return {k: v for k, v in self.model.items() if k != "arch"}

    def model_config(self):
        return make_config(self.arch, self.model_options)

    def build_model(self):
        return get_entry(self.arch).builder(self.model_config())

    def run_config(self, dataset: str | None = None, profile: str = "paper", overrides: dict | None = None) -> RunConfig:
        """The resolved config of this row trained on ``dataset`` under ``profile``.

        Precedence: base < row < profile < overrides; an explicit ``dataset``
        beats the profile's (the smoke profile trains on synthetic data).
        """
        if self.unavailable:
            raise ConfigError(f"row {self.id!r} cannot run: {self.unavailable}")
        if profile not in self.profiles:
            raise ConfigError(f"profile: unknown {profile!r}; allowed: {', '.join(sorted(self.profiles))}")
        chosen = dict(self.profiles[profile])
        # A profile's [models.ARCH] options apply to that arch's rows only (the release's model
        # switches are UltraLBM-UNet fields; a U-Net row has none of them).
        per_arch = chosen.pop("models", {})
        resolved = merge(self.sections, chosen)
        if self.arch in per_arch:
            resolved["model"] = merge(resolved["model"], per_arch[self.arch])
        resolved = merge(resolved, overrides or {})
        data = resolved.setdefault("data", {})
        if dataset is not None:
            data["dataset"] = dataset
        elif "dataset" not in self.profiles[profile].get("data", {}):
            data.setdefault("dataset", self.datasets[0])
        if "external" not in data:
            data["external"] = list(self.external) if data["dataset"] in EXTERNAL_FOR else []
        return RunConfig.from_dict(resolved)

    def default_datasets(self, profile: str = "paper") -> tuple[str, ...]:
        """The datasets a `run` of this row trains on, unless the user names them."""
        profile_dataset = self.profiles.get(profile, {}).get("data", {}).get("dataset")
        return (profile_dataset,) if profile_dataset else self.datasets


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    source: Path
    datasets: tuple[str, ...]
    external: tuple[str, ...]
    reference: str
    rows: tuple[Row, ...]
    role: str = "ablation"  # TABLE_ROLES
    figure: str | None = None  # FIGURES, or None

    @property
    def audited(self) -> bool:
        return self.role == "ablation"

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(row_id)


def check_text(value, where: str) -> str:
    """A name or title that is printed in terminals, LaTeX and HTML: text without control characters."""
    import unicodedata

    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected non-empty text")
    for ch in value:
        if unicodedata.category(ch).startswith("C"):  # control, format (bidi overrides), unassigned
            raise ConfigError(f"{where}: holds the control character U+{ord(ch):04X}; expected printable text")
    return value


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _load_row(path: Path, table_id: str, index: int, raw, base: dict, meta: dict) -> Row:
    where = f"{path} [[rows]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of fields")
    for key in ("id", "name"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: field '{key}' is required (a non-empty string)")
    check_row_id(raw["id"], f"{where} field 'id'")
    where = f"{path} row '{raw['id']}'"
    check_text(raw["name"], f"{where} field 'name'")
    _unknown(where, raw, ROW_KEYS)
    for section in SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"{where}: field '{section}' must be a table")
    null_row = raw.get("null_row", False)
    if not isinstance(null_row, bool):
        raise ConfigError(f"{where}: field 'null_row' must be true or false")
    if null_row and any(section in raw for section in SECTIONS):
        raise ConfigError(f"{where}: a null row trains the config of the row it is compared with; expected no "
                          f"{'/'.join(SECTIONS)} fields")
    names = raw.get("presets", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: field 'presets' must be a list of preset names")
    sections = base["sections"]
    for name in names:  # in order, then the row's own fields on top
        if name not in base["presets"]:
            raise ConfigError(f"{where}: preset {name!r} is not defined; the base file defines "
                              f"{', '.join(sorted(base['presets'])) or 'none'}")
        sections = merge(sections, base["presets"][name])
    sections = merge(sections, {k: raw[k] for k in SECTIONS if k in raw})
    model = sections["model"]
    unavailable = None
    try:
        get_entry(model["arch"])
    except ConfigError:
        unavailable = f"model {model['arch']!r} is not registered yet"
    row = Row(
        raw["id"], raw["name"], table_id, path, unavailable,
        sections=sections,
        datasets=tuple(meta.get("datasets", ["isic2017"])),
        external=tuple(meta.get("external", [])),
        profiles=base["profiles"],
        compare_with=raw.get("compare_with"),
        null_row=null_row,
    )
    if not unavailable:
        try:  # validate every field now, so a bad file fails at load with its row named
            for profile in base["profiles"]:
                row.run_config(profile=profile)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return row


def _load_table(path: Path, base: dict) -> Table:
    data = _read_toml(path)
    table_id = check_table_id(path.stem, str(path))
    _unknown(str(path), data, {"table", "rows"})
    meta = data.get("table", {})
    _unknown(f"{path} [table]", meta, TABLE_KEYS)
    if "title" in meta:
        check_text(meta["title"], f"{path} [table] field 'title'")
    role, figure = meta.get("role", "ablation"), meta.get("figure")
    if role not in TABLE_ROLES:
        raise ConfigError(f"{path} [table] field 'role': {role!r} is not a role; expected one of "
                          f"{', '.join(TABLE_ROLES)}")
    if figure is not None and figure not in FIGURES:
        raise ConfigError(f"{path} [table] field 'figure': {figure!r} is not a figure the report draws; expected "
                          f"{', '.join(FIGURES)}")
    rows_raw = data.get("rows")
    if not isinstance(rows_raw, list) or not rows_raw:
        raise ConfigError(f"{path}: expected at least one [[rows]] entry")
    rows = tuple(_load_row(path, table_id, i, raw, base, meta) for i, raw in enumerate(rows_raw))
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            raise ConfigError(f"{path} row '{r.id}': duplicate row id")
        seen.add(r.id)
    reference = meta.get("reference", rows[-1].id)
    if reference not in seen:
        raise ConfigError(f"{path} [table]: reference {reference!r} is not a row of this table")
    for r in rows:
        if r.compare_with is not None and (r.compare_with not in seen or r.compare_with == r.id):
            raise ConfigError(f"{path} row '{r.id}': compare_with {r.compare_with!r} is not another row of this table")
        if r.null_row and (r.compare_with or reference) == r.id:
            raise ConfigError(f"{path} row '{r.id}': a null row cannot be the row it is compared with; "
                              "expected compare_with naming another row (or another reference)")
    # A null row is its target's config: it takes the target's resolved sections.
    by_id = {r.id: r for r in rows}
    rows = tuple(replace(r, sections=by_id[r.compare_with or reference].sections) if r.null_row else r for r in rows)
    return Table(
        id=table_id,
        title=meta.get("title", table_id),
        source=path,
        datasets=tuple(meta.get("datasets", ["isic2017"])),
        external=tuple(meta.get("external", [])),
        reference=reference,
        rows=rows,
        role=role,
        figure=figure,
    )


def _load_base(path: Path) -> dict:
    raw = _read_toml(path)
    _unknown(str(path), raw, BASE_KEYS)
    if "arch" not in raw.get("model", {}):
        raise ConfigError(f"{path} [model]: field 'arch' is required")
    sections = {k: raw.get(k, {}) for k in SECTIONS}
    profiles = {"paper": {}}
    for name, body in raw.get("profiles", {}).items():
        _unknown(f"{path} [profiles.{name}]", body, (*SECTIONS, "models"))
        for arch, options in body.get("models", {}).items():
            if not isinstance(options, dict):
                raise ConfigError(f"{path} [profiles.{name}.models.{arch}]: expected a table of model fields")
        profiles[name] = body
    presets = {}
    for name, body in raw.get("presets", {}).items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path} [presets.{name}]: expected a table of sections")
        _unknown(f"{path} [presets.{name}]", body, SECTIONS)
        presets[name] = body
    return {"sections": sections, "profiles": profiles, "presets": presets}


def preset(name: str, root: Path = VARIANTS_DIR) -> dict:
    """A preset of the base file (its sections), e.g. the official distillation weights."""
    base = _load_base(Path(root) / "base.toml")
    if name not in base["presets"]:
        raise ConfigError(f"{Path(root) / 'base.toml'}: no preset {name!r}")
    return base["presets"][name]


_THIS_PROCESS = object()  # load_tables' default for ``own``: the own study this process is pointed at


def load_tables(root: Path = VARIANTS_DIR, own: Path | None = _THIS_PROCESS) -> dict[str, Table]:
    """The paper's tables (``root``) and a lab's own (``own``/tables, on the paper's base protocol).

    ``own`` defaults to the folder of ``--study``/``STUDY_DIR``, read when called.
    """
    if own is _THIS_PROCESS:
        own = own_study_folder()
    return _load_tables(Path(root), Path(own).resolve() if own else None)


@lru_cache(maxsize=4)
def _load_tables(root: Path, own: Path | None) -> dict[str, Table]:
    base_path = root / "base.toml"
    if not base_path.is_file():
        raise ConfigError(f"{base_path}: the base protocol file is missing")
    base = _load_base(base_path)
    tables = {}
    row_owner: dict[str, Path] = {}
    paths = [p for p in sorted(root.glob("*.toml")) if p.name not in NOT_TABLES]
    if own is not None:
        if not (own / "tables").is_dir():
            raise ConfigError(f"{own}: not a study folder (expected a tables/ folder in it; "
                              "make one with `python -m study init DIR`)")
        paths += sorted((own / "tables").glob("*.toml"))
    for path in paths:
        table = _load_table(path, base)
        if table.id in tables:
            raise ConfigError(f"{path}: a table named {table.id!r} already exists ({tables[table.id].source}); "
                              "rename the file")
        for r in table.rows:
            if r.id in row_owner:
                raise ConfigError(f"{path} row '{r.id}': id already used in {row_owner[r.id]}")
            row_owner[r.id] = path
        tables[table.id] = table
    for what, tables_with in (("role = \"differences\"", [t for t in tables.values() if t.role == "differences"]),
                              ("figure = \"fig2\"", [t for t in tables.values() if t.figure == "fig2"])):
        if len(tables_with) > 1:
            raise ConfigError(f"{tables_with[1].source} [table]: {what} is already the role of "
                              f"{tables_with[0].source}; at most one table has it")
    return tables


load_tables.cache_clear = _load_tables.cache_clear


def find_row(row_id: str, root: Path = VARIANTS_DIR) -> Row:
    for table in load_tables(root).values():
        for r in table.rows:
            if r.id == row_id:
                return r
    names = [t.id for t in load_tables(root).values()] + [r.id for t in load_tables(root).values() for r in t.rows]
    raise ConfigError(f"unknown table or row {row_id!r}{did_you_mean(row_id, names)}; see `python -m study list`")


def select_rows(names: list[str], root: Path = VARIANTS_DIR) -> list[Row]:
    """Rows named by table ids (``table3``) or row ids (``t3-ours``), in order, without repeats."""
    tables = load_tables(root)
    rows: list[Row] = []
    for name in names:
        picked = list(tables[name].rows) if name in tables else [find_row(name, root)]
        rows.extend(r for r in picked if r not in rows)
    return rows
