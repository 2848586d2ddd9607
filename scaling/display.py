"""THE pandas table printer of the command line (status, dry run, sweep report, abilities)."""
from __future__ import annotations

from typing import Callable, Sequence


def format_table(df, cols: Sequence[str] | None = None, *, fmt: str = ".4g") -> str:
    """`df` (only `cols`, in that order, if given) as aligned text, floats as `fmt`, no index."""
    import pandas as pd
    view = df if cols is None else df[[c for c in cols if c in df.columns]]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return view.to_string(index=False, float_format=lambda x: format(x, fmt))


def print_table(df, cols: Sequence[str] | None = None, *, fmt: str = ".4g",
                log: Callable[[str], None] = print) -> None:
    """Print `format_table(df, cols, fmt=fmt)` through `log`."""
    log(format_table(df, cols, fmt=fmt))
