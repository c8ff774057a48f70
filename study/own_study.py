"""A lab's own study folder: `python -m study init DIR` writes one, `--study DIR` uses it.

A study folder is data, never code: ``tables/*.toml`` (table files, on the paper's base
protocol), ``profiles/*.toml`` (cluster profiles) and ``results/`` (its store). Nothing the
harness writes lands in the paper's files or the installed package; ``tune show --export``
writes ``tables/tuned.toml`` here.
"""

from __future__ import annotations

from pathlib import Path

from study.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parent / "own_study_template"


def init_study(folder: Path) -> list[Path]:
    """Write a new study folder (refusing to overwrite any file); return the files written."""
    folder = Path(folder).expanduser()
    sources = sorted(p for p in TEMPLATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    clashes = [folder / p.relative_to(TEMPLATE) for p in sources if (folder / p.relative_to(TEMPLATE)).exists()]
    if clashes:
        raise ConfigError(f"{clashes[0]}: already exists; `init` writes a new study folder and never overwrites "
                          "a file (choose another folder)")
    written = []
    for source in sources:
        target = folder / source.relative_to(TEMPLATE)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text().replace("{folder}", str(folder)).replace("{name}", folder.resolve().name)
        target.write_text(text)
        written.append(target)
    (folder / "results").mkdir(exist_ok=True)
    return written
