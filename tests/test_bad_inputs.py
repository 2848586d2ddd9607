"""Every bad input: exit code 2, one line naming the fix, no traceback, nothing on disk changed.

Most cases run `scaling.cli.main` in-process (fast); cases that need several devices run the CLI
in a subprocess with forced CPU devices.
"""
import os

import pytest

from conftest import run_cli
from scaling.cli import main

TINY = "tests/tiny_experiment.py"


def _snapshot(root):
    """Every file under root with its size and mtime (to prove nothing changed)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A finished tiny run, to prove that bad inputs never touch what is on disk."""
    w = tmp_path_factory.mktemp("existing") / "done"
    assert main(["train", "--config", TINY, "--workdir", str(w), "--config.train.steps=2"]) == 0
    return w


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# (id, argv builder taking (tmp_path, existing_run_dir), expected substring of the message)
CASES = [
    ("unknown-key", lambda t, e: ["train", "--config", TINY, "--config.train.stpes=5"],
     "did you mean 'train.steps'"),
    ("unknown-section", lambda t, e: ["train", "--config", TINY, "--config.optim.lr=1"],
     "unknown config key 'optim.lr'"),
    ("wrong-type-int", lambda t, e: ["train", "--config", TINY, "--config.train.steps=abc"],
     "takes a int"),
    ("wrong-type-bool", lambda t, e: ["train", "--config", TINY, "--config.model.tie_embeddings=3"],
     "takes a bool"),
    ("negative-d-model", lambda t, e: ["train", "--config", TINY, "--config.model.d_model=-8"],
     "model.d_model must be > 0"),
    ("zero-layers", lambda t, e: ["train", "--config", TINY, "--config.model.n_layers=0"],
     "model.n_layers must be > 0"),
    ("zero-batch", lambda t, e: ["train", "--config", TINY, "--config.train.batch_size=0"],
     "train.batch_size must be > 0"),
    ("negative-steps", lambda t, e: ["train", "--config", TINY, "--config.train.steps=-1"],
     "train.steps must be >= 0"),
    ("no-steps-no-tokens", lambda t, e: ["train", "--config", TINY, "--config.train.steps=0"],
     "set train.steps > 0 or a token budget"),
    ("d-model-heads", lambda t, e: ["train", "--config", TINY, "--config.model.d_model=33"],
     "model.d_model=33 is not divisible by model.n_heads=2"),
    ("heads-kv-heads", lambda t, e: ["train", "--config", TINY, "--config.model.n_heads=4",
                                     "--config.model.n_kv_heads=3"],
     "not divisible by model.n_kv_heads=3"),
    ("kv-more-than-heads", lambda t, e: ["train", "--config", TINY,
                                         "--config.model.n_kv_heads=4"],
     "n_kv_heads"),
    ("bad-mlp", lambda t, e: ["train", "--config", TINY, "--config.model.mlp=relu"],
     "model.mlp='relu' is not one of gelu, swiglu"),
    ("bad-norm", lambda t, e: ["train", "--config", TINY, "--config.model.norm=batchnorm"],
     "model.norm='batchnorm'"),
    ("bad-pos", lambda t, e: ["train", "--config", TINY, "--config.model.pos=alibi"],
     "model.pos='alibi'"),
    ("bad-dtype", lambda t, e: ["train", "--config", TINY, "--config.model.dtype=float16"],
     "model.dtype='float16'"),
    ("zero-lr", lambda t, e: ["train", "--config", TINY, "--config.train.lr=0"],
     "train.lr must be > 0"),
    ("min-lr-ratio", lambda t, e: ["train", "--config", TINY, "--config.train.min_lr_ratio=2.0"],
     "train.min_lr_ratio must be in [0, 1]"),
    ("seq-beyond-positions", lambda t, e: ["train", "--config", TINY, "--config.train.seq_len=64",
                                           "--config.model.max_len=32"],
     "exceeds model.max_len"),
    ("rope-odd-head-dim", lambda t, e: ["train", "--config", TINY, "--config.model.pos=rope",
                                        "--config.model.d_model=30",
                                        "--config.model.n_heads=6"],
     "even head dim"),
    ("mesh-too-big", lambda t, e: ["train", "--config", TINY, "--config.mesh.data=4"],
     "needs 4 devices but 1 are available"),
    ("mesh-two-fill", lambda t, e: ["train", "--config", TINY, "--config.mesh.fsdp=-1"],
     "at most one mesh axis may be -1"),
    ("mesh-zero", lambda t, e: ["train", "--config", TINY, "--config.mesh.tensor=0"],
     "mesh.tensor must be >= 1"),
    ("vocab-too-small", lambda t, e: ["train", "--config", TINY, "--config.model.vocab_size=100"],
     "smaller than the tokenizer"),
    ("unknown-tokenizer", lambda t, e: ["train", "--config", TINY, "--config.data.tokenizer=bpe"],
     "data.tokenizer='bpe'"),
    ("unknown-dataset", lambda t, e: ["train", "--config", TINY, "--config.data.name=no_such_ds"],
     "no_such_ds"),
    ("missing-text-key", lambda t, e: ["train", "--config", TINY, "--config.data.text_key=body"],
     "body"),
    ("unknown-split", lambda t, e: ["train", "--config", TINY, "--config.data.val_split=test"],
     "test"),
    ("sc-shots-not-in-shots", lambda t, e: ["train", "--config", TINY, "--config.eval.shots=0,1,2",
                                            "--config.eval.sc_shots=3"],
     "eval.sc_shots=3 is not in eval.shots"),
    ("eval-sc-shots-not-in-shots", lambda t, e: ["eval", "--workdir", str(e),
                                                 "--config.eval.shots=0,1",
                                                 "--config.eval.sc_samples=3",
                                                 "--config.eval.sc_shots=4"],
     "eval.sc_shots=4 is not in eval.shots"),
    ("seq-longer-than-split", lambda t, e: ["train", "--config", TINY, "--config.model.pos=rope",
                                            "--config.train.seq_len=400000"],
     "seq_len"),
    ("unwritable-workdir", lambda t, e: ["train", "--config", TINY, "--workdir",
                                         _write(t, "a_file", "x") + "/sub"],
     "workdir"),
    ("other-experiment-workdir", lambda t, e: ["train", "--config", TINY, "--workdir", str(e),
                                               "--config.train.steps=3"],
     "different config"),
    ("missing-config-file", lambda t, e: ["train", "--config", str(t / "nope.py")],
     "config file not found"),
    ("config-without-get-config", lambda t, e: ["train", "--config",
                                                _write(t, "empty.py", "x = 1\n")],
     "defines no get_config"),
    ("config-syntax-error", lambda t, e: ["train", "--config", _write(t, "bad.py", "def (:\n")],
     "could not import config file"),
    ("override-without-value", lambda t, e: ["describe", "--config", TINY, "--config.train.steps"],
     "has no value"),
    ("override-on-wrong-command", lambda t, e: ["status", str(e), "--config.train.steps=2"],
     "takes no --config"),
    ("unknown-flag", lambda t, e: ["sweep", "--wrokdir", "x"], "unrecognized arguments"),
    ("unknown-command", lambda t, e: ["frobnicate"], "invalid choice"),
    ("missing-workdir-flag", lambda t, e: ["train", "--config", TINY], "--workdir"),
    ("status-not-a-sweep", lambda t, e: ["status", str(e)], "not a sweep directory"),
    ("collect-not-a-sweep", lambda t, e: ["collect", str(t)], "not a sweep directory"),
    ("sweep-bad-point", lambda t, e: ["sweep", "--config", _write(
        t, "badsweep.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    return default_config()\n"
        "def get_sweep(arg=None):\n    return [{'model.d_modle': 8}]\n")],
     "unknown config key 'model.d_modle'"),
    ("sweep-empty-grid", lambda t, e: ["sweep", "--config", _write(
        t, "emptysweep.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    return default_config()\n"
        "def get_sweep(arg=None):\n    return []\n")],
     "returned no trials"),
    ("sweep-get-sweep-raises", lambda t, e: ["sweep", "--config", _write(
        t, "sweepraises.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    return default_config()\n"
        "def get_sweep(arg=None):\n    return [{'train.lr': 1 / 0}]\n")],
     "get_sweep(None) in"),
    ("sweep-get-config-raises", lambda t, e: ["sweep", "--config", _write(
        t, "sweepcfgraises.py", "def get_config(arg=None):\n    raise KeyError(arg)\n"
        "def get_sweep(arg=None):\n    return [{}]\n") + ":big"],
     "get_config('big') in"),
    ("sweep-grid-of-strings", lambda t, e: ["sweep", "--config", _write(
        t, "strsweep.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    return default_config()\n"
        "def get_sweep(arg=None):\n    return 'model.d_model=8'\n")],
     "returned a str; it must return a list of override dicts"),
    ("sweep-points-not-dicts", lambda t, e: ["sweep", "--config", _write(
        t, "listsweep.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    return default_config()\n"
        "def get_sweep(arg=None):\n    return ['model.d_model=8']\n")],
     "point 0 is 'model.d_model=8'; each point must be a dict"),
    ("sweep-override-of-grid-key", lambda t, e: ["sweep", "--config", TINY,
                                                 "--config.train.tokens=4096"],
     "--config.train.tokens conflicts with the sweep grid"),
    ("sweep-point-needs-more-devices", lambda t, e: ["sweep", "--config", _write(
        t, "meshsweep.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    c = default_config()\n    c.train.steps = 2\n"
        "    return c\n"
        "def get_sweep(arg=None):\n    return [{}, {'mesh.data': 2}]\n")],
     "sweep point 1 {'mesh.data': 2}: mesh data=2"),
    ("lr-inf", lambda t, e: ["train", "--config", TINY, "--config.train.lr=1e999"],
     "train.lr must be a finite number > 0, got inf"),
    ("warmup-inf", lambda t, e: ["train", "--config", TINY, "--config.train.warmup=1e999"],
     "train.warmup must be a finite number >= 0"),
    ("init-std-inf", lambda t, e: ["train", "--config", TINY, "--config.model.init_std=1e999"],
     "model.init_std must be a finite number > 0"),
    ("lr-nan-in-file", lambda t, e: ["train", "--config", _write(
        t, "nanlr.py", "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    c = default_config()\n    c.train.lr = float('nan')\n"
        "    return c\n")], "train.lr must be a finite number > 0, got nan"),
    ("adam-b1", lambda t, e: ["train", "--config", TINY, "--config.train.b1=5.0"],
     "train.b1 must be in [0, 1), got 5.0"),
    ("adam-b2", lambda t, e: ["train", "--config", TINY, "--config.train.b2=1.0"],
     "train.b2 must be in [0, 1)"),
    ("negative-weight-decay", lambda t, e: ["train", "--config", TINY,
                                            "--config.train.weight_decay=-0.1"],
     "train.weight_decay must be >= 0"),
    ("checkpoint-keep-zero", lambda t, e: ["train", "--config", TINY, "--config.checkpoint.keep=0"],
     "checkpoint.keep must be >= 1"),
    ("checkpoint-keep-negative", lambda t, e: ["train", "--config", TINY,
                                               "--config.checkpoint.keep=-1"],
     "checkpoint.keep must be >= 1"),
    ("steps-tokens-disagree", lambda t, e: ["train", "--config", TINY, "--config.train.steps=12",
                                            "--config.train.tokens=100000"],
     "train.steps=12 and train.tokens=100000 disagree"),
    ("get-config-raises", lambda t, e: ["train", "--config", _write(
        t, "raises.py", "def get_config(arg=None):\n    raise KeyError(arg)\n") + ":big"],
     "get_config('big') in"),
    ("get-config-not-configdict", lambda t, e: ["train", "--config", _write(
        t, "dictcfg.py", "def get_config(arg=None):\n    return {'train': {'steps': 3}}\n")],
     "must return an ml_collections.ConfigDict"),
    ("fit-missing-column", lambda t, e: ["fit", "chinchilla", _write(
        t, "fit.csv", "N,D,loss\n1e6,1e9,3.0\n2e6,1e9,2.9\n"), "--n-col", "N", "--d-col", "tokens",
        "--loss-col", "loss"], "tokens"),
    ("fit-nan", lambda t, e: ["fit", "chinchilla", _write(
        t, "fitnan.csv", "N,D,loss\n" + "".join(f"{n},{d},{'nan' if n == 1e6 else 3.0}\n"
                                                 for n in (1e6, 2e6, 4e6) for d in (1e9, 2e9))),
        "--n-col", "N", "--d-col", "D", "--loss-col", "loss"], "NaN"),
    ("fit-non-positive", lambda t, e: ["fit", "chinchilla", _write(
        t, "fitneg.csv", "N,D,loss\n" + "".join(f"{n},{d},3.0\n"
                                                 for n in (-1e6, 2e6, 4e6) for d in (1e9, 2e9))),
        "--n-col", "N", "--d-col", "D", "--loss-col", "loss"], "positive"),
    ("fit-missing-file", lambda t, e: ["fit", "chinchilla", str(t / "nope.csv")], "nope.csv"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, existing_run, capsys):
    name, build, expected = case
    argv = build(tmp_path, existing_run)
    if argv[0] in ("train", "sweep") and "--workdir" not in argv and name != "missing-workdir-flag":
        argv += ["--workdir", str(tmp_path / "w")]
    before = {**_snapshot(tmp_path), **_snapshot(existing_run)}
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    after = {**_snapshot(tmp_path), **_snapshot(existing_run)}
    assert after == before, f"{name} changed files on disk"
    assert not (tmp_path / "w").exists()


def test_table_has_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("extra,expected", [
    (["--config.train.batch_size=6"], "train.batch_size=6 is not divisible by mesh.data*mesh.fsdp=4"),
    (["--config.mesh.data=1", "--config.mesh.tensor=4", "--config.model.n_heads=2"],
     "model.n_heads=2 is not divisible by mesh.tensor=4"),
    (["--config.mesh.tensor=3"], "does not divide the 4 devices"),
])
def test_bad_input_with_devices(tmp_path, extra, expected):
    """Shape/mesh errors that need several devices (4 forced CPU devices)."""
    w = tmp_path / "w"
    r = run_cli("train", "--config", TINY, "--workdir", str(w), "--config.mesh.data=-1", *extra,
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert not w.exists()
