"""Experiment configs: defaults, loading `FILE[:ARG]`, `--config.key=value` overrides, validation.

An experiment is a Python file with `get_config(arg=None) -> ml_collections.ConfigDict` (start from
`default_config()` and change fields) and, optionally, `get_sweep(arg=None) -> list[dict]` of
override dicts (dotted keys) built with `scaling.sweeps.grid`. Experiment files are Python code:
only load files you trust.

`resolve(cfg)` fills the derived fields (n_kv_heads, d_ff, steps from a token budget) so that the
`config.json` written next to every run is complete and re-runnable as it is.

An explicit command-line override is never ignored: `--config.train.steps` on an experiment with
a token budget drops the budget (note on stderr), and contradicting overrides are refused
(`apply_user_overrides`); a sweep refuses an override of a key its grid sets (`call_get_sweep`).
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import math
import os
import sys
from typing import Any, Callable, Iterable

import ml_collections

from scaling.errors import UserError
from scaling.tasks import check_eval_config

ConfigDict = ml_collections.ConfigDict
# Experiments ship inside the package (scaling/experiments/, linked as experiments/ at the repo
# root), so `--config experiments/NAME.py` works from any directory and from `pip install .`.
PACKAGED_EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments")
DEFAULT_EXPERIMENT = os.path.join(PACKAGED_EXPERIMENTS, "default.py")

CHOICES = {
    "model.mlp": ("gelu", "swiglu"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.pos": ("rope", "learned", "sinusoidal"),
    "model.dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots_saveable"),
    "model.parametrization": ("sp", "mup"),
    "train.nan_policy": ("abort", "skip"),
    "train.schedule": ("cosine", "wsd", "constant"),
    "train.decay_shape": ("linear", "1-sqrt"),
}


def default_config() -> ConfigDict:
    """Every key a user may set, with its default. Unknown keys are errors."""
    c = ConfigDict()
    c.name = "run"
    c.model = ConfigDict(dict(
        vocab_size=0,          # 0 = follow data.tokenizer (byte: 257; others padded up to a
                               # multiple of 128 for the matmuls); > 0 = exactly this
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=0,          # 0 = n_heads (MHA); 1 = MQA; between = GQA
        d_ff=0,                # 0 = 4*d_model (gelu) or 8/3*d_model rounded up to 8 (swiglu)
        mlp="gelu",
        norm="layernorm",
        pos="learned",
        max_len=0,             # position table size for pos=learned; 0 = train.seq_len
        rope_theta=10000.0,
        rope_scaling="none",   # none | linear:s (position interpolation) | ntk:s (base scaling)
        attention="full",      # full | sliding:W | linear[:C] | strided:S (parse_attention)
        tie_embeddings=True,
        dtype="float32",       # compute dtype; parameters stay float32
        remat="none",          # per-block rematerialisation: none | full | dots_saveable
        scan_unroll=0,         # layers per iteration of the layer loop; 1 = rolled (compile
                               # time flat in depth); 0 = auto: unrolled (fastest step), rolled
                               # when remat is on (XLA keeps remat's saving only in a loop)
        init_std=0.02,
        norm_eps=1e-5,
        parametrization="sp",  # sp | mup (Tensor Programs V; scaling/model/mup.py)
        base_width=64,         # mup: the d_model at which mup and sp coincide
    ))
    # Mixture of experts (scaling/model/moe.py): experts=0 = dense MLPs; E >= 1 experts in every
    # `every`-th layer, top_k token-choice routing, capacity_factor*top_k*T/E slots per expert and
    # sequence (0 = dropless), objective += aux_loss_weight*load-balancing + z_loss_weight*z-loss.
    c.model.moe = ConfigDict(dict(experts=0, top_k=1, every=1, capacity_factor=1.25,
                                  aux_loss_weight=0.01, z_loss_weight=0.001))
    c.data = ConfigDict(dict(
        name="kjv",            # kjv (built in) | files | any TFDS text dataset prepared under data_dir
        data_dir="",           # "" = $SCALING_DATA_DIR or ~/.cache/scaling/tfds
        text_key="text",       # TFDS feature / jsonl / parquet field holding the text
        train_split="train",
        val_split="validation",
        tokenizer="byte",      # byte | bpe:V (trained on the train split) | hf:PATH | spm:PATH
        files="",              # data.name=files: GLOB[,GLOB...] of .txt/.jsonl/.jsonl.gz/.parquet
        split_docs=False,      # .txt: a document per blank-line paragraph (False: per file)
        val_fraction=0.01,     # data.name=files: share of documents held out, by content hash
        bpe_train_mb=256.0,    # bpe:V trains on at most this many MB of train-split text
        shard_mb=64.0,         # token store: input text per shard (a unit of parallel work)
        workers=0,             # token store: processes tokenizing (0 = one per CPU core)
        mixture="",            # "" = corpus only; "kjv:0.5,addition:0.5" (scaling/data/mixture.py)
    ))
    c.train = ConfigDict(dict(
        steps=100,
        tokens=0,              # > 0: token budget; steps = ceil(tokens / (batch_size*seq_len))
        batch_size=32,
        seq_len=128,
        seed=0,
        lr=3e-3,
        warmup=0.05,           # < 1: fraction of steps; >= 1: number of steps
        schedule="cosine",     # cosine | wsd (warmup-stable-decay) | constant (no decay)
        decay_fraction=0.2,    # wsd: the cooldown is this fraction of the steps (at the end)
        decay_shape="1-sqrt",  # wsd: cooldown shape, linear | 1-sqrt (Hägele et al. 2024)
        min_lr_ratio=0.1,      # cosine and wsd decay to this fraction of the peak
        weight_decay=0.1,
        b1=0.9,
        b2=0.95,
        grad_clip=1.0,
        nan_policy="abort",    # non-finite loss/grads: abort (naming the step) | skip the update
        spike_window=0,        # > 0: also skip updates whose loss > mean + spike_sigmas*std
        spike_sigmas=6.0,      #      of the last spike_window accepted losses
        loss_chunk=-1,         # cross-entropy over this many positions at a time, never the
                               # whole [B, T, V] logits (scaling/train/loss.py); 0 = unchunked,
                               # -1 = auto: 128 when model.vocab_size >= 8192, else unchunked
        init_from="",          # "" = fresh init; a trained run dir (or its checkpoints/<step>):
                               # start from its parameters (fresh optimizer and schedule)
    ))
    # -1 = fill the devices; expert shards MoE experts (and the batch), scaling/parallel/mesh.py
    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1, pipeline=1, expert=1))
    c.pipeline = ConfigDict(dict(microbatches=0))     # GPipe microbatches; 0 = mesh.pipeline
    # Multi-process runs (docs/parallelism.md): coordinator "" = single process, unless auto=True,
    # which calls jax.distributed.initialize() with no arguments (SLURM / TPU pod auto-detection).
    # process_id -1 = from $SCALING_PROCESS_ID or $SLURM_PROCID.
    c.distributed = ConfigDict(dict(coordinator="", num_processes=0, process_id=-1, auto=False))
    # Checkpoints (docs/design.md, "checkpoints"): every `every` steps (kept for good; 0 = none),
    # every `every_minutes` of training (0 = off) and on SIGTERM (the newest `keep` of these are
    # kept), and always at the end; `at` = "300,600": also at these steps, kept for good (the
    # branch points of a wsd trunk, scaling/sweeps/plan.py).
    c.checkpoint = ConfigDict(dict(every=0, every_minutes=10.0, keep=2, at=""))
    # Mirrors of metrics.jsonl (scaling/train/sinks.py): TensorBoard event files in <run>/tensorboard
    # (no dependency, microseconds per log step: on), W&B project name ("" = off; needs wandb).
    c.log = ConfigDict(dict(every=10, tensorboard=True, wandb=""))
    c.eval = ConfigDict(dict(every=0, batches=8))     # validation loss; every=0: only at the end
    # Task evaluations after training (scaling/evals/run.py); tasks "" = none after training, the
    # default suite for `scaling eval` (scaling/tasks.py, DEFAULT_SUITE).
    c.eval.update(dict(tasks="", examples=32, shots="0,1,2,4,8", sc_samples=5, sc_shots=-1,
                       temperature=0.8, top_k=40, seed=1234))
    return c


# ---------------------------------------------------------------------------- loading

def experiment_path(spec: str | None) -> tuple[str, str | None]:
    """`FILE[:ARG]` -> (the experiment file as found, ARG or None); nothing is imported."""
    spec = spec or DEFAULT_EXPERIMENT
    path, _, arg = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    return _find_experiment(path), (arg or None)


def experiment_identity(spec: str | None) -> tuple[str, str | None]:
    """What names an experiment independently of how it was typed: (realpath of the file, ARG).
    `./x.py`, `x.py` and `/abs/x.py` are one experiment (relative paths against the cwd)."""
    path, arg = experiment_path(spec)
    return os.path.realpath(path), arg


def load_experiment(spec: str | None):
    """Import an experiment file given as `FILE[:ARG]`; returns (module, arg)."""
    path, arg = experiment_path(spec)
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path!r} (pass --config experiments/NAME.py[:ARG])")
    mod_spec = importlib.util.spec_from_file_location(
        "experiment_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # an experiment file is user code: report where it broke
        raise UserError(f"could not import config file {path!r}: {_one_line(e)}") from e
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path!r} defines no get_config(arg) function")
    return module, arg


def _one_line(e: BaseException) -> str:
    """`TypeName: message` on one line (an exception's text may span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _call_experiment(module, fn: str, arg: str | None):
    """Call `fn(arg)` of an experiment module; any exception but a UserError becomes one."""
    path = getattr(module, "__file__", "?")
    try:
        return getattr(module, fn)(arg)
    except UserError:
        raise
    except Exception as e:  # user code: name the file and the call, never a traceback
        raise UserError(f"{fn}({arg!r}) in {path!r} raised {_one_line(e)}; "
                        f"fix the experiment file or its :ARG") from e


def call_get_config(module, arg: str | None) -> ConfigDict:
    """`module.get_config(arg)`, checked: a `ConfigDict`, else a one-line `UserError`."""
    cfg = _call_experiment(module, "get_config", arg)
    if not isinstance(cfg, ConfigDict):
        raise UserError(f"get_config() in {getattr(module, '__file__', '?')!r} returned a "
                        f"{type(cfg).__name__}; it must return an ml_collections.ConfigDict "
                        f"(start from scaling.config.default_config())")
    return cfg


def call_get_sweep(module, arg: str | None, overrides: Iterable[str] = ()) -> list[dict]:
    """`module.get_sweep(arg)` (or one empty point without one), checked: a non-empty list of
    override dicts with string keys, else a one-line `UserError` naming the file.

    `overrides` are the command line's `key=value`s: one that a grid point also sets (or
    `train.steps` against a grid of `train.tokens`, and back) would be silently replaced by the
    point, so it is refused.
    """
    if not hasattr(module, "get_sweep"):
        return [{}]
    path = getattr(module, "__file__", "?")
    points = _call_experiment(module, "get_sweep", arg)
    if isinstance(points, (dict, str, bytes)) or not isinstance(points, (list, tuple)):
        raise UserError(f"get_sweep() in {path!r} returned a {type(points).__name__}; it must "
                        f"return a list of override dicts, e.g. [{{'model.d_model': 64}}]")
    if not points:
        raise UserError(f"get_sweep() in {path!r} returned no trials")
    for i, point in enumerate(points):
        if not isinstance(point, dict) or not all(isinstance(k, str) for k in point):
            raise UserError(f"get_sweep() in {path!r}: point {i} is {point!r:.60}; each point "
                            f"must be a dict of dotted config keys, e.g. {{'model.d_model': 64}}")
    _refuse_grid_conflicts(path, points, set(parse_overrides(overrides)))
    return [dict(p) for p in points]


def _refuse_grid_conflicts(path: str, points, explicit: set[str]) -> None:
    budget = {"train.steps", "train.tokens"}
    for i, point in enumerate(points):
        for key in point:
            clashes = {key} & explicit or (explicit & budget if key in budget else set())
            if clashes:
                raise UserError(f"--config.{min(clashes)} conflicts with the sweep grid of {path!r}, "
                                f"whose point {i} sets {key}={point[key]!r}; drop the override "
                                f"or change get_sweep")


def _find_experiment(path: str) -> str:
    """A file that exists as given, else `experiments/NAME.py` (or `NAME`) from the package."""
    if os.path.isfile(path):
        return path
    name = path[len("experiments/"):] if path.startswith("experiments/") else path
    name = name if name.endswith(".py") else name + ".py"
    packaged = os.path.join(PACKAGED_EXPERIMENTS, name)
    return packaged if "/" not in name and os.path.isfile(packaged) else path


def load_config(spec: str | None, overrides: Iterable[str] = ()) -> ConfigDict:
    """Load `FILE[:ARG]` (default experiments/default.py) and apply `key=value` overrides."""
    module, arg = load_experiment(spec)
    return apply_user_overrides(call_get_config(module, arg), overrides)


def apply_user_overrides(cfg: ConfigDict, items: Iterable[str]) -> ConfigDict:
    """Apply command-line `key=value` overrides in place: an explicit override is never ignored.

    A derived field the user sets explicitly wins over what it is derived from: `train.steps`
    on an experiment with a token budget drops the budget (`train.tokens=0`) with a note on
    stderr; explicit `train.steps` and `train.tokens` that disagree are a `UserError`.
    """
    explicit = parse_overrides(items)
    apply_overrides(cfg, explicit)
    _reconcile_budget(cfg, explicit)
    return cfg


def _reconcile_budget(cfg: ConfigDict, explicit: dict[str, Any]) -> None:
    t = cfg.train
    if "train.steps" not in explicit or t.tokens <= 0 or t.steps <= 0:
        return
    if "train.tokens" in explicit:  # both given: they must name the same number of steps
        per_step = t.batch_size * t.seq_len
        if per_step > 0 and math.ceil(t.tokens / per_step) != t.steps:
            raise UserError(
                f"train.steps={t.steps} and train.tokens={t.tokens} disagree (the token budget "
                f"is {math.ceil(t.tokens / per_step)} steps of batch_size*seq_len={per_step}); "
                f"pass only one of them")
        return
    print(f"note: --config.train.steps={t.steps} overrides the experiment's token budget "
          f"train.tokens={t.tokens} (now train.tokens=0)", file=sys.stderr)
    t.tokens = 0


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["train.steps=20", "model.mlp=swiglu"]` -> {"train.steps": 20, "model.mlp": "swiglu"}."""
    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise UserError(f"bad override {item!r}: write --config.KEY=VALUE")
        out[key] = _parse_value(text)
    return out


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def all_keys(cfg: ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        if isinstance(v, ConfigDict):
            keys += all_keys(v, prefix + k + ".")
        else:
            keys.append(prefix + k)
    return keys


def get_key(cfg: ConfigDict, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def apply_overrides(cfg: ConfigDict, overrides: dict[str, Any]) -> ConfigDict:
    """Set dotted keys in place; unknown keys and wrong types are `UserError`s."""
    known = all_keys(cfg)
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (see `scaling describe` for keys)"
            raise UserError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        old = node[leaf]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, str) and isinstance(value, (int, float, tuple)) \
                and not isinstance(value, bool):  # "--config.eval.shots=0,1,2" parses as a tuple
            value = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        if type(old) is not type(value):
            raise UserError(f"config key {key!r} takes a {type(old).__name__}, got {value!r}")
        node[leaf] = value
    return cfg


# ---------------------------------------------------------------------------- result identity

# Keys that never change what a run computes (its losses and evaluations): its label, how it logs
# and checkpoints, and how the work is laid out on devices and processes. A sweep's trial id
# hashes everything else (`result_config`), so turning on W&B or checkpoints, renaming, or moving
# to another mesh keeps every finished trial. Everything else counts, eval.* included
# (eval.batches changes val_loss).
NOT_RESULT_KEYS = ("name", "log", "checkpoint", "mesh", "distributed", "pipeline.microbatches",
                   "data.workers", "data.shard_mb")  # how the token store is built, not what


def is_result_key(key: str) -> bool:
    """Whether a dotted config key can change a run's result (see NOT_RESULT_KEYS)."""
    return not any(key == k or key.startswith(k + ".") for k in NOT_RESULT_KEYS)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": value} (the dotted keys used everywhere in overrides)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def result_config(cfg: ConfigDict | dict) -> dict:
    """The config (or a saved config.json's dict) as a plain dict without the NOT_RESULT_KEYS:
    what a run's result depends on. A dense model (model.moe.experts=0) has no model.moe."""
    out = json.loads(json.dumps(cfg)) if isinstance(cfg, dict) else cfg.to_dict()
    if not out["model"].get("moe", {}).get("experts", 0):
        out["model"].pop("moe", None)
    for key in NOT_RESULT_KEYS:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return out


# Keys in which trials of one vectorised group may differ (scaling/train/group.py): the seed and
# the optimizer's numbers, which the jitted step takes as traced arguments (optimizer_hparams).
GROUP_FREE_KEYS = ("name", "train.seed", "train.lr", "train.b1", "train.b2", "train.weight_decay",
                   "train.min_lr_ratio", "train.warmup", "train.grad_clip")


def group_key(cfg: ConfigDict) -> str | None:
    """Trials with equal keys can train as one vectorised group (the same shapes, data, steps,
    schedule kind, logging, validation and checkpointing: everything but GROUP_FREE_KEYS, and
    whether gradients are clipped); None: this trial never groups (pipeline stages, or
    `train.init_from`)."""
    if cfg.mesh.pipeline > 1 or cfg.train.init_from:
        return None
    kept = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in GROUP_FREE_KEYS}
    kept["clipped"] = cfg.train.grad_clip > 0
    return json.dumps(kept, sort_keys=True, default=str)


# ---------------------------------------------------------------------------- resolution

BYTE_VOCAB = 257        # the byte tokenizer: 256 bytes + end-of-document
VOCAB_MULTIPLE = 128    # a tokenizer-sized vocabulary is padded up to this for the matmuls


def tokenizer_spec(spec: str) -> tuple[str, Any]:
    """`data.tokenizer` parsed: ("byte", None), ("bpe", V), ("hf", path) or ("spm", path).
    THE grammar of the field (scaling.data.tokenizer builds from it); bad specs are `UserError`s."""
    kind, colon, arg = spec.partition(":")
    if spec == "byte":
        return "byte", None
    if kind == "bpe" and colon:
        if not arg.isdigit():
            raise UserError(f"data.tokenizer={spec!r}: write bpe:V with an integer vocabulary V")
        if int(arg) < BYTE_VOCAB:
            raise UserError(f"data.tokenizer={spec!r}: vocabulary too small, a byte-level BPE "
                            f"needs V >= {BYTE_VOCAB} (256 bytes + end-of-document)")
        return "bpe", int(arg)
    if kind in ("hf", "spm") and arg:
        path = os.path.abspath(os.path.expanduser(arg))
        if not os.path.isfile(path):
            what = "tokenizer.json" if kind == "hf" else "SentencePiece .model"
            raise UserError(f"data.tokenizer={spec!r}: no such file {path!r}; give the path of "
                            f"a local {what}")
        return kind, path
    raise UserError(f"data.tokenizer={spec!r} is not one of byte, bpe:V, hf:PATH, spm:PATH")


def model_vocab_size(spec: str) -> int:
    """The `model.vocab_size` that `data.tokenizer` implies: byte 257 (as every earlier run);
    otherwise the tokenizer's ids (+1 reserved for an end-of-document id it may lack) padded up
    to a multiple of VOCAB_MULTIPLE."""
    kind, arg = tokenizer_spec(spec)
    if kind == "byte":
        return BYTE_VOCAB
    if kind == "bpe":
        n = arg
    elif kind == "hf":
        import tokenizers  # lazy: only hf specs need it
        try:
            n = tokenizers.Tokenizer.from_file(arg).get_vocab_size(with_added_tokens=True) + 1
        except Exception as e:  # not JSON, or not a tokenizers file
            raise UserError(f"data.tokenizer=hf:{arg}: not a Hugging Face tokenizer.json "
                            f"({_one_line(e)})") from e
    else:
        import sentencepiece  # lazy: only spm specs need it
        try:
            n = sentencepiece.SentencePieceProcessor(model_file=arg).get_piece_size() + 1
        except Exception as e:
            raise UserError(f"data.tokenizer=spm:{arg}: not a SentencePiece model "
                            f"({_one_line(e)})") from e
    return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def resolve(cfg: ConfigDict) -> ConfigDict:
    """Validate and fill derived fields; returns a new, complete config (the input is unchanged)."""
    cfg = ConfigDict(cfg.to_dict())
    validate(cfg)
    m, t = cfg.model, cfg.train
    if m.n_kv_heads == 0:
        m.n_kv_heads = m.n_heads
    if m.d_ff == 0:
        m.d_ff = 4 * m.d_model if m.mlp == "gelu" else 8 * math.ceil(8 * m.d_model / 3 / 8)
    if m.max_len == 0:
        m.max_len = t.seq_len
    if m.vocab_size == 0:
        m.vocab_size = model_vocab_size(cfg.data.tokenizer)
    if t.init_from:  # config.json names the source wherever the run is resumed from
        t.init_from = os.path.abspath(os.path.expanduser(t.init_from))
    if t.tokens > 0:
        t.steps = math.ceil(t.tokens / (t.batch_size * t.seq_len))
    validate(cfg)
    return cfg


def parse_attention(spec: str) -> tuple[str, int]:
    """`model.attention` -> (kind, size): full (0), sliding:W (window, keys per query including
    itself), linear[:C] (chunk length of the parallel form, default 64), strided:S (stride;
    Child et al. 2019). A bad spec is a one-line `UserError`."""
    kind, _, arg = str(spec).partition(":")
    fix = "use full, sliding:W, linear[:C] or strided:S with integers W, C, S >= 1"
    if kind not in ("full", "sliding", "linear", "strided") or (kind == "full" and arg):
        raise UserError(f"model.attention={spec!r} is not recognised; {fix}")
    if kind == "full":
        return kind, 0
    if not arg and kind == "linear":
        return kind, 64
    try:
        size = int(arg)
    except ValueError:
        raise UserError(f"model.attention={spec!r} needs an integer after ':'; {fix}") from None
    _check(size >= 1, f"model.attention={spec!r}: the {'window' if kind == 'sliding' else 'size'}"
                      f" must be >= 1; {fix}")
    return kind, size


def parse_rope_scaling(spec: str) -> tuple[str, float]:
    """`model.rope_scaling` -> (kind, factor s >= 1): none (1.0), linear:s (positions / s, Chen
    et al. 2023), ntk:s (rope_theta * s^(K/(K-2)), NTK-aware). A bad spec is a `UserError`."""
    kind, _, arg = str(spec).partition(":")
    fix = "use none, linear:s or ntk:s with a factor s >= 1 (e.g. linear:2)"
    if kind == "none" and not arg:
        return kind, 1.0
    if kind not in ("linear", "ntk"):
        raise UserError(f"model.rope_scaling={spec!r} is not recognised; {fix}")
    try:
        factor = float(arg)
    except ValueError:
        raise UserError(f"model.rope_scaling={spec!r} needs a number after ':'; {fix}") from None
    _check(math.isfinite(factor) and factor >= 1,
           f"model.rope_scaling={spec!r}: the factor must be >= 1; {fix}")
    return kind, factor


def _check(ok: bool, msg: str):
    if not ok:
        raise UserError(msg)


# Allowed ranges of numeric fields: (test, the range as the error message states it). Every
# float field must also be finite (inf/NaN would pass `> 0` or crash later, e.g. int(inf)).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "model.init_std": (lambda v: v > 0, "> 0"),
    "model.norm_eps": (lambda v: v > 0, "> 0"),
    "model.rope_theta": (lambda v: v > 0, "> 0"),
    "model.moe.capacity_factor": (lambda v: v >= 0, ">= 0 (0 = dropless)"),
    "model.moe.aux_loss_weight": (lambda v: v >= 0, ">= 0"),
    "model.moe.z_loss_weight": (lambda v: v >= 0, ">= 0"),
    "train.lr": (lambda v: v > 0, "> 0"),
    "train.warmup": (lambda v: v >= 0, ">= 0 (< 1: fraction of steps, >= 1: steps)"),
    "train.min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "train.weight_decay": (lambda v: v >= 0, ">= 0"),
    "train.b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.grad_clip": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "train.spike_sigmas": (lambda v: v > 0, "> 0"),
    "train.decay_fraction": (lambda v: 0 < v <= 1, "in (0, 1] (the wsd cooldown's share)"),
    "checkpoint.every_minutes": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "data.val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "data.bpe_train_mb": (lambda v: v > 0, "> 0"),
    "data.shard_mb": (lambda v: v > 0, "> 0"),
    "checkpoint.keep": (lambda v: v >= 1, ">= 1 (checkpoints kept; the last is always among them)"),
}


def _check_numbers(cfg: ConfigDict) -> None:
    """Every float finite; every field of RANGES inside its range."""
    for key in all_keys(cfg):
        v = get_key(cfg, key)
        if isinstance(v, float) and not math.isfinite(v):
            rule = f" {RANGES[key][1]}" if key in RANGES else ""
            raise UserError(f"{key} must be a finite number{rule}, got {v}")
    for key, (ok, rule) in RANGES.items():
        v = get_key(cfg, key)
        _check(ok(v), f"{key} must be {rule}, got {v}")


def validate(cfg: ConfigDict) -> None:
    """Raise a one-line `UserError` naming the fix for the first bad field."""
    for key, choices in CHOICES.items():
        v = get_key(cfg, key)
        _check(v in choices, f"{key}={v!r} is not one of {', '.join(choices)}")
    m, t = cfg.model, cfg.train
    for key in ("model.d_model", "model.n_layers", "model.n_heads", "model.base_width",
                "train.batch_size", "train.seq_len", "log.every", "eval.batches"):
        _check(get_key(cfg, key) > 0, f"{key} must be > 0, got {get_key(cfg, key)}")
    for key in ("model.vocab_size", "data.workers", "model.n_kv_heads", "model.d_ff", "model.scan_unroll", "model.max_len", "train.steps", "train.tokens",
                "checkpoint.every", "eval.every", "pipeline.microbatches",
                "distributed.num_processes"):
        _check(get_key(cfg, key) >= 0, f"{key} must be >= 0, got {get_key(cfg, key)}")
    _check_numbers(cfg)
    tokenizer_spec(cfg.data.tokenizer)
    _check(t.steps > 0 or t.tokens > 0, "set train.steps > 0 or a token budget train.tokens > 0")
    _check(t.spike_window >= 0, f"train.spike_window must be >= 0, got {t.spike_window}")
    _check(t.loss_chunk >= -1, f"train.loss_chunk must be >= 0 (0 = unchunked) or -1 (auto), "
                               f"got {t.loss_chunk}")
    _check(m.d_model % m.n_heads == 0,
           f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}; "
           f"pick n_heads dividing d_model")
    kv = m.n_kv_heads or m.n_heads
    _check(kv <= m.n_heads and m.n_heads % kv == 0,
           f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={kv}; "
           f"pick n_kv_heads dividing n_heads")
    if m.pos == "rope":
        _check((m.d_model // m.n_heads) % 2 == 0,
               f"pos=rope needs an even head dim, got d_model/n_heads={m.d_model // m.n_heads}")
    parse_attention(m.attention)
    if parse_rope_scaling(m.rope_scaling)[0] != "none":
        _check(m.pos == "rope", f"model.rope_scaling={m.rope_scaling!r} needs model.pos=rope, "
                                f"got pos={m.pos}; set --config.model.rope_scaling=none")
    if m.pos == "learned" and m.max_len:
        _check(t.seq_len <= m.max_len,
               f"train.seq_len={t.seq_len} exceeds model.max_len={m.max_len}; "
               f"raise model.max_len or lower train.seq_len")
    for axis in ("data", "fsdp", "tensor", "pipeline", "expert"):
        v = cfg.mesh[axis]
        _check(v == -1 or v >= 1, f"mesh.{axis} must be >= 1 or -1 (fill), got {v}")
    _check(sum(cfg.mesh[a] == -1 for a in ("data", "fsdp", "tensor", "pipeline", "expert")) <= 1,
           "at most one mesh axis may be -1 (fill the remaining devices)")
    _check(all(s.strip().isdigit() and int(s) > 0 for s in cfg.checkpoint.at.split(","))
           if cfg.checkpoint.at else True,
           f"checkpoint.at={cfg.checkpoint.at!r} must be positive steps separated by commas, "
           f"e.g. '300,600'")
    _validate_moe(m)
    check_eval_config(cfg)
    _check_tokenizer_users(cfg)


def _check_tokenizer_users(cfg: ConfigDict) -> None:
    """Task text (mixtures, task evals) is byte-level: it needs the byte tokenizer."""
    if cfg.data.tokenizer == "byte":
        return
    _check(not cfg.data.mixture, f"data.mixture mixes byte-level task text, which needs "
                                 f"data.tokenizer=byte (got {cfg.data.tokenizer!r})")
    _check(not cfg.eval.tasks, f"eval.tasks are byte-level, which needs data.tokenizer=byte "
                               f"(got {cfg.data.tokenizer!r}); drop eval.tasks")


def checkpoint_steps(cfg: ConfigDict) -> list[int]:
    """The steps of `checkpoint.at` (validated by `validate`), sorted."""
    return sorted({int(s) for s in cfg.checkpoint.at.split(",")}) if cfg.checkpoint.at else []


def _validate_moe(m: ConfigDict) -> None:
    e = m.moe
    _check(e.experts >= 0, f"model.moe.experts must be >= 0 (0 = dense), got {e.experts}")
    if not e.experts:
        return
    _check(1 <= e.top_k <= e.experts, f"model.moe.top_k={e.top_k} must be in [1, model.moe."
           f"experts={e.experts}]; route each token to at most as many experts as there are")
    _check(e.every >= 1 and m.n_layers % e.every == 0,
           f"model.moe.every={e.every} must be >= 1 and divide model.n_layers={m.n_layers} "
           f"(every every-th layer is a MoE layer)")


def to_json(cfg: ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def from_json_file(path: str) -> ConfigDict:
    """Load a resolved `config.json`, re-checked against the current defaults."""
    with open(path) as f:
        data = json.load(f)
    cfg = default_config()
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, prefix + k + ".")
            else:
                flat[prefix + k] = v
    walk(data)
    return apply_overrides(cfg, flat)
