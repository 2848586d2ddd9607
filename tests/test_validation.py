"""Config validation and experiment loading: non-finite and out-of-range numbers, misbehaving
get_config/get_sweep, explicit overrides of derived fields (issue 14). All in-process and fast."""
import math

import pytest

from conftest import tiny_config
from scaling.cli import main
from scaling.config import (RANGES, apply_user_overrides, call_get_config, call_get_sweep,
                            load_config, load_experiment, resolve, validate)
from scaling.errors import UserError


@pytest.mark.parametrize("key,value,expected", [
    ("train.lr", math.inf, "train.lr must be a finite number > 0, got inf"),
    ("train.lr", math.nan, "train.lr must be a finite number > 0, got nan"),
    ("train.warmup", math.inf, "train.warmup must be a finite number >= 0"),
    ("model.init_std", math.inf, "model.init_std must be a finite number > 0"),
    ("model.init_std", 0.0, "model.init_std must be > 0, got 0.0"),
    ("model.norm_eps", -1e-5, "model.norm_eps must be > 0"),
    ("model.rope_theta", math.nan, "model.rope_theta must be a finite number > 0"),
    ("train.b1", 5.0, "train.b1 must be in [0, 1), got 5.0"),
    ("train.b1", -0.1, "train.b1 must be in [0, 1)"),
    ("train.b2", 1.0, "train.b2 must be in [0, 1), got 1.0"),
    ("train.weight_decay", -0.1, "train.weight_decay must be >= 0"),
    ("train.grad_clip", -1.0, "train.grad_clip must be >= 0 (0 = off)"),
    ("train.grad_clip", math.inf, "train.grad_clip must be a finite number >= 0"),
    ("train.min_lr_ratio", 1.5, "train.min_lr_ratio must be in [0, 1]"),
    ("train.min_lr_ratio", math.nan, "train.min_lr_ratio must be a finite number in [0, 1]"),
    ("train.spike_sigmas", 0.0, "train.spike_sigmas must be > 0"),
    ("eval.temperature", math.inf, "eval.temperature must be a finite number"),
    ("checkpoint.keep", 0, "checkpoint.keep must be >= 1"),
    ("checkpoint.keep", -1, "checkpoint.keep must be >= 1"),
])
def test_validate_refuses_bad_numbers(key, value, expected):
    cfg = tiny_config()
    section, leaf = key.split(".")
    cfg[section][leaf] = value
    with pytest.raises(UserError) as e:
        validate(cfg)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg, msg


def test_ranges_accept_the_defaults_and_edges():
    cfg = tiny_config()
    validate(cfg)
    for key, value in [("train.b1", 0.0), ("train.b2", 0.999), ("train.weight_decay", 0.0),
                       ("train.grad_clip", 0.0), ("train.min_lr_ratio", 1.0),
                       ("train.warmup", 50.0), ("checkpoint.keep", 1)]:
        section, leaf = key.split(".")
        cfg[section][leaf] = value
        validate(cfg)
    assert set(RANGES) >= {"train.lr", "train.b1", "train.b2", "checkpoint.keep", "model.init_std"}


def _experiment(tmp_path, body, name="exp.py"):
    p = tmp_path / name
    p.write_text("from scaling.config import default_config\n" + body)
    return str(p)


@pytest.mark.parametrize("body,expected", [
    ("def get_config(arg=None):\n    raise KeyError('no size ' + repr(arg))\n",
     "get_config('xl') in"),
    ("def get_config(arg=None):\n    raise ValueError('two\\nlines')\n",
     "raised ValueError: two lines"),
    ("def get_config(arg=None):\n    return {'model': {}}\n",
     "returned a dict; it must return an ml_collections.ConfigDict"),
    ("def get_config(arg=None):\n    return None\n", "returned a NoneType"),
])
def test_get_config_misbehaving_is_one_line_exit_2(tmp_path, capsys, body, expected):
    spec = _experiment(tmp_path, body) + ":xl"
    code = main(["describe", "--config", spec])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: "), err
    assert expected in err and "exp.py" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("body,expected", [
    ("def get_sweep(arg=None):\n    return 1 / 0\n", "get_sweep(None) in"),
    ("def get_sweep(arg=None):\n    return ['model.d_model=64']\n", "point 0 is 'model.d_model=64'"),
    ("def get_sweep(arg=None):\n    return [{'model.d_model': 64}, 3]\n", "point 1 is 3"),
    ("def get_sweep(arg=None):\n    return {'model.d_model': 64}\n", "returned a dict"),
    ("def get_sweep(arg=None):\n    return 'abc'\n", "returned a str"),
    ("def get_sweep(arg=None):\n    return None\n", "returned a NoneType"),
    ("def get_sweep(arg=None):\n    return []\n", "returned no trials"),
    ("def get_sweep(arg=None):\n    return [{1: 2}]\n", "point 0 is {1: 2}"),
])
def test_call_get_sweep_checks_the_grid(tmp_path, body, expected):
    path = _experiment(tmp_path, "def get_config(arg=None):\n    return default_config()\n" + body)
    module, arg = load_experiment(path)
    with pytest.raises(UserError) as e:
        call_get_sweep(module, arg)
    msg = str(e.value)
    assert expected in msg and "exp.py" in msg and "\n" not in msg, msg


def test_call_get_sweep_good_grid_and_no_grid(tmp_path):
    path = _experiment(tmp_path, "def get_config(arg=None):\n    return default_config()\n"
                                 "def get_sweep(arg=None):\n"
                                 "    return ({'model.d_model': int(arg)}, {})\n")
    module, _ = load_experiment(path)
    assert call_get_sweep(module, "48") == [{"model.d_model": 48}, {}]
    assert isinstance(call_get_config(module, None), type(tiny_config()))
    plain, _ = load_experiment(_experiment(tmp_path, "def get_config(arg=None):\n"
                                                     "    return default_config()\n", "plain.py"))
    assert call_get_sweep(plain, None) == [{}]


def test_get_sweep_user_error_passes_through(tmp_path):
    path = _experiment(tmp_path, "from scaling.errors import UserError\n"
                                 "def get_config(arg=None):\n    return default_config()\n"
                                 "def get_sweep(arg=None):\n    raise UserError('pick a size')\n")
    module, _ = load_experiment(path)
    with pytest.raises(UserError, match="^pick a size$"):
        call_get_sweep(module, None)


TOKENS_EXP = ("def get_config(arg=None):\n    c = default_config()\n"
              "    c.train.update(dict(batch_size=8, seq_len=32, tokens=8 * 32 * 50))\n"
              "    return c\n")


def test_explicit_steps_override_beats_the_experiments_token_budget(tmp_path, capsys):
    spec = _experiment(tmp_path, TOKENS_EXP)
    assert resolve(load_config(spec)).train.steps == 50           # the budget, as written
    capsys.readouterr()
    cfg = resolve(load_config(spec, ["train.steps=12"]))
    assert cfg.train.steps == 12 and cfg.train.tokens == 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.steps=12" in err and "train.tokens" in err, err


def test_steps_and_tokens_both_explicit(tmp_path, capsys):
    spec = _experiment(tmp_path, TOKENS_EXP)
    with pytest.raises(UserError, match="train.steps=12 and train.tokens=12800 disagree"):
        load_config(spec, ["train.steps=12", "train.tokens=12800"])
    cfg = resolve(load_config(spec, ["train.steps=50", "train.tokens=12800"]))  # consistent
    assert (cfg.train.steps, cfg.train.tokens) == (50, 12800)
    cfg = resolve(load_config(spec, ["train.steps=12", "train.tokens=0"]))      # steps rule
    assert (cfg.train.steps, cfg.train.tokens) == (12, 0)
    cfg = resolve(load_config(spec, ["train.tokens=2560"]))                    # budget rules
    assert cfg.train.steps == 10
    assert "note" not in capsys.readouterr().err


def test_steps_override_through_the_cli(tmp_path, capsys):
    """The reported case: `--config.train.steps=12` on a token-budget experiment."""
    import json
    spec = _experiment(tmp_path, TOKENS_EXP)
    assert main(["describe", "--config", spec, "--config.train.steps=12", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["config"]["train"]["steps"] == 12
    assert "note:" in err
    assert main(["describe", "--config", spec, "--config.train.steps=12",
                 "--config.train.tokens=99999"]) == 2
    assert "disagree" in capsys.readouterr().err


def test_apply_user_overrides_without_budget_is_plain(capsys):
    cfg = apply_user_overrides(tiny_config(), ["train.steps=7"])
    assert cfg.train.steps == 7 and capsys.readouterr().err == ""


@pytest.mark.parametrize("override,expected", [
    ("model.d_model=96", "--config.model.d_model conflicts with the sweep grid"),
    ("train.steps=12", "--config.train.steps conflicts with the sweep grid"),
    ("train.tokens=4096", "--config.train.tokens conflicts with the sweep grid"),
])
def test_override_of_a_grid_key_is_refused_not_ignored(override, expected):
    """A grid point would silently replace the override (tiny grid: d_model x train.tokens)."""
    module, arg = load_experiment("tests/tiny_experiment.py")
    with pytest.raises(UserError, match=expected):
        call_get_sweep(module, arg, [override])
    assert len(call_get_sweep(module, arg, ["train.lr=0.01", "eval.batches=1"])) == 2
