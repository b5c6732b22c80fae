"""What the three commands share: the common options and the one place
where a library error becomes a one-line message and an exit code."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from wgfailover.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, Config, check_referenced_files, load_config
from wgfailover.errors import ConfigError, ExitCode, WgFailoverError
from wgfailover.logs import logging_to_stderr

log = logging.getLogger("wgfailover")

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 could not act, 2 usage, 69 health check could not measure "
    "(Prometheus unreachable), 75 state lock busy, 78 bad configuration."
)


# Kept in the click context rather than passed to every main(): only
# load_or_check needs it, and the commands stay one line shorter each.
_OFFLINE = "wgfailover.offline"


def _remember_offline(context: click.Context, _parameter: click.Parameter, value: bool) -> bool:
    context.meta[_OFFLINE] = value
    return value


def common_options(function: F) -> F:
    """Add --config, --check-config, --offline and --verbose to a command."""
    function = click.option(
        "--offline",
        is_flag=True,
        expose_value=False,
        callback=_remember_offline,
        help=(
            "With --check-config: check the file alone, not the files it names (secrets, CA, WireGuard "
            "configs), for a build sandbox such as the NixOS module's build-time check."
        ),
    )(function)
    function = click.option(
        "--verbose", "-v", is_flag=True, help="Log debug details, and tracebacks of internal errors."
    )(function)
    function = click.option(
        "--check-config",
        is_flag=True,
        help="Validate the configuration, print a summary and exit (0 valid, 78 not).",
    )(function)
    function = click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),  # load_config reports a directory as exit 78
        envvar=CONFIG_ENV_VAR,
        default=DEFAULT_CONFIG_PATH,
        show_default=True,
        show_envvar=True,
        help="The TOML configuration file.",
    )(function)
    return function


@contextlib.contextmanager
def handle_errors(program: str, verbose: bool) -> Iterator[None]:
    """
    Run the block; turn a WgFailoverError into its one-line message on
    stderr and its exit code. Anything else is a bug: one line too, with the
    traceback only under --verbose.
    """
    with logging_to_stderr(program, verbose):
        try:
            yield
        except WgFailoverError as error:
            log.error("%s", error)
            sys.exit(int(error.exit_code))
        except KeyboardInterrupt:
            log.error("interrupted")
            sys.exit(130)
        except (SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence
            log.error("internal error: %s: %s (run with --verbose for the traceback)", type(error).__name__, error)
            if verbose:
                log.exception("traceback")
            sys.exit(int(ExitCode.ACTION_FAILED))


def describe_config(config: Config) -> str:
    """Given a valid config, return the --check-config summary."""
    names = ", ".join(config.server_names)
    return f"{config.path}: valid; {len(config.servers)} servers ({names})"


def load_or_check(config_path: Path, check_config: bool) -> Config:
    """
    Load the config. Under --check-config also check the files it names
    (not under --offline), print the summary and exit: 0 when usable, 78
    when a run would fail. --offline without --check-config is a usage error.
    """
    context = click.get_current_context(silent=True)
    offline = bool(context and context.meta.get(_OFFLINE))
    if offline and not check_config:
        raise click.UsageError("--offline only applies to --check-config")
    config = load_config(config_path)
    if check_config and offline:
        click.echo(describe_config(config) + " (offline: files it names not checked)")
        sys.exit(0)
    if check_config:
        errors, warnings = check_referenced_files(config)
        for warning in warnings:
            log.warning("%s", warning)
        if errors:
            raise ConfigError(config.path, errors)
        click.echo(describe_config(config))
        sys.exit(0)
    return config
