"""``report.html``: the whole report as one self-contained page, for a lab that opens it from the
shared store without LaTeX.

The same tables and sections as the Markdown report (converted from it: headings, pipe tables,
lists, images, bold and italic), every figure embedded as base64 PNG, every table sortable by a
click on its header, and an index of the runs behind the tables: each run links to its resolved
config, its training curves and its per-image scores, all inside the page.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from study.metrics import per_image_dice, pooled_scores
from study.report.format import DASH
from study.store.runs import Store

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1.1em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#aaa}
td.num,th.num{text-align:right}img{max-width:100%;height:auto}
details{margin:.3em 0}pre{background:#f8f8f8;padding:.6em;overflow:auto;font-size:.85em}
.caption{font-size:.9em;color:#444}
"""

# Click a header to sort by that column (numbers by value, "–" last); click again to reverse.
SCRIPT = """
function cellValue(row, i){
  var cell = row.cells[i]; if (!cell) { return ""; }
  var text = cell.textContent.trim(); var m = text.match(/^[-+]?[0-9]*\\.?[0-9]+/);
  return m ? parseFloat(m[0]) : text.toLowerCase();
}
function sortTable(th){
  var table = th.closest("table"); var body = table.tBodies[0]; var i = th.cellIndex;
  var up = th.getAttribute("data-order") !== "asc"; th.setAttribute("data-order", up ? "asc" : "desc");
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function(a, b){
    var x = cellValue(a, i), y = cellValue(b, i);
    if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
    return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
  });
  rows.forEach(function(r){ body.appendChild(r); });
}
document.addEventListener("DOMContentLoaded", function(){
  document.querySelectorAll("table.sortable th").forEach(function(th){
    th.addEventListener("click", function(){ sortTable(th); });
  });
});
"""


def _inline(text: str) -> str:
    """Escaped text with the Markdown our pieces use inline: **bold**, *italic*, `code`, <br>."""
    text = html.escape(text, quote=False).replace("\\|", "|")
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", text)
    return text.replace("&lt;br&gt;", "<br>")


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _row_cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def markdown_to_html(text: str, folder: Path) -> str:
    """Our generated Markdown as HTML: headings, pipe tables (sortable), lists, images (embedded from
    ``folder``), paragraphs."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", line.strip()):
            name = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
            path = folder / name.group(2)
            out.append(f"<p>{image_tag(path, name.group(1))}</p>" if path.is_file() else "")
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ", "![")):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _table(block: list[str]) -> str:
    header = _row_cells(block[0])
    rows = [_row_cells(b) for b in block[2:]] if len(block) > 1 and set(block[1]) <= set("|-: ") else \
        [_row_cells(b) for b in block[1:]]
    head = "".join(f"<th>{_inline(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _run_index(result, store: Store) -> tuple[str, str]:
    """(a sortable table of every completed run behind the shown tables, each run's own section)."""
    from study.report.coverage import shown_tables

    lines, sections, seen = [], [], set()
    for td in shown_tables(result.tables, result.coverage):
        for cell in td.cell_runs:
            for record in cell.completed:
                if record.run_id in seen:
                    continue
                seen.add(record.run_id)
                anchor = f"run-{record.run_id}"
                scores = record.scores("test") or {}
                dsc = DASH if scores.get("dsc") is None else f"{100 * scores['dsc']:.2f}"
                lines.append(f"<tr><td>{td.number}</td><td>{html.escape(cell.row.name)}</td>"
                             f"<td>{html.escape(cell.dataset)}</td><td class=num>{record.seed}</td>"
                             f"<td class=num>{dsc}</td><td><a href='#{anchor}'>config, curves, per-image scores</a>"
                             f"</td></tr>")
                sections.append(_run_section(record, store, anchor))
    table = ("<table class='sortable' id='runs'><thead><tr><th>Table</th><th>Row</th><th>Dataset</th>"
             "<th class=num>Seed</th><th class=num>Test DSC (%)</th><th>Run</th></tr></thead><tbody>"
             + "".join(lines) + "</tbody></table>")
    return table, "\n".join(sections)


def _run_section(record, store: Store, anchor: str) -> str:
    parts = [f"<section id='{anchor}'><h3>Run {html.escape(record.run_id)}</h3>",
             f"<p>rows {html.escape(', '.join(record.rows))}; selected epoch "
             f"{html.escape(str((record.details.get('selection') or {}).get('epoch')))}</p>",
             "<details><summary>config</summary><pre>"
             + html.escape(json.dumps(record.config, indent=1, sort_keys=True)) + "</pre></details>"]
    curves = store.curves_path(record.key)
    if curves.is_file():
        parts.append(f"<details><summary>training curves</summary>{image_tag(curves, 'curves')}</details>")
    ids, counts = store.per_image(record, "test")
    dice = per_image_dice(counts)
    rows = "".join(f"<tr><td>{html.escape(i)}</td><td class=num>{100 * d:.2f}</td>"
                   f"<td class=num>{100 * pooled_scores(*map(int, c))['iou']:.2f}</td></tr>"
                   for i, d, c in zip(ids, dice, counts))
    parts.append(f"<details><summary>per-image scores ({len(ids)} test images)</summary>"
                 "<table class='sortable'><thead><tr><th>Image</th><th class=num>Dice (%)</th>"
                 f"<th class=num>IoU (%)</th></tr></thead><tbody>{rows}</tbody></table></details></section>")
    return "\n".join(parts)


def write_html(result, parts) -> None:
    from study.report.coverage import shown_tables
    from study.report.documents import curves_caption, figure_caption

    texts, out, figs = result.texts, result.out_dir, parts.figures
    body = ["<h1>UltraLBM-UNet: the paper's tables from our runs</h1>",
            f"<p>Results store: <code>{html.escape(str(parts.store.root))}</code>. "
            + html.escape(" ".join(result.summary)) + "</p>"]
    for td in shown_tables(result.tables, result.coverage):
        body.append(markdown_to_html(texts[f"{td.id}.md"], out))
    for td, path in figs.curves:
        if path.suffix == ".png":
            body.append(f"<figure>{image_tag(path, path.name)}<figcaption class=caption>"
                        f"{html.escape(curves_caption(td))}</figcaption></figure>")
    body.append(markdown_to_html(texts["complexity.md"], out))
    if figs.fig2 or figs.note:
        body.append("<h2>Fig. 2: accuracy vs parameters</h2>" + (f"<p>{html.escape(figs.note)}</p>" if figs.note else ""))
        for path in (p for p in figs.fig2 if p.suffix == ".png"):
            body.append(f"<figure>{image_tag(path, path.name)}<figcaption class=caption>"
                        f"{html.escape(figure_caption(path, figs.table))}</figcaption></figure>")
    fig4 = figs.fig4
    if fig4 is not None and (out / "fig4.png").is_file():
        body.append(f"<h2>Fig. 4: segmentation results</h2><figure>{image_tag(out / 'fig4.png', 'fig4')}"
                    f"<figcaption class=caption>{html.escape(fig4.note)}</figcaption></figure>")
    for name in ("challenge.md", "compare.md", "audit.md", "differences.md"):
        if name in texts and (name != "audit.md" or parts.audit):
            body.append(markdown_to_html(texts[name], out))
    runs, sections = _run_index(result, parts.store)
    body += ["<h2>Runs behind the tables</h2>", runs, sections, "<h2>Runs that did not complete</h2>",
             "<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in parts.problems) + "</ul>" if parts.problems
             else "<p>None: every stored run behind these tables completed.</p>"]
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>UltraLBM-UNet study report</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style>"
            f"<script>{SCRIPT}</script></head><body>" + "\n".join(body) + "</body></html>\n")
    result.emit("report.html", page, "html")
