"""Parallelism: every mesh layout (data, FSDP, tensor, pipeline) trains the single-device model.

The equivalence runs happen in subprocesses on 8 forced CPU devices (XLA_FLAGS must be set before
jax is imported; the pytest process itself has one device). 8 fake devices share 2 cores: these
tests check correctness, not speed.
"""
import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import ROOT, run_cli
from scaling.config import default_config, resolve
from scaling.errors import UserError
from scaling.parallel.mesh import check_divisibility, mesh_shape
from scaling.fileio import read_jsonl
from scaling.parallel.gpipe import bubble_fraction

FORCE8 = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
MESHES = [
    {"name": "one", "devices": 1},
    {"name": "data8", "data": 8},
    {"name": "fsdp8", "fsdp": 8},
    {"name": "data2_tensor4", "data": 2, "tensor": 4},
    {"name": "data2_tensor2_pipe2", "data": 2, "tensor": 2, "pipeline": 2},
    {"name": "data2_pipe4_micro8", "pipeline": 4, "microbatches": 8},  # data fills: 2
    {"name": "fsdp2_tensor2_pipe2", "fsdp": 2, "tensor": 2, "pipeline": 2},
    # chunked cross-entropy (12 positions, T = 32: padded) after the last pipeline stage
    {"name": "fsdp2_tensor2_pipe2_chunk12", "fsdp": 2, "tensor": 2, "pipeline": 2,
     "loss_chunk": 12},
]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    """Run tests/parallel_equivalence.py once for all meshes: 10 float32 steps each."""
    out = tmp_path_factory.mktemp("equivalence")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "parallel_equivalence.py"), str(out),
         json.dumps(MESHES), "10"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env=dict(os.environ, PYTHONPATH=ROOT, **FORCE8))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        results = json.load(f)
    params = {m["name"]: dict(np.load(out / f"params_{m['name']}.npz")) for m in MESHES}
    return results, params


@pytest.mark.parametrize("name", [m["name"] for m in MESHES[1:]])
def test_mesh_matches_single_device(equivalence, name):
    results, params = equivalence
    ref, got = results["one"]["losses"], results[name]["losses"]
    assert len(got) == 10
    assert np.prod(list(results[name]["mesh"].values())) == 8   # all 8 devices in use
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for key, ref_p in params["one"].items():
        np.testing.assert_allclose(params[name][key], ref_p, rtol=0, atol=1e-4, err_msg=key)


def test_parameters_are_really_sharded(equivalence):
    specs = {name: r["specs"] for name, r in equivalence[0].items()}
    wq, wk = "['blocks']['attn']['wq']['kernel']", "['blocks']['attn']['wk']['kernel']"
    wi, emb = "['blocks']['mlp']['wi']['kernel']", "['embed']['embedding']"
    # FSDP shards every `embed` axis (params and, via the same shardings, the Adam moments).
    assert specs["fsdp8"][wq] == "P(None, 'fsdp', None, None)"
    assert specs["fsdp8"][emb] == "P(None, 'fsdp')"
    assert specs["data8"][wq] == "P()" or "fsdp" not in specs["data8"][wq]
    # Megatron tensor parallelism: query heads and d_ff split; 2 KV heads < 4 shards: replicated.
    assert specs["data2_tensor4"][wq] == "P(None, None, 'tensor', None)"
    assert specs["data2_tensor4"][wi] == "P(None, None, 'tensor')"
    assert specs["data2_tensor4"][wk] == "P(None, None, None, None)"
    assert specs["data2_tensor2_pipe2"][wk] == "P('pipeline', None, 'tensor', None)"
    # Pipeline: the stacked `layers` axis is split into stages.
    assert specs["data2_pipe4_micro8"][wi] == "P('pipeline', None, None)"
    assert specs["fsdp2_tensor2_pipe2"][wi] == "P('pipeline', 'fsdp', 'tensor')"


# μP (per-parameter Adam lr via optax partition, readout and attention scales) on every axis.
MUP_MESHES = [{"name": "mup_one", "devices": 1, "parametrization": "mup"},
              {"name": "mup_data2_tensor2_pipe2", "data": 2, "tensor": 2, "pipeline": 2,
               "parametrization": "mup"},
              {"name": "mup_fsdp2_tensor2_pipe2", "fsdp": 2, "tensor": 2, "pipeline": 2,
               "parametrization": "mup"}]


@pytest.mark.slow
def test_mup_meshes_match_single_device(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "parallel_equivalence.py"), str(tmp_path),
         json.dumps(MUP_MESHES), "5"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env=dict(os.environ, PYTHONPATH=ROOT, **FORCE8))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    ref = dict(np.load(tmp_path / "params_mup_one.npz"))
    for spec in MUP_MESHES[1:]:
        np.testing.assert_allclose(results[spec["name"]]["losses"], results["mup_one"]["losses"],
                                   rtol=1e-5)
        got = dict(np.load(tmp_path / f"params_{spec['name']}.npz"))
        for key, ref_p in ref.items():
            np.testing.assert_allclose(got[key], ref_p, rtol=0, atol=1e-4, err_msg=key)


def test_mesh_errors_are_one_line_user_errors():
    cfg = default_config()
    cfg.mesh.update(dict(data=3, tensor=2))
    with pytest.raises(UserError, match="needs 6 devices but 8 are available"):
        mesh_shape(cfg.mesh, 8)
    cfg.mesh.update(dict(data=-1, tensor=3))
    with pytest.raises(UserError, match="does not divide the 8 devices"):
        mesh_shape(cfg.mesh, 8)

    def check(**kw):
        c = default_config()
        c.model.update(dict(n_layers=kw.pop("n_layers", 4)))
        c.train.batch_size = kw.pop("batch_size", 16)
        c.pipeline.microbatches = kw.pop("microbatches", 0)
        shape = {**dict(data=1, fsdp=1, tensor=1, pipeline=1), **kw}
        check_divisibility(resolve(c), types.SimpleNamespace(shape=shape))  # reads .shape only

    check(data=2, pipeline=2, microbatches=8)
    with pytest.raises(UserError, match=r"n_layers=3 is not divisible by mesh.pipeline=2") as e:
        check(n_layers=3, pipeline=2)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"batch per data shard \(8 = .*pipeline.microbatches=3"):
        check(data=2, pipeline=2, microbatches=3)


def test_bubble_fraction():
    assert bubble_fraction(1, 4) == 0.0
    assert bubble_fraction(2, 2) == pytest.approx(1 / 3)
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)


def _losses(workdir):
    return [r["loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


@pytest.mark.slow
def test_cli_pipeline_run_matches_single_device(tmp_path):
    """`scaling train` with data=2 x tensor=2 x pipeline=2 on 8 devices: same losses as one."""
    common = ["train", "--config", "tests/tiny_experiment.py", "--config.train.steps=5",
              "--config.log.every=1", "--config.model.n_layers=2", "--config.model.d_ff=64"]
    one = run_cli(*common, "--workdir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    eight = run_cli(*common, "--workdir", str(tmp_path / "eight"), "--config.mesh.data=2",
                    "--config.mesh.tensor=2", "--config.mesh.pipeline=2", env=FORCE8)
    assert eight.returncode == 0, eight.stderr
    la, lb = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
    assert len(la) == 5
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    with open(tmp_path / "eight" / "summary.json") as f:
        s = json.load(f)
    assert s["mesh"] == {"data": 2, "fsdp": 1, "pipeline": 2, "tensor": 2}
    assert s["pipeline_microbatches"] == 2 and s["pipeline_bubble"] == pytest.approx(1 / 3)


def test_cli_pipeline_divisibility_error(tmp_path):
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--config.mesh.pipeline=2",
                "--workdir", str(tmp_path), env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "n_layers=1 is not divisible" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_params(workdir, step):
    """Params of `workdir`'s checkpoint `step`, restored in this (1-device) process."""
    import jax
    import orbax.checkpoint as ocp
    from scaling.config import from_json_file
    from scaling.parallel.mesh import make_mesh
    from scaling.train.checkpoint import manager
    from scaling.train.step import Trainer
    cfg = from_json_file(os.path.join(workdir, "config.json"))
    trainer = Trainer(cfg, make_mesh(cfg.mesh))
    mngr = manager(str(workdir), cfg)
    state = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(trainer.abstract_state))).state
    mngr.close()
    return jax.tree.leaves(jax.device_get(state["params"]))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """2 processes x 4 CPU devices (jax.distributed on localhost, gloo collectives) = 1 process."""
    helper = os.path.join(ROOT, "tests", "parallel_multihost.py")
    args = ["train.steps=5", "log.every=1"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    one = subprocess.run([sys.executable, helper, str(tmp_path / "one"), "", "0", "0", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    coordinator = f"127.0.0.1:{_free_port()}"
    env4 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [subprocess.Popen([sys.executable, helper, str(tmp_path / "two"), coordinator, "2",
                               str(i), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env4) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "process 0 of 2: 8 global devices, 4 local" in outs[0][0]
    assert "process 1 of 2: 8 global devices, 4 local" in outs[1][0]
    # Only process 0 logs: one line per step (not two), and only it prints progress.
    assert "step 5/5" in outs[0][0] and "step 5/5" not in outs[1][0]
    rows = [r for r in read_jsonl(tmp_path / "two" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([r["loss"] for r in rows], _losses(tmp_path / "one"), rtol=1e-5)
    with open(tmp_path / "two" / "summary.json") as f:
        assert json.load(f)["devices"] == 8
    # The checkpoint written by both processes together restores in full in one process.
    for a, b in zip(_restore_params(tmp_path / "two", 5), _restore_params(tmp_path / "one", 5)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
