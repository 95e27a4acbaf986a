"""Schema phase: validate a loaded spec against the JSON Schema and map every error to a
located, coded Diagnostic (never dumping the schema).

Error codes: E101 unknown key, E102 missing key, E103 bad enum value / unknown type,
E104 wrong type, E105 out of range, E106 ``repeat`` on a built-in layer.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re

from jsonschema import Draft7Validator
from jsonschema.validators import extend

from graphdl.errors import Diagnostic, diagnostic_at, format_path
from graphdl.layers import COMMON_LAYER_KEYS, LAYERS
from graphdl.layers.core import ALPHA_DEFAULTS
from graphdl.spec import schema_gen as sg
from graphdl.spec.loader import Pos

MAX_ERRORS = 20


def _is_int(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


# Draft-07 with a strict integer type: 128.0 is a number, not an integer.
SpecValidator = extend(
    Draft7Validator,
    type_checker=Draft7Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


@functools.lru_cache(maxsize=1)
def schema_text() -> str:
    """The JSON Schema (draft-07) of a spec, as text (what ``graphdl schema`` prints)."""
    try:
        return sg.PACKAGE_SCHEMA.read_text(encoding="utf-8")
    except OSError:  # not installed with the package data: generate it
        return sg.schema_json()


@functools.lru_cache(maxsize=1)
def static_schema() -> dict:
    return json.loads(schema_text())


def _block_params(bdef) -> dict:
    if isinstance(bdef, dict) and isinstance(bdef.get("params"), dict):
        return bdef["params"]
    return {}


def document_schema(doc) -> dict:
    """The static schema with the editor-only 'block use' layer variant replaced by one closed
    variant per block defined in this document."""
    static = static_schema()
    blocks = doc.get("blocks") if isinstance(doc, dict) else None
    variants = []
    if isinstance(blocks, dict):
        for name, bdef in blocks.items():
            if not re.match(sg.IDENT_PATTERN, str(name)) or name in LAYERS:
                continue
            variants.append(sg.block_variant(name, _block_params(bdef)))
    layer = static["definitions"]["layer"]
    branches = [b for b in layer["anyOf"] if b.get("title") != sg.BLOCK_USE_TITLE]
    schema = dict(static)
    schema["definitions"] = dict(static["definitions"])
    schema["definitions"]["layer"] = {**layer, "anyOf": branches + variants}
    return schema


# --------------------------------------------------------------------------------------
# locating and wording
# --------------------------------------------------------------------------------------


def where(path) -> str:
    return format_path(path) or "the top level"


def in_where(path) -> str:
    """'in model.layers[0]' or 'at the top level'."""
    return f"in {format_path(path)}" if path else "at the top level"


def what(path) -> str:
    """How to name the value at ``path`` in a message."""
    if not path:
        return "the top level"
    last = path[-1]
    if isinstance(last, int):
        return format_path(path)
    return f"'{last}' {in_where(path[:-1])}"


def show(value) -> str:
    """A value as the user would write it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{...}"
    return repr(value)


def describe(value) -> str:
    if isinstance(value, bool):
        return f"the boolean {show(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {show(value)}"
    if isinstance(value, str):
        return f"the string {show(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return show(value)


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "object": "a mapping",
    "array": "a list",
    "null": "nothing",
}


def type_words(types) -> str:
    if isinstance(types, str):
        types = [types]
    words = [_TYPE_WORDS.get(t, t) for t in types]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def quoted_list(items) -> str:
    items = [f"'{i}'" for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# Names people bring from Keras and PyTorch, by their folded spelling (`_fold`): graphdl's
# name and what to know about it. A hint is given only where graphdl's name is one of the
# candidates, so 'lr' is suggested for an unknown key under optimizer, not elsewhere.
FOREIGN_NAMES = {
    "learningrate": ("lr", "graphdl's name for the learning rate"),
    "epsilon": ("eps", None),
    "acc": ("accuracy", None),
    "categoricalcrossentropy": (
        "cross_entropy",
        "it takes integer class labels, not one-hot, and logits: no softmax on the last layer"),
    "sparsecategoricalcrossentropy": (
        "cross_entropy", "it takes logits: no softmax on the last layer"),
    "crossentropyloss": ("cross_entropy", None),
    "binarycrossentropy": ("bce_with_logits", "it takes logits: no sigmoid on the last layer"),
    "bcewithlogitsloss": ("bce_with_logits", None),
    "meansquarederror": ("mse", None),
    "mseloss": ("mse", None),
}


def _fold(word: str) -> str:
    """A name without case and separators: 'SparseCategoricalCrossentropy' and
    'sparse_categorical_crossentropy' fold alike."""
    return re.sub(r"[\s_-]", "", word.lower())


def did_you_mean(word, candidates) -> str | None:
    """'did you mean 'x'?' for the candidate closest to ``word`` (case ignored), or a
    Keras/PyTorch name's graphdl equivalent (`FOREIGN_NAMES`); None when nothing is close."""
    if not isinstance(word, str):
        return None
    cands = [str(c) for c in candidates]
    foreign = FOREIGN_NAMES.get(_fold(word))
    if foreign is not None and foreign[0] in cands:
        name, why = foreign
        return f"did you mean '{name}'? ({why})" if why else f"did you mean '{name}'?"
    by_lower = {c.lower(): c for c in reversed(cands)}  # the first spelling wins
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean '{by_lower[close[0]]}'?" if close else None


class Reporter:
    """Makes located Diagnostics from YAML paths."""

    def __init__(self, positions: dict[tuple, Pos], file: str):
        self.positions = positions
        self.file = file

    def pos(self, path, key: bool = False) -> tuple[int, int, int]:
        path = tuple(path)
        while True:
            p = self.positions.get(path)
            if p is not None:
                if key and p.key is not None:
                    return p.key
                return p.value
            if not path:
                return (1, 1, 1)
            path = path[:-1]
            key = True  # the nearest existing parent: point at its key

    def at(self, code, message, path, key=False, **kw) -> Diagnostic:
        return diagnostic_at(code, message, self.file, self.pos(path, key), path, **kw)


def finish(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Deduplicate, sort in file order, cap at MAX_ERRORS."""
    seen = set()
    out = []
    for d in diags:
        k = (d.code, d.line, d.col, d.message)
        if k not in seen:
            seen.add(k)
            out.append(d)
    # a wrong type makes range/enum complaints about the same value noise
    typed = {d.path for d in out if d.code == "E104"}
    out = [d for d in out if not (d.code in ("E103", "E105") and d.path in typed)]
    out.sort(key=lambda d: (d.line or 0, d.col or 0, d.code))
    if len(out) > MAX_ERRORS:
        more = len(out) - MAX_ERRORS
        out = out[:MAX_ERRORS]
        out[-1].extra["more_errors"] = more
    return out


# --------------------------------------------------------------------------------------
# mapping jsonschema errors
# --------------------------------------------------------------------------------------


def _is_ref_branch(s) -> bool:
    return isinstance(s, dict) and s.get("pattern") == sg.REF_PATTERN


def _tag_of(branches) -> str | None:
    for b in branches:
        props = b.get("properties", {}) if isinstance(b, dict) else {}
        for tag in ("type", "op"):
            if isinstance(props.get(tag), dict) and "const" in props[tag]:
                return tag
    return None


def _range_text(schema: dict) -> str:
    lo = hi = None
    lb = rb = ""
    if "minimum" in schema:
        lo, lb = schema["minimum"], "["
    if "exclusiveMinimum" in schema:
        lo, lb = schema["exclusiveMinimum"], "("
    if "maximum" in schema:
        hi, rb = schema["maximum"], "]"
    if "exclusiveMaximum" in schema:
        hi, rb = schema["exclusiveMaximum"], ")"
    if lo is not None and hi is not None:
        return f"{lb}{lo}, {hi}{rb}"
    if lo is not None:
        return (">= " if lb == "[" else "> ") + str(lo)
    if hi is not None:
        return ("<= " if rb == "]" else "< ") + str(hi)
    return ""


_COND = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}

_NUMBER_RE = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _subject(path, tag) -> str:
    """What a tagged union at ``path`` is called in messages: 'layer', 'schedule', ..."""
    if tag == "op":
        return "augment op" if "augment" in path else "preprocess op"
    if len(path) >= 2 and isinstance(path[-1], int) and path[-2] == "layers":
        return "layer type"
    for p in reversed(path):
        if isinstance(p, str):
            return f"{p} type"
    return "type"


class ErrorMapper:
    """Turns jsonschema ValidationErrors into Diagnostics.

    ``base`` prefixes every error path (when validating a piece of the document);
    ``relocate(path)`` may return ``(path to point at, note)`` for a value that a substitution
    put there (the note says where it came from), or None.
    """

    def __init__(self, reporter: Reporter, base: tuple = (), relocate=None):
        self.r = reporter
        self.base = tuple(base)
        self.relocate = relocate
        self._variants: dict[int, tuple[str, str, list]] = {}

    def _at(self, code, message, path, key=False, **kw) -> Diagnostic:
        if self.relocate is not None:
            hit = self.relocate(tuple(path))
            if hit is not None:
                path, kw["note"] = hit
                key = False
        return self.r.at(code, message, path, key=key, **kw)

    def map_all(self, errors) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        for e in errors:
            out.extend(self.map(e))
        return out

    def map(self, err) -> list[Diagnostic]:
        path = self.base + tuple(err.absolute_path)
        v = err.validator
        inst = err.instance
        if "propertyNames" in err.schema_path:
            return [self._bad_name(path, inst)]
        if v in ("anyOf", "oneOf"):
            return self._union(err, path)
        if v == "additionalProperties":
            return self._unknown_keys(err, path)
        if v == "required":
            return [
                self._at("E102", f"missing required key '{k}' {in_where(path)}", path + (k,))
                for k in err.validator_value
                if isinstance(inst, dict) and k not in inst
            ]
        if v in ("enum", "const"):
            return [self._enum(err, path)]
        if v == "type":
            return [self._type(err, path)]
        if v in _COND:
            rng = _range_text(err.schema)
            return [
                self._at(
                    "E105",
                    f"{what(path)} is out of range: {show(inst)} is not "
                    f"{_COND[v]} {err.validator_value}",
                    path,
                    help=f"allowed range: {rng}" if rng else None,
                )
            ]
        if v in ("minItems", "maxItems", "minProperties"):
            return [self._size(err, path)]
        if v == "pattern":
            return [self._pattern(err, path)]
        return [self._at("E104", f"invalid value for {what(path)}: {err.message}", path)]

    # --- kinds -------------------------------------------------------------------------

    def _bad_name(self, path, name) -> Diagnostic:
        return self._at(
            "E104",
            f"invalid name '{name}' {in_where(path)}: a name starts with a letter or '_' and "
            "contains only letters, digits and '_'",
            path + (name,),
            key=True,
        )

    def _pattern(self, err, path) -> Diagnostic:
        pat = err.validator_value
        inst = err.instance
        if pat == sg.REF_PATTERN:
            return self._at(
                "E104",
                f"invalid reference {show(inst)} for {what(path)}: write '$' followed by the name "
                "of a var or of a block parameter",
                path,
            )
        if pat in (sg.IDENT_PATTERN, sg.LAYER_NAME_PATTERN):
            return self._at(
                "E104",
                f"invalid name {show(inst)} for {what(path)}: a name starts with a letter or '_' "
                "and contains only letters, digits and '_'",
                path,
            )
        return self._at("E104", f"invalid value {show(inst)} for {what(path)}", path)

    def _size(self, err, path) -> Diagnostic:
        inst = err.instance
        n = err.validator_value
        if err.validator == "minProperties" or (err.validator == "minItems" and not inst):
            return self._at(
                "E102",
                f"{what(path)} is empty: it needs at least {n} "
                f"{'entry' if err.validator == 'minProperties' else 'item'}"
                f"{'' if n == 1 else 's'}",
                path,
            )
        lo, hi = err.schema.get("minItems"), err.schema.get("maxItems")
        if lo is not None and lo == hi:
            need = f"exactly {lo}"
        elif err.validator == "minItems":
            need = f"at least {lo}"
        else:
            need = f"at most {hi}"
        return self._at(
            "E105", f"{what(path)} has {len(inst)} items: expected {need}", path
        )

    def _type(self, err, path) -> Diagnostic:
        inst = err.instance
        expected = type_words(err.validator_value)
        types = [err.validator_value] if isinstance(err.validator_value, str) else list(
            err.validator_value)
        if inst is None:
            return self._at(
                "E104",
                f"the value is empty: check the indentation below ({what(path)} expects "
                f"{expected})",
                path,
                key=True,
            )
        help_ = None
        numeric = {"number", "integer"} & set(types)
        if isinstance(inst, str) and numeric and _NUMBER_RE.match(inst):
            key = path[-1] if path and isinstance(path[-1], str) else None
            written = f"{key}: {inst.strip()}" if key else inst.strip()
            help_ = (f"'{inst}' is quoted, so YAML reads it as a string; remove the quotes: "
                     f"{written}")
        elif isinstance(inst, str) and "boolean" in types and inst.lower() in (
                "yes", "no", "on", "off", "y", "n"):
            help_ = "only true and false are booleans (YAML 1.2)"
        elif isinstance(inst, float) and "integer" in types and inst.is_integer():
            help_ = f"write {int(inst)} without a decimal point"
        elif isinstance(inst, (int, float)) and not isinstance(inst, bool) and "string" in types:
            help_ = f"quote it if you mean the string: '{show(inst)}'"
        return self._at(
            "E104",
            f"wrong type for {what(path)}: expected {expected}, got {describe(inst)}",
            path,
            help=help_,
        )

    def _enum(self, err, path) -> Diagnostic:
        inst = err.instance
        if err.validator == "const":
            allowed = [err.validator_value]
        else:
            allowed = list(err.validator_value)
        if path == ("graphdl",):
            return self._at(
                "E103",
                f"unsupported spec format version {show(inst)}: this graphdl reads 'graphdl: 1'",
                path,
            )
        return self._at(
            "E103",
            f"bad value {show(inst)} for {what(path)}",
            path,
            help=did_you_mean(inst, allowed),
            note="allowed values: " + ", ".join(str(a) for a in allowed),
        )

    def _unknown_keys(self, err, path) -> list[Diagnostic]:
        inst = err.instance
        schema = err.schema
        props = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [
            k for k in inst
            if k not in props and not any(re.search(p, str(k)) for p in patterns)
        ]
        valid = sorted(props)
        variant = self._variants.get(id(schema))
        out = []
        for k in extras:
            message = f"unknown key '{k}' {in_where(path)}"
            help_ = did_you_mean(k, valid)
            if variant is not None:
                tag, vname, branches = variant
                others = [
                    b for b in branches
                    if b is not schema and "const" in b.get("properties", {}).get(tag, {})
                ]
                owners = [b["properties"][tag]["const"] for b in others
                          if k in b["properties"]]
                if owners:
                    message = (f"'{k}' has no effect for {_subject(path, tag)} '{vname}'; "
                               f"it belongs to {quoted_list(owners)}")
                    help_ = None
                elif help_ is None:
                    elsewhere = {p for b in others for p in b["properties"]} - set(valid)
                    guess = did_you_mean(k, sorted(elsewhere))
                    if guess:
                        key = guess.split("'")[1]
                        owners = [b["properties"][tag]["const"] for b in others
                                  if key in b["properties"]]
                        help_ = (f"{guess} it belongs to {_subject(path, tag)} "
                                 f"{quoted_list(owners)}, not '{vname}'")
            out.append(
                self._at(
                    "E101",
                    message,
                    path + (k,),
                    key=True,
                    help=help_,
                    note="valid keys here: " + ", ".join(valid),
                )
            )
        return out

    def _union(self, err, path) -> list[Diagnostic]:
        branches = err.validator_value
        inst = err.instance
        ref = [i for i, b in enumerate(branches) if _is_ref_branch(b)]
        if ref and len(branches) == 2:
            use = ref[0] if isinstance(inst, str) and inst.startswith("$") else 1 - ref[0]
            return self._branch_errors(err, use)
        tag = _tag_of(branches)
        if tag is None:
            types = []
            for b in branches:
                t = b.get("type") if isinstance(b, dict) else None
                types.extend([t] if isinstance(t, str) else (t or []))
            return [
                self._at(
                    "E104",
                    f"wrong type for {what(path)}: expected {type_words(types or ['a value'])}, "
                    f"got {describe(inst)}",
                    path,
                )
            ]
        consts = [
            b["properties"][tag]["const"] for b in branches
            if "const" in b.get("properties", {}).get(tag, {})
        ]
        subject = _subject(path, tag)
        if not isinstance(inst, dict):
            if inst is None:
                return [self._at(
                    "E104",
                    f"the value is empty: check the indentation below ({what(path)} expects a "
                    f"mapping with '{tag}:')",
                    path,
                    key=True,
                )]
            return [self._at(
                "E104",
                f"wrong type for {what(path)}: expected a mapping like {{{tag}: {consts[0]}, "
                f"...}}, got {describe(inst)}",
                path,
            )]
        note = self._valid_types_note(branches, tag, consts)
        if tag not in inst:
            return [self._at(
                "E102",
                f"missing required key '{tag}' {in_where(path)}",
                path + (tag,),
                note=note,
            )]
        value = inst[tag]
        if value not in consts or isinstance(value, bool):
            noun = subject if tag == "op" else subject.replace(" type", "") + " type"
            return [self._at(
                "E103",
                f"unknown {noun} {show(value)} {in_where(path)}",
                path + (tag,),
                help=did_you_mean(value, consts),
                note=note,
            )]
        index = next(
            i for i, b in enumerate(branches)
            if b.get("properties", {}).get(tag, {}).get("const") == value
        )
        for b in branches:
            self._variants[id(b)] = (tag, value, branches)
        return self._branch_errors(err, index)

    @staticmethod
    def _valid_types_note(branches, tag, consts) -> str:
        blocks = [
            b["properties"][tag]["const"] for b in branches
            if str(b.get("title", "")).endswith(" block")
        ]
        builtin = [c for c in consts if c not in blocks]
        noun = "ops" if tag == "op" else "types"
        note = f"valid {noun}: " + ", ".join(builtin)
        if blocks:
            note += "; blocks: " + ", ".join(blocks)
        return note

    def _branch_errors(self, err, index) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        for sub in err.context:
            if sub.relative_schema_path and sub.relative_schema_path[0] == index:
                out.extend(self.map(sub))
        return out


def schema_errors(instance, schema, reporter: Reporter, base=(), relocate=None
                  ) -> list[Diagnostic]:
    """Validate ``instance`` (found at YAML path ``base``) and map every error."""
    validator = SpecValidator(schema)
    mapper = ErrorMapper(reporter, base=base, relocate=relocate)
    return mapper.map_all(validator.iter_errors(instance))


# --------------------------------------------------------------------------------------
# checks the schema cannot express
# --------------------------------------------------------------------------------------


def is_ref(value) -> bool:
    return isinstance(value, str) and re.match(sg.REF_PATTERN, value) is not None


def iter_layers(layers, path):
    """Every layer mapping of a layer list (recursing into residual bodies), with its path."""
    if not isinstance(layers, list):
        return
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            continue
        p = path + (i,)
        yield layer, p
        if layer.get("type") == "residual":
            yield from iter_layers(layer.get("layers"), p + ("layers",))


def all_layer_lists(doc):
    """(layers, path) for model.layers and each block's layers."""
    if not isinstance(doc, dict):
        return
    model = doc.get("model")
    if isinstance(model, dict):
        yield model.get("layers"), ("model", "layers")
    blocks = doc.get("blocks")
    if isinstance(blocks, dict):
        for name, bdef in blocks.items():
            if isinstance(bdef, dict):
                yield bdef.get("layers"), ("blocks", name, "layers")


def layer_checks(layer: dict, path, r: Reporter) -> list[Diagnostic]:
    """E106 repeat on a built-in layer; alpha with an activation that ignores it."""
    out = []
    t = layer.get("type")
    if not isinstance(t, str):
        return out
    definition = LAYERS.get(t)
    if definition is not None and "repeat" in layer:
        out.append(r.at(
            "E106",
            f"repeat is only for block layers; '{t}' is a built-in layer",
            path + ("repeat",),
            key=True,
            help="define a block under blocks: and use it with repeat: N",
        ))
    if definition is not None and "alpha" in definition.fields and "alpha" in layer:
        act = layer.get("activation", definition.default("activation"))
        if isinstance(act, str) and not is_ref(act) and act not in ALPHA_DEFAULTS:
            out.append(r.at(
                "E101",
                f"'alpha' has no effect for activation '{act}'; it is only for "
                f"{quoted_list(ALPHA_DEFAULTS)}",
                path + ("alpha",),
                key=True,
            ))
    return out


def split_check(doc, r: Reporter) -> list[Diagnostic]:
    data = doc.get("data") if isinstance(doc, dict) else None
    split = data.get("split") if isinstance(data, dict) else None
    if not isinstance(split, dict):
        return []
    given = {k: split[k] for k in ("train", "val", "test") if k in split}
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in given.values()):
        return []
    total = sum(given.values())
    if len(given) == 3 and abs(total - 1.0) > 1e-6:
        return [r.at("E105", f"data.split fractions sum to {total:g}; they must sum to 1",
                     ("data", "split"))]
    if len(given) < 3 and total > 1.0 + 1e-6:
        return [r.at("E105", f"data.split fractions sum to {total:g}; they must sum to at "
                     "most 1 (missing ones share what is left)", ("data", "split"))]
    return []


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def schedule_check(doc, r: Reporter) -> list[Diagnostic]:
    """A schedule's min_lr above the optimizer's lr would raise the learning rate (cosine
    decays *up* to it, plateau jumps to it): refuse it rather than train on it."""
    train = doc.get("train") if isinstance(doc, dict) else None
    if not isinstance(train, dict):
        return []
    schedule, optimizer = train.get("schedule"), train.get("optimizer")
    if not isinstance(schedule, dict) or not isinstance(optimizer, dict):
        return []
    min_lr, lr = schedule.get("min_lr"), optimizer.get("lr")
    if not _number(min_lr) or not _number(lr) or min_lr <= lr:
        return []
    return [r.at("E105", f"train.schedule.min_lr {min_lr:g} is above the optimizer's lr "
                 f"{lr:g}: the schedule would raise the learning rate",
                 ("train", "schedule", "min_lr"),
                 help="min_lr is the lowest learning rate the schedule reaches; make it "
                      "no larger than train.optimizer.lr")]


def block_definition_checks(doc, r: Reporter) -> list[Diagnostic]:
    """Block names and params that clash with built-in names."""
    out = []
    blocks = doc.get("blocks") if isinstance(doc, dict) else None
    if not isinstance(blocks, dict):
        return out
    reserved = set(COMMON_LAYER_KEYS) | {"type"}
    for name, bdef in blocks.items():
        if name in LAYERS:
            out.append(r.at(
                "E204",
                f"block '{name}' has the name of the built-in layer type '{name}'",
                ("blocks", name),
                key=True,
                help="rename the block",
            ))
        for p in _block_params(bdef):
            if p in reserved:
                out.append(r.at(
                    "E204",
                    f"parameter '{p}' of block '{name}' clashes with the layer key '{p}'",
                    ("blocks", name, "params", p),
                    key=True,
                    help="rename the parameter",
                ))
    return out


def input_shape_check(doc, r: Reporter) -> list[Diagnostic]:
    """T (a sequence's number of steps) may only be the first dimension of an input shape."""
    model = doc.get("model") if isinstance(doc, dict) else None
    inputs = model.get("inputs") if isinstance(model, dict) else None
    if not isinstance(inputs, dict):
        return []
    out = []
    for name, idef in inputs.items():
        shape = idef.get("shape") if isinstance(idef, dict) else None
        if not isinstance(shape, list):
            continue
        for j, dim in enumerate(shape):
            if dim == "T" and j > 0:
                rest = [d for d in shape if d != "T"]
                out.append(r.at(
                    "E104", f"model.inputs.{name}.shape has T at position {j}: T, the "
                    "number of steps of a sequence, can only be the first dimension",
                    ("model", "inputs", name, "shape", j),
                    help=f"write the time axis first: shape: [{', '.join(map(str, ['T', *rest]))}] "
                         "(steps, then the features of one step)"))
    return out


def semantic_checks(doc, r: Reporter) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    out.extend(input_shape_check(doc, r))
    for layers, lpath in all_layer_lists(doc):
        for layer, p in iter_layers(layers, lpath):
            out.extend(layer_checks(layer, p, r))
    out.extend(split_check(doc, r))
    out.extend(schedule_check(doc, r))
    return out


def validate_document(doc, positions, file) -> list[Diagnostic]:
    """All schema-phase diagnostics of a loaded document (unsorted, may be empty)."""
    r = Reporter(positions, file)
    diags = schema_errors(doc, document_schema(doc), r)
    diags.extend(semantic_checks(doc, r))
    diags.extend(block_definition_checks(doc, r))
    return diags
