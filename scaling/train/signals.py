"""Stop requests during training: SIGTERM (and a SLURM launcher's preemption signal) become a
flag that the training loop reads at step boundaries, so it can save the current step first.

SIGTERM is what SLURM preemption, `timeout`, `docker stop` and CI cancellations send. While
`train()` runs, the first one sets the flag; the loop then saves a checkpoint of the step it just
finished, waits for it, and either stops (`TrainingStopped`, exit code 143 = 128 + SIGTERM) or,
when another Python handler was installed before (submitit's, in `scaling sweep --launcher
slurm`), hands the signal on to it: submitit ignores SIGTERM (training goes on) and requeues the
job on its preemption signal (SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL), now from the saved step.
A second SIGTERM before the boundary restores the default action and kills the process at once.
"""
from __future__ import annotations

import os
import signal
import sys
import threading


class TrainingStopped(SystemExit):
    """Training stopped on a signal after saving a checkpoint; a rerun resumes from it.

    A `SystemExit` (exit code 143) rather than an error: a sweep does not record the trial as
    failed (its launchers catch `Exception`), and the CLI exits with the shell's code for SIGTERM.
    """

    def __init__(self, message: str):
        super().__init__(143)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _watched() -> list[int]:
    """SIGTERM, plus the preemption signal of a launcher that installed a Python handler."""
    sigs = [signal.SIGTERM]
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    extra = getattr(signal, name, None)
    if extra is not None and extra != signal.SIGTERM and callable(signal.getsignal(extra)):
        sigs.append(extra)
    return sigs


class StopRequest:
    """Context manager: while inside, watched signals set `signum` instead of killing.

    Outside the main thread (signal handlers cannot be installed there) it watches nothing.
    `previous` maps each signal to the handler it replaced (restored on exit)."""

    def __init__(self):
        self.signum: int | None = None
        self.last = ""  # the name of the signal last forwarded (for the stop message)
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in _watched():
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum == signum == signal.SIGTERM:  # the second SIGTERM: die now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        print(f"{signal.Signals(signum).name} received: saving a checkpoint at the end of this "
              f"step", file=sys.stderr, flush=True)

    def forward(self) -> bool:
        """After the checkpoint: hand the signal to the handler it replaced. Returns True if
        that handler took it (it may also exit or raise, e.g. submitit requeueing the job), so
        training goes on; False if there was none and training must stop."""
        signum, self.signum = self.signum, None
        self.last = signal.Signals(signum).name
        old = self.previous.get(signum)
        if callable(old):
            old(signum, None)
            return True
        return False
