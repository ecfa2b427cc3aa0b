"""The report page: one self-contained `index.html` a researcher opens first.

Every figure is embedded as a base64 data URI, so the page renders offline, from any copy of
the folder, and on its own (an e-mail attachment, an MLflow artifact view) where relative links
would break; each figure also links to its file next to the page for full size. Tables are
relative links (they are data to download, not to view). No scripts, no external CSS or fonts.
The page holds no timestamp: the same inputs give the same bytes.

    write_report_page(folder, [PageSection("Double descent", [PageFigure("figures/error_vs_width.png",
        "Error against width", "Peak test error 0.17 at width 64 (20% noise) ...")])],
        title="netgeom report", params_text=Path("params.yaml").read_text(), git_commit="3e88f0d",
        tables=[PageTable("tables/runs.csv", "one row per run")], headline={"peak test error": "0.17"})
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_text

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
PAGE_NAME = "index.html"


class Captioned(Protocol):
    """Anything with a figure file, a title and a caption (PageFigure, report.context.Figure)."""

    path: str | Path
    title: str
    caption: str


@dataclass(frozen=True)
class PageFigure:
    """An image file inside the report folder (path relative to it), a title, and a caption that
    says what the figure shows and the numbers measured (plain text; a blank line starts a new
    paragraph)."""

    path: str | Path
    title: str
    caption: str = ""


@dataclass(frozen=True)
class PageSection:
    """A titled group of figures with an optional paragraph of text above them."""

    title: str
    figures: Sequence[Captioned] = ()
    text: str = ""


@dataclass(frozen=True)
class PageTable:
    """A table file inside the report folder (path relative to it) and what one row is."""

    path: str | Path
    description: str = ""


def write_report_page(
    folder: str | Path,
    sections: Sequence[PageSection],
    *,
    title: str,
    params_text: str,
    git_commit: str,
    tables: Sequence[PageTable | str | Path] = (),
    headline: Mapping[str, str] | None = None,
    filename: str = PAGE_NAME,
) -> Path:
    """Write `folder/filename` (atomically, nothing else) and return its path.

    sections: figures grouped under headings, in page order; tables: linked relatively;
    headline: label -> measured value, shown as a table at the top; params_text: the params.yaml
    the report came from, shown verbatim; git_commit: the commit it came from.
    Raises NetgeomError naming the file when a figure or table is missing or outside `folder`.
    """
    folder = Path(folder)
    tables = [t if isinstance(t, PageTable) else PageTable(t) for t in tables]
    for table in tables:
        _inside(folder, table.path, "table")
    page = _page(folder, sections, title=title, params_text=params_text, git_commit=git_commit, tables=tables, headline=headline or {})
    return atomic_write_text(folder / filename, page)


def csv_tables(folder: str | Path, under: str = "tables") -> list[PageTable]:
    """Every CSV file under `folder/under`, sorted by name, as page tables without descriptions."""
    folder = Path(folder)
    return [PageTable(p.relative_to(folder)) for p in sorted((folder / under).glob("*.csv"))]


# --------------------------------------------------------------------------- checks


def _inside(folder: Path, path: str | Path, what: str) -> Path:
    """`path` as a POSIX path relative to `folder`, checked to exist there."""
    path = Path(path)
    full = path if path.is_absolute() else folder / path
    try:
        relative = full.resolve().relative_to(folder.resolve())
    except ValueError:
        raise NetgeomError("report.page", f"{what} {path} is not inside the report folder {folder}") from None
    if not full.is_file():
        raise NetgeomError("report.page", f"{what} {path} does not exist in {folder}")
    return relative


def _data_uri(file: Path) -> str:
    mime = IMAGE_TYPES.get(file.suffix.lower())
    if mime is None:
        raise NetgeomError("report.page", f"figure {file.name}: cannot embed {file.suffix!r}; allowed: {', '.join(IMAGE_TYPES)}")
    return f"data:{mime};base64,{base64.b64encode(file.read_bytes()).decode('ascii')}"


# --------------------------------------------------------------------------- HTML


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_e(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())


def _figure_html(folder: Path, figure: Captioned, anchor: str) -> str:
    relative = _inside(folder, figure.path, "figure")
    uri = _data_uri(folder / relative)
    link = _e(relative.as_posix())
    return (
        f'<figure id="{anchor}">\n'
        f'<h3>{_e(figure.title)} <a class="file" href="{link}">{_e(relative.name)}</a></h3>\n'
        f'<img src="{uri}" alt="{_e(figure.title)}">\n'
        f"<figcaption>{_paragraphs(figure.caption)}</figcaption>\n"
        "</figure>\n"
    )


def _section_html(folder: Path, section: PageSection, anchor: str, taken: set[str]) -> str:
    figures = "".join(_figure_html(folder, f, _slug(f"{anchor}-{f.title}", taken)) for f in section.figures)
    return f'<section id="{anchor}">\n<h2>{_e(section.title)}</h2>\n{_paragraphs(section.text)}{figures}</section>\n'


def _headline_html(headline: Mapping[str, str]) -> str:
    if not headline:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in headline.items())
    return f'<section id="headline"><h2>Headline numbers</h2><table class="numbers">{rows}</table></section>\n'


def _tables_html(folder: Path, tables: Sequence[PageTable]) -> str:
    if not tables:
        return ""
    items = "".join(
        f'<li><a href="{_e(_inside(folder, t.path, "table").as_posix())}">{_e(Path(t.path).name)}</a>'
        + (f" — {_e(t.description)}" if t.description else "")
        + "</li>"
        for t in tables
    )
    return f'<section id="tables"><h2>Tables</h2><ul class="tables">{items}</ul></section>\n'


def _page(folder, sections, *, title, params_text, git_commit, tables, headline) -> str:
    taken = {"headline", "tables", "provenance"}
    anchors = [_slug(s.title, taken) for s in sections]
    nav = "".join(f'<a href="#{a}">{_e(s.title)}</a>' for s, a in zip(sections, anchors))
    nav += '<a href="#tables">Tables</a>' if tables else ""
    nav += '<a href="#provenance">Params &amp; commit</a>'
    body = _headline_html(headline) + "".join(_section_html(folder, s, a, taken) for s, a in zip(sections, anchors))
    body += _tables_html(folder, tables)
    body += (
        '<section id="provenance"><h2>Where this came from</h2>'
        f"<p>git commit <code>{_e(git_commit)}</code></p>"
        f"<details open><summary>params.yaml</summary><pre>{_e(params_text)}</pre></details></section>\n"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><p class="commit">commit <code>{_e(git_commit)}</code></p>'
        f"<nav>{nav}</nav></header>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


CSS = """
:root { --ink: #1d2327; --muted: #5f6b73; --rule: #dde3e8; --accent: #0b61a4; --paper: #ffffff; --panel: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: var(--paper);
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 1.4rem 2rem 0.8rem; border-bottom: 1px solid var(--rule); background: var(--panel);
         position: sticky; top: 0; z-index: 1; }
h1 { margin: 0 0 0.2rem; font-size: 1.6rem; }
.commit { margin: 0 0 0.6rem; color: var(--muted); font-size: 0.9rem; }
nav { display: flex; flex-wrap: wrap; gap: 0.3rem 1.1rem; font-size: 0.95rem; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
main { max-width: 1200px; margin: 0 auto; padding: 0 2rem 4rem; }
section { padding-top: 1.2rem; scroll-margin-top: 7rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid var(--rule); padding-bottom: 0.3rem; }
h3 { font-size: 1.05rem; margin: 0 0 0.6rem; }
h3 .file { font-weight: normal; font-size: 0.85rem; margin-left: 0.5rem; }
figure { margin: 1.2rem 0 2.2rem; scroll-margin-top: 7rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; background: #fff; }
figcaption { max-width: 52rem; margin-top: 0.6rem; color: var(--ink); }
figcaption p { margin: 0 0 0.5rem; }
table.numbers { border-collapse: collapse; }
table.numbers th, table.numbers td { text-align: left; padding: 0.3rem 1.2rem 0.3rem 0; border-bottom: 1px solid var(--rule); vertical-align: top; }
table.numbers th { font-weight: 600; }
ul.tables { padding-left: 1.2rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.9rem; }
pre { background: var(--panel); border: 1px solid var(--rule); border-radius: 4px; padding: 0.8rem 1rem; overflow-x: auto; }
summary { cursor: pointer; font-weight: 600; margin-bottom: 0.4rem; }
@media print { header { position: static; } figure { break-inside: avoid; } }
""".strip()
