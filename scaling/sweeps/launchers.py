"""Where a sweep's trials run: in this process, in N local worker processes, or as SLURM jobs.

All launchers share one rule for claiming a trial (`claim_and_run`): skip it if it has a
summary (done or failed), else take its `trial_lock` (a non-blocking flock the OS drops when the
holder dies), re-check the summary under the lock, and train. So any mix of launchers, workers
and repeated `scaling sweep` commands on one workdir never runs a trial twice, and a killed
worker's trial is simply resumed from its orbax checkpoint by whoever claims it next.

- `local` (default): the trials one after another in this process (`run_local`).
- `local --parallel N`: N worker subprocesses (`python -m scaling.sweeps.launchers worker DIR`),
  each claiming trials until none is left. Each worker gets its own CPU cores (sched affinity)
  and, on a GPU machine, its own GPUs (CUDA_VISIBLE_DEVICES) so workers never share a device.
- wsd branches (plan.py, `wsd_family`): a branch waits for its trunk's checkpoint at its branch
  step (`store.branch_source`), then starts from a copy of it (`store.seed_branch`); a trunk that
  failed, or finished without that checkpoint, fails its branches with the reason. Local and
  `--parallel` workers poll while a branch waits (`run_claims`), so with 2 workers one trains
  the trunk and the other each branch as soon as its checkpoint exists.
- `slurm`: one submitit job per trial, submitted as one job array; the branches of each trunk
  as a second array with `--dependency=afterany:<trunk job>` (each job still checks and, if
  needed, waits for its checkpoint, so a requeued trunk is no problem). A job that SLURM times out or
  preempts is requeued through submitit's `checkpoint()` protocol; the requeued job calls
  `train()` again, which resumes from the trial's latest orbax checkpoint. `--slurm-local` runs
  the same code path through submitit's local executor (tests, or a machine without SLURM).

The files a trial reads and writes (summary, lock, plan) are defined in `store.py`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

from scaling import counting
from scaling.config import ConfigDict
from scaling.errors import Stopped, UserError, write_failure
from scaling.fileio import write_json_atomic
from scaling.startup import setup_jax
from scaling.sweeps.plan import Trial, expand, vector_groups
from scaling.sweeps.store import (branch_source, finished, read_plan, read_summary,
                                  record_failure, repair_config, seed_branch, trial_dir,
                                  trial_lock)


# ------------------------------------------------------------------ claiming and running a trial

def run_trial(cfg: ConfigDict, tdir: str, label: str, *, progress: bool = False) -> dict:
    """Train one trial; a failure (a UserError of this trial's config or workdir included) is
    recorded in its summary.json and error.txt, not raised: one failing trial never stops the
    others. Returns the summary."""
    # JAX: imported when a trial runs, not at CLI start-up
    from scaling.evals.trained import evaluate_trained
    from scaling.train.loop import summary_text, train
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.train.steps, desc=f"trial {label}", unit="step", leave=False,
               mininterval=0.5, disable=not progress)
    try:
        s = train(cfg, tdir, on_step=lambda step, total: bar.update(step - bar.n), verbose=False)
        s = evaluate_trained(tdir, s)  # task evals (eval.tasks), after training
        print(f"[{label}]: {summary_text(s)}", flush=True)
        return s
    except Exception as e:  # record the failure and go on with the next trial
        what = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        what = " ".join(what.split())  # one line in the table and on the console
        s = record_failure(tdir, what, traceback.format_exc())
        print(f"[{label}]: FAILED {what}", flush=True)
        return s
    finally:
        bar.close()


def claim_and_run(cfg: ConfigDict, tdir: str, label: str, *, progress: bool = False,
                  prepare=None) -> str:
    """Run the trial unless it is finished or another process holds its lock; `prepare()`
    runs under the lock first (a wsd branch's seeding). Returns what happened: "ran",
    "finished" or "locked"."""
    if finished(tdir):
        return "finished"
    with trial_lock(tdir) as got:
        if not got:
            return "locked"
        if finished(tdir):  # finished by another process between our check and the lock
            return "finished"
        if repair_config(tdir):  # torn by a kill: the plan holds the config, rewrite it
            print(f"[{label}]: config.json was unreadable; moved to config.json.damaged and "
                  f"rewritten from the sweep's plan", flush=True)
        if prepare is not None:
            prepare()
        run_trial(cfg, tdir, label, progress=progress)
        return "ran"


def _report(tdir: str, label: str, result) -> None:
    """A group member's outcome, as `run_trial` reports a trial's: task evals and the summary
    line for a finished one, the failure recorded for one that failed."""
    from scaling.evals.trained import evaluate_trained
    from scaling.train.loop import summary_text
    if isinstance(result, BaseException):
        what = " ".join(str(result).split())
        record_failure(tdir, what, "".join(traceback.format_exception(result)))
        print(f"[{label}]: FAILED {what}", flush=True)
        return
    try:
        print(f"[{label}]: {summary_text(evaluate_trained(tdir, result))}", flush=True)
    except Exception as e:  # noqa: BLE001 - its evals failed: recorded like run_trial does
        _report(tdir, label, e)


def run_group(trials: list[Trial], tdirs: list[str], labels: list[str], *,
              progress: bool = False) -> None:
    """Train claimed trials (their locks held) as one vectorised group (scaling/train/group.py);
    when they cannot be one (`GroupMismatch`: e.g. different resume steps, several devices) or
    the group fails as a whole, one after another as usual (`run_trial`)."""
    from scaling.train.group import GroupMismatch, train_group
    from scaling.train.signals import TrainingStopped
    from tqdm.auto import tqdm

    bar = tqdm(total=trials[0].cfg.train.steps, desc=f"group of {len(trials)}", unit="step",
               leave=False, mininterval=0.5, disable=not progress)
    try:
        results = train_group([t.cfg for t in trials], tdirs,
                              on_step=lambda step, total: bar.update(step - bar.n))
    except GroupMismatch as e:
        print(f"[{labels[0]} +{len(trials) - 1}]: not vectorised ({e}); one at a time", flush=True)
        results = None
    except TrainingStopped:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. out of memory for G copies: train them singly
        print(f"[{labels[0]} +{len(trials) - 1}]: the vectorised group failed "
              f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); one at a time", flush=True)
        results = None
    finally:
        bar.close()
    for t, tdir, label, result in zip(trials, tdirs, labels, results or [None] * len(trials)):
        if results is None:
            run_trial(t.cfg, tdir, label, progress=progress)
        else:
            _report(tdir, label, result)


def claim_group(workdir: str, group: list[Trial], label, *, progress: bool = False) -> set[str]:
    """Claim every unfinished trial of `group` (its lock; `claim_and_run`'s rule) and train the
    claimed ones together (`run_group`; a lone one alone). Returns the ids trained here."""
    with contextlib.ExitStack() as stack:
        mine = []
        for k, t in group:
            tdir = trial_dir(workdir, t.trial_id)
            if finished(tdir) or not stack.enter_context(trial_lock(tdir)) or finished(tdir):
                continue
            if repair_config(tdir):
                print(f"[{label(k, t)}]: config.json was unreadable; moved to "
                      f"config.json.damaged and rewritten from the sweep's plan", flush=True)
            mine.append((k, t, tdir))
        if len(mine) == 1:
            k, t, tdir = mine[0]
            run_trial(t.cfg, tdir, label(k, t), progress=progress)
        elif mine:
            run_group([t for _, t, _ in mine], [d for *_, d in mine],
                      [label(k, t) for k, t, _ in mine], progress=progress)
        return {t.trial_id for _, t, _ in mine}


def _gate(workdir: str, t: Trial, label: str):
    """A wsd branch's readiness: (None, prepare) to train it now, ("wait", None) while its
    trunk has not reached the branch step, ("failed", None) once recorded as failed."""
    tdir = trial_dir(workdir, t.trial_id)
    if not t.parent or finished(tdir):
        return None, None
    state, info = branch_source(workdir, t.parent, t.branch_step)
    if state == "ready":
        return None, lambda: seed_branch(tdir, info)
    if state == "failed":
        with trial_lock(tdir) as got:
            if got and not finished(tdir):
                record_failure(tdir, info, info)
                print(f"[{label}]: FAILED {info}", flush=True)
    return state, None


def largest_first(groups: list[list[Trial]]) -> list[list[Trial]]:
    """Groups in order of their training FLOPs, largest first (ties in plan order). Groups are
    coarse units: claimed in plan order, the lr sweep's 4 groups left one of 2 workers idle for
    half the sweep (docs/benchmarks.md); largest first, the workers finish closer together."""
    return sorted(groups, key=lambda g: -sum(counting.describe(t.cfg)["flops"] for t in g))


def run_claims(workdir: str, trials: list[Trial], label, *, progress: bool = False,
               poll_s: float = 1.0, group_size: int = 1) -> None:
    """Claim and train `trials` in order (`label(k, t)` names them in output) until each is
    finished, or running in another process. With `group_size` > 1, trials that differ only in
    seed or optimizer numbers are first claimed and trained as vectorised groups of up to that
    many (`plan.vector_groups`, `claim_group`), the largest first (`largest_first`). A wsd
    branch waits (polling every `poll_s`) for its trunk's checkpoint; a trunk held by another
    process stays on the list while a branch of it waits, so it is claimed here if that process
    dies."""
    k_of = {t.trial_id: k for k, t in enumerate(trials, 1)}
    done_here: set[str] = set()
    for group in largest_first(vector_groups(trials, group_size)):
        done_here |= claim_group(workdir, [(k_of[t.trial_id], t) for t in group], label,
                                 progress=progress)
    todo, told = [t for t in trials if t.trial_id not in done_here], set()
    while todo:
        waiting, ran = [], False
        parents = {t.parent for t in todo if t.parent}
        for t in todo:
            k, tdir = k_of[t.trial_id], trial_dir(workdir, t.trial_id)
            state, prepare = _gate(workdir, t, label(k, t))
            if state is not None:
                waiting += [t] if state == "wait" else []
                continue
            what = claim_and_run(t.cfg, tdir, label(k, t), progress=progress, prepare=prepare)
            ran |= what == "ran"
            if what == "locked" and t.trial_id in parents:
                waiting.append(t)
            if what != "ran" and t.trial_id not in told:
                told.add(t.trial_id)
                status = (read_summary(tdir) or {}).get("status")
                where = label(k, t).removesuffix(t.trial_id).strip()  # "[k/n] id: ..." as before
                print(f"[{where}] {t.trial_id}: " + (f"{status} (skipped)" if what == "finished"
                                                     else "running in another process (skipped)"),
                      flush=True)
        if waiting and not ran:
            time.sleep(poll_s)
        todo = waiting


def run_local(workdir: str, trials: list, group_size: int = 1) -> None:
    """The `local` launcher: the trials one after another in this process (vectorised groups of
    up to `group_size`), with a progress bar."""
    n = len(trials)
    run_claims(workdir, trials, lambda k, t: f"{k}/{n} {t.trial_id}", progress=True,
               group_size=group_size)


# ------------------------------------------------------------------ local --parallel N

def split_cpus(n: int, cpus: list[int] | None = None) -> list[list[int]]:
    """Disjoint CPU sets for n workers (round-robin when there are fewer CPUs than workers).

    Why affinity: XLA:CPU sizes its thread pools from the CPUs the process may run on, so a
    worker pinned to k cores runs k compute threads instead of every worker spawning one thread
    per core of the machine and thrashing (N workers x all cores)."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    if n >= len(cpus):
        return [[cpus[k % len(cpus)]] for k in range(n)]
    per, extra = divmod(len(cpus), n)
    out, i = [], 0
    for k in range(n):
        take = per + (k < extra)
        out.append(cpus[i:i + take])
        i += take
    return out


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without initialising a GPU backend here (that would
    preallocate GPU memory in the parent and starve the workers)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            return []
    return []


def worker_env(k: int, n: int, cpus: list[int], gpus: list[str]) -> dict:
    env = dict(os.environ)
    # One thread per core we own; Eigen's own pool also follows the affinity mask.
    env["OMP_NUM_THREADS"] = str(len(cpus))
    if gpus:
        mine = gpus[k::n]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    env["SCALING_WORKER"] = str(k)
    return env


def _parent_death_signal():
    """Linux: a callable that makes the calling (child) process receive SIGTERM when its parent
    dies, even by SIGKILL, so a killed sweep never leaves workers training on. None elsewhere.
    libc is loaded here, in the parent: the child only calls prctl between fork and exec."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm():
        prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return arm


def _stop_workers(procs: list, signum: int, grace_s: float) -> None:
    """Forward `signum` to the workers still running, wait up to grace_s for them (they may be
    saving a checkpoint), then kill what is left. A second signal kills them at once."""
    def kill_all(*_):
        for p in procs:
            if p.poll() is None:
                p.kill()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, kill_all)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def run_parallel(workdir: str, n: int, *, grace_s: float = 60.0, group_size: int = 1) -> list[int]:
    """Start n workers on the sweep in `workdir` (its sweep.json) and wait; returns exit codes.

    SIGTERM or SIGINT to this process (SLURM preemption, `timeout`, Ctrl-C, a CI cancel) is
    forwarded to the workers, which are waited for, and then raised here as `Stopped`: no worker
    outlives the sweep command (their trials resume on the next run)."""
    gpus = visible_gpus()
    if gpus and n > len(gpus):
        raise UserError(f"--parallel {n} needs {n} GPUs (one or more per worker); "
                        f"{len(gpus)} visible")
    cpu_sets = split_cpus(n)
    arm = _parent_death_signal()
    on_main = threading.current_thread() is threading.main_thread()  # signal.signal needs it
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)
                } if on_main else {}
    procs = []
    try:
        for k in range(n):
            cmd = [sys.executable, "-m", "scaling.sweeps.launchers", "worker", workdir,
                   "--id", str(k), "--group-size", str(group_size)]

            def setup(cpus=cpu_sets[k]):
                os.sched_setaffinity(0, cpus)
                if arm is not None:
                    arm()
            procs.append(subprocess.Popen(cmd, env=worker_env(k, n, cpu_sets[k], gpus),
                                          preexec_fn=setup))
            print(f"worker {k}: pid {procs[-1].pid}, cpus {cpu_sets[k]}"
                  + (f", gpus {gpus[k::n]}" if gpus else ""), flush=True)
        return [p.wait() for p in procs]
    except BaseException as e:  # a signal, Ctrl-C, or a failure here: stop our workers
        if on_main:
            _stop_workers(procs, e.signum if isinstance(e, Stopped) else signal.SIGTERM, grace_s)
        else:
            for p in procs:
                p.terminate()
                p.wait()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def worker_main(workdir: str, worker_id: int, group_size: int = 1) -> int:
    """A worker: claim unfinished trials of the sweep (a vectorised group at a time, each
    trial under its own lock) until none is left."""
    setup_jax()
    plan = read_plan(workdir)
    trials, _ = expand(plan["config"], plan["overrides"])  # experiment files are deterministic
    planned = [t["trial_id"] for t in plan["trials"]]
    trials = [t for t in trials if t.trial_id in planned]
    n = len(trials)
    # a locked or finished trial is skipped, not waited for (a branch waits for its trunk)
    run_claims(workdir, trials, lambda k, t: f"w{worker_id} {k}/{n} {t.trial_id}",
               group_size=group_size)
    return 0


# ------------------------------------------------------------------ SLURM through submitit

SLURM_KEYS = ("partition", "time", "gpus", "cpus", "mem_gb", "array_parallelism", "account",
              "qos")


class TrialJob:
    """The function submitit runs for one trial, checkpointable: on timeout or preemption submitit
    calls `checkpoint()`, pickles the returned DelayedSubmission and requeues it; the new job
    calls `train()` again, which resumes from the latest orbax checkpoint (`checkpoint.every`
    bounds the steps redone). A wsd branch's job first waits for its trunk's checkpoint."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)

    def __call__(self, cfg: dict, trial_id: str, parent: str = "", branch_step: int = 0) -> str:
        setup_jax()
        tdir = trial_dir(self.workdir, trial_id)
        trial = Trial(trial_id, {}, ConfigDict(cfg), "", parent, branch_step)
        run_claims(self.workdir, [trial], lambda k, t: t.trial_id, poll_s=10.0)
        return f"{trial_id}: {(read_summary(tdir) or {}).get('status', 'not finished')}"

    def checkpoint(self, cfg: dict, trial_id: str, parent: str = "", branch_step: int = 0):
        import submitit
        branch = (parent, branch_step) if parent else ()
        return submitit.helpers.DelayedSubmission(TrialJob(self.workdir), cfg, trial_id, *branch)


def slurm_parameters(opts: dict) -> dict:
    """Our option names -> submitit's. Unknown `slurm_*` keys from get_slurm() pass through."""
    names = {"partition": "slurm_partition", "time": "timeout_min", "gpus": "gpus_per_node",
             "cpus": "cpus_per_task", "mem_gb": "mem_gb",
             "array_parallelism": "slurm_array_parallelism", "account": "slurm_account",
             "qos": "slurm_qos"}
    params = {}
    for k, v in opts.items():
        if v is None or k == "local":
            continue
        params[names.get(k, k)] = v
    params.setdefault("timeout_min", 60)
    return params


def _submit(executor, workdir: str, trials: list, extra: dict, dependency: str = "") -> list:
    """One job array for `trials` (after the job `dependency` ends, if given); `extra`: the
    user's own `slurm_additional_parameters`."""
    after = {"dependency": f"afterany:{dependency}"} if dependency else {}
    executor.update_parameters(slurm_additional_parameters={**extra, **after})
    return executor.map_array(TrialJob(workdir), [t.cfg.to_dict() for t in trials],
                              [t.trial_id for t in trials], [t.parent for t in trials],
                              [t.branch_step for t in trials])


def run_slurm(workdir: str, trials: list, opts: dict, *, wait: bool = True,
              poll_s: float = 2.0) -> list:
    """Submit the unfinished trials as one job array, and each trunk's unfinished wsd branches
    as an array that starts after the trunk's job ends; with `wait`, poll until they end."""
    import submitit
    todo = [t for t in trials if not finished(trial_dir(workdir, t.trial_id))]
    if not todo:
        print("slurm: nothing to submit (every trial is finished)", flush=True)
        return []
    folder = os.path.join(os.path.abspath(workdir), "slurm", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if opts.get("local") else "slurm")
    params = slurm_parameters(opts)
    params.setdefault("name", "scaling-" + os.path.basename(os.path.abspath(workdir)))
    executor.update_parameters(**params)
    first = [t for t in todo if not t.parent]
    extra = dict(params.get("slurm_additional_parameters") or {})
    jobs = _submit(executor, workdir, first, extra) if first else []
    job_of = {t.trial_id: j.job_id for t, j in zip(first, jobs)}
    submitted = list(first)
    for parent in dict.fromkeys(t.parent for t in todo if t.parent):
        branches = [t for t in todo if t.parent == parent]
        jobs += _submit(executor, workdir, branches, extra, job_of.get(parent, ""))
        submitted += branches
    write_json_atomic(os.path.join(workdir, "slurm", "jobs.json"),
                      {t.trial_id: j.job_id for t, j in zip(submitted, jobs)})
    print(f"slurm: submitted {len(jobs)} jobs ({jobs[0].job_id.split('_')[0]}"
          f"{'' if len(jobs) == 1 else ' ...'}); logs in {os.path.dirname(folder)}", flush=True)
    if not wait:
        print(f"follow with `scaling status {workdir}`; `scaling collect {workdir}` at the end")
        return jobs
    while not all(j.done() for j in jobs):
        time.sleep(poll_s)
    for t, j in zip(submitted, jobs):
        _record_job_failure(workdir, t.trial_id, j)
    return jobs


def _record_job_failure(workdir: str, trial_id: str, job) -> None:
    """A job that died outside train() (import error, killed for memory, out of requeues) left no
    summary: record it as failed with the job's log, so the results table says why."""
    tdir = trial_dir(workdir, trial_id)
    if finished(tdir):
        return
    err = job.exception()
    if err is None:
        return
    first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    record_failure(tdir, f"job {job.job_id}: {first} (log: {job.paths.stderr})", str(err))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scaling.sweeps.launchers")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="claim and train trials of a sweep until none is left")
    w.add_argument("workdir")
    w.add_argument("--id", type=int, default=0)
    w.add_argument("--group-size", type=int, default=1)
    args = p.parse_args(argv)
    try:  # a worker never dies with a traceback: trial failures are recorded by run_trial
        return worker_main(args.workdir, args.id, args.group_size)
    except UserError as e:  # e.g. the experiment file changed since the sweep was planned
        print(f"error: worker {args.id}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGINT forwarded by the sweep: its trial resumes next run
        print(f"worker {args.id}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        failure = write_failure(e)
        if failure is None:
            raise
        print(f"error: worker {args.id}: {failure[1]}", file=sys.stderr)
        return failure[0]


if __name__ == "__main__":
    sys.exit(main())
