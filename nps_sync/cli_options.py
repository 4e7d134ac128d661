"""Options shared by the ``nps-sync`` commands (here so command modules need not import each other)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar="NPS_SYNC_CONFIG",
        default="config.toml",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The config file (or $NPS_SYNC_CONFIG).",
    )(func)
