"""The run report: one self-contained HTML page per run directory (`report.html`).

`graphdl run` writes it when a run ends and `graphdl report RUN_DIR` rebuilds it, both
from the run directory's files only:

| file | what the report takes from it |
|---|---|
| `spec.resolved.yaml` | the model: the layer table (parameters and forward FLOPs per layer) |
| `metrics.jsonl` | the learning curves: every scalar of each epoch's line, the learning rate |
| `results.json` | the evaluated split's metrics (and the seasonal-naive baseline, if any) |
| `predictions.npz` | the evaluated split's model outputs and targets (`save_predictions`): the confusion matrix of a classifier, predicted vs true of a regression |
| `graph.html` | linked, not read: the graph view `graphdl viz` draws |

The charts are drawn by uPlot (MIT, vendored in `graphdl/viz/vendor/` and inlined, like
dagre for the graph page), the confusion matrix and the tables are plain HTML. Nothing in
the page refers to the network.
"""

from __future__ import annotations

import json
import math
import re
from html import escape
from importlib import resources
from pathlib import Path

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.viz.attention import _CATCH_ERRORS
from graphdl.viz.html import json_for_script

REPORT_FILE = "report.html"
GRAPH_FILE = "graph.html"
PREDICTIONS_FILE = "predictions.npz"
# what `graphdl run` always leaves in a run directory that ran to its end
RUN_FILES = ("spec.resolved.yaml", "metrics.jsonl", "results.json")

# a confusion matrix with more classes than this is not drawn (a language model's vocabulary)
MAX_MATRIX_CLASSES = 40
# at most this many points in the predicted-vs-true scatter (evenly spaced over the split)
MAX_SCATTER_POINTS = 4000
# metrics.jsonl keys that are not curves
_NOT_CURVES = ("epoch", "seconds")

_BANNER = re.compile(r"^/\*!.*?\*/\s*", re.DOTALL)


# ------------------------------------------------------------------ layer table


def layer_rows(spec, g, bindings: dict[str, int]) -> list[dict]:
    """One row per spec layer of the lowered graph ``g``, from its nodes' provenance: spec
    line, name, type, ops, output shape (without the batch), parameter count and FLOPs of
    one execution with ``bindings``. `graphdl compile` prints the same rows."""
    from graphdl.ir.graph import Value
    from graphdl.ops.cost import node_flops

    by_layer: dict[str, list] = {}
    for nid in g.topo_order():
        by_layer.setdefault(g.node(nid)["layer"], []).append(nid)
    rows = []
    for layer in spec.model.layers:
        nodes = by_layer.get(layer.name, [])
        ops = [g.op_of(n) for n in nodes if g.op_of(n) not in ("param", "const", "state")]
        produced = g.meta.get("layer_outputs", {}).get(layer.name)
        rows.append({
            "line": layer.loc.line,
            "layer": layer.name,
            "type": layer.type,
            "ops": list(dict.fromkeys(ops)),
            "output": list(g.type_of(Value(*produced)).shape[1:]) if produced else None,
            "params": sum(g.type_of(Value(n)).numel() for n in nodes if g.op_of(n) == "param"),
            "flops": sum(node_flops(g, n, bindings) for n in nodes),
        })
    return rows


# ------------------------------------------------------------------ the run directory


def save_predictions(run_dir: Path, split: str, outputs: np.ndarray, target: np.ndarray,
                     class_names: list[str] | None) -> Path:
    """Write the evaluated split's model outputs (logits or values) and targets to
    ``run_dir/predictions.npz``, the report's source for the confusion matrix and the
    predicted-vs-true plot."""
    arrays = {"split": np.asarray(split), "output": np.asarray(outputs, np.float32),
              "target": np.asarray(target)}
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(c) for c in class_names])
    path = run_dir / PREDICTIONS_FILE
    tmp = run_dir / (PREDICTIONS_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def check_run_dir_files(run_dir: Path) -> None:
    """E710 (exit 2) naming what is missing when ``run_dir`` is not a finished run
    directory."""
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is not a directory"
        raise GraphdlError(Diagnostic(
            "E710", f"run directory {run_dir} {what}", file=str(run_dir),
            help="give the directory `graphdl run` wrote (runs/<spec name> by default, or its --run-dir)"),
            phase="runtime")
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise GraphdlError(Diagnostic(
            "E710", f"{run_dir} is not a finished run directory: no {', no '.join(missing)}",
            file=str(run_dir),
            help="`graphdl run SPEC` writes them (results.json when the run ends); "
                 "train it again with --run-dir " + str(run_dir) + " or give another run directory"),
            phase="runtime")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise GraphdlError(Diagnostic("E710", f"{path.name} is not valid JSON: {e}", file=str(path),
                                      help="a run rewrites it when it ends: run the spec again"),
                           phase="runtime") from None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl: one record per epoch; E710 at the first line that is not JSON."""
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as e:
            raise GraphdlError(Diagnostic("E710", f"metrics.jsonl line {i} is not valid JSON: {e}",
                                          file=str(path), line=i,
                                          help="a run rewrites it: run the spec again"),
                               phase="runtime") from None
    return records


def read_predictions(run_dir: Path) -> dict | None:
    """predictions.npz as a dict of arrays (class_names a list), or None when absent."""
    path = run_dir / PREDICTIONS_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    if "class_names" in data:
        data["class_names"] = [str(c) for c in data["class_names"]]
    return data


# ------------------------------------------------------------------ what the page shows


def _finite(v):
    """JSON for the page: non-finite numbers (a diverged epoch) become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def curves(records: list[dict]) -> dict:
    """The learning curves of metrics.jsonl: the loss chart (train and validation loss,
    and the regularisation penalty), one chart per metric (train_x and val_x together)
    and the learning rate. Only scalars: per-class lists stay in the file."""
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in keys and k not in _NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)

    def series(key: str) -> dict:
        return {"label": key, "values": [_finite(r.get(key)) for r in records]}

    charts = []
    loss = [k for k in ("train_loss", "val_loss", "train_penalty") if k in keys]
    if loss:
        charts.append({"title": "loss", "series": [series(k) for k in loss]})
    metrics: list[str] = []
    for k in keys:
        if k in loss or k == "lr":
            continue
        name = k.split("_", 1)[1] if k.startswith(("train_", "val_")) else k
        if name not in metrics:
            metrics.append(name)
    for name in metrics:
        members = [k for k in (f"train_{name}", f"val_{name}", name) if k in keys]
        charts.append({"title": name.replace("_", " "), "series": [series(k) for k in members]})
    if "lr" in keys:
        charts.append({"title": "learning rate", "series": [series("lr")], "lr": True})
    return {"epochs": epochs, "charts": charts}


def class_labels(n: int, class_names: list[str] | None) -> list[str]:
    """The name of each of ``n`` classes: the data's names, else the class index."""
    names = list(class_names or [])
    return [names[i] if i < len(names) and names[i] != "" else str(i) for i in range(n)]


def confusion(loss: str, predictions: dict | None, test: dict, ignore_index: int | None) -> dict | None:
    """{labels, matrix} of a classifier (rows true class, columns predicted), from the saved
    outputs (`graphdl.runtime.metrics`, as the `confusion_matrix` metric counts), else
    from results.json when the spec asked for that metric; None for a regression or
    too many classes."""
    from graphdl.runtime.metrics import split_metrics

    if loss not in ("cross_entropy", "bce_with_logits"):
        return None
    matrix = None
    names = None
    if predictions is not None:
        out = predictions["output"]
        if loss == "bce_with_logits" and out.ndim > 1 and out.shape[-1] != 1:
            return None  # several independent labels: a matrix per label is not drawn
        matrix = split_metrics(loss, ["confusion_matrix"], out, predictions["target"],
                               ignore_index)["confusion_matrix"]
        names = predictions.get("class_names")
    elif isinstance(test.get("confusion_matrix"), list):
        matrix = test["confusion_matrix"]
    if matrix is None or not matrix or len(matrix) > MAX_MATRIX_CLASSES:
        return None
    return {"labels": class_labels(len(matrix), names), "matrix": [[int(c) for c in row] for row in matrix]}


def scatter(loss: str, predictions: dict | None) -> dict | None:
    """{true, predicted} of a regression (every output unit of every sample, at most
    MAX_SCATTER_POINTS spread evenly), sorted by the true value."""
    if loss != "mse" or predictions is None:
        return None
    predicted = np.asarray(predictions["output"], np.float64).ravel()
    true = np.asarray(predictions["target"], np.float64).reshape(-1)
    if true.size != predicted.size or not true.size:
        return None
    if true.size > MAX_SCATTER_POINTS:
        keep = np.linspace(0, true.size - 1, MAX_SCATTER_POINTS).astype(np.int64)
        true, predicted = true[keep], predicted[keep]
    order = np.argsort(true, kind="stable")
    return {"true": [_finite(float(v)) for v in true[order]],
            "predicted": [_finite(float(v)) for v in predicted[order]]}


# ------------------------------------------------------------------ writing


def write_report(run_dir: Path, spec, layers: list[dict], *, flops_note: str = "") -> Path:
    """Build ``run_dir/report.html`` from the run directory's files (see the module
    docstring) and ``layers`` (`layer_rows` of the spec's lowered graph); E710 when a
    file the report needs is missing."""
    run_dir = Path(run_dir)
    check_run_dir_files(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    results = _read_json(run_dir / "results.json")
    predictions = read_predictions(run_dir)
    loss_cfg = spec.train["loss"]
    split = spec.evaluate["split"]
    test = results.get(split) if isinstance(results.get(split), dict) else {}
    data = {
        "curves": curves(records),
        "scatter": scatter(loss_cfg["type"], predictions),
    }
    page = render_report(
        spec=spec, run_dir=run_dir, results=results, split=split, test=test, data=data,
        matrix=confusion(loss_cfg["type"], predictions, test, loss_cfg.get("ignore_index")),
        layers=layers, flops_note=flops_note, has_graph=(run_dir / GRAPH_FILE).is_file(),
        has_predictions=predictions is not None)
    path = run_dir / REPORT_FILE
    tmp = run_dir / (REPORT_FILE + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def _read(name: str) -> str:
    return resources.files("graphdl.viz").joinpath(name).read_text(encoding="utf-8")


def vendored_uplot() -> tuple[str, str]:
    """uPlot's script and stylesheet, the script without its banner comment (which names
    the project's web address: the page holds no address at all)."""
    script = _BANNER.sub("", _read("vendor/uPlot.iife.min.js"), count=1)
    if "</script" in script.lower() or "sourceMappingURL" in script:
        raise ValueError("the vendored uPlot build cannot be inlined in a <script> element")
    return script, _read("vendor/uPlot.min.css")


def _number(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return escape(str(v))
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _results_html(results: dict, split: str, test: dict) -> str:
    """The evaluated split's scalar metrics (beside the seasonal-naive forecast's where
    there is one), then per-class lists as a table with a column per class."""
    baseline = test.get("baseline") if isinstance(test.get("baseline"), dict) else None
    head = "<tr><th>metric</th><th>model</th>" + (
        f"<th>{escape(str(baseline.get('name', 'baseline')))}</th>" if baseline else "") + "</tr>"
    rows = []
    for k, v in test.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            other = f"<td>{_number(baseline[k])}</td>" if baseline and k in baseline else (
                "<td></td>" if baseline else "")
            rows.append(f"<tr><th>{escape(k)}</th><td>{_number(v)}</td>{other}</tr>")
    parts = [f'<table class="numbers" id="test-metrics">{head}{"".join(rows)}</table>']
    units = test.get("series_units")
    if isinstance(units, dict):
        base = units.get("baseline") or {}
        urows = "".join(f"<tr><th>{escape(k)}</th><td>{_number(v)}</td><td>{_number(base.get(k, ''))}</td></tr>"
                        for k, v in units.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        parts.append(f"<p class='note'>in {escape(str(units.get('units') or 'the series units'))}:</p>"
                     f"<table class='numbers'><tr><th>metric</th><th>model</th><th>baseline</th></tr>{urows}</table>")
    per_class = {k: v for k, v in test.items() if k.endswith("_per_class") and isinstance(v, list)}
    if per_class:
        n = max(len(v) for v in per_class.values())
        header = "".join(f"<th>{escape(c)}</th>" for c in class_labels(n, None))
        body = "".join(f"<tr><th>{escape(k)}</th>" + "".join(f"<td>{_number(x)}</td>" for x in v) + "</tr>"
                       for k, v in per_class.items())
        parts.append(f"<table class='numbers per-class'><tr><th>class</th>{header}</tr>{body}</table>")
    return "\n".join(parts)


def _matrix_html(matrix: dict) -> str:
    """The confusion matrix as a table: rows the true class, columns the predicted one,
    each cell shaded by its share of its row (the class's recall on the diagonal)."""
    labels, m = matrix["labels"], matrix["matrix"]
    head = "".join(f"<th class='col' scope='col'>{escape(name)}</th>" for name in labels)
    rows = []
    for i, row in enumerate(m):
        total = sum(row)
        cells = []
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            # white to dark blue; text turns white where the cell is dark
            light = round(97 - 62 * share)
            ink = "#fff" if light < 60 else "#111"
            cls = "diag" if i == j else ""
            cells.append(f"<td class='{cls}' style='background:hsl(212,70%,{light}%);color:{ink}' "
                         f"title='true {escape(labels[i])}, predicted {escape(labels[j])}: {count}'>{count}</td>")
        recall = f"{row[i] / total:.0%}" if total else "-"
        rows.append(f"<tr><th scope='row'>{escape(labels[i])}</th>{''.join(cells)}<td class='total'>{total}</td>"
                    f"<td class='total'>{recall}</td></tr>")
    return (f"<table class='confusion' id='confusion'><tr><th class='corner'>true \\ predicted</th>{head}"
            f"<th class='col'>n</th><th class='col'>recall</th></tr>{''.join(rows)}</table>")


def _layers_html(layers: list[dict], flops_note: str) -> str:
    head = "<tr><th title='line in spec.resolved.yaml'>line</th><th>layer</th><th>type</th><th>ops</th><th>output</th><th class='num'>parameters</th><th class='num'>FLOPs</th></tr>"
    rows = []
    for r in layers:
        out = "-" if r["output"] is None else escape(str(r["output"]))
        rows.append(f"<tr><td>{r['line']}</td><td>{escape(r['layer'])}</td><td>{escape(r['type'])}</td>"
                    f"<td class='ops'>{escape(', '.join(r['ops']) or '-')}</td><td>{out}</td>"
                    f"<td class='num'>{r['params']:,}</td><td class='num'>{r['flops']:,}</td></tr>")
    total_p = sum(r["params"] for r in layers)
    total_f = sum(r["flops"] for r in layers)
    rows.append(f"<tr class='sum'><td></td><td>total</td><td></td><td></td><td></td>"
                f"<td class='num'>{total_p:,}</td><td class='num'>{total_f:,}</td></tr>")
    note = f"<p class='note'>{escape(flops_note)}</p>" if flops_note else ""
    return f"<table class='layers' id='layers'>{head}{''.join(rows)}</table>{note}"


def render_report(*, spec, run_dir: Path, results: dict, split: str, test: dict, data: dict,
                  matrix: dict | None, layers: list[dict], flops_note: str, has_graph: bool,
                  has_predictions: bool) -> str:
    """The page: a header, learning curves beside the test results (with the confusion
    matrix or the predicted-vs-true plot), then the layer table."""
    script, css = vendored_uplot()
    title = f"{spec.name}: run report"
    epochs = results.get("epochs_run", len(data["curves"]["epochs"]))
    facts = [f"{epochs} epoch{'s' if epochs != 1 else ''}", f"status {results.get('status', '?')}",
             f"{results.get('weights', '?')} weights evaluated on {split}"]
    if results.get("seconds") is not None:
        facts.append(f"{results['seconds']:.1f} s")
    if results.get("overrides"):
        facts.append("overrides: " + ", ".join(f"{k}={v}" for k, v in results["overrides"].items()))
    graph = (f"<a href='{GRAPH_FILE}' id='graph-link'>graph view</a> (the optimised training graph)"
             if has_graph else
             f"graph view: <code>graphdl viz {escape(str(run_dir / 'spec.resolved.yaml'))} -o {escape(str(run_dir / GRAPH_FILE))}</code>")
    if matrix is not None:
        outcome = ("<h2>Confusion matrix <span class='sub'>rows: true class, columns: predicted "
                   f"({escape(split)} split)</span></h2>" + _matrix_html(matrix))
    elif data["scatter"] is not None:
        outcome = ("<h2>Predicted vs true <span class='sub'>every output of the "
                   f"{escape(split)} split, in the target's units after data.preprocess</span></h2>"
                   "<div class='chart' id='scatter'></div>")
    elif not has_predictions:
        outcome = (f"<p class='note'>No {PREDICTIONS_FILE} in the run directory: "
                   "`graphdl report` computes it from the checkpoint when the data can be read.</p>")
    else:
        outcome = ""
    description = f"<p class='description'>{escape(spec.description)}</p>" if spec.description else ""
    return f"""<!DOCTYPE html>
<html lang="en" data-console-errors="0">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="graphdl report">
<title>{escape(title)}</title>
<script>
{_CATCH_ERRORS}
</script>
<!-- Inlined below: uPlot 1.6.32 (npm package uplot), MIT licence, Copyright (c) 2022 Leon
     Sorokin; the licence text is in graphdl/viz/vendor/uPlot.LICENSE of the graphdl package. -->
<style>
{css}
</style>
<style>
{_CSS}
</style>
</head>
<body>
<header>
  <h1>{escape(spec.name)}</h1>
  <span class="facts">{escape(" · ".join(facts))}</span>
  <span class="graph">{graph}</span>
</header>
{description}
<main>
  <section id="curves">
    <h2>Learning curves <span class="sub">per epoch (metrics.jsonl)</span></h2>
    <div id="charts"></div>
  </section>
  <section id="results">
    <h2>Test results <span class="sub">{escape(split)} split (results.json)</span></h2>
    {_results_html(results, split, test)}
    {outcome}
  </section>
</main>
<section id="model">
  <h2>Layers <span class="sub">lines of spec.resolved.yaml; parameters, and FLOPs of a forward pass of one sample</span></h2>
  {_layers_html(layers, flops_note)}
</section>
<script type="application/json" id="report-data">{json_for_script(data)}</script>
<script>
{script}
</script>
<script>
{_SCRIPT}
</script>
</body>
</html>
"""


_CSS = """\
body { margin: 0; padding: 12px 20px 24px; font: 14px/1.4 system-ui, "DejaVu Sans", sans-serif; color: #1b1f24; background: #fff; }
header { display: flex; align-items: baseline; gap: 18px; flex-wrap: wrap; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h1 { font-size: 22px; margin: 0; }
h2 { font-size: 16px; margin: 10px 0 6px; }
h2 .sub { font-weight: normal; font-size: 13px; color: #57606a; margin-left: 6px; }
.facts { color: #3d444d; }
.graph a { font-weight: 600; color: #0550ae; }
code { font-size: 13px; background: #f3f4f6; padding: 1px 4px; }
.description { margin: 6px 0 0; color: #3d444d; }
.note { color: #57606a; font-size: 13px; margin: 4px 0; }
main { display: grid; grid-template-columns: minmax(0, 1.15fr) minmax(0, 1fr); gap: 24px; }
#charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px 16px; }
.chart-card h3 { font-size: 14px; margin: 2px 0 0; }
.chart { min-height: 40px; }
.uplot .u-legend { font-size: 13px; }
.uplot .u-legend .u-series > * { padding: 1px 4px; }
table { border-collapse: collapse; }
table.numbers th, table.numbers td { padding: 3px 10px; border-bottom: 1px solid #e5e7eb; text-align: left; }
table.numbers td { font-variant-numeric: tabular-nums; }
table.numbers { margin-bottom: 8px; }
table.confusion { font-variant-numeric: tabular-nums; }
table.confusion th, table.confusion td { min-width: 34px; height: 28px; padding: 2px 5px; text-align: center; font-size: 13px; }
table.confusion th.col { font-weight: 600; border-bottom: 1px solid #8c959f; }
table.confusion th[scope=row] { text-align: right; border-right: 1px solid #8c959f; }
table.confusion th.corner { font-weight: normal; color: #57606a; text-align: right; }
table.confusion td.diag { outline: 1px solid #1b1f24; outline-offset: -1px; font-weight: 600; }
table.confusion td.total { color: #3d444d; }
table.layers th, table.layers td { padding: 3px 12px; border-bottom: 1px solid #e5e7eb; text-align: left; font-size: 13px; }
table.layers td.num, table.layers th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.layers td.ops { color: #3d444d; max-width: 520px; }
table.layers tr.sum td { font-weight: 600; border-top: 1px solid #8c959f; }
#model { margin-top: 10px; }
"""

# uPlot charts from the page's JSON. Sizes follow the container (redrawn on resize);
# <body data-rendered="1" data-charts="N" data-drawn="..."> tells a test what was drawn.
_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var COLORS = ["#1f6feb", "#d1242f", "#7d8590", "#1a7f37", "#8250df", "#bf8700"];
  var FONT = "13px system-ui, 'DejaVu Sans', sans-serif";
  var LABEL_FONT = "bold 13px system-ui, 'DejaVu Sans', sans-serif";
  var plots = [];

  function fmt(v) {
    if (v == null) return "-";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return String(Math.round(v * 1e4) / 1e4);
  }
  function axis(label, extra) {
    var a = {label: label, font: FONT, labelFont: LABEL_FONT, labelSize: 20, size: 56,
             stroke: "#1b1f24", grid: {stroke: "#eaeef2", width: 1}, ticks: {stroke: "#8c959f", width: 1}};
    for (var k in extra) a[k] = extra[k];
    return a;
  }
  function padded(u, min, max) {
    if (min == null) return [0, 1];
    if (min === max) return [min - 0.5, max + 0.5];
    return [min, max];
  }
  function widthOf(el) { return Math.max(260, Math.floor(el.getBoundingClientRect().width)); }

  function lineChart(el, chart, epochs) {
    var lr = !!chart.lr;
    var series = [{label: "epoch"}];
    chart.series.forEach(function (s, i) {
      series.push({label: s.label, stroke: COLORS[i % COLORS.length], width: 2,
                   dash: s.label === "train_penalty" ? [6, 4] : undefined,
                   points: {show: true, size: 6}, value: function (u, v) { return fmt(v); }});
    });
    var opts = {
      width: widthOf(el), height: 230, series: series,
      scales: {x: {time: false, range: padded}},
      axes: [axis("epoch", {size: 34, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]}),
             axis(lr ? "learning rate" : chart.title, {size: lr ? 70 : 56,
                  values: function (u, vals) { return vals.map(fmt); }})],
      cursor: {drag: {x: false, y: false}},
      legend: {live: false}
    };
    var rows = [epochs].concat(chart.series.map(function (s) { return s.values; }));
    return new uPlot(opts, rows, el);
  }

  function scatterChart(el, sc) {
    var lo = Math.min.apply(null, sc.true.concat(sc.predicted.filter(function (v) { return v != null; })));
    var hi = Math.max.apply(null, sc.true.concat(sc.predicted.filter(function (v) { return v != null; })));
    var pad = (hi - lo) * 0.05 || 0.5;
    var same = function () { return [lo - pad, hi + pad]; };
    var side = Math.min(widthOf(el), 520);
    var opts = {
      width: side, height: Math.round(side * 0.8),
      series: [
        {label: "true", value: function (u, v) { return fmt(v); }},
        {label: "predicted", stroke: "#1f6feb", fill: "#1f6feb", width: 0,
         paths: function () { return null; }, points: {show: true, size: 7, fill: "#1f6feb", stroke: "#1f6feb"},
         value: function (u, v) { return fmt(v); }},
        {label: "predicted = true", stroke: "#7d8590", width: 1.5, dash: [5, 4], points: {show: false},
         value: function (u, v) { return fmt(v); }}
      ],
      scales: {x: {time: false, range: same}, y: {range: same}},
      axes: [axis("true", {size: 34, values: function (u, vals) { return vals.map(fmt); }}),
             axis("predicted", {values: function (u, vals) { return vals.map(fmt); }})],
      cursor: {drag: {x: false, y: false}},
      legend: {live: false}
    };
    return new uPlot(opts, [sc.true, sc.predicted, sc.true], el);
  }

  var holder = document.getElementById("charts");
  data.curves.charts.forEach(function (chart) {
    var card = document.createElement("div");
    card.className = "chart-card";
    var h = document.createElement("h3");
    h.textContent = chart.title;
    var el = document.createElement("div");
    el.className = "chart";
    card.appendChild(h);
    card.appendChild(el);
    holder.appendChild(card);
    plots.push({el: el, plot: lineChart(el, chart, data.curves.epochs), ratio: 0});
  });
  var sc = document.getElementById("scatter");
  if (sc && data.scatter) plots.push({el: sc, plot: scatterChart(sc, data.scatter), ratio: 0.8});

  window.addEventListener("resize", function () {
    plots.forEach(function (p) {
      var w = p.ratio ? Math.min(widthOf(p.el), 520) : widthOf(p.el);
      p.plot.setSize({width: w, height: p.ratio ? Math.round(w * p.ratio) : 230});
    });
  });

  // what was drawn, for tests: each chart's canvas size and how many of its pixels are painted
  requestAnimationFrame(function () {
    var drawn = plots.map(function (p) {
      var c = p.el.querySelector("canvas");
      if (!c || !c.width || !c.height) return "0x0:0";
      var px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, painted = 0;
      for (var i = 3; i < px.length; i += 4) if (px[i] !== 0) painted++;
      return c.width + "x" + c.height + ":" + painted;
    });
    document.body.setAttribute("data-charts", String(plots.length));
    document.body.setAttribute("data-drawn", drawn.join(" "));
    document.body.setAttribute("data-rendered", "1");
  });
})();
"""
