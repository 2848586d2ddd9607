"""Error types shared by the CLI: a `UserError` is bad input (exit code 2, one line)."""


class UserError(ValueError):
    """Bad input from the user: config, data, CLI flags. The message names the fix.

    The CLI prints `error: <message>` on one line and exits with code 2. Raise it before
    anything is written to disk, so that nothing already there is changed.
    """
