"""The page `dvc plots show` writes, offline and in the report's order.

DVC's default page loads Vega from a CDN: offline the interactive plot simply vanishes. DVC lets a
project name its own page template (`.dvc/config`: `plots.html_template`); the report stage writes
one beside the report, `reports/plots_template.html`, that carries the Vega, Vega-Lite and
Vega-Embed libraries inline (bundled by the pinned `vl-convert-python`, no network at any time)
and a short script that puts the images DVC lists in file-name order back in the report's order,
each under its title with its caption.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from dvc_render.base import Renderer

from netgeom.io import atomic_write_text
from netgeom.report.context import Figure

TEMPLATE_NAME = "plots_template.html"
VEGA_LITE = "5.21"  # the schema DVC's own templates and ours (report/templates) are written for

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>netgeom: dvc plots</title>
<script>/* Vega __VEGA__, Vega-Lite __VEGA_LITE__, Vega-Embed __EMBED__ (bundled by vl-convert) */
__BUNDLE__</script>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 1.5rem 2rem; color: #1d2327; }
h2 { font-size: 1.15rem; margin: 2rem 0 0.4rem; }
p.caption { max-width: 52rem; margin: 0.4rem 0 1rem; }
p.note { color: #5f6b73; }
</style>
</head>
<body>
<h1>netgeom: dvc plots</h1>
<p class="note">Interactive plots first, then the report's figures in its order (the full report with
every table: <code>reports/index.html</code>).</p>
<div id="netgeom-plots">
{plot_divs}
</div>
<script>
const FIGURES = __FIGURES__;
const holder = document.getElementById("netgeom-plots");
for (const figure of FIGURES) {
  const div = document.getElementById(figure.id);
  if (!div) continue;
  const title = document.createElement("h2");
  title.textContent = figure.title;
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = figure.caption;
  holder.append(title, div, caption);
}
</script>
</body>
</html>
"""


def page_template(figures: Sequence[dict]) -> str:
    """The template text: `figures` = [{"id", "title", "caption"}] in the order to show."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    # DVC fills the page with str.replace of these three placeholders; the bundle must not hold one
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        bundle = bundle.replace(placeholder, placeholder.replace("{", "{ "))
    filled = json.dumps(list(figures), ensure_ascii=False).replace("</", "<\\/")
    return (
        PAGE.replace("__VEGA__", html.escape(vl_convert.get_vega_version()))
        .replace("__VEGA_LITE__", VEGA_LITE)
        .replace("__EMBED__", html.escape(vl_convert.get_vega_embed_version()))
        .replace("__FIGURES__", filled)
        .replace("__BUNDLE__", bundle)
    )


def figure_entries(folder: Path, shown: Sequence[Figure], published_as: str = "reports") -> list[dict]:
    """DVC's element id of each figure (it names an image by its path from the project root, the
    report folder published as `published_as`), with its title and caption."""
    entries = []
    for figure in shown:
        path = f"{published_as}/{figure.path.relative_to(folder).as_posix()}"
        caption = " ".join(figure.caption.split())
        entries.append({"id": Renderer.remove_special_chars(path), "title": f"{figure.section}: {figure.title}", "caption": caption})
    return entries


def write_figure_order(folder: Path, shown: Sequence[Figure], published_as: str = "reports") -> Path:
    """`folder/plots_template.html` for the figures `shown` (atomic)."""
    return atomic_write_text(folder / TEMPLATE_NAME, page_template(figure_entries(folder, shown, published_as)))
