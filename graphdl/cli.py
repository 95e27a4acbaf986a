"""The command line: graphdl validate | compile | run | report | predict | gradcheck | bench | viz | schema.

A user's mistake (GraphdlError) prints located diagnostics and exits with code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from graphdl.errors import Diagnostic, GraphdlError

_STARTED = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with _ctrl_c_guard():
            return args.func(args) or 0
    except GraphdlError as e:
        if getattr(args, "format", "text") == "json":
            print(e.to_json())
        else:
            print(e.format(), file=sys.stderr)
            n = len(e.diagnostics)
            print(f"\n{n} error{'s' if n != 1 else ''}; nothing was run." if e.phase in
                  ("yaml", "schema", "references", "shapes") else "", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # one line, no traceback; a command may say what it kept (cmd_run)
        print(str(e) or "interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _ctrl_c_guard():
    """Make Ctrl-C a KeyboardInterrupt wherever it lands; yields an object whose ``pressed``
    says whether it was pressed.

    Numba compiles through LLVM, which calls back into Python through ctypes. A
    KeyboardInterrupt raised inside such a callback is printed ("Exception ignored ...")
    and dropped, and Numba then fails on the half-built function (RuntimeError: no compiled
    object yet), with a traceback. The guard notes the key press, keeps the dropped
    interrupt quiet, and turns the exception that follows into a KeyboardInterrupt."""
    state = SimpleNamespace(pressed=False)
    if threading.current_thread() is not threading.main_thread():
        yield state  # signal handlers can only be set in the main thread
        return

    def on_sigint(signum, frame):
        state.pressed = True
        raise KeyboardInterrupt

    def unraisable(info):
        if not (info.exc_type and issubclass(info.exc_type, KeyboardInterrupt)):
            previous_hook(info)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield state
    except Exception:
        if state.pressed:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphdl", description="graph-compiled deep learning from YAML specs")
    sub = p.add_subparsers(dest="command")

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        sp.add_argument("--format", choices=("text", "json"), default="text", help="error/output format")
        return sp

    sp = add("validate", cmd_validate, "check a spec: YAML, schema, references and shapes (fast, no compilation)")
    sp.add_argument("spec")
    sp = add("compile", cmd_compile, "compile a spec: layer table, pass summary, optional dumps")
    sp.add_argument("spec")
    sp.add_argument("--mode", choices=("train", "eval", "predict"), default="train")
    sp.add_argument("--dump-after", metavar="PASS", action="append", default=[],
                    help="write the graph after PASS as JSON (lowered, infer_shapes, autodiff, simplify, fuse, schedule, plan_memory, or all)")
    sp.add_argument("--dump-dir", default=".", help="where --dump-after writes (default: .)")
    sp.add_argument("--emit-source", metavar="DIR", help="write the generated kernel source into DIR")
    sp.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="the backend to compile for (cuda: the CUDA simulator where there is no "
                    "GPU; an op without a CUDA kernel is E708)")
    sp = add("run", cmd_run, "train and evaluate a spec; writes runs/<name>/")
    sp.add_argument("spec")
    sp.add_argument("--run-dir", help="run directory, relative to the working directory (default: "
                    "train.checkpoint.dir, relative to the spec file, or runs/<name>)")
    sp.add_argument("--epochs", type=int, help="override train.epochs")
    sp.add_argument("--resume", action="store_true", help="continue from the run directory's last.ckpt")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override train.device")
    sp.add_argument("--verbose", action="store_true", help="also say which device was chosen, and why")
    sp = add("report", cmd_report, "rebuild a run directory's report.html (learning curves, test "
             "results, confusion matrix or predicted vs true, layer table)")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="the directory `graphdl run` wrote")
    sp = add("predict", cmd_predict, "run a trained model on new data")
    sp.add_argument("spec")
    sp.add_argument("--weights", help="checkpoint (default: <run dir>/best.ckpt, else last.ckpt)")
    sp.add_argument("--input", required=True, nargs="+", metavar="PATH",
                    help="new data, read with the spec's data.source settings: a .csv file "
                    "(the same columns, target optional) or an .npz file (the same array "
                    "names); for an image_folder spec, image files or folders of images")
    sp.add_argument("--output", help="write the results here instead of printing them: .npz (the "
                    "arrays Model.predict_result returns, plus logits) or .csv (one row per sample)")
    sp.add_argument("--attention", metavar="PATH", help="also draw the attention weights of every "
                    "attention layer and head for the first --samples inputs: .html (interactive, "
                    "offline) or .svg")
    sp.add_argument("--samples", type=int, default=8, help="how many samples --attention draws")
    sp = add("gradcheck", cmd_gradcheck, "check the spec's gradients against finite differences (float64)")
    sp.add_argument("spec")
    sp.add_argument("--batch", type=int, default=4)
    sp.add_argument("--entries", type=int, default=12, help="entries checked per parameter")
    sp = add("bench", cmd_bench, "measure training and inference speed and compile time")
    sp.add_argument("spec")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    sp.add_argument("--no-cold", action="store_true", help="skip the cold-compile measurement")
    sp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                    help="where to measure (default cpu; cuda: the CUDA backend)")
    sp = add("schema", cmd_schema, "print the JSON Schema of specs")
    from graphdl.viz.cli import add_parser as add_viz

    add_viz(sub)
    return p


def _load(path: str):
    from graphdl.spec import load_spec

    return load_spec(path)


# ---------------------------------------------------------------- validate / schema


def cmd_validate(args) -> int:
    spec = _load(args.spec)
    _check_shapes(spec)
    if args.format == "json":
        print(json.dumps({"ok": True, "name": spec.name, "layers": len(spec.model.layers)}))
    else:
        # without train: a spec is a model only; say what it can be used for
        only = "" if "train" in spec.raw else ("; no train: section, so predict only "
                                               "(compile --mode predict, predict --weights)")
        print(f"{args.spec}: ok ({len(spec.model.layers)} layers, name '{spec.name}'{only})")
    return 0


def _check_shapes(spec) -> None:
    """The shapes phase: lower the spec, which infers every value's type as it adds ops and
    raises the located E3xx of the first bad layer. No passes and no code generation.

    The train graph holds everything the eval and predict graphs hold (plus augmentation,
    dropout, the loss and its penalties), so it alone is checked; a spec without a training
    target has only its predict graph."""
    from graphdl.layers.lower import lower

    lower(spec, "train" if spec.train["target"] is not None else "predict")


def cmd_schema(args) -> int:
    from graphdl.spec import schema_text

    print(schema_text())
    return 0


# ---------------------------------------------------------------- compile


def _hoisting_lines(g) -> list[str]:
    """What the hoist passes moved out of each loop (graph.meta["hoisted"])."""
    lines = []
    for h in g.meta.get("hoisted", []):
        counts: dict[str, int] = {}
        for op in h["ops"]:
            counts[op] = counts.get(op, 0) + 1
        ops = ", ".join(f"{n} {op}" if n > 1 else op for op, n in counts.items())
        lines.append(f"hoisted {h['where']}: {ops}  (layer {h['layer']}, {h['phase']} loop)")
    return lines


def cmd_compile(args) -> int:
    from graphdl.compiler import compile_spec
    from graphdl.ops.cost import flops
    from graphdl.passes.plan_memory import peak_bytes
    from graphdl.spec.resolve import require_train

    spec = _load(args.spec)
    if args.mode != "predict":
        require_train(spec, f"graphdl compile --mode {args.mode}")
    simulated, note = False, "device: cpu"
    if args.device == "cuda":
        from graphdl.backends.cuda import compile_target

        simulated, note = compile_target()  # E701 where a driver is loaded but no GPU works
    t0 = time.perf_counter()
    # on the simulator a warm-up would run every kernel as Python: the launches are only
    # configured (`CudaProgram.configure`); an op without a CUDA kernel is E708 either way
    c = compile_spec(spec, args.mode, keep_snapshots=True, device=args.device,
                     warmup=not simulated)
    if simulated:
        c.program.configure()
    total = time.perf_counter() - t0
    batch = int(spec.train["batch_size"])
    bindings = _bindings(spec, batch)
    at = f"batch {batch}" + (f", T = {bindings['T']}" if "T" in bindings else "")
    if args.format == "json":
        summary = _compile_summary(spec, c, total, bindings)
        summary.update(device=args.device, simulated=simulated)
        print(json.dumps(summary, indent=2))
    else:
        print(note)
        print(_layer_table(spec, c.lowered, bindings))
        print()
        print(f"passes ({args.mode} graph):")
        print(f"  {'lowered':<14} {len(c.lowered):>6} nodes")
        for r in c.ctx.records:
            print(f"  {r.name:<14} {r.nodes:>6} nodes   {r.seconds * 1000:8.1f} ms")
        fused = c.graph.nodes_by_op("fused")
        members = sum(len(c.graph.attrs(n)["members"]) for n in fused)
        print(f"fused kernels:        {len(fused)} (from {members} ops)")
        for line in _hoisting_lines(c.graph):
            print(line)
        print(f"FLOPs per step:       {flops(c.graph, bindings):,} ({at})")
        print(f"planned peak memory:  {peak_bytes(c.graph, bindings):,} bytes ({at})")
        cold = c.program.cold_seconds
        if simulated:
            print("kernel compile:       none (CUDA simulator: kernels generated and loaded, launches "
                  "configured at batch 1)")
        elif c.program.was_cached:
            cold_text = f"cold {cold:.2f} s (first compile)" if cold is not None else "cold unknown"
            print(f"kernel compile:       warm {c.jit_seconds:.2f} s (disk cache), {cold_text}")
        else:
            print(f"kernel compile:       cold {c.jit_seconds:.2f} s (compiled now; a second run loads the cache)")
        print(f"passes:               {c.pass_seconds:.3f} s; compile command total {total:.2f} s")
        print(f"generated source:     {c.program.source_path}")
    stages = args.dump_after
    if stages:
        names = list(c.snapshots) if "all" in stages else stages
        out_dir = Path(args.dump_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name not in c.snapshots:
                raise GraphdlError(Diagnostic("E704", f"--dump-after: no pass named {name!r}",
                                              help="one of: " + ", ".join(c.snapshots)))
            path = out_dir / f"{spec.name}.{args.mode}.{name}.json"
            path.write_text(c.snapshots[name].dumps(), encoding="utf-8")
            print(f"wrote {path}")
    if args.emit_source:
        d = Path(args.emit_source)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{spec.name}.{args.mode}.py"
        path.write_text(c.program.source, encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _bindings(spec, batch: int) -> dict[str, int]:
    """Sizes for the symbols when `graphdl compile` counts FLOPs and memory: the batch size,
    and for sequence inputs T = the source's max_len, else 32 steps."""
    bindings = {"N": batch}
    if any("T" in inp.shape for inp in spec.model.inputs.values()):
        bindings["T"] = int((spec.data.get("source") or {}).get("max_len") or 32)
    return bindings


def _compile_summary(spec, c, total, bindings) -> dict:
    from graphdl.ops.cost import flops
    from graphdl.passes.plan_memory import peak_bytes

    return {
        "spec": spec.name,
        "passes": [{"name": r.name, "nodes": r.nodes, "seconds": r.seconds} for r in c.ctx.records],
        "fused_kernels": len(c.graph.nodes_by_op("fused")),
        "hoisted": c.graph.meta.get("hoisted", []),
        "flops_per_step": flops(c.graph, bindings),
        "peak_bytes": peak_bytes(c.graph, bindings),
        "bindings": bindings,
        "jit_seconds": c.jit_seconds,
        "jit_seconds_cold": c.program.cold_seconds,
        "cached": c.program.was_cached,
        "total_seconds": total,
    }


def _layer_table(spec, g, bindings) -> str:
    """line | layer | ops | output shape | params, from the lowered graph's provenance
    (`graphdl.viz.report.layer_rows`, which the run report shows too)."""
    from graphdl.viz.report import layer_rows

    rows = [("line", "layer", "type", "ops", "output", "params")]
    total = 0
    for r in layer_rows(spec, g, bindings):
        total += r["params"]
        out = "-" if r["output"] is None else str(r["output"])
        if not r["ops"]:
            out += " (identity)"
        rows.append((str(r["line"]), r["layer"], r["type"], ",".join(r["ops"]) or "-", out, f"{r['params']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"total parameters: {total:,}")
    return "\n".join(lines)


# ---------------------------------------------------------------- run


def cmd_run(args) -> int:
    from graphdl.api import Model, write_results
    from graphdl.runtime.trainer import check_run_dir
    from graphdl.spec.resolve import require_train

    spec = _load(args.spec)
    require_train(spec, "graphdl run")
    device, note = _check_device(spec, args.device)
    model = Model(spec, device=device)
    model.device_note = note
    if args.format == "text" and (args.verbose or device == "cuda"):
        print(note)  # which device auto chose, and why
    run_dir = Path(args.run_dir) if args.run_dir else model.default_run_dir()
    check_run_dir(run_dir, spec, option="--run-dir" if args.run_dir else None)
    # results.json is written when the run ends: the previous run's must not look current
    (run_dir / "results.json").unlink(missing_ok=True)
    overrides = {f"train.{key}": value for key, value in (("epochs", args.epochs), ("device", args.device))
                 if value is not None}
    t0 = time.perf_counter()
    stage = "loading the data"
    try:
        with _ctrl_c_guard() as ctrl_c:
            if not args.resume:  # its kernels compile beside the data loading
                stage = "compiling"
                model.start_compile_helper("train")
                stage = "loading the data"
            # the data against model.inputs first: a wrong input shape is E503 naming both
            # shapes, not the shape error of the first layer it reaches when lowering
            model.data()
            stage = "compiling"
            if not args.resume:
                # the train program only: eval and predict compile when first used
                model.compile(("train",), on_cold=_say_compiling if args.format == "text" else None)
                if model.init_report is not None:
                    print(model.init_report.format())
            if ctrl_c.pressed:  # Ctrl-C that Numba swallowed without failing
                raise KeyboardInterrupt
            stage = "training"
            history = model.fit(run_dir, progress=not args.no_progress, resume=args.resume,
                                epochs=args.epochs)
            stage = "evaluating"
            best = run_dir / "best.ckpt"
            weights = "last"
            if best.exists():
                model.load_weights(best)
                weights = "best"
            split = spec.evaluate["split"]
            m = model.evaluate(split)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(model, run_dir, stage, overrides, time.perf_counter() - t0)) from None
    finally:
        model.stop_compile_helpers()  # one still running when the data or the compile failed
    results = {"status": "complete", split: m, "weights": weights, "epochs_run": len(history),
               "seconds": round(time.perf_counter() - t0, 3)}
    if model.first_step_at is not None:
        # from the start of the command to the end of the first training step: what the
        # kernel cache saves on a second run
        results["seconds_to_first_step"] = round(model.first_step_at - _STARTED, 3)
        # the CPU seconds of the whole process (every thread) until then: the compile work,
        # which a busy machine stretches in wall time but not in CPU time
        results["cpu_seconds_to_first_step"] = round(model.first_step_cpu, 3)
    results["overrides"] = overrides
    write_results(run_dir, results)
    # lists (per-class metrics, the confusion matrix) are in results.json only
    print(_results_text(split, m, f"{weights} weights; run directory {run_dir}"))
    _write_run_report(model, run_dir, split, quiet=args.format != "text")
    return 0


def _results_text(split: str, m: dict, where: str) -> str:
    """The evaluated split's numbers as `graphdl run` prints them: the model's scalar
    metrics; for a windowed series with a season, the seasonal-naive forecast's beside
    them (same units), and a second line with both in the series' own units where the
    target is preprocessed (`graphdl.api.forecast_report`)."""

    def numbers(d: dict, series: bool = False) -> str:
        # the series' units (thousands of passengers): 2 decimals, or 4 digits below 1
        def text(v: float) -> str:
            return f"{v:.2f}" if series and abs(v) >= 1 else f"{v:.4g}" if series else f"{v:.4f}"

        return ", ".join(f"{k} {text(v)}" for k, v in d.items()
                         if isinstance(v, float) and k != "season")

    line = f"{split}: {numbers(m)}"
    baseline = m.get("baseline")
    if baseline:
        line += f"  |  {baseline['name']}: {numbers(baseline)}"
    lines = [f"{line}  ({where})"]
    series = m.get("series_units")
    if series:
        units = series.get("units") or "the series' units"
        lines.append(f"{split} in {units}: {numbers(series, True)}  |  {baseline['name']}: "
                     f"{numbers(series['baseline'], True)}")
    return "\n".join(lines)


def _say_compiling(n: int, seconds: float) -> None:
    """What `graphdl run` says before compiling kernels that are not in the cache."""
    programs = "program" if n == 1 else "programs"
    print(f"compiling {n} {programs} (first run on this machine, ~{max(1, round(seconds))} s)…",
          file=sys.stderr, flush=True)


def _interrupted(model, run_dir: Path, stage: str, overrides: dict, seconds: float) -> str:
    """Mark the run interrupted in results.json; the one line `graphdl run` prints."""
    from graphdl.api import write_results

    trainer = model.trainer if stage in ("training", "evaluating") else None
    done = trainer.state.epoch if trainer is not None else 0
    write_results(run_dir, {"status": "interrupted", "stage": stage, "epochs_run": done,
                            "seconds": round(seconds, 3), "overrides": overrides})
    if trainer is None:
        return f"interrupted while {stage}, before training (run directory {run_dir})"
    if stage == "evaluating":
        return f"interrupted while evaluating, after {done} epochs; checkpoints are kept in {run_dir}"
    if not done:
        return f"interrupted in epoch 1 of {trainer.epochs}: no checkpoint yet (run directory {run_dir})"
    return (f"interrupted in epoch {done + 1} of {trainer.epochs}: {run_dir / 'last.ckpt'} holds "
            f"epoch {done} (continue with --resume)")


def _check_device(spec, override) -> tuple[str, str]:
    """(device, note): --device, else train.device (auto: a usable GPU, else the CPU);
    E701 (exit 2) when cuda is asked for and there is none."""
    from graphdl.backends.cuda import resolve_device

    requested = override or spec.train["device"]
    loc = spec.loc("train", "device") if not override else SimpleNamespace(file=spec.path)
    return resolve_device(requested, loc=loc)


# ---------------------------------------------------------------- report


def _write_run_report(model, run_dir: Path, split: str, quiet: bool = False) -> None:
    """report.html at the end of `graphdl run`, with predictions.npz and graph.html beside
    it. results.json is already written: a failure here is a one-line warning, never a
    failed run."""
    try:
        from graphdl.viz.report import GRAPH_FILE, save_predictions

        _save_split_outputs(model, run_dir, split, save_predictions)
        _draw_training_graph(model.spec, model.compiled("train"), run_dir / GRAPH_FILE)
        path = _build_report(run_dir)
    except Exception as e:  # noqa: BLE001 - whatever breaks the report, the run stands
        text = e.diagnostics[0].message if isinstance(e, GraphdlError) and e.diagnostics else str(e)
        first = (text.strip().splitlines() or [type(e).__name__])[0]
        print(f"warning: {run_dir / 'report.html'} was not written ({first}); the run's results "
              f"are kept; `graphdl report {run_dir}` tries again", file=sys.stderr)
        return
    if not quiet:
        print(f"report: {path}")


def _save_split_outputs(model, run_dir: Path, split: str, save) -> bool:
    """The model's outputs and the targets of ``split`` (each sequence's real steps only)
    into the run directory's predictions.npz; False when the split is empty."""
    from graphdl.data.ragged import valid_steps

    ds = model.data().get(split)
    _, outputs = model._evaluate(ds, metrics=[])
    if outputs is None:
        return False
    target_name = model.spec.train["target"]
    target = ds.fields[target_name][:len(outputs)]
    ragged = ds.ragged
    if ragged is not None and target_name in ragged.pads and outputs.ndim >= 2:
        outputs, target = valid_steps(outputs, target, ds.fields[ragged.lengths][:len(outputs)],
                                      ragged.pads[target_name])
    save(run_dir, split, outputs, target, model.class_names)
    return True


def _draw_training_graph(spec, compiled, path: Path) -> None:
    """The graph view the report links: the optimised training graph, as `graphdl viz
    SPEC -o graph.html` draws it."""
    from graphdl.viz import draw

    batch = int(spec.train["batch_size"])
    draw(compiled.graph, path, source=getattr(compiled.program, "source", None), bindings={"N": batch},
         title=f"{spec.name} (train): optimized", names=("optimized", "other"),
         info={"spec": spec.name, "spec_path": spec.path, "mode": "train", "batch": batch,
               "stages": ["optimized"]})


def _build_report(run_dir: Path) -> Path:
    """report.html from the run directory's files; the layer table is that of its
    spec.resolved.yaml, whose lines it shows (the same after `graphdl run` and `graphdl
    report`, and blocks expanded)."""
    from graphdl.layers.lower import lower
    from graphdl.viz.report import check_run_dir_files, layer_rows, write_report

    check_run_dir_files(run_dir)
    spec = _load(str(run_dir / "spec.resolved.yaml"))
    bindings = _bindings(spec, 1)
    at = "one sample" + (f", T = {bindings['T']}" if "T" in bindings else "")
    rows = layer_rows(spec, lower(spec, "predict"), bindings)
    return write_report(run_dir, spec, rows, flops_note=f"FLOPs of the predict program's ops per layer ({at}).")


def cmd_report(args) -> int:
    from graphdl.api import Model
    from graphdl.compiler import compile_spec
    from graphdl.viz.report import (
        GRAPH_FILE,
        PREDICTIONS_FILE,
        check_run_dir_files,
        save_predictions,
    )

    run_dir = Path(args.run_dir)
    check_run_dir_files(run_dir)
    spec = _load(str(run_dir / "spec.resolved.yaml"))
    if not (run_dir / PREDICTIONS_FILE).is_file():
        # a run from before the report: the evaluated split's outputs with the saved weights
        weights = next((run_dir / n for n in ("best.ckpt", "last.ckpt") if (run_dir / n).is_file()), None)
        if weights is None:
            print(f"note: no {PREDICTIONS_FILE} and no checkpoint in {run_dir}: the report has no "
                  "confusion matrix or predicted-vs-true plot", file=sys.stderr)
        else:
            model = Model(spec)
            try:
                model.load_weights(weights)
                _save_split_outputs(model, run_dir, spec.evaluate["split"], save_predictions)
            except GraphdlError as e:
                first = e.format().strip().splitlines()[0]
                print(f"note: {PREDICTIONS_FILE} could not be computed from {weights.name} ({first}); "
                      "the report has no confusion matrix or predicted-vs-true plot", file=sys.stderr)
    if not (run_dir / GRAPH_FILE).is_file():
        _draw_training_graph(spec, compile_spec(spec, "train", warmup=False), run_dir / GRAPH_FILE)
    path = _build_report(run_dir)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- predict


def cmd_predict(args) -> int:
    """Per row, what the loss implies: class, class name and probability (cross_entropy),
    probability and decision (bce_with_logits), value (mse); printed as a table (JSON with
    --format json) or written to --output (.npz or .csv). The new data is read as training
    reads data.source (`graphdl.data.read_new_data`); rows of images name their file."""
    import numpy as np

    from graphdl.api import Model, interpret_outputs
    from graphdl.data import read_new_data

    output = Path(args.output) if args.output else None
    if output is not None and output.suffix not in (".npz", ".csv"):
        raise GraphdlError(Diagnostic("E704", f"--output {output}: predict writes .npz or .csv files",
                                      help="name the output file out.npz or out.csv"))
    spec = _load(args.spec)
    model = Model(spec)
    weights = args.weights
    if weights is None:
        run_dir = model.default_run_dir()
        for name in ("best.ckpt", "last.ckpt"):
            if (run_dir / name).exists():
                weights = run_dir / name
                break
        else:
            raise GraphdlError(Diagnostic("E401", f"no trained weights in {run_dir}",
                                          help="run 'graphdl run' first or pass --weights"))
    model.load_weights(weights)
    new = read_new_data(spec, args.input, state=model.preprocess_state)
    if args.attention:
        _draw_attention(args, model, new.fields)
    if spec.evaluate["decode"] != "none":
        return _predict_decoded(args, model, new.fields, output)
    outputs = model.predict({k: new.fields[k] for k in spec.model.inputs})
    result = interpret_outputs(model.loss_type, outputs, model.class_names)
    files = None if new.sample_names is None else np.asarray(new.sample_names)

    def columns(for_file: bool) -> list[tuple[str, list[str]]]:
        table = _result_columns(result, model.class_names, for_file=for_file)
        if files is not None:  # images: which file each row is, after the row number
            table.insert(1, ("file", [str(f) for f in files]))
        return table

    if output is None:
        if args.format == "json":
            named = {"file": files} if files is not None else {}
            print(json.dumps({k: v.tolist() for k, v in {**named, **result}.items()}))
        else:
            print(_format_table(columns(for_file=False)))
        return 0
    if output.suffix == ".csv":
        _write_csv(output, columns(for_file=True))
    else:
        arrays = dict(result)
        if files is not None:
            arrays["file"] = files
        if model.loss_type in ("cross_entropy", "bce_with_logits"):
            arrays["logits"] = outputs
        np.savez(output, **arrays)
    print(f"wrote {output} ({len(outputs)} rows)")
    return 0


def _draw_attention(args, model, fields: dict) -> None:
    """`graphdl predict --attention PATH`: the attention weights as heatmaps."""
    from graphdl.viz.attention import write_attention

    path = Path(args.attention)
    if path.suffix.lower() not in (".html", ".htm", ".svg"):
        raise GraphdlError(Diagnostic("E704", f"--attention {path}: attention is drawn as .html "
                                      "or .svg", help="name the file attention.html"))
    samples = model.attention_maps({k: fields[k] for k in model.spec.model.inputs},
                                   limit=max(1, args.samples))
    if not samples or not samples[0]["layers"]:
        raise GraphdlError(Diagnostic("E704", f"--attention: the model '{model.spec.name}' has "
                                      "no attention layer", file=model.spec.path))
    write_attention(path, samples, title=f"{model.spec.name}: attention weights")
    layers = len(samples[0]["layers"])
    print(f"wrote {path} ({len(samples)} sample{'s' if len(samples) != 1 else ''}, {layers} "
          f"attention layer{'s' if layers != 1 else ''})", file=sys.stderr)


def _predict_decoded(args, model, fields: dict, output: Path | None) -> int:
    """`graphdl predict` of a sequence-to-sequence spec (evaluate.decode greedy or beam):
    the decoded token sequences, each cut after evaluate.eos (the decode input's first
    column in the new data is the start token)."""
    import numpy as np

    spec = model.spec
    tokens = model.decode({k: fields[k] for k in spec.model.inputs})
    eos = spec.evaluate.get("eos")
    lengths = np.full(len(tokens), tokens.shape[1], np.int64)
    if eos is not None:
        hit = tokens == eos
        lengths = np.where(hit.any(axis=1), hit.argmax(axis=1), tokens.shape[1])
    texts = [" ".join(str(t) for t in row[:k]) for row, k in zip(tokens, lengths)]
    if output is None:
        if args.format == "json":
            print(json.dumps({"tokens": [row[:k].tolist() for row, k in zip(tokens, lengths)]}))
        else:
            print(_format_table([("row", [str(i) for i in range(len(texts))]), ("tokens", texts)]))
        return 0
    if output.suffix == ".csv":
        _write_csv(output, [("row", [str(i) for i in range(len(texts))]), ("tokens", texts)])
    else:
        np.savez(output, tokens=tokens, lengths=lengths)
    print(f"wrote {output} ({len(tokens)} decoded sequences)")
    return 0


def _result_columns(result: dict, class_names: list[str] | None, for_file: bool) -> list[tuple[str, list[str]]]:
    """The columns `graphdl predict` prints or writes, as (name, one text per row), after
    a ``row`` column. cross_entropy: class, class_name (where the data names its classes)
    and the class's probability, plus in a file probability_<class name or index> for
    every class; bce and mse: one column per output unit (probability, decision, value;
    probability_0, probability_1, ... for several units). A file gets 9 significant digits
    (a float32 reads back exactly); the terminal 4 decimals of a probability, 6 digits of a
    value."""
    import numpy as np

    def texts(key: str, values) -> list[str]:
        if values.dtype.kind in "iuU":
            return [str(v) for v in values]
        if for_file:
            return [f"{v:.9g}" for v in values]
        return [f"{v:.4f}" if key.startswith("probability") else f"{v:.6g}" for v in values]

    n = len(next(iter(result.values())))
    columns = [("row", [str(i) for i in range(n)])]
    if "class" in result:
        cls, probs = result["class"], result["probabilities"]
        columns.append(("class", texts("class", cls)))
        if "class_name" in result:
            columns.append(("class_name", texts("class_name", result["class_name"])))
        columns.append(("probability", texts("probability", probs[np.arange(n), cls])))
        if for_file:
            k = probs.shape[1]
            labels = list(class_names or [])[:k] + [str(j) for j in range(len(class_names or []), k)]
            columns += [(f"probability_{label}", texts("probability", probs[:, j]))
                        for j, label in enumerate(labels)]
        return columns
    for key, values in result.items():
        flat = values.reshape(n, -1)
        for j in range(flat.shape[1]):
            columns.append((key if values.ndim == 1 else f"{key}_{j}", texts(key, flat[:, j])))
    return columns


def _format_table(columns: list[tuple[str, list[str]]]) -> str:
    widths = [max(len(name), *(len(t) for t in texts)) if texts else len(name) for name, texts in columns]
    rows = [[name for name, _ in columns]] + [list(r) for r in zip(*(texts for _, texts in columns))]
    return "\n".join("  ".join(t.ljust(w) for t, w in zip(r, widths)).rstrip() for r in rows)


def _write_csv(path: Path, columns: list[tuple[str, list[str]]]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([name for name, _ in columns])
        writer.writerows(zip(*(texts for _, texts in columns)))


# ---------------------------------------------------------------- gradcheck


def cmd_gradcheck(args) -> int:
    from graphdl.runtime.gradcheck import gradcheck_spec

    spec = _load(args.spec)
    report = gradcheck_spec(spec, batch=args.batch, entries=args.entries)
    worst = max(report.values()) if report else 0.0
    if args.format == "json":
        print(json.dumps({"max_rel_error": report, "ok": worst < 1e-4}))
    else:
        width = max(len(k) for k in report) if report else 10
        for k, v in report.items():
            print(f"{k:<{width}}  max rel error {v:.2e}")
        print(f"{'ok' if worst < 1e-4 else 'FAILED'}: worst {worst:.2e} (float64, central differences)")
    return 0 if worst < 1e-4 else 1


# ---------------------------------------------------------------- bench


def cmd_bench(args) -> int:
    from graphdl.bench import bench_spec

    device, _note = _check_device(_load(args.spec), args.device)
    if device == "cuda":
        from graphdl.bench import bench_spec_cuda

        result = bench_spec_cuda(args.spec, seconds=args.seconds)
    else:
        result = bench_spec(args.spec, seconds=args.seconds, cold=not args.no_cold)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:<22} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
