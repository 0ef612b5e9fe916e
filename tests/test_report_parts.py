"""The report's new parts: the one-screen summary first, gradient-check tables in a folded
appendix, validation-curve overlays, the headline run's confusion matrix and its most
confidently misclassified test images."""

import base64
import re
import shutil

import numpy as np
import pytest

from klayer.cli import main
from klayer.metrics import confident_mistakes
from klayer.runs import load_model
from klayer.suite import build_report
from klayer.suite.parts import Link, reported_range, slug, summary_rows, validation_series, verdict

from .synthetic_suite import synthetic_reproduce


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return synthetic_reproduce(tmp_path_factory.mktemp("rep"), np.random.default_rng(0))


def test_the_summary_opens_the_report(suite):
    out, _ = suite
    md = (out / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", md, re.M)
    assert headings[0] == "Summary" and headings[-1] == "Appendix"
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "| experiment | ours | reported | verdict | section |" in summary
    assert "| gradcheck | 4/4 tables pass | 1e-10 to 1e-5 | pass | [gradcheck](#gradcheck) |" in summary
    for exp in ("idx_plain", "idx_bn"):
        assert re.search(
            rf"\| {exp} \| \d+\.\d\d ± \d+\.\d\d% \|  \|  \| \[idx_networks\]\(#idx_networks\) \|", summary
        )
    assert len(summary.splitlines()) < 30  # one screen


def test_summary_numbers_and_verdicts_come_from_the_runs(suite, tmp_path, monkeypatch):
    out, data = suite
    import json

    import klayer.suite.report as report

    study = json.loads((out / "idx_networks" / "study.json").read_text())
    acc = {e: [] for e in ("idx_plain", "idx_bn")}
    for e in study["runs"]:
        acc[e["experiment"]].append(
            json.loads((out / "idx_networks" / e["run"] / "results.json").read_text())["test_accuracy"]
        )
    m_plain, m_bn = np.mean(acc["idx_plain"]), np.mean(acc["idx_bn"])
    ref = {
        "runs": {
            "idx_plain": {"values": [m_plain - 0.1, m_plain - 0.05], "sources": ["a"]},
            "idx_bn": {"values": [m_bn - 0.002, m_bn + 0.1], "sources": ["b"]},
        }
    }
    monkeypatch.setattr(report, "reported_values", lambda: ref)
    build_report([out], tmp_path, data)
    md = (tmp_path / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    s_plain = np.std(acc["idx_plain"], ddof=1)
    rng_plain = f"{100 * (m_plain - 0.1):.2f}-{100 * (m_plain - 0.05):.2f}%"
    assert f"| idx_plain | {100 * m_plain:.2f} ± {100 * s_plain:.2f}% | {rng_plain} | above |" in md
    assert "| idx_bn | " in md and "| inside | [idx_networks]" in md


def test_verdict_and_range():
    assert verdict([0.50, 0.52], [0.5, 0.53]) == "inside"
    assert verdict([0.545], [0.5, 0.53]) == "above" and verdict([0.535], [0.5, 0.53]) == "inside"  # half a point
    assert verdict([0.49], [0.5, 0.53]) == "below" and verdict([0.4951], [0.5]) == "inside"
    assert verdict([], [0.5]) == "" and verdict([0.5], []) == ""
    assert reported_range([0.4588, 0.455]) == "45.50-45.88%" and reported_range([0.5179]) == "51.79%"
    assert slug("a3_networks") == "a3_networks" and slug("Headline run") == "headline-run"


def test_summary_rows_of_a_search_and_loose_runs(tmp_path):
    import json

    sdir = tmp_path / "s"
    for i, acc in enumerate((0.50, 0.52)):
        (sdir / f"r{i}").mkdir(parents=True)
        res = {"status": "complete", "test_accuracy": acc, "final": {"val_accuracy": acc}}  # as klayer writes it
        (sdir / f"r{i}" / "results.json").write_text(json.dumps(res))
    study = {"name": "a3_lambda_search", "kind": "search", "key": "train.lam",
             "runs": [{"stage": "final", "value": 0.0046, "seed": i, "run": f"r{i}"} for i in (0, 1)]}  # fmt: skip
    loose = tmp_path / "mine"
    loose.mkdir()
    (loose / "results.json").write_text(
        json.dumps({"status": "complete", "test_accuracy": 0.5, "final": {"val_accuracy": 0.5}})
    )
    rows = summary_rows([(sdir, study)], [loose], {"search": {"a3_lambda_search": {"values": [0.5349, 0.54]}}})
    assert rows[0][:4] == ["a3_lambda_search: best lam 0.0046, retrained", "51.00 ± 1.41%", "53.49-54.00%", "below"]
    assert rows[0][4] == Link("a3_lambda_search", "a3_lambda_search")
    assert rows[1][:2] == ["mine", "50.00%"]


def test_gradient_check_tables_go_to_a_folded_appendix(suite):
    out, _ = suite
    md = (out / "report.md").read_text()
    main_part, appendix = md.split("## Appendix")
    assert "| param | err |" not in main_part and appendix.count("| param | err |") == 4  # depths 2, 3 x batch norm
    assert "| depth | batch norm | batch | lam | max rel error |" in main_part  # the short table stays
    html = (out / "report.html").read_text()
    folded = html.split('<h2 id="appendix">Appendix</h2>')[1]
    assert folded.startswith("<details><summary>Gradient checks") and "<th>param</th>" in folded
    assert "<th>param</th>" not in html.split('<h2 id="appendix">')[0]


def test_validation_curves_overlaid(suite):
    out, _ = suite
    fig = out / "figures" / "idx_networks_validation.png"
    assert fig.read_bytes()[:4] == b"\x89PNG"
    assert "(figures/idx_networks_validation.png)" in (out / "report.md").read_text()
    runs = {e: sorted((out / "idx_networks" / "runs").glob(f"{e}-s*")) for e in ("idx_plain", "idx_bn")}
    series = validation_series(runs)
    steps, mean = series["idx_bn (mean of 2)"]
    import csv

    rows = [list(csv.DictReader(open(d / "history.csv"))) for d in runs["idx_bn"]]
    assert steps == [float(r["step"]) for r in rows[0]]
    np.testing.assert_allclose(
        mean, [(float(a["val_accuracy"]) + float(b["val_accuracy"])) / 2 for a, b in zip(*rows, strict=True)]
    )


def test_headline_run_confusion_matrix_and_gallery(suite):
    out, data = suite
    from klayer.data.idx import load_idx_folder

    md = (out / "report.md").read_text()
    headline = md.split("## Headline run")[1].split("\n## ")[0]
    name = re.search(r"^(\S+) \(", headline.strip()).group(1)
    run = next((out / "idx_networks" / "runs").glob(name))
    X, y = load_idx_folder(data).batches["test"]
    P = load_model(run / "model.safetensors").predict_proba(X)
    assert f"accuracy {100 * (P.argmax(1) == y).mean():.2f}%" in headline
    assert (out / "figures" / "confusion.png").is_file() and "(figures/confusion.png)" in headline
    html = (out / "report.html").read_text()
    gallery = html.split('<div class="gallery">')[1].split("</div>")[0]
    figures = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)">', gallery)
    expected = confident_mistakes(y, P, 12)
    assert [alt for _, alt in figures] == [
        f"true {m['true']}, predicted {m['predicted']} ({100 * m['probability']:.0f}%)" for m in expected
    ]
    from io import BytesIO

    from matplotlib.image import imread

    first = imread(BytesIO(base64.b64decode(figures[0][0])), format="png")
    img = X[expected[0]["index"]].reshape(8, 8)
    np.testing.assert_allclose(first[::8, ::8, 0] * 255, img, atol=1)  # the misclassified image itself


def test_without_the_test_images_the_report_says_so(suite, tmp_path):
    out, data = suite
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert main(["report", str(copy), "--out", str(tmp_path / "rep"), "--data", str(tmp_path / "nowhere")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "test images not available" in md and "misclassified" not in md
    assert '<div class="gallery">' not in (tmp_path / "rep" / "report.html").read_text()


def test_report_command_with_data(suite, tmp_path, capsys):
    out, data = suite
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--data", str(data)]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count('<figure><img src="data:image/png;base64,') == 12 + len(
        re.findall(r"!\[", (tmp_path / "rep" / "report.md").read_text())
    )
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # self-contained: data: URIs and in-page links only
