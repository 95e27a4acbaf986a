"""References phase: ``$name`` substitution, block expansion, layer references, defaults.

Runs after the schema phase on a schema-valid document. Error codes:
E201 unknown ``$name``; E202 unknown reference; E203 forward reference; E204 duplicate name;
E205 a block that uses itself; E206 wrong number of inputs for a block / residual.
Values that a substitution made invalid are reported with their schema code (E1xx) in this
phase, located where the value was written.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from graphdl.errors import Diagnostic, GraphdlError, format_path
from graphdl.layers import COMMON_LAYER_KEYS, LAYERS
from graphdl.layers.core import ALPHA_DEFAULTS
from graphdl.layers.schema import fill
from graphdl.spec import schema_gen as sg
from graphdl.spec.datatypes import InputSpec, LayerSpec, Location, ModelSpec, Spec
from graphdl.spec.loader import LoadedYaml
from graphdl.spec.metrics import check_metrics
from graphdl.spec.validate import (
    Reporter,
    did_you_mean,
    document_schema,
    finish,
    is_ref,
    iter_layers,
    layer_checks,
    schema_errors,
    semantic_checks,
    show,
)

_NO_SUBST_KEYS = ("doc", "description")
_UNRESOLVED = "<unresolved>"  # stands for an input whose reference error was reported


# --------------------------------------------------------------------------------------
# $name substitution
# --------------------------------------------------------------------------------------


@dataclass
class Binding:
    value: object
    desc: str  # "vars.lr (line 4)" — for notes
    path: tuple | None = None  # where the value was written (a use-site override)


@dataclass
class Substitution:
    """Results of one substitution pass: where each $name was replaced, and unknown names."""

    sites: dict[tuple, tuple[str, Binding]] = field(default_factory=dict)
    unknown: list[tuple[tuple, str]] = field(default_factory=list)

    def substitute(self, value, lookup, path):
        if is_ref(value):
            name = value[1:]
            b = lookup(name)
            if b is None:
                self.unknown.append((path, name))
                return value
            self.sites[path] = (name, b)
            return copy.deepcopy(b.value)
        if isinstance(value, dict):
            return {
                k: v if k in _NO_SUBST_KEYS else self.substitute(v, lookup, path + (k,))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.substitute(v, lookup, path + (i,)) for i, v in enumerate(value)]
        return value

    def site_for(self, path):
        path = tuple(path)
        while path:
            if path in self.sites:
                return path, self.sites[path]
            path = path[:-1]
        return None


# --------------------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------------------


def fill_split(split: dict, test_file: bool = False) -> dict:
    """The data.split section with defaults. Fractions: all missing -> 0.8/0.1/0.1; some
    missing -> they share what is left. With ``test_file`` (data.source.test_path, or a
    built-in's standard test split) the test split is that file: test is 0 unless written
    (then graphdl.data refuses it), and all missing -> 0.9/0.1 of the source for
    train/val."""
    names = ("train", "val", "test")
    given = {k: split[k] for k in names if split.get(k) is not None}
    out = fill(sg.SPLIT, split)
    if test_file and "test" not in given:
        given["test"] = 0.0
        out["test"] = 0.0
    if not given:
        out.update(train=0.8, val=0.1, test=0.1)
    elif test_file and set(given) == {"test"}:
        out.update(train=0.9, val=0.1)
    else:
        missing = [k for k in names if k not in given]
        rest = max(0.0, 1.0 - sum(given.values()))
        for k in missing:
            out[k] = round(rest / len(missing), 12)
    for k in names:
        out[k] = float(out[k])
    return out


def fill_layer_params(t: str, layer: dict) -> dict:
    fields = LAYERS[t].fields
    params = {}
    for k, f in fields.items():
        if k == "alpha":
            continue
        if k in layer:
            params[k] = fill(f, layer[k])
        elif f.default is not sg.MISSING:
            params[k] = fill(f, f.default)
    act = params.get("activation")
    if "alpha" in fields and act in ALPHA_DEFAULTS:
        params["alpha"] = float(layer.get("alpha", ALPHA_DEFAULTS[act]))
    return params


# --------------------------------------------------------------------------------------
# expansion
# --------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """Where layers being expanded come from (the outermost block use, for block copies)."""

    use_loc: Location | None = None
    use_path: str | None = None
    use_line: int | None = None
    block: str | None = None  # copy prefix without the trailing dot, e.g. "encoder.0"
    block_type: str | None = None
    stack: tuple = ()
    trainable: bool = True
    lr_mult: float = 1.0
    regularizer: dict | None = None


@dataclass
class Scope:
    prefix: str  # "" or "encoder.0."
    names: dict[str, str]  # local name -> final name
    lines: dict[str, int]  # local name -> line of its definition
    later: dict[str, int]  # explicit local names (whole scope, pre-scanned) -> line
    prev: str | None
    no_prev: str  # why there is no prev (for the message)
    ctx: Ctx
    inputs: set[str] = field(default_factory=set)  # model inputs / formal inputs


def _line(r: Reporter, path, key=False) -> int:
    return r.pos(path, key)[0]


class Expander:
    def __init__(self, raw: dict, r: Reporter, schema: dict):
        self.raw = raw
        self.r = r
        self.schema = schema
        self.blocks = raw.get("blocks") or {}
        self.diags: list[Diagnostic] = []
        self.layers: list[LayerSpec] = []
        self.counters: dict[str, int] = defaultdict(int)
        self.final_names: dict[str, int] = {}  # final name -> line

    # --- helpers -----------------------------------------------------------------------

    def loc(self, path, key=False) -> Location:
        line, col, span = self.r.pos(path, key)
        return Location(self.r.file, line, col, span)

    def err(self, code, message, path, scope: Scope | None = None, key=False, **kw):
        if scope is not None and scope.ctx.block_type and "note" not in kw:
            kw["note"] = (f"in block '{scope.ctx.block_type}' (used at line "
                          f"{scope.ctx.use_line})")
        self.diags.append(self.r.at(code, message, path, key=key, **kw))

    def prescan(self, layers, path) -> dict[str, int]:
        names: dict[str, int] = {}
        for layer, p in iter_layers(layers, path):
            n = layer.get("name")
            if isinstance(n, str) and n not in names:
                names[n] = _line(self.r, p + ("name",))
        return names

    # --- names -------------------------------------------------------------------------

    def name_for(self, layer: dict, path, scope: Scope, type_name: str) -> tuple[str, str]:
        """(local name, final name) of a layer or block instance.

        An unnamed layer is ``<type>_<k>`` where k counts the layers of that type (named or
        not) over the whole expanded model, so naming one layer does not rename the others;
        k is bumped past names already taken."""
        self.counters[type_name] += 1
        if "name" in layer:
            local = layer["name"]
            final = scope.prefix + local
            npath = path + ("name",)
            if local == "prev":
                self.err("E204", "'prev' is reserved for the previous layer; choose another name",
                         npath, scope)
            elif local in scope.lines:
                first = scope.lines[local]
                kind = "an input" if local in scope.inputs else "a layer"
                self.err(
                    "E204",
                    f"duplicate name '{local}': already {kind} defined at line {first}",
                    npath, scope,
                    note=f"names are single-assignment; the first '{local}' is at line {first}",
                )
            elif final in self.final_names:
                first = self.final_names[final]
                self.err("E204", f"duplicate name '{final}' (first defined at line {first})",
                         npath, scope)
            return local, final
        k = self.counters[type_name]
        while (f"{type_name}_{k}" in scope.later or f"{type_name}_{k}" in scope.lines
               or scope.prefix + f"{type_name}_{k}" in self.final_names):
            k += 1
        local = f"{type_name}_{k}"
        return local, scope.prefix + local

    def register(self, scope: Scope, local: str, final: str, line: int) -> None:
        scope.names.setdefault(local, final)
        scope.lines.setdefault(local, line)
        self.final_names.setdefault(final, line)

    # --- references --------------------------------------------------------------------

    def resolve_ref(self, ref, path, scope: Scope) -> str | None:
        if not isinstance(ref, str) or is_ref(ref):
            return None  # a bad substituted value or an unknown $name: already reported
        if ref == "prev":
            if scope.prev is None:
                self.err("E202", f"'prev' has no value here: {scope.no_prev}", path, scope)
            return scope.prev
        if ref in scope.names:
            return scope.names[ref]
        base = ref.split(".")[0]
        later = scope.later.get(ref) or scope.later.get(base)
        if later is not None:
            self.err(
                "E203",
                f"forward reference to '{ref}', which is defined at line {later}; a layer can "
                "only use inputs and the layers above it",
                path, scope,
                help="move this layer below the one it uses",
            )
            return None
        known = [n for n in scope.names]
        self.err(
            "E202",
            f"unknown reference '{ref}': no input or layer above has this name",
            path, scope,
            help=did_you_mean(ref, known + ["prev"]),
            note="known here: " + ", ".join(["prev"] + known) if known else None,
        )
        return None

    def resolve_inputs(self, layer: dict, path, scope: Scope) -> list[str | None]:
        if "inputs" in layer:
            return [
                self.resolve_ref(ref, path + ("inputs", j), scope)
                for j, ref in enumerate(layer["inputs"])
            ]
        if scope.prev is None:
            self.err("E202", f"this layer has no input: {scope.no_prev}", path, scope,
                     help="say which inputs it reads with inputs: [...]")
            return [None]
        return [scope.prev]

    # --- layers ------------------------------------------------------------------------

    def walk(self, layers, path, scope: Scope) -> None:
        for i, layer in enumerate(layers):
            self.layer(layer, path + (i,), scope)

    def child_ctx(self, layer: dict, ctx: Ctx, **kw) -> Ctx:
        # (values are checked by the schema; bad substituted ones are reported, so fall back)
        reg = layer.get("regularizer")
        default_lr_mult = COMMON_LAYER_KEYS["lr_mult"].default
        lr_mult = layer.get("lr_mult", default_lr_mult)
        if not isinstance(lr_mult, (int, float)) or isinstance(lr_mult, bool):
            lr_mult = default_lr_mult
        trainable = layer.get("trainable", COMMON_LAYER_KEYS["trainable"].default)
        return replace(
            ctx,
            trainable=ctx.trainable and trainable is not False,
            lr_mult=ctx.lr_mult * float(lr_mult),
            regularizer=fill(COMMON_LAYER_KEYS["regularizer"], reg) if isinstance(reg, dict)
            else ctx.regularizer,
            **kw,
        )

    def layer(self, layer: dict, path, scope: Scope) -> None:
        t = layer["type"]
        inputs = self.resolve_inputs(layer, path, scope)
        if t == "residual":
            self.residual(layer, path, scope, inputs)
        elif t in LAYERS:
            self.builtin(layer, path, scope, t, inputs)
        else:
            self.block_use(layer, path, scope, t, inputs)

    def make_spec(self, layer, path, scope, t, final, inputs, params, ctx: Ctx) -> LayerSpec:
        if ctx.use_loc is not None:
            loc, ypath = ctx.use_loc, ctx.use_path
            block_path, def_loc = format_path(path), self.loc(path)
        else:
            loc, ypath = self.loc(path), format_path(path)
            block_path = def_loc = None
        return LayerSpec(
            name=final,
            type=t,
            inputs=[i for i in inputs if i is not None],
            params=params,
            loc=loc,
            yaml_path=ypath,
            trainable=ctx.trainable,
            lr_mult=ctx.lr_mult,
            regularizer=ctx.regularizer,
            block=ctx.block,
            block_path=block_path,
            def_loc=def_loc,
        )

    def builtin(self, layer, path, scope: Scope, t, inputs) -> None:
        local, final = self.name_for(layer, path, scope, t)
        ctx = self.child_ctx(layer, scope.ctx)
        spec = self.make_spec(layer, path, scope, t, final, inputs,
                              fill_layer_params(t, layer), ctx)
        self.layers.append(spec)
        self.register(scope, local, final, _line(self.r, path))
        scope.prev = final

    def residual(self, layer, path, scope: Scope, inputs) -> None:
        if len(inputs) != 1:
            self.err("E206", f"a residual layer takes exactly one input, got {len(inputs)}",
                     path + ("inputs",), scope, key=True)
        # after a reported error, a placeholder input keeps later layers from cascading
        x = inputs[0] if inputs and inputs[0] is not None else _UNRESOLVED
        local, final = self.name_for(layer, path, scope, "residual")
        outer_ctx = scope.ctx
        scope.ctx = self.child_ctx(layer, outer_ctx)
        scope.prev = x
        self.walk(layer["layers"], path + ("layers",), scope)
        y = scope.prev
        scope.ctx = outer_ctx
        spec = self.make_spec(layer, path, scope, "add", final, [x, y], {}, outer_ctx)
        self.layers.append(spec)
        self.register(scope, local, final, _line(self.r, path))
        scope.prev = final

    def block_use(self, layer, path, scope: Scope, t, inputs) -> None:
        bdef = self.blocks[t]
        local, final = self.name_for(layer, path, scope, t)
        line = _line(self.r, path)
        if t in scope.ctx.stack:
            chain = " -> ".join(scope.ctx.stack + (t,))
            self.err("E205", f"block '{t}' uses itself ({chain})", path + ("type",), scope)
            self.register(scope, local, final, line)
            return
        formals = bdef.get("inputs") or ["x"]
        if len(inputs) != len(formals):
            s = "" if len(formals) == 1 else "s"
            self.err(
                "E206",
                f"block '{t}' takes {len(formals)} input{s} ({', '.join(formals)}), "
                f"got {len(inputs)}",
                path + ("inputs",) if "inputs" in layer else path,
                scope,
                key="inputs" in layer,
                help="give them in order with inputs: [...]",
            )
            inputs = (list(inputs) + [None] * len(formals))[: len(formals)]
        params = bdef.get("params") or {}
        overrides = {k: layer[k] for k in params if k in layer}

        def lookup(name, _t=t, _params=params, _over=overrides, _path=path):
            if name in _over:
                return Binding(_over[name], f"given to block '{_t}' at line "
                               f"{_line(self.r, _path + (name,))}", _path + (name,))
            if name in _params:
                ppath = ("blocks", _t, "params", name)
                return Binding(_params[name], f"the default of parameter '{name}' of block "
                               f"'{_t}' (line {_line(self.r, ppath)})")
            return None

        subst = Substitution()
        body_path = ("blocks", t, "layers")
        body = subst.substitute(bdef["layers"], lookup, body_path)
        if subst.sites and self.check_copy(body, body_path, subst, t):
            # the substituted copy is invalid (reported): do not expand it
            self.register(scope, local, _UNRESOLVED, line)
            self.final_names.setdefault(final, line)
            scope.prev = _UNRESOLVED
            return
        repeat = layer.get("repeat")
        n = repeat if isinstance(repeat, int) and not isinstance(repeat, bool) and repeat >= 1 \
            else None
        outer = scope.ctx
        use_loc = outer.use_loc or self.loc(path)
        use_path = outer.use_path or format_path(path)
        use_line = outer.use_line or line
        later = self.prescan(body, body_path)
        inputs = [i if i is not None else _UNRESOLVED for i in inputs]
        chain = inputs[0]
        for i in range(n if n is not None else 1):
            copy_local = f"{local}.{i}" if n is not None else local
            prefix = scope.prefix + copy_local + "."
            names, lines = {}, {}
            for j, formal in enumerate(formals):
                names[formal] = chain if j == 0 else inputs[j]
                lines[formal] = _line(self.r, ("blocks", t, "inputs"))
            ctx = self.child_ctx(
                layer, outer, use_loc=use_loc, use_path=use_path, use_line=use_line,
                block=prefix[:-1], block_type=t, stack=outer.stack + (t,),
            )
            cscope = Scope(
                prefix=prefix, names=names, lines=lines, later=later, prev=chain,
                no_prev="the block input is missing", ctx=ctx, inputs=set(formals),
            )
            self.walk(body, body_path, cscope)
            chain = cscope.prev
            if n is not None:
                self.register(scope, copy_local, chain, line)
        self.register(scope, local, chain, line)
        self.final_names.setdefault(final, line)
        scope.prev = chain

    def check_copy(self, body, body_path, subst: Substitution, t) -> bool:
        """Validate a block's layers after its params were substituted; True if invalid."""

        def relocate(path):
            hit = subst.site_for(path)
            if hit is None:
                return None
            site, (name, b) = hit
            line = _line(self.r, site)
            if b.path is not None:
                return b.path, (f"'{name}' is used in block '{t}' at {format_path(site)} "
                                f"(line {line})")
            return path, f"the value comes from ${name} = {show(b.value)}, {b.desc}"

        schema = {"definitions": self.schema["definitions"], "type": "array",
                  "items": {"$ref": "#/definitions/layer"}}
        diags = schema_errors(body, schema, self.r, base=body_path, relocate=relocate)
        for layer, p in iter_layers(body, body_path):
            for d in layer_checks(layer, p, self.r):
                hit = relocate(tuple(p))
                diags.append(d if hit is None else replace(d, note=hit[1]))
        self.diags.extend(diags)
        return bool(diags)


# --------------------------------------------------------------------------------------
# the phase
# --------------------------------------------------------------------------------------


def _vars_phase(doc: dict, r: Reporter, subst: Substitution) -> dict[str, Binding]:
    env: dict[str, Binding] = {}
    for name, value in (doc.get("vars") or {}).items():
        vpath = ("vars", name)
        value = subst.substitute(value, lambda n: env.get(n), vpath)
        env[name] = Binding(value, f"vars.{name} (line {_line(r, vpath)})")
    return env


def _substitute_document(doc: dict, r: Reporter, subst: Substitution):
    env = _vars_phase(doc, r, subst)
    raw: dict = {}
    for key, value in doc.items():
        if key == "vars":
            raw[key] = {n: b.value for n, b in env.items()}
        elif key == "blocks":
            raw[key] = {}
            for bname, bdef in value.items():
                params = bdef.get("params") or {}
                bpath = ("blocks", bname)
                new = {}
                for bk, bv in bdef.items():
                    if bk in ("inputs", "doc"):
                        new[bk] = copy.deepcopy(bv)
                    elif bk == "params":
                        new[bk] = subst.substitute(bv, env.get, bpath + (bk,))
                    else:
                        # block params stay as $name here: they are bound per use
                        new[bk] = subst.substitute(
                            bv,
                            lambda n, _p=params: Binding(f"${n}", "") if n in _p else env.get(n),
                            bpath + (bk,),
                        )
                raw[key][bname] = new
        elif key in _NO_SUBST_KEYS:
            raw[key] = value
        else:
            raw[key] = subst.substitute(value, env.get, (key,))
    # self-bindings of block params are not substitutions
    subst.sites = {p: s for p, s in subst.sites.items() if s[1].desc}
    return raw, env


def _unknown_var_diags(doc, r: Reporter, subst: Substitution, env) -> list[Diagnostic]:
    out = []
    for path, name in subst.unknown:
        in_block = path[0] == "blocks" and len(path) > 2 and path[2] != "params"
        cands = list(env)
        note = "vars: " + (", ".join(env) if env else "(none)")
        if path[0] == "vars":
            later = name in (doc.get("vars") or {})
            msg = (f"'${name}' is defined later in vars; a var can only use vars above it"
                   if later else f"unknown reference '${name}': there is no var '{name}'")
        elif in_block:
            bname = path[1]
            params = list(_params_of(doc, bname))
            cands = params + cands
            msg = (f"unknown reference '${name}': block '{bname}' has no parameter "
                   f"'{name}' and there is no var '{name}'")
            note = (f"parameters of block '{bname}': {', '.join(params) or '(none)'}; "
                    + note)
        else:
            msg = f"unknown reference '${name}': there is no var '{name}'"
        hint = did_you_mean(name, cands)
        out.append(r.at("E201", msg, path, help=hint.replace("'", "'$", 1) if hint else None,
                        note=note))
    return out


def _params_of(doc, bname) -> dict:
    bdef = (doc.get("blocks") or {}).get(bname)
    return (bdef.get("params") or {}) if isinstance(bdef, dict) else {}


def resolve_document(loaded: LoadedYaml, path_str: str) -> Spec:
    """Substitute, expand and resolve a schema-valid document into a Spec.

    Raises GraphdlError(phase="references")."""
    doc = loaded.data
    r = Reporter(loaded.positions, loaded.file)
    subst = Substitution()
    raw, env = _substitute_document(doc, r, subst)
    diags = _unknown_var_diags(doc, r, subst, env)
    schema = document_schema(raw)

    if subst.sites:  # values that substitution made invalid

        def relocate(path):
            hit = subst.site_for(path)
            if hit is None:
                return None
            _, (name, b) = hit
            return path, f"the value comes from ${name} = {show(b.value)}, {b.desc}"

        # reported; the expansion below tolerates the invalid values so that reference
        # errors are reported too
        diags.extend(schema_errors(raw, schema, r, relocate=relocate))
        diags.extend(semantic_checks(raw, r))

    model = raw["model"]
    inputs: dict[str, InputSpec] = {}
    for name, idef in model["inputs"].items():
        filled = fill(sg.INPUT, idef)
        inputs[name] = InputSpec(
            name=name,
            shape=tuple(filled["shape"]) if isinstance(filled["shape"], list) else (),
            dtype=filled["dtype"],
            loc=Location(r.file, *r.pos(("model", "inputs", name), key=True)),
        )

    ex = Expander(raw, r, schema)
    _check_formals(raw, r, ex)
    top_lines = {n: _line(r, ("model", "inputs", n), key=True) for n in inputs}
    names = list(inputs)
    if len(names) == 1:
        prev, no_prev = names[0], ""
    else:
        prev = None
        no_prev = (f"the model has {len(names)} inputs ({', '.join(names)}), so the first layer "
                   "must say which it reads")
    top = Scope(
        prefix="", names={n: n for n in names}, lines=dict(top_lines),
        later=ex.prescan(model["layers"], ("model", "layers")), prev=prev, no_prev=no_prev,
        ctx=Ctx(), inputs=set(names),
    )
    for n, line in top_lines.items():
        ex.final_names[n] = line
    ex.walk(model["layers"], ("model", "layers"), top)

    outputs: list[str] = []
    if model.get("outputs") is None:
        if top.prev is not None:
            outputs = [top.prev]
    else:
        for j, ref in enumerate(model["outputs"]):
            opath = ("model", "outputs", j)
            if ref in inputs:
                ex.err("E202", f"output '{ref}' is a model input, not a layer", opath)
            elif ref in top.names:
                outputs.append(top.names[ref])
            else:
                ex.err("E202", f"unknown output '{ref}': no layer has this name", opath,
                       help=did_you_mean(ref, [n for n in top.names if n not in inputs]))
    diags.extend(ex.diags)
    if diags:
        raise GraphdlError(finish(diags), phase="references")

    name = raw.get("name")
    if name is None:
        name = Path(path_str).stem
    seed = raw.get("seed", sg.TOP["seed"].default)
    data = fill(sg.DATA, raw["data"])
    test_file = sg.fixed_test_split(raw["data"].get("source")) is not None
    data["split"] = fill_split(raw["data"].get("split") or {}, test_file)
    train = fill(sg.TRAIN, raw.get("train") or {})
    if train["metrics"] is None:
        train["metrics"] = ["accuracy"] if train["loss"]["type"] == "cross_entropy" else []
    if train["checkpoint"]["dir"] is None:
        train["checkpoint"]["dir"] = f"runs/{name}"
    evaluate = fill(sg.EVALUATE, raw.get("evaluate") or {})
    if evaluate["metrics"] is None:
        evaluate["metrics"] = list(train["metrics"])
    if "train" in raw:  # a spec that trains is evaluated after training
        diags = []
        if not (test_file and evaluate["split"] == "test"):  # the test split is that file
            diags = _evaluate_split_check(raw, data["split"], evaluate["split"], r)
        diags += check_metrics(raw, train, evaluate, data["split"], r)
        if diags:
            raise GraphdlError(diags, phase="references")
    return Spec(
        path=path_str,
        name=name,
        seed=seed,
        description=raw.get("description") or sg.TOP["description"].default,
        data=data,
        model=ModelSpec(inputs=inputs, layers=ex.layers, outputs=outputs),
        train=train,
        evaluate=evaluate,
        raw=raw,
        source_lines=loaded.source_lines,
        positions=loaded.positions,
    )


def _evaluate_split_check(raw: dict, split: dict, name: str, r: Reporter) -> list[Diagnostic]:
    """E105 when the split ``evaluate`` reads has a fraction of 0: found after training
    otherwise. (A fraction above 0 that leaves no sample is found when the data is split.)"""
    if split[name] > 0:
        return []
    given = (raw.get("data") or {}).get("split") or {}
    written = "split" in (raw.get("evaluate") or {})
    default = "" if written else " (the default)"
    others = [k for k in ("test", "val", "train") if k != name and split[k] > 0]
    note = None
    if given.get(name) is None:
        shares = ", ".join(f"{k} {given[k]:g}" for k in ("train", "val", "test")
                           if given.get(k) is not None)
        note = f"data.split.{name} is not given, and the fractions given ({shares}) leave it nothing"
    return [r.at(
        "E105",
        f"evaluate uses the '{name}' split{default}, but data.split.{name} is 0: the model "
        "would train, then have nothing to evaluate on",
        ("evaluate", "split") if written else ("data", "split", name),
        key=not written,
        help=f"give data.split.{name} a fraction above 0"
        + (f", or evaluate on another split: evaluate: {{split: {others[0]}}}" if others else ""),
        note=note,
    )]


def require_train(spec: Spec, purpose: str) -> None:
    """E102 (at the top of the file) when ``purpose`` (e.g. "graphdl run") needs the
    train: section and the spec has none. Such a spec defines a model only: it can be
    validated, compiled for prediction and run on new data with trained weights."""
    if "train" in spec.raw:
        return
    loc = spec.loc("train", key=True)
    raise GraphdlError(Diagnostic(
        "E102",
        f"{purpose} needs a train: section (the target field and the loss), and this spec "
        "has none",
        file=loc.file, line=loc.line, col=loc.col, path="train",
        help="add one, e.g. train: {target: y, loss: {type: cross_entropy}}",
        note="without train:, a spec can be checked (graphdl validate), compiled for "
        "prediction (graphdl compile --mode predict) and run on new data with trained "
        "weights (graphdl predict --weights FILE)",
    ), phase="references")


def _check_formals(raw, r: Reporter, ex: Expander) -> None:
    for bname, bdef in (raw.get("blocks") or {}).items():
        seen: dict[str, int] = {}
        for j, formal in enumerate(bdef.get("inputs") or []):
            p = ("blocks", bname, "inputs", j)
            if formal == "prev":
                ex.err("E204", "'prev' is reserved for the previous layer; choose another "
                       "input name", p)
            elif formal in seen:
                ex.err("E204", f"duplicate input name '{formal}' in block '{bname}'", p)
            seen.setdefault(formal, j)
