"""The HTML report as a reader gets it: every image is an embedded PNG that decodes, and headless Chromium
renders tables and plots (a screenshot with the plots' colours in it)."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from divscope.analysis import report, write_synthetic_study

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "screenshot_report.py"


def _shot_module():
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "table":
            self.tables += 1


@pytest.fixture(scope="module")
def html_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = tmp_path_factory.mktemp("browser_study")
    write_synthetic_study(study, name="browser check", sizes=(10_000,), seeds=(0, 1), random_seeds=3)
    return report(study)


def test_every_img_is_a_valid_embedded_png(html_path: Path) -> None:
    from PIL import Image

    parser = _Tags()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert parser.tables >= 5
    assert len(parser.imgs) == 5  # one size: score vs d, vs types covered, vs Vendi, paired differences; correlations
    for attrs in parser.imgs:
        src = attrs.get("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.width >= 600 and im.height >= 300
        assert attrs.get("alt")


@pytest.mark.slow
def test_chromium_screenshot_shows_tables_and_plots(html_path: Path, tmp_path: Path) -> None:
    shot = _shot_module()
    if shot.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from PIL import Image

    out = shot.screenshot(html_path, tmp_path / "report.png", (1400, 2400))
    assert out.stat().st_size > 50_000
    width, height, colours = shot.png_info(out)
    assert (width, height) == (1400, 2400) and colours > 200
    with Image.open(out) as im:
        px = np.asarray(im.convert("RGB")).astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    red = int(((r > 190) & (g < 70) & (b < 70)).sum())  # the regression lines (#d62728)
    blue = int(((r < 60) & (g > 100) & (g < 140) & (b > 160)).sum())  # the subsets' dots (#1f77b4)
    green = int(((r < 60) & (g > 100) & (g < 150) & (b < 80)).sum())  # positive slopes in the table (#1a7f37)
    assert red > 300 and blue > 300 and green > 20, (red, blue, green)
    assert re.search(r"<th[^>]*>slope", html_path.read_text())


@pytest.mark.slow
def test_chromium_screenshot_of_the_compare_page(compare_grid: Path, tmp_path: Path) -> None:
    """``divscope compare GRID --html``: the table with its best cells (green), the winners, and both figures
    (each strategy's line, random's grey band; the flagged subsets' red length bars) render headless."""
    shot = _shot_module()
    if shot.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from PIL import Image

    html = shot.compare_page(compare_grid, tmp_path / "compare.html")
    parser = _Tags()
    parser.feed(html.read_text(encoding="utf-8"))
    assert parser.tables == 3 and len(parser.imgs) == 2  # subsets, winners, legend; two figures
    for attrs in parser.imgs:
        raw = base64.b64decode((attrs.get("src") or "").split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            assert im.width >= 600 and im.height >= 300
    out = shot.screenshot(html, tmp_path / "compare.png", (1400, 5000))
    width, height, colours = shot.png_info(out)
    assert (width, height) == (1400, 5000) and colours > 200
    with Image.open(out) as im:
        px = np.asarray(im.convert("RGB")).astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    red = int(((r > 190) & (g < 70) & (b < 70)).sum())  # flagged length bars (#d62728)
    blue = int(((r < 60) & (g > 100) & (g < 140) & (b > 160)).sum())  # bars and the first strategy's line (#1f77b4)
    top = slice(0, 1200)  # the subsets table: its best cells are green text (#1a7f37); only the key above is too
    green = int(((r[top] < 60) & (g[top] > 100) & (g[top] < 150) & (b[top] < 80)).sum())
    grey = int(((abs(r - g) < 6) & (abs(g - b) < 6) & (r > 200) & (r < 235)).sum())  # random's band
    # measured: 1,252 green pixels with the marks, 219 (the key's "green *") without them
    assert red > 300 and blue > 300 and green > 600 and grey > 1000, (red, blue, green, grey)
    assert re.search(r"<th[^>]*>r\.vendi", html.read_text())
