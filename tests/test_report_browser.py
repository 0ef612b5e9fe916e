"""The HTML report in a real browser: headless Chromium loads it from disk and must show no
console errors, load every image, ask for nothing but the file itself and data: URIs, and
resolve every in-page link. Skipped, with the reason, when no Chromium is installed
(``apt-get install chromium``; or set ``KLAYER_CHROMIUM`` to a Chrome binary)."""

import pytest

from .browser import find_chromium, inspect_page
from .synthetic_suite import synthetic_reproduce

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium or Chrome found (apt-get install chromium, or set KLAYER_CHROMIUM)"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import numpy as np

    out, _ = synthetic_reproduce(tmp_path_factory.mktemp("browser"), np.random.default_rng(0))
    return out / "report.html"


@pytest.fixture(scope="module")
def page(report):
    return inspect_page(report, CHROMIUM)


def test_report_renders_without_errors_and_every_image_loads(report, page):
    assert page["errors"] == []
    assert page["title"] == "klayer report"
    images = page["images"]
    assert len(images) >= 10  # run curves, the overlay, the confusion matrix and the 12-image gallery
    broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert broken == []
    assert sum("misclassified" not in i["alt"] and i["alt"].startswith("true ") for i in images) == 12  # gallery


def test_report_is_self_contained(report, page):
    assert page["requests"][0] == report.resolve().as_uri()
    assert all(u.startswith("data:") for u in page["requests"][1:])  # nothing from the network, no side files


def test_summary_links_resolve_and_long_tables_are_folded(report, page):
    assert "#idx_networks" in page["anchors"] and "#gradcheck" in page["anchors"]
    assert page["missing"] == []
    assert page["details"] and not any(page["details"])  # the gradient-check tables start folded
    assert page["text"].index("Summary") < page["text"].index("Data: the first")  # the summary comes first


def test_the_harness_sees_broken_images_console_errors_and_requests(tmp_path):
    """The checks above are not vacuous: a page with a broken image, a missing file, a script
    error and a dangling link is reported as such."""
    (tmp_path / "bad.html").write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img src="data:image/png;base64,AAAA" alt="broken"><img src="missing.png" alt="missing">'
        '<script>console.error("boom"); undefinedFunction();</script><a href="#nowhere">x</a></body></html>'
    )
    page = inspect_page(tmp_path / "bad.html", CHROMIUM)
    assert [i["width"] for i in page["images"]] == [0, 0]
    assert any("boom" in e for e in page["errors"]) and any("undefinedFunction" in e for e in page["errors"])
    assert any("ERR_FILE_NOT_FOUND" in e for e in page["errors"])
    assert (tmp_path / "missing.png").as_uri() in page["requests"]
    assert page["missing"] == ["nowhere"]
