"""The jinja2 environment for the LaTeX and Markdown templates (``templates/*.j2``).

LaTeX is full of braces and percent signs, so the LaTeX templates use
``((* block *))``, ``((( variable )))`` and ``((= comment =))`` delimiters.
Nothing is auto-escaped: the Python side escapes text with
``format.latex_escape`` and passes LaTeX it built on purpose.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=2)
def environment(latex: bool = True):
    import jinja2

    options = dict(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    if latex:
        options.update(
            block_start_string="((*", block_end_string="*))",
            variable_start_string="(((", variable_end_string=")))",
            comment_start_string="((=", comment_end_string="=))",
        )
    return jinja2.Environment(**options)


def render(name: str, **context) -> str:
    return environment(name.endswith(".tex.j2")).get_template(name).render(**context)
