"""What the three commands share: the common options, the one place where
a library error becomes a one-line message (or, under --json, one JSON
object) and an exit code, and the one place a result is printed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.shell_completion import CompletionItem

from wgfailover import __version__
from wgfailover.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    NOT_CHECKED_OFFLINE,
    Config,
    check_permissions,
    check_referenced_files,
    load_config,
)
from wgfailover.errors import ConfigError, ExitCode, WgFailoverError
from wgfailover.logs import logging_to_stderr, name_instance, stdout_is_journal

log = logging.getLogger("wgfailover")

F = TypeVar("F", bound=Callable[..., Any])

# What each command can really return; --help, the README and
# docs/operations.md list the same (tests/unit/test_docs.py checks the table there).
EXIT_CODES: dict[str, dict[int, str]] = {
    "wg-select": {
        0: "done",
        1: "could not act",
        2: "usage",
        75: "state lock busy",
        78: "bad configuration",
        130: "interrupted",
    },
    "wg-failover": {
        0: "done",
        1: "could not act",
        2: "usage",
        3: "declined: a local fault (every server losing packets)",
        4: "all servers failed their probation",
        75: "state lock busy",
        78: "bad configuration",
        130: "interrupted",
    },
    "wg-health-check": {
        0: "done",
        1: "could not act",
        2: "usage",
        3: "the failover it started declined: a local fault",
        4: "all servers failed their probation",
        69: "could not measure (Prometheus unreachable, or no history for --backtest)",
        75: "state lock busy",
        78: "bad configuration",
        130: "interrupted",
    },
}


def exit_codes_help(program: str) -> str:
    """Given a command's name, return the sentence listing its exit codes."""
    listed = ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES[program].items())
    return f"Exit codes: {listed}."


class Command(click.Command):
    """
    A click command that keeps its --json promise when click itself fails:
    a usage error (exit 2) is printed as the same one JSON object as any
    other error, so a script reading stdout never gets a usage text.
    """

    def main(self, args: Sequence[str] | None = None, *pos: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or kwargs.get("standalone_mode") is False:
            return super().main(argv, *pos, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            outcome = super().main(argv, *pos, **kwargs)
        except click.ClickException as error:
            print_error_json(error.format_message(), error.exit_code)
            sys.exit(error.exit_code)
        except click.exceptions.Abort:
            print_error_json("interrupted", 130)
            sys.exit(130)
        # Without standalone mode click returns --help's and --version's exit code.
        sys.exit(outcome if isinstance(outcome, int) else 0)


# Kept in the click context rather than passed to every main(): only
# load_or_check needs it, and the commands stay one line shorter each.
_OFFLINE = "wgfailover.offline"


_ONLINE = "wgfailover.online"


def _remember_offline(context: click.Context, _parameter: click.Parameter, value: bool) -> bool:
    context.meta[_OFFLINE] = value
    return value


def _remember_online(context: click.Context, _parameter: click.Parameter, value: bool) -> bool:
    context.meta[_ONLINE] = value
    return value


def common_options(function: F) -> F:
    """Add --config, --check-config, --offline, --online, --json, --verbose and --version to a command."""
    function = click.version_option(__version__, "--version", message="%(prog)s %(version)s")(function)
    function = click.option(
        "--online",
        is_flag=True,
        expose_value=False,
        callback=_remember_online,
        help=(
            "With --check-config: also ask each Prometheus URL (with the configured auth and TLS) whether "
            "the ranking query has a series for every server and the health selector matches the prober, "
            "and check that textfile_dir is writable and the restart program exists."
        ),
    )(function)
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
        "--verbose",
        "-v",
        is_flag=True,
        help=(
            "Log debug details: the files and endpoints used, every PromQL query sent and where, "
            "and tracebacks of internal errors."
        ),
    )(function)
    function = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help='Print one JSON object on stdout, also on failure ({"error": ..., "exit_code": ...}).',
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


def print_json(document: dict[str, Any]) -> None:
    """Print one JSON object on stdout (what --json promises)."""
    click.echo(json.dumps(document, indent=2))


def print_error_json(message: str, exit_code: int, **details: Any) -> None:
    print_json({"error": message, "exit_code": exit_code, **details})


def emit(text: str, level: int = logging.INFO, logged: bool = False) -> None:
    """
    Print a command's result on stdout. When stdout is the journal (a
    systemd unit), write it as log records with their priority instead, or
    nothing if the library already logged the same event (``logged``): one
    event, one journal line, never a second copy without a priority.
    """
    if not stdout_is_journal():
        click.echo(text)
        return
    if logged:
        return
    for line in text.splitlines():
        log.log(level, "%s", line)


@contextlib.contextmanager
def handle_errors(program: str, verbose: bool, as_json: bool = False) -> Iterator[None]:
    """
    Run the block; turn a WgFailoverError into its one-line message on
    stderr (and one JSON object on stdout under --json) and its exit code.
    Anything else is a bug: one line too, with the traceback only under
    --verbose.
    """
    with logging_to_stderr(program, verbose):
        try:
            yield
        except WgFailoverError as error:
            log.error("%s", error)
            details = {"problems": error.problems} if isinstance(error, ConfigError) else {}
            _exit(int(error.exit_code), str(error), as_json, **details)
        except KeyboardInterrupt:
            log.error("interrupted")
            _exit(130, "interrupted", as_json)
        except (SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence
            message = f"internal error: {type(error).__name__}: {error}"
            log.error("%s (run with --verbose for the traceback)", message)
            if verbose:
                log.exception("traceback")
            _exit(int(ExitCode.ACTION_FAILED), message, as_json)


def _exit(code: int, message: str, as_json: bool, **details: Any) -> NoReturn:
    if as_json:
        print_error_json(message, code, **details)
    sys.exit(code)


def describe_config(config: Config) -> str:
    """Given a valid config, return the --check-config summary."""
    names = ", ".join(config.server_names)
    instance = f"instance {config.instance}; " if config.instance is not None else ""
    return f"{config.path}: valid; {instance}{len(config.servers)} servers ({names})"


def load_or_check(config_path: Path, check_config: bool, as_json: bool = False) -> Config:
    """
    Load the config. Under --check-config also check the files it names
    (not under --offline), print the summary and exit: 0 when usable, 78
    when a run would fail, each problem on a line of its own.
    --offline without --check-config is a usage error.
    """
    context = click.get_current_context(silent=True)
    offline = bool(context and context.meta.get(_OFFLINE))
    online = bool(context and context.meta.get(_ONLINE))
    if (offline or online) and not check_config:
        raise click.UsageError(f"--{'offline' if offline else 'online'} only applies to --check-config")
    if offline and online:
        raise click.UsageError("--offline and --online exclude each other")
    config = load_config(config_path)
    name_instance(config.instance)
    log_paths(config)
    if not check_config:
        # Every run, not only --check-config: a state or config directory
        # anyone may write to is refused before anything is read from it.
        refused, doubtful = check_permissions(config)
        for warning in doubtful:
            log.warning("%s", warning)
        if refused:
            raise ConfigError(config.path, refused)
    if check_config:
        errors, warnings = ([], []) if offline else check_referenced_files(config)
        notes: list[str] = []
        if online:
            # Imported here: it pulls in requests, which the offline check never needs.
            from wgfailover.actions.online_check import check_online

            report = check_online(config)
            # The offline check already names a missing textfile_dir or restart
            # program; the online check's finding for the same key adds nothing.
            named = {error.split(":", 1)[0] for error in errors}
            fresh = [problem for problem in report.problems if problem.split(":", 1)[0] not in named]
            errors, warnings, notes = errors + fresh, warnings + report.warnings, report.notes
        for warning in warnings:
            log.warning("%s", warning)
        for error in errors:
            log.error("%s: %s", config.path, error)
        code = int(ExitCode.CONFIG) if errors else 0
        if as_json:
            print_json(
                {
                    "config": str(config.path),
                    "instance": config.instance,
                    "valid": not errors,
                    "offline": offline,
                    "online": online,
                    "servers": config.server_names,
                    "problems": errors,
                    "warnings": warnings,
                    "checked": notes,
                    "exit_code": code,
                }
            )
        else:
            if not errors:
                suffix = " (offline: files it names not checked)" if offline else ""
                if not online:
                    # Say what a valid offline check did not prove.
                    suffix += f"; {NOT_CHECKED_OFFLINE}"
                click.echo(describe_config(config) + suffix)
            for note in notes:
                click.echo(f"ok: {note}")

        sys.exit(code)
    return config


def log_paths(config: Config) -> None:
    """Under --verbose, log every file and endpoint the command will use."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    # Imported here: the endpoint lookup is only needed under --verbose.
    from wgfailover.servers import resolve_endpoint

    log.debug("config %s", config.path)
    log.debug(
        "state_dir %s, active_link %s, textfile_dir %s",
        config.state_dir,
        config.active_link,
        config.textfile_dir or "(unset: no metrics)",
    )
    for server in config.servers:
        try:
            endpoint = resolve_endpoint(server)
        except ConfigError as error:
            endpoint = f"unknown ({error})"
        log.debug("server %s: config %s, endpoint %s", server.name, server.config_path, endpoint)


def complete_server_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Complete --to with the names of the servers in the config given so far (or the default one)."""
    path = ctx.params.get("config_path") or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    try:
        config = load_config(Path(path))
    except WgFailoverError:
        return []
    return [CompletionItem(name) for name in config.server_names if name.startswith(incomplete)]
