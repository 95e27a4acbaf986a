"""The Python API: `load(path) -> Model` with compile, fit, evaluate, predict, save, load_weights.

    import graphdl
    model = graphdl.load("specs/mlp_digits.yaml")
    model.fit()                      # trains as `graphdl run` does, into runs/<name>/
    model.evaluate("test")           # {"loss": ..., "accuracy": ...}: evaluate.metrics
    model.predict({"x": batch})      # logits, float32
    model.predict_result(batch)      # {"class", "probabilities"}: what the loss implies
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError


def load(path: str | Path):
    """Load and validate a spec file; nothing is compiled until it is needed."""
    from graphdl.spec import load_spec

    return Model(load_spec(path))


class Model:
    def __init__(self, spec, device: str | None = None):
        self.spec = spec
        self.requested_device = device  # None: the spec's train.device (auto by default)
        self._device: str | None = None
        self.device_note = ""
        self._compiled: dict = {}
        self._helpers: dict = {}  # the processes compiling kernels beside this one (prefetch)
        self._prebuilt: dict = {}  # mode -> a program built before the data was loaded
        self.params: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.splits = None
        self.preprocess_state: dict | None = None
        # class index -> name where the data names its classes (image folders); from the
        # data, or from the checkpoint load_weights read
        self.class_names: list[str] | None = None
        self.init_report = None  # what model.init loaded (transfer learning)
        self.first_step_at: float | None = None
        self.first_step_cpu: float | None = None
        self.trainer = None  # the Trainer of the latest fit: its state says how far it got
        self._decoder = None  # graphdl.runtime.decode.Decoder, made on first use

    # ------------------------------------------------------------ device
    @property
    def device(self) -> str:
        """"cpu" or "cuda", resolved once (auto takes a usable GPU); E701 when cuda is
        asked for and there is none."""
        if self._device is None:
            from graphdl.backends.cuda import resolve_device

            requested = self.requested_device or self.spec.train["device"]
            loc = (SimpleNamespace(file=self.spec.path) if self.requested_device
                   else self.spec.loc("train", "device"))
            self._device, self.device_note = resolve_device(requested, loc=loc)
        return self._device

    def sync_to_host(self) -> None:
        """Copy the weights a GPU program holds into ``params`` / ``state`` (no-op on CPU)."""
        for c in self._compiled.values():
            sync = getattr(c.program, "sync_to_host", None)
            if sync is not None:
                sync()

    def sync_to_device(self) -> None:
        """Copy ``params`` / ``state`` to the GPU after they were assigned on the host."""
        for c in self._compiled.values():
            sync = getattr(c.program, "sync_to_device", None)
            if sync is not None:
                sync()

    # ------------------------------------------------------------ compiling
    def compiled(self, mode: str, *, warmup: bool = True):
        """The compiled program for ``mode`` (train / eval / predict), built on first use;
        train and eval need the spec's train: section (E102 without one). ``warmup=False``
        leaves its kernels to compile at the first call (`compile` warms them up)."""
        if mode not in self._compiled:
            from graphdl.compiler import compile_spec
            from graphdl.runtime.params import init_params, init_state
            from graphdl.spec.resolve import require_train

            if mode in ("train", "eval"):
                require_train(self.spec, f"the {mode} program")

            c = self._prebuilt.pop(mode, None) or compile_spec(
                self.spec, mode, device=self.device, warmup=False)
            self._compiled[mode] = c
            fresh = init_params(c.graph, self.spec.seed)
            added = [k for k in fresh if k not in self.params]
            for k, v in fresh.items():
                self.params.setdefault(k, v)
            for k, v in init_state(c.graph).items():
                self.state.setdefault(k, v)
            if added and self.init_report is None:
                from graphdl.runtime.transfer import apply_init

                self.init_report = apply_init(self.spec, self.params, self.state)
            c.program.bind_params(self.params, self.state)
        c = self._compiled[mode]
        if warmup and not c.jit_seconds:
            c.jit_seconds = c.program.warmup()
        return c

    def compile(self, modes=("train", "eval"), on_cold=None) -> Model:
        """Build the programs of ``modes`` and compile their kernels. ``on_cold(n, seconds)``
        is called once, before compiling, when ``n`` of them are not in the kernel cache
        (``seconds``: a rough estimate); the CLI prints it."""
        built = [self.compiled(m, warmup=False) for m in modes]
        cold = [c.program for c in built if not c.jit_seconds and not c.program.was_cached]
        if cold and on_cold is not None:
            on_cold(len(cold), sum(_cold_estimate(p) for p in cold))
        from graphdl.backends.cpu import prefetch

        first = next((p for p in cold if p.device == "cpu"), None)
        if first is not None and not any(self._helpers.values()):
            # a second process compiles the first cold program's kernels from the other end
            # (one: two cores are the usual machine, and the helper needs one)
            self._helpers["compile"] = prefetch.start(first)
        try:
            for m in modes:
                self.compiled(m)
        finally:
            self.stop_compile_helpers()
        return self

    def stop_compile_helpers(self) -> None:
        from graphdl.backends.cpu import prefetch

        while self._helpers:
            prefetch.stop(self._helpers.popitem()[1])

    def start_compile_helper(self, mode: str) -> None:
        """Build the ``mode`` program now and, if its kernels are not cached, start the
        process that compiles them beside this one (`graphdl.backends.cpu.prefetch`):
        `graphdl run` loads the data meanwhile. A spec error here is left for the later
        build, which reports it in its usual order; `compile` stops the helper."""
        from graphdl.backends.cpu import prefetch
        from graphdl.compiler import compile_spec

        if self.device != "cpu" or mode in self._compiled or mode in self._helpers:
            return
        try:
            built = compile_spec(self.spec, mode, device=self.device, warmup=False)
        except Exception:  # noqa: BLE001  (raised again, in order, by `compiled`)
            return
        self._prebuilt[mode] = built
        if not built.program.was_cached:
            self._helpers[mode] = prefetch.start(built.program)

    def train_program(self):
        return self.compiled("train").program

    def assign_tensors(self, tensors: dict[str, np.ndarray], source: str = "") -> None:
        """Copy checkpoint tensors ("param/<name>", "state/<name>") into the bound arrays."""
        self.sync_to_host()  # tensors not assigned here keep their current (device) values
        for key, value in tensors.items():
            kind, _, name = key.partition("/")
            store = self.params if kind == "param" else self.state
            if name in store:
                if store[name].shape != value.shape:
                    raise GraphdlError(Diagnostic(
                        "E402", f"tensor {name} has shape {list(value.shape)}, "
                        f"the model expects {list(store[name].shape)}", file=source or None))
                store[name][...] = value
            else:
                store[name] = np.ascontiguousarray(value)
                for c in self._compiled.values():
                    c.program.bind_params(self.params, self.state)
        self.sync_to_device()

    # ------------------------------------------------------------ data
    def data(self):
        if self.splits is None:
            from graphdl.data import load_data

            self.splits = load_data(self.spec)
            self.preprocess_state = self.splits.preprocess_state
            self.class_names = self.splits.class_names
            self._check_labels(self.splits)
        return self.splits

    def _check_labels(self, splits) -> None:
        """The target of every split against the loss before anything is trained or
        evaluated (`graphdl.layers.lower.loss_target`: its type against the model output,
        class labels within the output's classes, bce targets within [0, 1]); each is
        replaced by the array of the type the programs declare, which their feed checks
        require."""
        from graphdl.layers.lower import loss_target, lower

        target = self.spec.train["target"]
        if target is None:
            return
        graph = lower(self.spec, "eval")
        for name in ("train", "val", "test"):
            ds = getattr(splits, name)
            if ds is not None and len(ds):
                ds.fields[target] = loss_target(self.spec, graph, ds.fields[target], name)

    # ------------------------------------------------------------ training
    def fit(self, run_dir: str | Path | None = None, *, progress: bool = True, resume: bool = False,
            epochs: int | None = None) -> list[dict]:
        """Train as the spec says; returns the per-epoch metrics."""
        from graphdl.runtime.trainer import Trainer, check_run_dir
        from graphdl.spec.resolve import require_train

        require_train(self.spec, "Model.fit")
        run_dir = Path(run_dir or self.default_run_dir())
        check_run_dir(run_dir, self.spec)
        splits = self.data()
        splits.get(self.spec.evaluate["split"])  # E507 now, not after training, if it is empty
        # only the train program before the first step: the eval program compiles when the
        # first validation (or the final evaluation) needs it
        self.compile(("train",))
        (run_dir / "spec.resolved.yaml").write_text(self.spec.resolved_yaml(), encoding="utf-8")
        trainer = Trainer(self, splits, run_dir, progress=progress, resume=resume)
        if epochs is not None:
            trainer.epochs = epochs
        self.trainer = trainer
        history = trainer.fit()
        self.last_run_dir = run_dir
        self.first_step_at = trainer.first_step_at
        self.first_step_cpu = trainer.first_step_cpu
        return history

    def default_run_dir(self) -> Path:
        """train.checkpoint.dir, relative to the spec file like every path in a spec;
        without one, runs/<name> in the working directory (as --run-dir is)."""
        written = ((self.spec.raw.get("train") or {}).get("checkpoint") or {}).get("dir")
        if written is None:
            return Path(self.spec.train["checkpoint"]["dir"])  # resolve fills runs/<name>
        return self.spec.file_path(written)

    def evaluate_dataset(self, ds, batch_size: int = 512, metrics: list[str] | None = None) -> dict:
        """The data loss of dataset ``ds`` and the metrics ``metrics`` (spec names; default
        evaluate.metrics), each over the whole split (`graphdl.runtime.metrics`): floats,
        and lists for the per-class metrics and the confusion matrix. Ragged sequences are
        cut per batch to its longest (`Dataset.batch`); a per-step target's metrics count
        the steps the sequences really have."""
        return self._evaluate(ds, batch_size, metrics)[0]

    def _evaluate(self, ds, batch_size: int = 512, metrics: list[str] | None = None,
                  decode: bool = False) -> tuple[dict, np.ndarray | None]:
        """`evaluate_dataset`'s metrics, and the model's outputs over ``ds`` (None when it
        is empty). With ``decode`` (evaluate.decode greedy or beam), the loss is still the
        teacher-forced one, and the metrics score the decoded tokens."""
        from graphdl.data.ragged import stack_steps, valid_steps
        from graphdl.runtime.metrics import split_metrics

        program = self.compiled("eval").program
        loss_cfg = self.spec.train["loss"]
        target = self.spec.train["target"]
        names = list(self.spec.model.inputs) + [target]
        loss_sum, n, outputs = 0.0, 0, []
        for s in range(0, len(ds), batch_size):
            feeds = ds.batch(slice(s, s + batch_size), names)
            out = program(feeds)
            b = len(feeds[target])
            loss_sum += float(out["data_loss"][0]) * b
            n += b
            outputs.append(np.array(out["model_output"]))  # a copy: the program reuses its buffers
        m: dict = {"loss": loss_sum / max(n, 1)}
        if not outputs:
            return m, None
        wanted = self.spec.evaluate["metrics"] if metrics is None else metrics
        predicted = stack_steps(outputs)
        if decode:
            from graphdl.runtime.decode import one_hot

            tokens = self.decode(ds.fields, batch_size=batch_size)[:n]
            predicted = one_hot(tokens, predicted.shape[-1])
        scored, truth = predicted, ds.fields[target][:n]
        ragged = ds.ragged
        if ragged is not None and target in ragged.pads and predicted.ndim >= 2:
            scored, truth = valid_steps(predicted, truth, ds.fields[ragged.lengths][:n],
                                        ragged.pads[target])
        m.update(split_metrics(loss_cfg["type"], wanted, scored, truth,
                               loss_cfg.get("ignore_index")))
        return m, predicted

    def evaluate(self, split: str = "test") -> dict:
        """The loss and evaluate.metrics of the split ``split``. For windows of a series
        with data.source.window.season, also the seasonal-naive forecast's metrics on the
        same windows (``baseline``, in the units the model's metrics are in), and, where
        the target is preprocessed, both in the series' own units (``series_units``):
        see `forecast_report`."""
        from graphdl.spec.resolve import require_train

        require_train(self.spec, "Model.evaluate")
        splits = self.data()
        ds = splits.get(split)
        m, predicted = self._evaluate(ds, decode=self.spec.evaluate["decode"] != "none")
        baseline = splits.baselines.get(split)
        if baseline is not None and predicted is not None:
            m.update(forecast_report(baseline, self.spec.evaluate["metrics"], predicted,
                                     ds.fields[self.spec.train["target"]]))
        return m

    def decode(self, inputs: dict, how: str | None = None, beam: int | None = None,
               batch_size: int = 256) -> np.ndarray:
        """Decoded token sequences, int64 [N, steps], of a sequence-to-sequence model for
        fields ``inputs`` (the decode input's first column is the start token; the rest of
        it is not read): ``how`` is greedy or beam (default evaluate.decode, greedy when
        that is none), with ``beam`` sequences kept (default evaluate.beam). See
        `graphdl.runtime.decode`."""
        from graphdl.layers.decode import decode_plan
        from graphdl.runtime.decode import Decoder

        ev = self.spec.evaluate
        how = how or (ev["decode"] if ev["decode"] != "none" else "greedy")
        if self._decoder is None:
            self._decoder = Decoder(self, decode_plan(self.spec), ev.get("eos"))
        return self._decoder(inputs, how, beam or ev["beam"], batch_size)

    def attention_maps(self, inputs: dict, limit: int = 8) -> list[dict]:
        """The attention weights of every attention layer for the first ``limit`` samples
        of fields ``inputs``, as `graphdl.viz.attention.write_attention` draws them: per
        sample, per layer, weights [heads, Tq, Tk] cut to the real steps, labelled with the
        token ids (or step numbers) they come from. A sequence-to-sequence model
        (evaluate.decode) is first decoded greedily, and its decoder's attention is the one
        of its own decoded tokens, each row labelled with the token that step produced."""
        from graphdl.layers.decode import decode_plan

        spec = self.spec
        fields = {k: np.asarray(v)[:limit] for k, v in inputs.items()}
        produced = None
        if spec.evaluate["decode"] != "none":
            plan = decode_plan(spec)
            produced = self.decode(fields)
            fed = np.zeros_like(fields[plan.input])
            fed[:, 0] = fields[plan.input][:, 0]
            fed[:, 1:] = produced[:, :-1]
            eos = spec.evaluate.get("eos")
            if eos is not None:  # after the end token the decoder reads padding
                ended = np.cumsum(produced == eos, axis=1) > 0
                fed[:, 1:][ended[:, :-1]] = self._padding_id(plan.input)
            fields[plan.input] = fed
        program = self.compiled("attention").program
        out = program({k: fields[k] for k in spec.model.inputs})
        meta = self.compiled("attention").graph.meta["attention"]
        samples = []
        for i in range(len(next(iter(fields.values())))):
            layers = []
            for name, info in meta.items():
                q_src, k_src = _attention_sources(spec, name)
                w = np.array(out[f"attention.{name}"][i])
                q_tokens = (["query"] if q_src is None
                            else self._token_labels(q_src, fields, i, produced))
                k_tokens = self._token_labels(k_src, fields, i, None)
                layers.append({"name": name, "kind": info["kind"],
                               "weights": w[:, :len(q_tokens), :len(k_tokens)],
                               "query_tokens": q_tokens, "key_tokens": k_tokens})
            samples.append({"name": f"sample {i}", "layers": layers})
        return samples

    def _padding_id(self, name: str) -> int:
        """The padding_idx of the embedding reading model input ``name`` (0 if none)."""
        for layer in self.spec.model.layers:
            if layer.type == "embedding" and layer.inputs[0] == name:
                pad = layer.params.get("padding_idx")
                return 0 if pad is None else int(pad)
        return 0

    def _token_labels(self, source: str, fields: dict, i: int, produced) -> list[str]:
        """Labels of the real steps of model input ``source`` in sample ``i``: token ids
        up to the last one that is not padding, or step numbers up to the sample's length
        (the lengths model input, where there is one)."""
        x = np.asarray(fields[source][i])
        if x.dtype.kind in "iu" and x.ndim == 1:
            pad = self._padding_id(source)
            real = np.flatnonzero(x != pad)
            steps = int(real[-1]) + 1 if real.size else 0
            if produced is not None:
                return [str(t) for t in produced[i][:steps]]
            return [str(t) for t in x[:steps]]
        steps = len(x)
        lengths = next((n for n, inp in self.spec.model.inputs.items()
                        if inp.dtype == "int64" and not inp.shape), None)
        if lengths is not None and lengths in fields:
            steps = int(np.asarray(fields[lengths])[i])
        return [str(t + 1) for t in range(steps)]

    def predict(self, inputs, batch_size: int = 256) -> np.ndarray:
        """Model outputs (the first output, e.g. logits) for raw inputs: a dict of fields
        or one array for a single-input model. Preprocessing fitted on the train split is
        applied first; sequence inputs given with their lengths are padded per batch, and
        per-step outputs padded (with 0) to the longest sequence. `predict_result` reads
        them as the loss does."""
        from graphdl.data import apply_preprocess
        from graphdl.data.ragged import stack_steps, take
        from graphdl.data.sequence_checks import new_data_layout

        if not isinstance(inputs, dict):
            (name,) = self.spec.model.inputs
            inputs = {name: inputs}
        state = self.preprocess_state
        if state is None:
            state = self.data().preprocess_state
        fields = apply_preprocess(self.spec, inputs, state)
        program = self.compiled("predict").program
        out_name = self.spec.model.outputs[0]
        n = len(next(iter(fields.values())))
        ragged = new_data_layout(self.spec, fields)
        chunks = []
        for s in range(0, n, batch_size):
            feeds = take(fields, slice(s, s + batch_size), self.spec.model.inputs, ragged)
            chunks.append(np.array(program(feeds)[out_name]))  # a copy: buffers are reused
        return stack_steps(chunks)

    def predict_result(self, inputs, batch_size: int = 256) -> dict[str, np.ndarray]:
        """What the loss implies of `predict`'s outputs for raw inputs, one entry per row
        (see `interpret_outputs`): class, probabilities and class_name for cross_entropy,
        probability and decision for bce_with_logits, value for mse."""
        outputs = self.predict(inputs, batch_size)
        return interpret_outputs(self.loss_type, outputs, self.class_names)

    @property
    def loss_type(self) -> str | None:
        """train.loss.type; None for a spec without train: (a model only, no loss)."""
        return self.spec.train["loss"]["type"] if "train" in self.spec.raw else None

    # ------------------------------------------------------------ weights
    def save(self, path: str | Path) -> None:
        from graphdl.runtime.checkpoint import save_checkpoint

        self.sync_to_host()
        tensors = {f"param/{k}": v for k, v in self.params.items()}
        tensors.update({f"state/{k}": v for k, v in self.state.items()})
        save_checkpoint(path, tensors, {"spec": self.spec.name, "preprocess": self.preprocess_state or {},
                                        "class_names": self.class_names})

    def load_weights(self, path: str | Path) -> None:
        from graphdl.runtime.checkpoint import load_checkpoint

        # the eval program binds every parameter and state; a spec without train: has only
        # the predict program (which binds the parameters its forward pass reads)
        self.compiled("eval" if "train" in self.spec.raw else "predict")
        tensors, meta = load_checkpoint(path)
        expected = set(self.params)
        got = {k.partition("/")[2] for k in tensors if k.startswith("param/")}
        missing = sorted(expected - got)
        if missing:
            raise GraphdlError(Diagnostic(
                "E403", f"checkpoint lacks {len(missing)} parameter(s) of {self.spec.name}: "
                f"{', '.join(missing[:5])}", file=str(path),
                help=f"was it saved from {self.spec.path}? layer names must match"))
        self.assign_tensors({k: v for k, v in tensors.items() if k.startswith("param/") or k.partition("/")[2] in self.state}, source=str(path))
        # both are in every checkpoint graphdl writes, so predict need not read the data
        if "preprocess" in meta:
            self.preprocess_state = meta["preprocess"]
        if "class_names" in meta:
            self.class_names = meta["class_names"]


# a program's first compile, in seconds, when its backend has no model of the cost
_COLD_SECONDS = 15.0


def _cold_estimate(program) -> float:
    """A rough first-compile time for ``program``: its backend's model of the cost (the CPU
    backend's `cold_compile_estimate`), scaled by how this machine did before (the median
    ratio of the cold compile times remembered beside the latest cached sources to the
    model's estimates of those sources, within 1/4..4); `_COLD_SECONDS` without a model."""
    if program.device != "cpu":
        return _COLD_SECONDS
    from graphdl.backends.cpu.cache import cold_compile_estimate

    sides = sorted(Path(program.source_path).parent.glob("*.json"),
                   key=lambda p: p.stat().st_mtime)[-8:]
    ratios = []
    for side in sides:
        try:
            seen = float(json.loads(side.read_text(encoding="utf-8"))["cold_seconds"])
            model = cold_compile_estimate(side.with_suffix(".py").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if model > 0.5:
            ratios.append(seen / model)
    scale = min(4.0, max(0.25, float(np.median(ratios)))) if ratios else 1.0
    return scale * max(1.0, cold_compile_estimate(program.source))


def _attention_sources(spec, name: str) -> tuple[str | None, str]:
    """The model inputs an attention layer's queries and keys come from (following each
    value's first input back; None: attention pooling's learned query)."""
    layers = {lay.name: lay for lay in spec.model.layers}
    layer = layers[name]

    def back(n: str) -> str:
        while n in layers:
            n = layers[n].inputs[0]
        return n

    ins = layer.inputs
    if layer.type == "attention" and len(ins) == 1:
        return None, back(ins[0])
    if layer.type == "multihead_attention":
        return back(ins[0]), back(ins[1] if len(ins) > 1 else ins[0])
    return back(ins[0]), back(ins[2] if len(ins) > 2 else ins[1])


def interpret_outputs(loss: str | None, outputs: np.ndarray,
                      class_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a model's raw outputs (logits or values, one row per sample) as ``loss`` does.

    - ``cross_entropy``: ``class`` int64 [n], the argmax of the logits; ``probabilities``
      float32 [n, k], their softmax; ``class_name`` [n] (str) when ``class_names`` is given.
    - ``bce_with_logits``: ``probability`` float32, the sigmoid of the logits, and
      ``decision`` int64, 1 where the logit is above 0 (probability above 0.5).
    - ``mse``: ``value`` float32.
    - None (a spec without a loss): ``output``, the outputs unchanged.

    For bce and mse, an output of one unit per row gives [n] arrays, wider outputs keep
    their shape ([n, m], ...).
    """
    z = np.asarray(outputs)
    if loss is None:
        return {"output": z}
    if loss == "cross_entropy":
        # subtracting each row's max keeps exp() at most 1: no overflow for large logits
        e = np.exp(z.astype(np.float64) - z.max(axis=-1, keepdims=True))
        result = {
            "class": z.argmax(axis=-1).astype(np.int64),
            "probabilities": (e / e.sum(axis=-1, keepdims=True)).astype(np.float32),
        }
        if class_names is not None:
            # a model with more units than the data has classes names the extra ones ""
            names = list(class_names) + [""] * max(0, z.shape[-1] - len(class_names))
            result["class_name"] = np.asarray(names)[result["class"]]
        return result
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if loss == "bce_with_logits":
        # exp(-|z|) is at most 1, so neither branch overflows whatever the logit
        e = np.exp(-np.abs(z.astype(np.float64)))
        probability = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return {"probability": probability.astype(np.float32), "decision": (z > 0).astype(np.int64)}
    if loss == "mse":
        return {"value": z.astype(np.float32)}
    raise ValueError(f"no reading of the outputs for the loss {loss!r}")


def forecast_report(baseline, wanted: list[str], predicted: np.ndarray,
                    target: np.ndarray) -> dict:
    """The seasonal-naive forecast (`graphdl.data.forecast.SeasonalNaive`) of a split
    scored beside a model's outputs ``predicted`` for its targets ``target`` (both in the
    units of the target after data.preprocess).

    ``baseline``: {name, season, rmse, and every other regression metric of ``wanted``},
    in the model's units: its forecasts went through the target's own preprocessing.
    ``series_units`` (only where the target is preprocessed and the steps can be undone:
    scale, normalize): {units, the model's rmse and the other metrics with its outputs
    brought back to the series' units, baseline: the forecast's metrics there}."""
    from graphdl.runtime.metrics import split_metrics
    from graphdl.spec.metrics import METRICS

    names = ["rmse"] + [k for k in wanted if k != "rmse" and k != "loss"
                        and "mse" in METRICS[k].losses and METRICS[k].scalar]
    report: dict = {"baseline": {"name": baseline.name, "season": baseline.season,
                                 **split_metrics("mse", names, baseline.predicted, target)}}
    if baseline.preprocessed:
        truth = baseline.series_target
        model = baseline.to_series_units(np.asarray(predicted).reshape(truth.shape))
        if model is not None:
            report["series_units"] = {
                "units": baseline.units,
                **split_metrics("mse", names, model, truth),
                "baseline": split_metrics("mse", names, baseline.series_predicted, truth),
            }
    return report


def write_results(run_dir: Path, results: dict) -> None:
    """Write ``run_dir/results.json`` atomically (a temporary file renamed over it): a reader
    sees the old file or the new one, never half of one."""
    tmp = run_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2), encoding="utf-8")
    os.replace(tmp, run_dir / "results.json")
