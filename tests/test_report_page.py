"""The report page: self-contained HTML with every figure embedded, captions, relative table links,
params and commit; opened in headless Chromium (where installed) to check every image loads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netgeom.errors import NetgeomError
from netgeom.report import figures
from netgeom.report.page import PageFigure, PageSection, PageTable, write_report_page
from tests.test_figures import curves_table, runs_table

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PARAMS = "seed: 42\ngrid:\n  widths: [4, 8]\nnote: '<b>not markup</b>'\n"


@pytest.fixture
def report(tmp_path) -> Path:
    """A report folder as the report stage leaves it: two real figures and a table."""
    folder = tmp_path / "reports"
    figures.error_vs_width(runs_table(), folder / "figures" / "error_vs_width.png")
    figures.learning_curves(curves_table(), folder / "figures" / "learning_curves.png")
    (folder / "tables").mkdir()
    runs_table().to_csv(folder / "tables" / "runs.csv", index=False)
    return folder


def write_page(folder: Path) -> Path:
    sections = [
        PageSection("Double descent", [
            PageFigure("figures/error_vs_width.png", "Error against width", "Peak test error 0.135 at width 64 (label noise 0.2)."),
            PageFigure(folder / "figures" / "learning_curves.png", "Learning curves", "Train error reaches 0 by epoch 200.\n\nSecond paragraph."),
        ], text="Model-wise and epoch-wise views."),
    ]  # fmt: skip
    return write_report_page(
        folder, sections, title="netgeom report", params_text=PARAMS, git_commit="3e88f0d",
        tables=[PageTable("tables/runs.csv", "one row per run")], headline={"peak test error (noise 0.2)": "0.135 at width 64"},
    )  # fmt: skip


def test_the_page_embeds_every_figure_with_its_caption_and_links_tables_relatively(report):
    before = sorted(p.relative_to(report) for p in report.rglob("*"))
    page = write_page(report)
    assert page == report / "index.html"
    assert sorted(p.relative_to(report) for p in report.rglob("*")) == sorted(before + [Path("index.html")])
    text = page.read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 2
    for expected in ("Peak test error 0.135 at width 64", "<p>Second paragraph.</p>", "0.135 at width 64", "3e88f0d"):
        assert expected in text
    assert '<a href="tables/runs.csv">runs.csv</a> — one row per run' in text
    assert '<a class="file" href="figures/learning_curves.png">' in text  # absolute path given, relative link written
    assert "&lt;b&gt;not markup&lt;/b&gt;" in text and "<b>not markup</b>" not in text
    # offline: nothing fetched from anywhere, no scripts
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<script" not in text and "<link" not in text
    assert write_page(report).read_text() == text  # deterministic


def test_any_figure_record_with_path_title_caption_is_accepted_and_csv_tables_are_found(report):
    from collections import namedtuple

    from netgeom.report.page import csv_tables

    Figure = namedtuple("Figure", "path title caption")  # e.g. report.context.Figure
    shown = [Figure(report / "figures" / "error_vs_width.png", "Error against width", "caption <&>")]
    page = write_report_page(report, [PageSection("Training", shown)], title="t", params_text="", git_commit="c", tables=csv_tables(report))
    text = page.read_text()
    assert "caption &lt;&amp;&gt;" in text and '<a href="tables/runs.csv">runs.csv</a>' in text


def test_a_missing_or_outside_file_is_one_clear_error(report, tmp_path):
    with pytest.raises(NetgeomError, match="figure figures/nope.png does not exist"):
        write_report_page(report, [PageSection("s", [PageFigure("figures/nope.png", "t")])], title="t", params_text="", git_commit="c")
    outside = tmp_path / "elsewhere.png"
    shutil.copy(report / "figures" / "error_vs_width.png", outside)
    with pytest.raises(NetgeomError, match="not inside the report folder"):
        write_report_page(report, [PageSection("s", [PageFigure(outside, "t")])], title="t", params_text="", git_commit="c")
    with pytest.raises(NetgeomError, match="table tables/gone.csv does not exist"):
        write_report_page(report, [], title="t", params_text="", git_commit="c", tables=["tables/gone.csv"])
    assert not (report / "index.html").exists()


# --------------------------------------------------------------------------- in a real browser

PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const out = document.createElement("div");
  out.id = "probe";
  out.textContent = `loaded=${loaded} total=${images.length}`;
  document.body.append(out);
});
</script>"""


def images_loaded(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(loaded, total) images of `page` as headless Chromium sees them after the load event.

    The probe script goes into a copy of the page beside it, so the page itself stays script-free
    and relative paths resolve the same way."""
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
        "--dump-dom", probe.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    probe.unlink()
    found = re.search(r'<div id="probe">loaded=(\d+) total=(\d+)</div>', result.stdout)
    assert found, f"no probe result from chromium (exit {result.returncode}): {result.stderr[-2000:]}"
    return int(found.group(1)), int(found.group(2))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium); browser check skipped")
def test_every_image_loads_in_headless_chromium_from_a_moved_copy(report, tmp_path):
    write_page(report)
    moved = shutil.copytree(report, tmp_path / "copied-elsewhere")
    shutil.rmtree(report)  # the copy must not lean on the original folder
    assert images_loaded(moved / "index.html", tmp_path) == (2, 2)
    # the check can fail: a broken image is counted as not loaded
    broken = moved / "broken.html"
    broken.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src="data:image/png;base64,AAAA"', (moved / "index.html").read_text(), count=1))
    assert images_loaded(broken, tmp_path) == (1, 2)
