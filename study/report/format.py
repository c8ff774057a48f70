"""How numbers are printed, and which printed values are marked best and second best.

Marks are chosen from the printed (rounded) values, never the raw ones, and
only where they mean something (``rank_marks``): a mean is marked when it
stands apart from the next by more than the larger std, an exact quantity when
no other row prints the same value.
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
    "≤": r"$\leq$", "≥": r"$\geq$", "Δ": r"$\Delta$", "†": r"$^\dagger$", "−": r"$-$", "≈": r"$\approx$",
    "“": "``", "”": "''", "‘": "`", "’": "'", "…": r"\ldots{}", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
}


# Lower-case Greek as math symbols (pdflatex's text fonts have no Greek); upper case where LaTeX has one.
_GREEK = {chr(0x3B1 + i): name for i, name in enumerate(
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu",
     "xi", "", "pi", "rho", "varsigma", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"]) if name}
_GREEK.update({"Γ": "Gamma", "Θ": "Theta", "Λ": "Lambda", "Ξ": "Xi", "Π": "Pi", "Σ": "Sigma", "Φ": "Phi",
               "Ψ": "Psi", "Ω": "Omega"})


# Letters of Latin Extended-A that T1 fonts lack (pdflatex stops on them): their nearest letters.
_NOT_IN_T1 = {"Ħ": "H", "ħ": "h", "ĸ": "k", "Ŀ": "L", "ŀ": "l", "ŉ": "'n", "Ŧ": "T", "ŧ": "t", "ſ": "s"}


def _ascii(ch: str) -> str:
    """A character outside ASCII as pdflatex typesets it: Latin letters with accents as themselves
    (the report loads inputenc utf8 and T1 fonts, which have them), Greek as math, anything else as
    its closest ASCII letters ("ﬁ" -> "fi"), or its code point ("[U+4E2D]") where pdflatex's
    fonts have no glyph for it (CJK, most symbols)."""
    if ch.isascii():
        return ch
    if ch in _NOT_IN_T1:
        return _NOT_IN_T1[ch]
    if "\u00c0" <= ch <= "\u017f" and ch not in "\u00d7\u00f7":  # Latin-1 letters, Latin Extended-A
        return ch
    if ch in _GREEK:
        return f"$\\{_GREEK[ch]}$"
    folded = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return folded or f"[U+{ord(ch):04X}]"


def latex_escape(text) -> str:
    """Plain text (a row name, a failure reason) made safe for LaTeX; "--seeds" stays two hyphens."""
    text = str(text)
    return "".join("-{}" if ch == "-" and text[i + 1:i + 2] == "-" else _LATEX_SPECIAL.get(ch) or _ascii(ch)
                   for i, ch in enumerate(text))


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


MARK_RULE = ("Bold: best, {second}: second best, only where they stand apart: a mean when it differs from the "
             "next-ranked mean by more than the larger of the two stds (a one-run cell, without std, never), "
             "Params and FLOPs when no other row prints the same value.")


def rank_marks(printed: list[str | None], higher_is_better: bool,
               spreads: list[str | None] | None = None) -> list[str | None]:
    """BEST / SECOND / None for each printed value: a mark only where it means something.

    Values are compared as printed (rounded), so the reader can check every mark.

    * Exact quantities (``spreads`` None: Params, FLOPs): the best value is
      marked when no other row prints it, the second likewise; a value shared
      by several rows (seven models at 0.034 M) is never marked.
    * Mean ± std cells (``spreads`` the printed stds, None where a cell has
      one run): the top-ranked row is marked best when its mean differs from
      the next-ranked mean by more than the larger of the two stds; the next
      is marked second when the best is marked and it stands apart from the
      third in the same way. A cell without a std is never marked and never
      lets a neighbour be marked: nothing can be said about the difference.

    The second best needs the best marked and a third row to stand apart from,
    and rows without a value get no mark.
    """
    ranked = sorted((i for i, p in enumerate(printed) if p is not None),
                    key=lambda i: float(printed[i]), reverse=higher_is_better)
    marks: list[str | None] = [None] * len(printed)
    if len(ranked) < 2:
        return marks

    def apart(a: int, b: int) -> bool:
        if spreads is None:  # exact numbers: apart when they print differently
            return float(printed[a]) != float(printed[b])
        if spreads[a] is None or spreads[b] is None:
            return False
        return abs(float(printed[a]) - float(printed[b])) > max(float(spreads[a]), float(spreads[b]))

    def alone(k: int) -> bool:
        """Rank ``k`` differs from its neighbours in the ranking (exact) or stands apart from the next (spread)."""
        if spreads is None:
            return all(apart(ranked[k], ranked[j]) for j in (k - 1, k + 1) if 0 <= j < len(ranked))
        return k + 1 < len(ranked) and apart(ranked[k], ranked[k + 1])

    if alone(0):
        marks[ranked[0]] = BEST
        if len(ranked) >= 3 and alone(1):
            marks[ranked[1]] = SECOND
    return marks


OURS = "(Ours)"


def display_name(name: str, is_reference: bool) -> str:
    """A row's printed name: the table's chosen row (its reference) always says "(Ours)", as the paper's do."""
    return f"{name} {OURS}" if is_reference and OURS.lower() not in name.lower() else name


def p_text(value: float | None) -> str:
    """A p-value as the report prints it: four decimals, "<0.0001" below that, a dash for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"
