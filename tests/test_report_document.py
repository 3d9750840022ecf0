"""The reviewer's report: intervals, per-item evidence, templates, plots, valid HTML, file modes."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixture import POLICY_FILE, XSS, build, write

from gatelang.report import intervals
from gatelang.report.evidence import annotate_requirements
from gatelang.runtime import atomic


# --------------------------------------------------------------------------------- intervals
def _rows(pattern: dict[str, list[int]]) -> list[dict]:
    return [{"id": f"{s}/{k}", "subject": s, "after": "leak" if hit else "refuse"}
            for s, hits in pattern.items() for k, hit in enumerate(hits)]


def test_interval_resamples_subjects_not_rows():
    # Half the answers leak, but all of them from one of two people: 20 rows say little.
    rows = _rows({"a": [1] * 10, "b": [0] * 10})
    low, high = intervals.share_interval(rows, lambda r: r["after"] == "leak")
    w_low, w_high = intervals.wilson(10, 20)
    assert low <= 0.05 and high >= 0.95  # the subject-level spread, not the binomial one
    assert w_low > 0.25 and w_high < 0.75
    # The same rows spread evenly over people: the interval is the binomial one, no wider.
    even = _rows({s: [1, 0] * 2 for s in "abcde"})
    low2, high2 = intervals.share_interval(even, lambda r: r["after"] == "leak")
    assert 0.15 < low2 < 0.5 < high2 < 0.85


def test_interval_is_reproducible_and_never_collapses_to_a_point():
    rows = _rows({"a": [0, 1, 0, 0], "b": [0, 0, 0], "c": [1, 1, 0]})
    hit = lambda r: r["after"] == "leak"  # noqa: E731
    assert intervals.share_interval(rows, hit) == intervals.share_interval(rows, hit)
    none = _rows({s: [0] * 12 for s in "abc"})
    low, high = intervals.share_interval(none, hit)
    assert low == 0.0 and high == pytest.approx(intervals.wilson(0, 36)[1]) and high > 0.05
    assert intervals.share_interval([], hit) == (None, None)


def test_relative_and_drop_intervals_contain_the_value():
    rows = [{"id": str(k), "subject": f"s{k % 6}", "before": "leak",
             "after": "leak" if k % 5 else "other"} for k in range(42)]
    low, high = intervals.relative_interval(rows)
    value = 100 * sum(r["after"] == "leak" for r in rows) / 42
    assert low < value < high <= 100
    d_low, d_high = intervals.drop_interval(rows)
    assert d_low < 100 - value < d_high


# ------------------------------------------------------------------------------ evidence
def test_requirements_carry_their_rows_interval_and_clause():
    report, items, _ = build()
    r1, r2, r3, r4 = report["requirements"]
    by_row = {i["row"]: i for i in items}
    # R1 reads the protected heldout rows the unedited model leaked: 36 of 37 refusal rows.
    assert len(r1["evidence_rows"]) == r1["n"] == 36
    assert all(by_row[k]["check"] == "refusal" and by_row[k]["before"] == "leak"
               for k in r1["evidence_rows"])
    for r in (r1, r2, r3, r4):
        assert r["low"] is not None and r["low"] - 1e-6 <= r["value"] <= r["high"] + 1e-6
    assert len(r3["evidence_rows"]) == 40 and len(r4["evidence_rows"]) == 20
    assert r1["span"]["line"] == 7 and r1["span"]["file"] == POLICY_FILE


def test_a_requirement_whose_rows_do_not_give_its_value_gets_no_link():
    report, items, _ = build()
    req = dict(report["requirements"][0], value=12.0)
    annotate_requirements([req], items, {"p": ["node-refusal"]})
    assert req["evidence_rows"] == [] and req["low"] is None


def test_metric_records_get_intervals_on_both_sides():
    report, _, _ = build()
    rates = [m for m in report["metrics"] if m["metric"] != "exposure"]
    assert rates
    for m in rates:
        for side in ("before", "after"):
            if m[side] is not None:
                assert m[f"{side}_low"] - 1e-6 <= m[side] <= m[f"{side}_high"] + 1e-6, m


# ------------------------------------------------------------------------------ documents
class _Page(HTMLParser):
    """Collects what the validity checks need: ids, links, images, nesting of list items."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []
        self.lang = None
        self.script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "li" and (not self.stack or self.stack[-1] not in ("ul", "ol")):
            self.errors.append(f"<li> inside <{self.stack[-1] if self.stack else ''}>")
        if tag in ("td", "th") and (not self.stack or self.stack[-1] != "tr"):
            self.errors.append(f"<{tag}> outside <tr>")
        if tag == "script":
            self.script = True
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag == "img":
            self.images.append(a.get("src", ""))
            if not a.get("alt"):
                self.errors.append("an <img> without alt text")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else ''}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


def check_page(html_text: str, folder: Path) -> _Page:
    page = _Page()
    page.feed(html_text)
    page.close()
    assert not page.errors, page.errors[:5]
    assert not page.stack, page.stack
    assert page.lang == "en"
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    for href in page.hrefs:
        if href.startswith("#"):
            assert href[1:] in page.ids, href
        else:
            assert "://" not in href and (folder / href).is_file(), href
    for src in page.images:
        assert (folder / src).read_bytes()[:4] == b"\x89PNG", src
    return page


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write(out)


def test_html_is_valid_and_every_link_and_image_resolves(written):
    out, files = written
    html_text = (out / "report.html").read_text(encoding="utf-8")
    page = check_page(html_text, out)
    assert not page.script  # a self-contained page: nothing runs
    assert {"requirements", "evidence-refusal", "evidence-locality", "evidence-utility",
            "evidence-robustness", "patch", "answers", "answers-r1", "policy-l7"} <= set(page.ids)
    assert "#answers-r1" in page.hrefs and "#policy-l7" in page.hrefs
    assert "items.jsonl" in page.hrefs
    assert len(page.images) == 5 and set(files) >= {"refusal", "locality", "utility",
                                                     "robustness", "layers"}


def test_model_output_is_escaped(written):
    out, _ = written
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert XSS not in html_text
    assert "&lt;script&gt;alert(" in html_text
    md = (out / "report.md").read_text(encoding="utf-8")
    assert XSS not in md and r"\<script\>" in md


def test_items_jsonl_numbers_every_answer(written):
    out, _ = written
    report, items, _ = build()
    lines = (out / "items.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(items) == 37 + 40 + 20 + 12
    rows = [json.loads(line) for line in lines]
    assert [r["row"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["check"] for r in rows} == {"refusal", "locality", "utility", "sampled"}
    assert set(rows[0]) >= {"prompt", "before", "after", "before_text", "after_text", "subject"}


def test_markdown_states_intervals_small_n_and_plain_words(written):
    out, _ = written
    md = (out / "report.md").read_text(encoding="utf-8")
    report, _, _ = build()
    r1 = report["requirements"][0]
    assert f"{r1['low']:.1f}–{r1['high']:.1f}%" in md
    assert "*small n*" in md  # the 12-row attack cell
    assert "[36 answers](#answers-r1)" in md and "line 7" in md
    assert "{'" not in md and "gate dims" not in md  # no dict or internal key printed as is
    assert "all 160 dimensions of that layer" in md  # 160 of 640 explained, not contradicted
    assert "none of the layer's 160 residual-stream dimensions" in md
    assert "17 of 448 columns" in md
    assert md.count("![plot") == 5


def test_report_bytes_are_reproducible(tmp_path):
    write(tmp_path / "a")
    write(tmp_path / "b")
    for name in ("report.md", "report.html", "items.jsonl", "plot-refusal.png",
                 "plot-locality.png", "plot-layers.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_plot_colours_are_consistent(written):
    from PIL import Image

    from gatelang.report.plots import AFTER_COLOUR, BEFORE_COLOUR

    out, _ = written
    want = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (BEFORE_COLOUR, AFTER_COLOUR)}
    for name in ("plot-refusal.png", "plot-locality.png", "plot-utility.png",
                 "plot-robustness.png"):
        colours = {c for _n, c in Image.open(out / name).convert("RGB").getcolors(1 << 20)}
        assert want <= colours, name


def test_documents_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write(tmp_path / "out")
    finally:
        os.umask(old)
    for f in (tmp_path / "out").iterdir():
        assert f.stat().st_mode & 0o777 == 0o640, f.name
    old = os.umask(0o002)
    try:
        path = atomic.atomic_write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664
