"""The report and search pages in a real headless browser (Debian's chromium driven by Playwright).

The tests skip when Playwright or chromium is missing, unless ``OMNICLIP_REQUIRE_BROWSER=1`` (set by ``.ci/run``),
where a missing browser fails them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from timeline_videos import CLASSES, MODEL, colour_video

from omniclip.cli import main

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not CHROMIUM.is_file():
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("OMNICLIP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"OMNICLIP_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    page = browser.new_page()
    page.errors = []  # console errors and uncaught exceptions
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.set_default_timeout(15000)
    yield page
    page.close()


def _seeks_to(page: Any, player: str, seconds: float) -> None:
    """Wait until the player has the video's metadata and stands at ``seconds``."""
    page.wait_for_function(
        f"([t]) => {{ const v = {player}; return v.readyState >= 1 && Math.abs(v.currentTime - t) < 0.05; }}",
        arg=[seconds],
    )


def test_report_lanes_hold_the_segments_and_a_click_seeks_the_player(page, tmp_path) -> None:
    video = colour_video(tmp_path / "videos" / "three.mp4", [("red", 6.0), ("blue", 6.0), ("green", 6.0)])
    out = tmp_path / "reports" / "three"
    assert main(["timeline", str(video), *MODEL, "--classes", ",".join(CLASSES), "--out", str(out)]) == 0
    with open(out / "segments.csv", newline="") as f:
        rows = [(r["class"], float(r["start"]), float(r["end"])) for r in csv.DictReader(f)]
    assert [r[0] for r in rows] == ["red", "blue", "green"]

    page.goto((out / "report.html").as_uri())
    player = "document.getElementById('player')"
    page.wait_for_function(f"{player}.readyState >= 1")  # chromium reads the H.264 mp4 by its relative path
    assert page.evaluate(f"{player}.duration") == pytest.approx(18.0, abs=0.1)
    lanes = page.eval_on_selector_all(".lane", "ls => ls.map(l => l.dataset.class)")
    assert lanes == CLASSES
    segs = page.eval_on_selector_all(
        ".lane .seg",
        "ss => ss.map(s => [s.closest('.lane').dataset.class, s.dataset.class, +s.dataset.start, +s.dataset.end])",
    )
    assert all(lane == cls for lane, cls, _, _ in segs)
    assert sorted((cls, start, end) for _, cls, start, end in segs) == sorted(rows)
    table = page.eval_on_selector_all("#segments tbody tr", "rs => rs.map(r => r.dataset.class)")
    assert table == [r[0] for r in rows]

    for k, (_, start, _) in reversed(list(enumerate(rows))):  # table rows, then lane segments
        page.click(f"#segments tbody tr >> nth={k}")
        _seeks_to(page, player, start)
        page.click(f".seg[data-segment='{k}']")
        _seeks_to(page, player, start)
    page.wait_for_function(f"{player}.readyState >= 2")  # a frame was decoded at the new position
    assert page.errors == []


def test_search_page_plays_each_hit_from_its_start(page, tmp_path, capsys) -> None:
    videos = tmp_path / "videos"
    colour_video(videos / "a.mp4", [("red", 6.0), ("blue", 6.0)])
    colour_video(videos / "b b.mp4", [("green", 5.0), ("yellow", 3.0), ("green", 5.0)])  # a space in the name
    index, html = tmp_path / "index", tmp_path / "pages" / "results.html"
    assert main(["index", str(videos), "--clip", "omniclip-tiny", "--out", str(index), "--no-progress"]) == 0
    argv = ["search", str(index), "yellow", "--templates", "a {} shape.", "--top", "3", "--html", str(html)]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].endswith("b b.mp4")  # the planted moment first

    page.goto(html.as_uri())
    hits = page.eval_on_selector_all("li.hit", "hs => hs.map(h => [h.dataset.start, h.querySelector('a.open').href])")
    assert len(hits) == 3
    for start, href in hits:
        url = urlparse(href)
        assert url.fragment == f"t={start}" and Path(unquote(url.path)).is_file()
    assert Path(unquote(urlparse(hits[0][1]).path)).name == "b b.mp4"

    player = "document.getElementById('player')"
    for k in (0, 1, 0):
        page.click(f"li.hit >> nth={k} >> button.play")
        _seeks_to(page, player, float(hits[k][0]))
        playing = unquote(urlparse(page.evaluate(f"{player}.currentSrc")).path)
        assert playing == unquote(urlparse(hits[k][1]).path)
    assert page.errors == []

    page.goto(hits[0][1])  # the link alone opens the video at the hit's start (and chromium plays it from there)
    page.wait_for_function(
        "([t]) => { const v = document.querySelector('video');"
        " if (!v || v.readyState < 1) return false;"
        " return Math.abs((v.played.length > 0 ? v.played.start(0) : v.currentTime) - t) < 0.05; }",
        arg=[float(hits[0][0])],
    )
