"""Screenshot a study's HTML report, or the page of ``divscope compare``, in headless Chromium (checks that tables
and embedded plots render).

    python benchmarks/screenshot_report.py DIR [--out report.png] [--window 1400,2400] [--synthetic]
    python benchmarks/screenshot_report.py GRID --compare [--out compare.png] [--window 1400,5000]

Builds DIR/report.html first if it is missing (``--synthetic`` first writes a synthetic study into DIR);
``--compare`` writes GRID/compare.html (``divscope compare GRID --html``: a grid, subsets or a study) instead.
Needs Chromium (Debian: ``apt-get install -y chromium``). Prints the screenshot's path, size and how many
distinct colours it holds (a blank page has one).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, out: Path, window: tuple[int, int] = (1400, 2400), timeout: float = 120.0) -> Path:
    """Render ``html`` (a local file) headless and save a PNG of the first ``window`` pixels."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium not found: apt-get install -y chromium")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="divscope-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
               f"--window-size={window[0]},{window[1]}", Path(html).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return out


def compare_page(target: Path, html: Path | None = None) -> Path:
    """Write the page of ``divscope compare TARGET --html`` (default: TARGET/compare.html) and return its path."""
    from divscope.analysis.compare import compare, write_html

    return write_html(compare(target), html or Path(target) / "compare.html", f"divscope compare: {Path(target).name}")


def png_info(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of a PNG (Pillow ships with matplotlib)."""
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        return rgb.width, rgb.height, len(colours) if colours is not None else 1 << 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: DIR/report.png)")
    ap.add_argument("--window", default="1400,2400", help="width,height in CSS pixels")
    ap.add_argument("--synthetic", action="store_true", help="write a synthetic study into DIR first")
    ap.add_argument("--force", action="store_true", help="rebuild the analysis and the report")
    ap.add_argument("--compare", action="store_true", help="the page of divscope compare DIR --html, not the report")
    args = ap.parse_args(argv)
    from divscope.analysis import report, write_synthetic_study

    if args.compare:
        html = compare_page(args.study)
        out = screenshot(html, args.out or args.study / "compare.png", tuple(int(v) for v in args.window.split(",")))
        width, height, colours = png_info(out)
        print(f"{out}  {width}x{height}  {out.stat().st_size:,} bytes  {colours} colours")
        return 0 if colours > 16 else 1
    if args.synthetic:
        write_synthetic_study(args.study)
    html = args.study / "report.html"
    if args.force or args.synthetic or not html.is_file():
        html = report(args.study, force=args.force)
    w, h = (int(v) for v in args.window.split(","))
    out = screenshot(html, args.out or args.study / "report.png", (w, h))
    width, height, colours = png_info(out)
    print(f"{out}  {width}x{height}  {out.stat().st_size:,} bytes  {colours} colours")
    return 0 if colours > 16 else 1


if __name__ == "__main__":
    sys.exit(main())
