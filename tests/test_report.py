"""The comparison report: files, relative links, the table, and the page in headless Chromium."""

from __future__ import annotations

import csv
import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from ddcore.report import table_csv, table_markdown, write_report

CLASSES = ["red square", "green_circle", "blue & <stripes>"]  # awkward names on purpose
METHODS = ["datadream-dset", "issynth", "disef"]

TABLE = [
    {"setting": "none", "method": "zero-shot", "classifier": "clip", "top1_mean": 0.4123, "top1_std": 0.0,
     "mean_per_class_mean": 0.40, "mean_per_class_std": 0.0, "seeds": [0, 1, 2], "top1": [0.4123] * 3,
     "short_classes": []},
    {"setting": "synthetic", "method": "datadream-dset", "classifier": "clip", "top1_mean": 0.7123,
     "top1_std": 0.014, "mean_per_class_mean": 0.701, "mean_per_class_std": 0.02, "seeds": [0, 1, 2],
     "top1": [0.70, 0.71, 0.727], "short_classes": []},
    {"setting": "synthetic", "method": "disef", "classifier": "clip", "top1_mean": 0.655, "top1_std": 0.031,
     "mean_per_class_mean": 0.72, "mean_per_class_std": 0.01, "seeds": [0, 1, 2], "top1": [0.62, 0.66, 0.685],
     "short_classes": ["red square", "blue & <stripes>"]},
    {"setting": "real+synthetic", "method": "datadream-dset", "classifier": "clip", "top1_mean": 0.8234,
     "top1_std": 0.005, "mean_per_class_mean": 0.81, "mean_per_class_std": 0.004, "seeds": [0, 1, 2],
     "top1": [0.82, 0.823, 0.8272], "short_classes": []},
    {"setting": "real", "method": "real-finetune", "classifier": "clip", "top1_mean": 0.79, "top1_std": 0.012,
     "mean_per_class_mean": 0.78, "mean_per_class_std": 0.011, "seeds": [0, 1, 2], "top1": [0.78, 0.79, 0.80],
     "short_classes": []},
]
# Each row's "mean ± std" strings in percent, as the table must print them.
EXPECTED = {
    ("zero-shot", "zero-shot"): ("41.2 ± 0.0", "40.0 ± 0.0"),
    ("synthetic", "datadream-dset"): ("71.2 ± 1.4", "70.1 ± 2.0"),
    ("synthetic", "disef"): ("65.5 ± 3.1", "72.0 ± 1.0"),
    ("real + synthetic", "datadream-dset"): ("82.3 ± 0.5", "81.0 ± 0.4"),
    ("real", "real-finetune"): ("79.0 ± 1.2", "78.0 ± 1.1"),
}


def _png(path: Path, colour, seed: int, size=(40, 32), mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    (image.convert("RGBA") if mode == "RGBA" else image).save(path)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report written from generated PNGs: 3 methods, 3 classes, two settings groups, a
    quality dict with a None value and an images-per-class scaling study."""
    tmp = tmp_path_factory.mktemp("report")
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]
    real = {c: [_png(tmp / "data" / f"real{k}" / f"{i}.png", colours[k], seed=k * 100 + i) for i in range(4)]
            for k, c in enumerate(CLASSES)}
    grids = {m: {c: [_png(tmp / "runs" / f"m{j}" / f"c{k}" / f"{i}.png", colours[k], seed=1000 * j + 10 * k + i,
                          size=(300, 200), mode="RGBA" if j == 1 else "RGB") for i in range(8)]
                 for k, c in enumerate(CLASSES)}
             for j, m in enumerate(METHODS)}
    quality = {m: {c: {"fd": 10.0 + j + k} for k, c in enumerate(CLASSES)} for j, m in enumerate(METHODS)}
    quality["issynth"][CLASSES[1]] = {"fd": None}
    quality["datadream-dset"]["all"] = {"fd": 12.5, "precision": 0.71, "recall": 0.44, "density": 0.9,
                                        "coverage": 0.61}
    scaling = [{"study": "images_per_class", "x": x, "method": m, "classifier": "clip",
                "top1_mean": 0.5 + 0.05 * np.log10(x) + 0.02 * j, "top1_std": 0.01}
               for x in (10, 100, 500) for j, m in enumerate(METHODS[:2])]
    out = tmp / "out" / "report"
    index = write_report(out, title="Compare <shapes> & co", table=TABLE, grids=grids, real=real, quality=quality,
                         scaling=scaling, notes=["commit abc123", "generator shared by <all> settings"],
                         per_row_images=6)
    return {"tmp": tmp, "out": out, "index": index, "real": real, "grids": grids}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text())
    return parser


def _check_links(index: Path) -> _Links:
    """Every <img> has alt text, a size and a relative src that exists next to ``index``."""
    parser = _parse(index)
    assert parser.images
    for attrs in parser.images:
        src = attrs["src"]
        assert not re.match(r"^[a-z]+:|^/", src), src  # no scheme, no absolute path
        assert (index.parent / unquote(src)).is_file(), src
        assert attrs.get("alt"), attrs
        assert int(attrs["width"]) > 0 and int(attrs["height"]) > 0
    for href in parser.hrefs:
        assert href.startswith("#") or (index.parent / unquote(href)).is_file(), href
    return parser


def test_files_and_links(report):
    out, index = report["out"], report["index"]
    assert index == out / "index.html" and index.is_file()
    for name in ("table.md", "table.csv", "accuracy.png", "frechet_distance.png", "scaling_images_per_class.png"):
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                assert image.format == "PNG" and image.width > 200
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert all(p.stat().st_mode & 0o004 for p in [out / "images", *out.iterdir()])  # readable by all

    thumbs = sorted((out / "images").rglob("*.jpg"))
    assert len(thumbs) == 3 * (4 + 3 * 6)  # real shots (4 each) + 6 per method and class
    for path in thumbs:
        with Image.open(path) as image:
            assert max(image.size) <= 128
    parser = _check_links(index)
    assert len(parser.images) == len(thumbs) + 3  # + accuracy, FD and scaling plots
    alts = [a["alt"] for a in parser.images]
    assert "blue & <stripes>: real shot 1" in alts and "issynth sample 6" in " ".join(alts)

    page = index.read_text()
    assert "<title>Compare &lt;shapes&gt; &amp; co</title>" in page
    assert "generator shared by &lt;all&gt; settings" in page and "<all>" not in page
    assert "blue &amp; &lt;stripes&gt;" in page
    assert str(report["tmp"]) not in page  # no absolute path anywhere
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "2 short classes: red square, blue &amp; &lt;stripes&gt;" in page
    # The page order: notes, table, plots, quality, grids.
    positions = [page.index(s) for s in ('class="notes"', 'id="results"', 'id="plots"', 'id="quality"',
                                         'id="samples"')]
    assert positions == sorted(positions)
    # The quality table: mean FD over measured classes, the "all" entry's extra metrics.
    assert "12.00 (2 of 3 classes)" in page  # issynth: (11 + 13) / 2, one class missing
    assert 'class="num fd best">11.00<' in page  # datadream-dset: the lowest mean
    assert "0.710" in page and "0.610" in page


def test_table_markdown_and_csv(report):
    md = (report["out"] / "table.md").read_text()
    assert md == table_markdown(TABLE)
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(TABLE)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    # Grouped as in Table 1: zero-shot and synthetic first, then real, then real+synthetic.
    assert [(r[0], r[1]) for r in rows] == [
        ("synthetic only", "zero-shot"), ("synthetic only", "datadream-dset"), ("synthetic only", "disef"),
        ("real + synthetic", "real-finetune"), ("real + synthetic", "datadream-dset")]
    by_key = {(r[3], r[1]): r for r in rows}
    for key, (top1, mpc) in EXPECTED.items():
        assert by_key[key][4].strip("*") == top1 and by_key[key][5].strip("*") == mpc
    # The best of each group in bold, per metric.
    assert by_key[("synthetic", "datadream-dset")][4] == "**71.2 ± 1.4**"
    assert by_key[("synthetic", "disef")][5] == "**72.0 ± 1.0**"
    assert by_key[("synthetic", "disef")][4] == "65.5 ± 3.1"
    assert by_key[("real + synthetic", "datadream-dset")][4] == "**82.3 ± 0.5**"
    assert by_key[("real", "real-finetune")][4] == "79.0 ± 1.2"
    assert by_key[("synthetic", "datadream-dset")][6] == "70.0, 71.0, 72.7"
    assert "⚠ short: red square, blue & <stripes>" in by_key[("synthetic", "disef")][8]

    text = (report["out"] / "table.csv").read_text()
    assert text == table_csv(TABLE)
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == len(TABLE)
    disef = next(r for r in records if r["method"] == "disef")
    assert float(disef["top1_mean"]) == 0.655 and disef["seeds"] == "0 1 2"
    assert disef["short_classes"] == "red square;blue & <stripes>" and disef["group"] == "synthetic only"


def test_missing_values_and_rewrite(tmp_path, report):
    """A rerun into the same folder replaces the images; missing numbers and unreadable images
    do not break the report."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rows = [{"setting": "synthetic", "method": "m", "classifier": "c", "top1_mean": 0.5, "top1_std": None,
             "mean_per_class_mean": None, "seeds": [0], "top1": [0.5]}]
    out = tmp_path / "r"
    write_report(out, title="t", table=TABLE, grids=report["grids"], real=report["real"],
                 scaling=[{"study": "shots", "x": 1, "method": "m", "classifier": "c", "top1_mean": 0.5}])
    assert (out / "scaling_shots.png").is_file() and len(list((out / "images").rglob("*.jpg"))) == 66
    index = write_report(out, title="t", table=rows, grids={"m": {"a": [broken]}}, real={},
                         quality={"m": {"a": {"fd": None}}})
    assert "| 50.0 |" in (out / "table.md").read_text().replace("**", "")
    assert "–" in (out / "table.md").read_text()
    assert not list((out / "images").rglob("*.jpg"))
    assert not (out / "scaling_shots.png").exists() and not list(out.glob(".*"))
    page = index.read_text()
    assert "unreadable" in page and "could not be read" in page
    _check_links(index)


def _chromium() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver (on PATH or in /usr/bin), or None."""
    def find(*names: str) -> str | None:
        for name in names:
            path = shutil.which(name) or shutil.which(name, path="/usr/bin")
            if path:
                return path
        return None

    browser, driver = find("chromium", "chromium-browser"), find("chromedriver")
    return (browser, driver) if browser and driver else None


def test_report_in_headless_chromium(report, tmp_path):
    """Move the report folder, open it from disk in headless Chromium and check with JavaScript
    that every image loaded and the table shows the expected numbers."""
    found = _chromium()
    if found is None:
        pytest.skip("needs Chromium and its driver: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    moved = tmp_path / "elsewhere" / "copied report"  # a space in the path on purpose
    shutil.copytree(report["out"], moved)
    _check_links(moved / "index.html")

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        driver.set_page_load_timeout(20)
        driver.get((moved / "index.html").as_uri())
        assert driver.title == "Compare <shapes> & co"
        # Thumbnails load lazily: make them eager (a lazy image starts loading at once), then
        # wait for every image to finish, loaded or broken.
        driver.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });")
        wait_js = "return Array.from(document.images).every(i => i.complete);"
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 15).until(lambda d: d.execute_script(wait_js))
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth,"
            " i.getBoundingClientRect().width]);")
        assert len(images) == 3 * (4 + 3 * 6) + 3
        broken = [src for src, complete, natural, _ in images if not (complete and natural > 0)]
        assert not broken, broken
        assert all(shown > 0 for *_, shown in images)

        rows = driver.execute_script("""
            const out = [];
            let group = null;
            for (const tr of document.querySelectorAll('table.results tr')) {
              if (tr.classList.contains('group')) { group = tr.innerText.trim(); continue; }
              if (!tr.classList.contains('row')) continue;
              const cell = c => tr.querySelector('td.' + c);
              out.push({group, method: cell('method').innerText, data: cell('data').innerText,
                        top1: cell('top1').innerText, mpc: cell('mean_per_class').innerText,
                        top1Bold: Number(getComputedStyle(cell('top1')).fontWeight) >= 700,
                        warning: cell('warnings').innerText});
            }
            return out;""")
        assert [r["group"] for r in rows] == ["synthetic only"] * 3 + ["real + synthetic"] * 2
        for r in rows:
            key = (r["data"], r["method"])
            assert (r["top1"], r["mpc"]) == EXPECTED[key], r
        bold = {(r["data"], r["method"]) for r in rows if r["top1Bold"]}
        assert bold == {("synthetic", "datadream-dset"), ("real + synthetic", "datadream-dset")}
        assert "2 short classes" in next(r["warning"] for r in rows if r["method"] == "disef")
        # Nothing wider than the window but the scrollable table and the plots' own scaling.
        width = driver.execute_script("return document.documentElement.scrollWidth;")
        assert width <= 1280
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()


def _log(steps: int, loss: float, seconds: float = 30.0, part: str | None = None) -> list[dict]:
    return [{"step": s, **({"part": part} if part else {}), "loss": loss, "lr": 1e-4 * s, "seconds": seconds,
             "images_per_s": 8.0} for s in range(1, steps + 1)]


def test_training_section_has_each_stage_curve_and_summary(tmp_path):
    from PIL import Image

    training = {"adapter": {"dset seed 0": {None: _log(4, 0.5)},
                            "cls seed 0": {"a": _log(3, 0.2, part="a"), "b": _log(3, 0.4, part="b")}},
                "classifier": {"run-x": {None: _log(10, 2.0, seconds=6.0)}, "zero-shot": {}}}
    index = write_report(tmp_path / "r", title="t", table=TABLE, grids={}, real={}, training=training)
    page = index.read_text()
    assert 'id="training"' in page and 'src="training.png"' in page
    with Image.open(tmp_path / "r" / "training.png") as image:
        assert image.size[0] > 800 and image.size[1] > 400  # two columns of two panels
    rows = re.findall(r"<tr><td>(adapter \(diffusion\) training|classifier training)</td><td>([^<]+)</td>"
                      r'<td class="num">(\d+)</td><td class="num">(\d+)</td><td class="num">([^<]+)</td>'
                      r'<td class="num">([^<]+)</td><td class="num">([^<]+)</td></tr>', page)
    assert [r[1:] for r in rows] == [("dset seed 0", "1", "4", "0.5", "8.0", "2.0"),
                                     ("cls seed 0", "2", "3", "0.3", "8.0", "3.0"),  # mean of the parts
                                     ("run-x", "1", "10", "2", "8.0", "1.0")]  # no row for a stage with no log
    write_report(tmp_path / "r", title="t", table=TABLE, grids={}, real={})
    assert not (tmp_path / "r" / "training.png").exists()  # a rewrite without logs drops the old plot
    assert 'id="training"' not in (tmp_path / "r" / "index.html").read_text()
