"""The report folder: which files belong to which output, one report per folder, and pdflatex.

``.report-files`` records what the folder holds. A new report removes the files an earlier
one wrote that it did not write, but only of the kinds it writes (``file_kind``): a Markdown
report leaves the LaTeX files and ``report.pdf`` in place, so the formats add up. Nothing else
is removed: a file of the report's names that no report recorded is named and left alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from study.errors import StudyError

MANIFEST = ".report-files"
PDF_BYPRODUCTS = ("report.aux", "report.log", "report.out")
_NAMES = re.compile(r"^((table\w+|complexity|compare|audit|challenge|differences)\.(tex|md|csv)"
                    r"|(fig\d+(_paper)?|curves_table\w+)\.(png|pdf)|report\.(tex|md|pdf|html|aux|log|out))$")


def file_kind(name: str) -> str:
    """Which output a report file belongs to: "latex", "markdown", "csv", "html" or "figure"."""
    suffix = name.rpartition(".")[2]
    if suffix in ("tex", "aux", "log", "out") or name == "report.pdf":
        return "latex"
    return {"md": "markdown", "csv": "csv", "html": "html"}.get(suffix, "figure")


def report_names(out: Path) -> list[str]:
    """Files in ``out`` with a name the report writes (whatever wrote them)."""
    return sorted(p.name for p in out.iterdir() if p.is_file() and _NAMES.match(p.name))


def tidy_folder(out: Path, written: list[str]) -> tuple[list[str], list[str]]:
    """Remove the recorded files of an earlier report that this one did not write, of the kinds this
    one writes, and record what the folder now holds. Returns (removed, left alone: report-like
    names nobody recorded)."""
    manifest = out / MANIFEST
    try:
        earlier = {line.strip() for line in manifest.read_text().splitlines() if line.strip()}
    except OSError:
        earlier = set()
    keep = set(written)
    kinds = {file_kind(n) for n in keep}
    removed = []
    for name in sorted(earlier - keep):
        path = out / name
        if "/" in name or name.startswith(".") or not path.is_file():
            continue
        if file_kind(name) not in kinds:
            keep.add(name)  # another format's file: still this folder's, still recorded
            continue
        path.unlink()
        removed.append(name)
    untracked = [n for n in report_names(out) if n not in keep and n not in earlier]
    manifest.write_text("".join(f"{n}\n" for n in sorted(keep)), encoding="utf-8")
    return removed, untracked


def have_pdflatex() -> bool:
    return shutil.which("pdflatex") is not None


def compile_pdf(tex: Path, timeout: float = 180, passes: int = 2) -> Path:
    """Compile ``tex`` with pdflatex in its own folder (twice: longtable settles its widths)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        raise StudyError("pdflatex is not installed (Debian: apt-get install texlive-latex-base "
                         "texlive-latex-recommended texlive-fonts-recommended)")
    tex = Path(tex)
    for _ in range(passes):
        try:
            proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StudyError(f"pdflatex on {tex} took longer than {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise StudyError(f"pdflatex failed on {tex} (see {tex.with_suffix('.log')}):\n{proc.stdout[-3000:]}")
    return tex.with_suffix(".pdf")
