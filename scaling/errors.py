"""Error types shared by the CLI: a `UserError` is bad input (exit code 2, one line)."""
from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """Bad input from the user: config, data, CLI flags. The message names the fix.

    The CLI prints `error: <message>` on one line and exits with code 2. Raise it before
    anything is written to disk, so that nothing already there is changed.
    """


class Stopped(KeyboardInterrupt):
    """A signal (SIGTERM, SIGINT) stopped a command that forwards it to its worker processes;
    the CLI exits with 128 + `signum`, the shell's convention for a death by that signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


# errno values that mean "this directory cannot be written" (read-only mount, permissions).
_CANNOT_WRITE = {errno.EROFS, errno.EACCES, errno.EPERM}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def write_failure(e: OSError, hint: str = "") -> tuple[int, str] | None:
    """An OSError of writing as (exit code, one-line message), or None for any other OSError.

    An unwritable directory the user pointed at is bad input (2); a full disk is a failure
    while running (1). Finished work is kept either way: every write is atomic."""
    path = e.filename if isinstance(e.filename, str) else None
    where = os.path.dirname(os.path.abspath(path)) if path else "the output directory"
    if e.errno in _CANNOT_WRITE:
        return 2, (f"cannot write to {where} ({e.strerror}): {path or e}; fix its permissions "
                   f"(or remount it read-write){hint}")
    if e.errno in _NO_SPACE:
        return 1, (f"no space left on {where} ({e.strerror}) writing {path or 'a file'}; free "
                   f"space and rerun (what was written before is kept)")
    return None
