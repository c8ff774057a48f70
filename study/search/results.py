"""Reading a search back: its best trials and parameter importances, and the best weights
exported as a new row of a variants file."""

from __future__ import annotations

from pathlib import Path

from study.errors import ConfigError
from study.search.space import BASE_ROW, SPACE


def summary(study, top: int = 5) -> str:
    import optuna
    from optuna.trial import TrialState

    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    lines = [f"study {study.study_name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)]
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return "\n".join(lines + ["no completed trial yet"])
    done.sort(key=lambda t: t.value, reverse=True)
    lines.append("best trials (student DSC on the holdout part of the training split):")
    for t in done[:top]:
        pretty = ", ".join(f"{k} {v:.4g}" for k, v in t.params.items())
        origin = f"  [{t.user_attrs['origin']}]" if t.user_attrs.get("origin") else ""
        lines.append(f"  #{t.number:<3d} DSC {t.value * 100:.2f}  {pretty}  run {t.user_attrs.get('run_id')}{origin}")
    if len(done) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
            lines.append("parameter importances (fANOVA): " +
                         ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
        except (RuntimeError, ValueError) as exc:
            lines.append(f"parameter importances: not available ({exc})")
    else:
        lines.append("parameter importances: need at least 2 completed trials")
    return "\n".join(lines)


TUNED_TABLE_HEADER = """# Rows exported by `study tune show --export NAME`: the best distillation weights of a search.
# Each row is the paper's -T student (Table 7) trained with those weights; edit the names freely,
# not the numbers (they are what the search measured).
[table]
title = "Tuned distillation weights"
datasets = ["isic2017"]
"""


def export_best(study, name: str, variants_file: Path) -> Path:
    """Append the best trial's weights as a new row of a table file of a lab's own study (created with a
    header where it does not exist yet); never overwriting a row, never leaving a file that does not load."""
    import tomllib

    import tomli_w
    from optuna.trial import TrialState

    from study.canonical import check_row_id
    from study.variants import find_row, load_tables

    check_row_id(name, "--export")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no completed trial to export")
    best = max(done, key=lambda t: t.value)
    variants_file = Path(variants_file)
    if name in {r.id for t in load_tables().values() for r in t.rows}:
        raise ConfigError(f"{variants_file}: a row with id {name!r} already exists; choose another --export name")
    existed = variants_file.is_file()
    original = variants_file.read_text() if existed else TUNED_TABLE_HEADER
    # Six significant digits, as the row is read by people; the row's config is what trains.
    weights = {k: float(f"{v:.6g}") for k, v in
               {"hard": best.params.get("hard", 1.0), **{k: best.params[k] for k in SPACE}}.items()}
    # The student is the base row's model (Table 7's -T): its own options, never a copy typed here.
    student = {k: v for k, v in sorted(find_row(BASE_ROW).model.items()) if k != "arch"}
    row = {"id": name, "name": f"Tuned weights ({name})", "model": student, "distill": weights}
    block = (f"\n# Exported by `study tune show --export {name}` from study {study.study_name!r}, trial "
             f"{best.number} (holdout DSC {best.value * 100:.2f}).\n" + tomli_w.dumps({"rows": [row]}))
    variants_file.parent.mkdir(parents=True, exist_ok=True)
    variants_file.write_text(original + block)
    try:  # the file must still load; else put it back exactly as it was (or remove it)
        tomllib.loads(variants_file.read_text())
        load_tables.cache_clear()
        load_tables()
    except Exception:
        if existed:
            variants_file.write_text(original)
        else:
            variants_file.unlink()
        load_tables.cache_clear()
        raise
    load_tables.cache_clear()
    return variants_file


def same_config_rows(name: str, profile: str) -> list[str]:
    """Rows that resolve to the same config as row ``name`` (they share its runs)."""
    from study.variants import load_tables

    load_tables.cache_clear()
    tables = load_tables()
    rows = [r for t in tables.values() for r in t.rows if not r.unavailable]
    target = next(r for r in rows if r.id == name)
    digest = target.run_config(profile=profile).hash
    return [r.id for r in rows if r.id != name and r.run_config(profile=profile).hash == digest]
