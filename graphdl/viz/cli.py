"""`graphdl viz`: draw a stage of a spec's compiled graph (or two stages side by side).

The main parser registers it with ``graphdl.viz.cli.add_parser(subparsers)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.viz.data import SNAPSHOTS, STAGES

STAGE_CHOICES = tuple(STAGES) + tuple(s for s in SNAPSHOTS if s not in STAGES)
# snapshots whose node ids are those of the final graph, i.e. of the generated source
_FINAL_IDS = ("fuse", "schedule", "plan_memory")


def add_parser(subparsers) -> None:
    """Add the ``viz`` subcommand to an argparse subparsers object."""
    help_ = "draw a stage of the compiled graph as HTML (interactive), SVG or DOT"
    sp = subparsers.add_parser("viz", help=help_, description=help_ + (
        ". Stages: lowered (from the spec), training (after autodiff), fused (after fusion), "
        "optimized (final, memory planned; the default); pass names work too."))
    sp.add_argument("spec")
    sp.add_argument("-o", "--output", required=True,
                    help="output file: .html (self-contained), .svg, .dot; .png/.pdf need Graphviz")
    sp.add_argument("--stage", choices=STAGE_CHOICES, default="optimized",
                    help="which graph to draw (default: optimized)")
    sp.add_argument("--compare", nargs=2, metavar=("STAGE_A", "STAGE_B"), choices=STAGE_CHOICES,
                    help="draw two stages side by side; nodes only one has are marked")
    sp.add_argument("--mode", choices=("train", "eval", "predict"), default="train",
                    help="which program (default: train)")
    sp.add_argument("--color", choices=("phase", "group", "flops", "memory"), default="phase",
                    help="node colouring (the HTML page can switch it)")
    sp.add_argument("--batch", type=int,
                    help="batch size for bytes and FLOPs (default: train.batch_size)")
    sp.add_argument("--format", choices=("text", "json"), default="text", help="error format")
    sp.set_defaults(func=cmd_viz)


def cmd_viz(args) -> int:
    from graphdl.compiler import compile_spec
    from graphdl.spec import load_spec
    from graphdl.viz import format_of, write
    from graphdl.viz.data import STAGE_TITLES, snapshot_name, stage_data
    from graphdl.viz.source import node_sources

    try:
        fmt = format_of(args.output)
    except ValueError as e:
        raise GraphdlError(Diagnostic("E706", str(e), help="e.g. -o graph.html")) from None
    if fmt in ("png", "pdf") and shutil.which("dot") is None:
        raise GraphdlError(Diagnostic(
            "E707", f"writing .{fmt} needs Graphviz's 'dot', which is not installed",
            help="write .svg (no Graphviz needed) or .dot, or install graphviz"))
    spec = load_spec(args.spec)
    c = compile_spec(spec, args.mode, keep_snapshots=True, warmup=False)
    batch = args.batch or int(spec.train["batch_size"])
    bindings = {"N": batch}
    wanted = list(args.compare) if args.compare else [args.stage]
    final = c.graph
    sources = node_sources(c.program.source)
    stages = []
    for name in wanted:
        snap = snapshot_name(name)
        if snap not in c.snapshots:
            raise GraphdlError(Diagnostic(
                "E705", f"stage {name!r} ({snap}) does not exist in the {args.mode} program",
                help="autodiff runs for training only: use --mode train, or another stage"))
        g = c.snapshots[snap]
        own = {nid: text for nid, text in sources.items()
               if nid in g and nid in final and (snap in _FINAL_IDS or g.op_of(nid) == final.op_of(nid))}
        st = stage_data(g, name=snap, title=f"{name}: {STAGE_TITLES[snap]}" if name != snap
                        else STAGE_TITLES[snap], bindings=bindings)
        for node in st["nodes"]:
            if node["id"] in own:
                node["source"] = own[node["id"]]
        stages.append(st)
    what = " vs ".join(wanted)
    title = f"{spec.name} ({args.mode}): {what}"
    info = {"spec": spec.name, "spec_path": str(args.spec), "mode": args.mode, "batch": batch,
            "stages": wanted}
    out = write(stages, Path(args.output), color=args.color, title=title,
                compare=bool(args.compare), info=info)
    counts = " / ".join(str(len(s["nodes"])) for s in stages)
    print(f"wrote {out} ({what}: {counts} nodes)")
    return 0
