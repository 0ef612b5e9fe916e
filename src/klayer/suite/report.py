"""``report.md`` and a self-contained ``report.html`` from saved runs. Never retrains.

Every number is read from the runs' ``results.json`` (and ``gradcheck.json``, ``sanity.json``,
``diagnostics.csv``) when the report is built; ``study.json`` only says which run is which. The
reported values come from ``reported.toml`` (with their sources). "Inside" means our mean lies in
``[min - 0.005, max + 0.005]`` of the reported values (half a point of slack, as several reports
give a single number).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import statistics
import tomllib
from pathlib import Path

from ..errors import KlayerError
from ..io import atomic_write, ensure_dir, sole_writer
from ..runs.shape import read_results
from .parts import Link, read_gradcheck, read_sanity, read_study, read_suite, run_notes, slug

__all__ = ["build_report", "write_report", "reported_values"]

SLACK = 0.005


def reported_values() -> dict:
    """The reference reports' numbers (``reported.toml``)."""
    return tomllib.loads((Path(__file__).parent / "reported.toml").read_text())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.2f}%"


def _ms(xs: list[float]) -> str:
    m, s = _mean_std(xs)
    return "n/a" if m != m else f"{100 * m:.2f} ± {100 * s:.2f}% (n={len(xs)})"


def _inside(xs: list[float], ref: list[float]) -> str:
    if not xs or not ref:
        return ""
    m = statistics.fmean(xs)
    if min(ref) - SLACK <= m <= max(ref) + SLACK:
        return "yes"
    return "no (above)" if m > max(ref) else "no (below)"


class _Doc:
    """Blocks rendered to Markdown and to HTML."""

    def __init__(self, root: Path):
        self.root = root
        self.blocks: list[tuple] = []
        self.appendix: list[tuple[str, _Doc]] = []  # at the end; folded away in HTML

    def appendix_section(self, title: str) -> _Doc:
        """A part that goes to the appendix (``<details>`` in HTML): long tables."""
        child = _Doc(self.root)
        self.appendix.append((title, child))
        return child

    def gallery(self, items: list[tuple[bytes, str]], caption: str):
        """PNG thumbnails with captions (a table of the captions in Markdown)."""
        if items:
            self.blocks.append(("gallery", items, caption))

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]):
        self.blocks.append(("table", header, [[c if isinstance(c, Link) else str(c) for c in r] for r in rows]))

    def img(self, path: Path, caption: str):
        if Path(path).is_file():
            self.blocks.append(("img", Path(path), caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |")
                out.append("|" + "---|" * len(b[1]))
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b[2]]
            elif b[0] == "gallery":
                out.append(f"{b[2]} (thumbnails in report.html):")
                out.append("")
                out.append("| # | mistake |")
                out.append("|---|---|")
                out += [f"| {i + 1} | {cap} |" for i, (_, cap) in enumerate(b[1])]
            else:
                rel = Path(b[1]).resolve().relative_to(self.root.resolve()) if _under(b[1], self.root) else b[1]
                out.append(f"![{b[2]}]({rel})")
            out.append("")
        if self.appendix:
            out += ["## Appendix", ""]
            for title, child in self.appendix:
                out += [f"### {title}", "", child.markdown()]
        return "\n".join(out)

    def _body(self) -> list[str]:
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f'<h{b[1]} id="{slug(b[2])}">{html.escape(b[2])}</h{b[1]}>')
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "gallery":
                figs = "".join(
                    f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                    f'alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption></figure>'
                    for png, cap in b[1]
                )
                body.append(f'<p>{html.escape(b[2])}</p><div class="gallery">{figs}</div>')
            else:
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                    f"<figcaption>{html.escape(b[2])}</figcaption></figure>"
                )
        return body

    def html(self) -> str:
        body = self._body()
        if self.appendix:
            body.append('<h2 id="appendix">Appendix</h2>')
            for title, child in self.appendix:
                body.append(f"<details><summary>{html.escape(title)}</summary>{''.join(child._body())}</details>")
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
            "font-size:13px;text-align:right}th{background:#eee}img{max-width:100%}figure{margin:1em 0}"
            ".gallery{display:flex;flex-wrap:wrap;gap:10px}.gallery figure{margin:0;width:120px;font-size:11px;"
            "text-align:center}.gallery img{width:96px;height:96px;image-rendering:pixelated}"
            "summary{cursor:pointer;font-weight:bold;margin:.5em 0}"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>klayer report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
        )


def _md_cell(c) -> str:
    return f"[{c.text}](#{c.anchor})" if isinstance(c, Link) else c


def _html_cell(c) -> str:
    return f'<a href="#{c.anchor}">{html.escape(c.text)}</a>' if isinstance(c, Link) else html.escape(c)


def _under(path, root) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def _run_results(sdir: Path, entries: list[dict]) -> list[tuple[dict, dict | None]]:
    """Each run entry with its results; None for an unfinished run or a damaged results.json
    (:func:`klayer.suite.parts.run_notes` says which)."""
    return [(e, read_results(sdir / e["run"] / "results.json")[0]) for e in entries]


def _acc(pairs) -> list[float]:
    return [r["test_accuracy"] for _, r in pairs if r and r.get("status") == "complete"]


def _not_counted(doc: _Doc, sdir: Path, study: dict):
    """Say which runs of the study are not in its numbers: diverged, unfinished or damaged."""
    notes = run_notes(sdir, study)
    if notes:
        doc.p("Not in the numbers above: " + "; ".join(notes) + ".")


# -- sections ----------------------------------------------------------------------------------
def _gradcheck(doc: _Doc, sdir: Path, study: dict, ref: dict):
    g, problem = read_gradcheck(sdir)
    if g is None:
        doc.p(f"Results missing: {problem}.")
        return
    doc.p(
        f"Data: the first {g['features']} features of {g['source']}; numerical gradients by centred "
        "differences in float64. Each parameter is judged at the step h* where the numerical derivative is most "
        "accurate (starred), without looking at the analytic gradient. 'rel' errors are max|ga-gn| over the "
        "parameter's largest gradient entry; 'abs' rows, a bias in front of batch norm (true gradient exactly 0), "
        "are over the largest gradient of its layer. Batch norm over 2 samples is refused: every normalized "
        "feature is then about +-1 whatever its input, so the gradients in front of it vanish."
    )

    def judged(t, kind):  # each row's error at its judged step (files before h* was recorded: the smallest)
        errors = [r["errors"][r["best"]] if "best" in r else min(r["errors"]) for r in t["rows"] if r["kind"] == kind]
        return max([e for e in errors if e is not None] or [0.0])

    rows = []
    for t in g["tables"]:
        head = [t["depth"], "yes" if t["batch_norm"] else "no", t["batch"], t["lam"]]
        if not t["rows"]:
            rows.append([*head, "", "", "refused"])
            continue
        rel, worst_abs = judged(t, "rel"), judged(t, "abs")
        verdict = "pass" if t["passed"] else ("refused" if t.get("refused") else "FAIL")
        rows.append([*head, f"{rel:.1e}" if rel else "", f"{worst_abs:.1e}" if worst_abs else "", verdict])
    doc.table(["depth", "batch norm", "batch", "lam", "max rel error", "max abs error", "verdict"], rows)
    doc.p(
        "Reference reports: relative errors between 1e-5 and 1e-10 (001, tables 1-4), with a bias in front "
        "of batch norm misread as a failure (003). The per-parameter tables are in the appendix."
    )
    app = doc.appendix_section("Gradient checks: relative error per parameter and step size h")
    for t in g["tables"]:
        if not t["rows"] or t["batch"] != max(x["batch"] for x in g["tables"]) or t["lam"] != g["tables"][0]["lam"]:
            continue
        app.h(
            4,
            f"{t['depth']} layers, {'with' if t['batch_norm'] else 'without'} batch norm, batch {t['batch']}, "
            f"lam {t['lam']}",
        )
        app.table(
            ["param", "err", *[f"h={h:.0e}" for h in t["hs"]], "bound"],
            [
                [
                    r["name"],
                    r["kind"],
                    *[
                        ("kink" if e is None else f"{e:.2e}") + ("*" if k == r.get("best") else "")
                        for k, e in enumerate(r["errors"])
                    ],
                    f"{r['bound']:.1e}" if "bound" in r else "",
                ]
                for r in t["rows"]
            ],
        )


def _sanity(doc: _Doc, sdir: Path, study: dict, ref: dict, figdir: Path):
    s, problem = read_sanity(sdir)
    if s is None:
        doc.p(f"Results missing: {problem}.")
        return
    from ..plots import plot_curves

    series = {k: ([r["epoch"] for r in v], [r["train_loss"] for r in v]) for k, v in s["curves"].items()}
    fig = plot_curves(series, figdir / "sanity_loss.png", "epoch", "training loss", "overfitting 100 images", logy=True)
    rs = ref.get("sanity", {})
    rows = [[k, f"{v[-1]['train_loss']:.4f}", f"{v[-1]['train_accuracy']:.3f}"] for k, v in s["curves"].items()]
    doc.p(
        f"Settings: {', '.join(f'{k}={v}' for k, v in s['settings'].items())}. Reported: "
        f"{', '.join(rs.get('sources', []))}."
    )
    doc.table(["network", "final training loss", "final training accuracy"], rows)
    doc.img(fig, "training loss while overfitting 100 training images")


def _runs(doc: _Doc, sdir: Path, study: dict, ref: dict):
    pairs = _run_results(sdir, study["runs"])
    refs = ref.get("runs", {})
    rows = []
    snapshots = any(r and r.get("snapshot_ensemble") for _, r in pairs)
    for exp in study["experiments"]:
        mine = [(e, r) for e, r in pairs if e["experiment"] == exp]
        accs = _acc(mine)
        rv = refs.get(exp, {}).get("values", [])
        walls = [r["wall_seconds"] for _, r in mine if r and r.get("status") == "complete" and "wall_seconds" in r]
        wall = f"{statistics.fmean(walls) / 60:.1f} min" if walls else "n/a"
        row = [exp, _ms(accs), ", ".join(_pct(v) for v in rv), _inside(accs, rv), wall]
        if snapshots:
            ens = [r["snapshot_ensemble"]["test_accuracy"] for _, r in mine if r and r.get("snapshot_ensemble")]
            row.insert(2, _ms(ens) if ens else "")
        rows.append(row)
    header = ["experiment", "ours: test accuracy", "reported", "inside", "wall time per run"]
    if snapshots:
        header.insert(2, "snapshot ensemble")
    doc.table(header, rows)
    srcs = [f"{e}: {'; '.join(refs[e]['sources'])}" for e in study["experiments"] if e in refs]
    if srcs:
        doc.p("Sources: " + " | ".join(srcs))
    for exp in study["experiments"]:
        first = next((e for e, r in pairs if e["experiment"] == exp and r), None)
        if first:
            doc.img(sdir / first["run"] / "accuracy.png", f"{exp}, seed {first['seed']}: accuracy")
            doc.img(sdir / first["run"] / "loss.png", f"{exp}, seed {first['seed']}: loss")


def _search(doc: _Doc, sdir: Path, study: dict, ref: dict, figdir: Path):
    from ..plots import plot_curves

    key = study["key"].split(".")[-1]
    pairs = _run_results(sdir, study["runs"])
    rs = ref.get("search", {}).get(study["name"], {})
    series = {}
    for stage in ("coarse", "fine"):
        staged = [(e, r) for e, r in pairs if e["stage"] == stage]
        if not staged:
            continue
        pts = [(e["value"], r) for e, r in staged if r and r["status"] == "complete"]
        values = [e["value"] for e, _ in staged]
        # the range searched: the study's for the coarse stage, the values tried for the fine one
        lo, hi = (study["low"], study["high"]) if stage == "coarse" else (min(values), max(values))
        diverged = [e["value"] for e, r in staged if r and r["status"] == "diverged"]
        missing = len(staged) - len(pts) - len(diverged)
        head = f"{stage} search: {len(staged)} values of {key} in [{lo:.3g}, {hi:.3g}]"
        if diverged:
            head += f", {len(diverged)} diverged ({', '.join(f'{v:.3g}' for v in diverged)})"
        if missing:
            head += f", {missing} without results"
        doc.h(4, head + (", top 3" if pts else ""))
        if not pts:
            continue
        series[stage] = (
            [v for v, _ in sorted(pts, key=lambda p: p[0])],
            [r["final"]["val_accuracy"] for _, r in sorted(pts, key=lambda p: p[0])],
        )
        top3 = sorted(pts, key=lambda p: -p[1]["final"]["val_accuracy"])[:3]
        doc.table(
            [key, "validation accuracy", "test accuracy"],
            [[f"{v:.4g}", _pct(r["final"]["val_accuracy"]), _pct(r["test_accuracy"])] for v, r in top3],
        )
    if series:
        fig = plot_curves(series, figdir / f"{study['name']}.png", key, "validation accuracy", study["name"], logx=True)
        doc.img(fig, f"validation accuracy against {key}")
    final = [(e, r) for e, r in pairs if e["stage"] == "final"]
    if final:
        best = final[0][0]["value"]
        accs = _acc(final)
        rv = rs.get("values", [])
        doc.table(
            ["", "ours", "reported", "inside"],
            [
                [f"best {key}", f"{best:.4g}", ", ".join(f"{v:.4g}" for v in rs.get("best", [])), ""],
                ["test accuracy, retrained", _ms(accs), ", ".join(_pct(v) for v in rv), _inside(accs, rv)],
            ],
        )
        if rs:
            doc.p("Sources: " + "; ".join(rs.get("best_sources", []) + rs.get("sources", [])))
        doc.img(sdir / final[0][0]["run"] / "accuracy.png", f"best {key} retrained, seed 0: accuracy")


def _diag_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    except (OSError, ValueError, TypeError):  # a damaged diagnostics.csv is left out
        return []


def _grid(doc: _Doc, sdir: Path, study: dict, ref: dict):
    key = study["key"].split(".")[-1]
    pairs = _run_results(sdir, study["runs"])
    rs = ref.get("grid", {}).get(study["name"], {})
    values = study["values"]
    rows = []
    for exp in study["experiments"]:
        for v in values:
            accs = _acc([(e, r) for e, r in pairs if e["experiment"] == exp and e["value"] == v])
            rv = rs.get(exp, {}).get(repr(float(v)), rs.get(exp, {}).get(f"{v:g}", {}))
            rows.append(
                [
                    exp,
                    f"{v:g}",
                    _ms(accs),
                    ", ".join(_pct(x) for x in rv.get("values", [])),
                    _inside(accs, rv.get("values", [])),
                    "; ".join(rv.get("sources", [])),
                ]
            )
    doc.table(["network", key, "ours: test accuracy", "reported", "inside", "source"], rows)
    # the explanation, with numbers from the saved diagnostics
    smallest = min(values)
    for exp in study["experiments"]:
        e = next((e for e, r in pairs if e["experiment"] == exp and e["value"] == smallest and e["seed"] == 0), None)
        if not e:
            continue
        diag = _diag_rows(sdir / e["run"] / "diagnostics.csv")
        if not diag:
            continue
        last = max(int(k[1:-4]) for k in diag[0] if k.startswith("s") and k.endswith("_std"))
        r = read_results(sdir / e["run"] / "results.json")[0] or {}
        doc.p(
            f"{exp}, {key}={smallest:g}: at step 0 the std of S_1 is {diag[0]['s1_std']:.2g} and of S_{last} "
            f"{diag[0][f's{last}_std']:.2g}; at the end {diag[-1]['s1_std']:.2g} and {diag[-1][f's{last}_std']:.2g}. "
            f"Dead ReLUs in layer {last}: {100 * diag[-1][f'dead{last}']:.0f}%. Relative gradient of W_1: "
            f"{diag[-1]['grad1']:.2g}. Test accuracy {_pct(r.get('test_accuracy', float('nan')))}."
        )
        doc.img(sdir / e["run"] / "diagnostics.png", f"{exp}, {key}={smallest:g}: per-layer diagnostics")
    doc.p(
        "Why: without batch norm, each layer multiplies the scale of its input by about sigma*sqrt(m/2) "
        "(He initialization instead uses sqrt(2/m), which keeps it at 1). With sigma=1e-4 and widths 10-50 that "
        "is about 1e-3 per layer, so after eight layers the scores are ~1e-20 and identical for every image: the "
        "softmax is uniform, the network predicts one class (10% accuracy), and the gradients of every weight "
        "matrix are smaller still (each carries the product of the other layers' tiny weights), so the only "
        "update left is the weight decay 2*lam*W: the relative gradient equals 2*lam exactly. Batch norm "
        "divides each S_l by its batch standard deviation, so every layer sees unit-scale inputs whatever sigma "
        "is, the gradients have normal size, and the network trains as with He initialization."
    )
    trained = []
    for exp in study["experiments"]:
        ok = [
            v
            for v in values
            if statistics.fmean(_acc([(e, r) for e, r in pairs if e["experiment"] == exp and e["value"] == v]) or [0.0])
            > 0.15
        ]
        trained.append(f"{exp}: {', '.join(f'{v:g}' for v in ok) or 'none'}")
    doc.p(f"Values of {key} at which each network learned (mean test accuracy above 15%): " + "; ".join(trained) + ".")


def _collect(paths: list[Path]):
    """The study folders and loose run folders under ``paths``; KlayerError for a path that is
    missing, not a folder, or holds nothing to report."""
    studies, loose = [], []
    for p in paths:
        if not p.exists():
            raise KlayerError(f"{p}: no such folder")
        if not p.is_dir():
            raise KlayerError(f"{p}: not a folder (give a reproduce, study or run folder)")
        if (p / "study.json").is_file():
            studies.append(p)
        elif (p / "results.json").is_file():
            loose.append(p)
        else:
            suite = _read_json(p / "suite.json")
            listed = suite.get("studies") if isinstance(suite, dict) else None
            names = listed if isinstance(listed, list) else sorted(d.name for d in p.iterdir())
            found = [p / str(n) for n in names if (p / str(n) / "study.json").is_file()]
            if not found:
                raise KlayerError(
                    f"{p}: nothing to report (no study.json, results.json, or study folders from klayer reproduce)"
                )
            studies += found
    return studies, loose


def build_report(paths, out=None, data_root=None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out`` (default: the first path).

    Every path must be a reproduce folder (with ``suite.json`` or study folders), a study folder
    (``study.json``) or a run folder (``results.json``); otherwise KlayerError, and nothing is
    written. ``data_root`` is where the headline run's test images are read (default: as its
    config says, else ``$KLAYER_DATA``); without them the confusion matrix and gallery are left out.

    ``out`` has one writer at a time: the report is written holding its lock (KlayerError naming
    it while another klayer process writes it, e.g. a ``klayer reproduce`` into it), after the
    temporary files a killed write left in it and in its ``figures`` are removed."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise KlayerError("no folders to report on")
    _collect(paths)  # a path with nothing to report is refused before anything is created
    out = Path(out) if out else paths[0]
    with sole_writer(out, "report folder", ("figures",)):
        return write_report(paths, out, data_root)


def write_report(paths, out, data_root=None) -> tuple[Path, Path]:
    """:func:`build_report` for a caller that is already the only writer of ``out``
    (:func:`klayer.io.sole_writer`: ``klayer reproduce`` holds its output folder)."""
    from . import parts

    paths = [Path(p) for p in paths]
    if not paths:
        raise KlayerError("no folders to report on")
    studies, loose = _collect(paths)
    out = Path(out)
    figdir = ensure_dir(out / "figures")
    ref = reported_values()
    doc = _Doc(out)
    doc.h(1, "klayer: the DD2424 reports, reproduced")
    suite = read_suite(paths[0] / "suite.json")
    if suite:
        doc.p(
            f"{len(suite['studies'])} studies, {suite['seeds']} seeds per headline number "
            f"(mean ± sample standard deviation over seeds){', quick mode (reduced sizes)' if suite['quick'] else ''}; "
            f"wall time {suite['wall_seconds'] / 60:.1f} min (estimated {suite['estimated_seconds'] / 60:.1f} min). "
            f"'inside': our mean within the reported values' range, with {100 * SLACK:.1f} points of slack."
        )
    summary_at, loaded = len(doc.blocks), [(sdir, read_study(sdir)) for sdir in studies]
    for sdir, study in loaded:
        doc.h(2, study["name"])
        if study.get("description"):
            doc.p(study["description"])
        kind = study["kind"]
        if kind == "gradcheck":
            _gradcheck(doc, sdir, study, ref)
        elif kind == "sanity":
            _sanity(doc, sdir, study, ref, figdir)
        elif kind == "runs":
            _runs(doc, sdir, study, ref)
            _not_counted(doc, sdir, study)
            runs = {x: [sdir / e["run"] for e in study["runs"] if e["experiment"] == x] for x in study["experiments"]}
            parts.add_overlay(doc, figdir, study["name"], runs)
        elif kind == "search":
            _search(doc, sdir, study, ref, figdir)
            _not_counted(doc, sdir, study)
        elif kind == "grid":
            _grid(doc, sdir, study, ref)
            _not_counted(doc, sdir, study)
    if loose:
        doc.h(2, "Runs")
        rows, problems = [], []
        for d in loose:
            r, problem = read_results(d / "results.json")
            if r is None:
                problems.append(problem)
                rows.append([d.name, "damaged", "n/a", "n/a", "n/a"])
                continue
            rows.append(
                [
                    d.name,
                    r["status"] if r["status"] == "complete" else f"diverged at update step {r['diverged_at_step']}",
                    _pct(r.get("test_accuracy") or float("nan")),
                    _pct(r.get("final", {}).get("val_accuracy", float("nan"))),
                    f"{r.get('seconds_per_epoch', float('nan')):.2f}",
                ]
            )
        doc.table(["run", "status", "test accuracy", "final val accuracy", "s/epoch"], rows)
        if problems:
            doc.p("Not in the numbers above: " + "; ".join(problems) + ".")
        for d in loose:
            doc.img(d / "accuracy.png", f"{d.name}: accuracy")
        parts.add_overlay(doc, figdir, "runs", {d.name: [d] for d in loose})
    parts.add_headline(doc, figdir, loaded, loose, data_root)
    parts.add_summary(doc, summary_at, loaded, loose, ref)
    md, htm = out / "report.md", out / "report.html"
    atomic_write(md, doc.markdown())
    atomic_write(htm, doc.html())
    return md, htm
