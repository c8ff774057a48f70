"""How numbers are printed, and which printed values are marked best and second best.

Marks are chosen from the printed (rounded) values, never the raw ones, so a
table cannot bold 88.78 over another printed 88.78: equal printed values get
the same mark.
"""

from __future__ import annotations

import math
import unicodedata

DASH = "–"  # an empty cell, in Markdown and CSV; LaTeX prints it as "--"
BEST, SECOND = "best", "second"

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "–": "--", "—": "---", "±": r"$\pm$", "²": r"$^2$", "×": r"$\times$", "≠": r"$\neq$",
    "≤": r"$\leq$", "≥": r"$\geq$", "Δ": r"$\Delta$", "†": r"$^\dagger$", "−": r"$-$",
    "“": "``", "”": "''", "‘": "`", "’": "'", "…": r"\ldots{}", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
}


def _ascii(ch: str) -> str:
    """A character pdflatex may not know, as its closest ASCII letters ("é" -> "e"), or "?"."""
    if ch.isascii():
        return ch
    folded = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return folded or "?"


def latex_escape(text) -> str:
    """Plain text (a row name, a failure reason) made safe for LaTeX."""
    return "".join(_LATEX_SPECIAL.get(ch) or _ascii(ch) for ch in str(text))


def markdown_escape(text) -> str:
    """Plain text made safe inside a Markdown table cell."""
    return str(text).replace("|", r"\|").replace("\n", " ")


def fixed(value: float | None, decimals: int) -> str | None:
    """``value`` with ``decimals`` decimals, or None for no value (NaN included)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def signed(value: float | None, decimals: int) -> str | None:
    text = fixed(value, decimals)
    if text is None:
        return None
    return text if text.startswith("-") or float(text) == 0 else f"+{text}"


def rank_marks(printed: list[str | None], higher_is_better: bool) -> list[str | None]:
    """BEST / SECOND / None for each printed value, by dense rank of the printed numbers.

    Rows without a value get no mark. Fewer than two distinct printed values
    mark nothing: when every row prints the same number there is no best.
    """
    distinct = sorted({float(p) for p in printed if p is not None}, reverse=higher_is_better)
    if len(distinct) < 2:
        return [None] * len(printed)
    first, second = distinct[0], distinct[1]
    marks = []
    for p in printed:
        value = None if p is None else float(p)
        marks.append(BEST if value == first else SECOND if value == second else None)
    return marks
