"""Load the TOML configuration into typed, validated settings.

The whole file is checked before anything acts: every problem is collected
with its key path (``health.threshold: ...``) and reported at once, and an
unknown key gets the nearest valid key as a suggestion, because a typo such as
``treshold`` would otherwise silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import shutil
import socket
import stat
import sys
from pathlib import Path
from typing import Any, Callable

from wgfailover.errors import ConfigError
from wgfailover.fsutil import RefusedFile, read_regular_file
from wgfailover.servers import Server, check_server_name, resolve_endpoint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on old Pythons
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/wg-failover/config.toml")
# Bounds of the files a config names or is: a config, or a WireGuard
# config, is a few KiB; a credential a few hundred bytes. Anything far
# larger is a wrong path (a log, a device), not worth reading into memory.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SECRET_BYTES = 64 * 1024
CONFIG_ENV_VAR = "WG_FAILOVER_CONFIG"

# Loss per server, from the external prober. smokeping can count more replies
# than requests within a window (a reply to a request sent before the window),
# so the ratio is clamped; the clamping is repeated in Python for servers that
# do not implement clamp().
# $scope narrows a shared backend to this client's own probers (see scope.py).
DEFAULT_FAILOVER_QUERY = (
    "clamp(1 - ("
    'sum by ($label) (rate(smokeping_response_duration_seconds_count{$label=~"$hosts"$scope}[$window]))'
    " / "
    'sum by ($label) (rate(smokeping_requests_total{$label=~"$hosts"$scope}[$window]))'
    "), 0, 1)"
)
# Mean round-trip time per server, only used to break near-ties in loss.
DEFAULT_LATENCY_QUERY = (
    'sum by ($label) (rate(smokeping_response_duration_seconds_sum{$label=~"$hosts"$scope}[$window]))'
    " / "
    'sum by ($label) (rate(smokeping_response_duration_seconds_count{$label=~"$hosts"$scope}[$window]))'
)
# Tunnel loss from the prober inside the VPN namespace, summed over every
# series (every target) before dividing: the original read only result[0].
DEFAULT_HEALTH_QUERY = (
    "clamp(1 - ("
    "sum(rate(smokeping_response_duration_seconds_count{$selector$scope}[$window]))"
    " / "
    "sum(rate(smokeping_requests_total{$selector$scope}[$window]))"
    "), 0, 1)"
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}
MAX_DURATION = 10 * 365 * 86400
# A wait the command itself does (a restart, the lock, Prometheus): longer
# than a day is a typo ("300y"), and the command would hang that long.
MAX_TIMEOUT = 86400
# PromQL label matchers, as inside {...}: name, operator, quoted string.
_PROMQL_STRING = r"""(?:"(?:[^"\
]|\.)*"|'(?:[^'\
]|\.)*'|`[^`]*`)"""
_MATCHER = rf"\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*{_PROMQL_STRING}\s*"
_MATCHER_LIST = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")
# What a header value may hold (RFC 9110 field-vchar, obs-text, space, tab).
_HEADER_VALUE = re.compile(r"[!-~-ÿ]([ -~-ÿ	]*[!-~-ÿ])?")
_PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# An instance name becomes part of paths, a file name, a unit name and a
# label value: no slash, no dot first (".." would climb out of state_dir).
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def fill_template(template: str, values: dict[str, str]) -> str:
    """
    Given a query template and {placeholder: value}, return the query with
    each $name replaced. Anything else that starts with '$' (a PromQL
    label_replace reference such as "$1") is left as it is.
    """
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), template)


def parse_duration(value: object) -> float:
    """
    Given a Prometheus duration ("90s", "5m", "1h30m") or a number of seconds
    (a TOML number or a numeric string), return the seconds as a float.
    Raise ValueError with a user-facing reason otherwise.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like '90s' or '5m', got a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
            position = 0
            for match in _DURATION_PART.finditer(text):
                if match.start() != position:
                    break
                seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
                position = match.end()
            if not text or position != len(text):
                raise ValueError(
                    f"{value!r} is not a duration (use Prometheus syntax like '90s', '5m', "
                    "'1h30m', or a number of seconds)"
                ) from None
    else:
        raise ValueError(f"expected a duration like '90s' or '5m', got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative; a duration must be 0 or more")
    if seconds > MAX_DURATION:
        # Far past any window or hold-down that means something, and before
        # the bounds of the clock and of the thread waits that would crash at use.
        raise ValueError(f"{value!r} is longer than {MAX_DURATION // (365 * 86400)} years")
    return seconds


def format_duration(seconds: float) -> str:
    """Given seconds, return them in PromQL range syntax (whole seconds, at least 1s)."""
    return f"{max(1, int(round(seconds)))}s"


def describe_duration(seconds: float) -> str:
    """Given seconds, return them as a person writes a duration: '30d', '1h30m', '90s' as '1m30s'."""
    rest = max(0, int(round(seconds)))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    if rest or not parts:
        parts.append(f"{rest}s")
    return "".join(parts)


@dataclasses.dataclass(frozen=True)
class PrometheusSettings:
    """
    Where and how to ask Prometheus. ``urls`` holds every configured URL in
    preference order; ``url`` is the first (None: not configured). Either
    may be given; the other is filled in.
    """

    url: str | None = None
    timeout: float = 5.0
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    bearer_token_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Filled from the url key (a string or a list), not a key of its own.
    urls: tuple[str, ...] = dataclasses.field(default=(), metadata={"derived": True})
    url_hold_down: float = 300.0

    def __post_init__(self) -> None:
        if self.urls and self.url is None:
            object.__setattr__(self, "url", self.urls[0])
        elif self.url is not None and not self.urls:
            object.__setattr__(self, "urls", (self.url,))


@dataclasses.dataclass(frozen=True)
class FailoverSettings:
    window: float = 300.0
    hold_down: float = 1800.0
    on_prometheus_error: str = "random"
    label: str = "host"
    query: str = DEFAULT_FAILOVER_QUERY
    latency_query: str = DEFAULT_LATENCY_QUERY
    tie_epsilon: float = 0.02
    # Latencies within this fraction of the lowest are tied (policy/ranking.py
    # step 5; LATENCY_TIE_RATIO there); a fleet with capacity weights raises it.
    latency_tie: float = 0.10
    failback_after: float | None = None  # None: never fail back to a more preferred server
    probation: float = 20.0  # seconds to confirm a new server after a switch; 0: do not confirm


@dataclasses.dataclass(frozen=True)
class HealthSettings:
    threshold: float = 0.15
    max_failures: int = 3
    window: float = 300.0
    min_window: float = 30.0
    selector: str = 'job="vpn-prober"'
    query: str = DEFAULT_HEALTH_QUERY
    on_no_data: str = "failure"
    failover_command: tuple[str, ...] | None = None
    interface: str | None = None
    netns: str | None = None
    handshake_timeout: float = 180.0


@dataclasses.dataclass(frozen=True)
class FleetSettings:
    """Which probes in a shared backend are this client's (see scope.py)."""

    client: str = ""  # this client's identity; "" until loaded: the short hostname
    client_label: str = ""  # the label holding it on its probers' series; "": one client per backend
    ranking_scope: str = "client"  # "client": its own probes of each server; "fleet": every client's


@dataclasses.dataclass(frozen=True)
class Config:
    path: Path
    servers: tuple[Server, ...]
    instance: str | None = None  # one of several tunnels on this host; None: the only one
    config_dir: Path = Path("/run/secrets/wireguard")
    active_link: Path = Path("/run/wg-active.conf")
    state_dir: Path = Path("/var/lib/wg-failover")
    restart_command: tuple[str, ...] = ("systemctl", "restart", "wg.service")
    restart_timeout: float = 60.0
    lock_timeout: float = 30.0
    textfile_dir: Path | None = None
    prometheus: PrometheusSettings = PrometheusSettings()
    failover: FailoverSettings = FailoverSettings()
    health: HealthSettings = HealthSettings()
    fleet: FleetSettings = FleetSettings()

    def server(self, name: str) -> Server | None:
        """Given a name, return the configured server of that name, or None."""
        for server in self.servers:
            if server.name == name:
                return server
        return None

    @property
    def server_names(self) -> list[str]:
        return [server.name for server in self.servers]

    @property
    def priorities(self) -> dict[str, int | None]:
        """Return {server: priority} (None: no priority, the last tier)."""
        return {server.name: server.priority for server in self.servers}

    @property
    def weights(self) -> dict[str, float]:
        """Return {server: weight}, the capacities the ranking's random pick honours."""
        return {server.name: server.weight for server in self.servers}


# --- validation --------------------------------------------------------------


class _Problems:
    """Collects every problem of one file so they are reported together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        # A quoted TOML key may hold a newline (servers."a\nb"); the error stays one line.
        key, message = (text if text.isprintable() else repr(text)[1:-1] for text in (key, message))
        self.items.append(f"{key}: {message}" if key else message)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def instance_defaults(instance: str | None) -> dict[str, Any]:
    """
    Given the instance name (None: one tunnel per host), return the
    top-level defaults that differ per instance. Two instances must never
    share a state directory (lock, `current`), an active link or a tunnel
    to restart; the restart follows the plain templates, where the
    instance is the wg-quick interface. active_link does not default to
    /etc/wireguard/INSTANCE.conf: that file may be the user's own config,
    private key included, and the first switch would replace it.
    """
    if instance is None:
        return {}
    return {
        "state_dir": Path("/var/lib/wg-failover") / instance,
        "active_link": Path(f"/run/wg-active-{instance}.conf"),
        "restart_command": ("systemctl", "restart", f"wg-quick@{instance}.service"),
    }


def _reject_unknown(table: dict[str, Any], known: list[str], prefix: str, problems: _Problems) -> None:
    for key in table:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else ""
        if prefix and key in _TOP_KEYS:
            # TOML puts every key after [a.table] into that table.
            hint = " (a top-level key: move it above the first [table])"
        problems.add(_join(prefix, key), f"unknown key{hint}")


Converter = Callable[[Any], Any]


def _take(
    table: dict[str, Any],
    key: str,
    prefix: str,
    convert: Converter,
    default: Any,
    problems: _Problems,
) -> Any:
    if key not in table:
        return default
    try:
        return convert(table[key])
    except (ValueError, TypeError) as error:
        problems.add(_join(prefix, key), str(error))
        return default


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_type_name(value)}")
    return value


def _nonempty_string(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _path(value: object) -> Path:
    text = _nonempty_string(value)
    if "\x00" in text:
        # TOML allows "\u0000"; the OS would refuse it only when a command acts.
        raise ValueError("must not contain a NUL character")
    return Path(text)


def _absolute_path(value: object) -> Path:
    path = _path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {str(path)!r}")
    return path


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_type_name(value)}")
    return value


def _argv(value: object) -> tuple[str, ...]:
    # A list, never a shell string: the original ran everything through bash,
    # and a server name in a shell string is an injection.
    if isinstance(value, str):
        raise TypeError(
            f'expected a list of arguments like ["systemctl", "restart", "wg.service"], got the string {value!r}'
        )
    if isinstance(value, list) and not value:
        raise ValueError('is empty; give the program and its arguments, e.g. ["systemctl", "restart", "wg.service"]')
    if not isinstance(value, list):
        raise TypeError(f"expected a non-empty list of strings, got {_type_name(value)}")
    if not all(isinstance(item, str) and item for item in value):
        raise TypeError("every argument must be a non-empty string")
    if any("\x00" in item for item in value):
        raise ValueError("an argument must not contain a NUL character")
    return tuple(value)


def _timeout(value: object) -> float:
    seconds = _positive_duration(value)
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"{value!r} is longer than a day; a command would wait that long")
    return seconds


def _label_matchers(value: object) -> str:
    text = _nonempty_string(value)
    if not _MATCHER_LIST.fullmatch(text):
        raise ValueError(f'{text!r} is not a list of PromQL label matchers like \'job="vpn-prober", instance=~"a|b"\'')
    return text


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _failback_after(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        # Failing back at once would flap between the preferred server and the next.
        raise ValueError("must be longer than zero (leave it unset never to fail back)")
    return seconds


def _priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number (lower is preferred), got {_type_name(value)}")
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _positive_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_type_name(value)}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a number above 0, got {value}")
    return float(value)


def _ratio(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number between 0 and 1, got {_type_name(value)}")
    if not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return float(value)


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {_type_name(value)}")
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _choice(*choices: str) -> Converter:
    def convert(value: object) -> str:
        text = _string(value)
        if text not in choices:
            listed = ", ".join(repr(choice) for choice in choices)
            raise ValueError(f"must be one of {listed}, got {text!r}")
        return text

    return convert


def _template(required: set[str], allowed: set[str], *, empty_ok: bool = False) -> Converter:
    def convert(value: object) -> str:
        text = _string(value)
        if empty_ok and not text.strip():
            return ""
        if not text.strip():
            raise ValueError("must not be empty")
        used = set(_PLACEHOLDER.findall(text))
        unknown = used - allowed
        if unknown:
            raise ValueError(
                "unknown placeholder "
                + ", ".join(f"${name}" for name in sorted(unknown))
                + " (allowed: "
                + ", ".join(f"${name}" for name in sorted(allowed))
                + ")"
            )
        missing = required - used
        if missing:
            raise ValueError("must use " + ", ".join(f"${name}" for name in sorted(missing)))
        return text

    return convert


def _instance_name(value: object) -> str:
    text = _string(value)
    if not _INSTANCE_NAME.fullmatch(text):
        raise ValueError(
            f"{text!r} is not an instance name (1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit, e.g. the interface 'wg0')"
        )
    return text


def _netns_name(value: object) -> str:
    text = _nonempty_string(value)
    if "/" in text or text in (".", ".."):
        # `ip netns exec` takes a name; the NixOS prober option takes a path.
        raise ValueError(f"expected a namespace name as in /run/netns/NAME, got {text!r}")
    return text


def _label_name(value: object) -> str:
    text = _string(value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ValueError(f"{text!r} is not a Prometheus label name")
    return text


def _optional_label_name(value: object) -> str:
    return "" if value == "" else _label_name(value)


def _label_value(value: object) -> str:
    text = _nonempty_string(value)
    if not text.isprintable():
        raise ValueError("must not contain control characters")
    return text


def _short_hostname() -> str:
    # The short name, as NixOS's networking.hostName and most scrape configs spell it.
    return socket.gethostname().split(".")[0] or "localhost"


def _uses_client(query: str, selector: str) -> bool:
    used = set(_PLACEHOLDER.findall(query))
    return "scope" in used or "client" in used or ("selector" in used and "$client" in selector)


def _url(value: object) -> str:
    text = _nonempty_string(value).rstrip("/")
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def _urls(value: object) -> tuple[str, ...]:
    # A list is an HA pair (or more): asked in order within one time budget.
    if isinstance(value, str):
        return (_url(value),)
    if not isinstance(value, list) or not value:
        raise TypeError(f"expected a URL or a non-empty list of URLs, got {_type_name(value)}")
    urls = []
    for index, item in enumerate(value):
        try:
            urls.append(_url(item))
        except (TypeError, ValueError) as error:
            raise type(error)(f"[{index}]: {error}") from None
    if len(set(urls)) != len(urls):
        raise ValueError("lists the same URL twice")
    return tuple(urls)


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a table of header names to values, got {_type_name(value)}")
    bad = []
    for name, header_value in value.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            bad.append(f"{name!r} is not a valid HTTP header name")
        elif not isinstance(header_value, str) or "\n" in header_value or "\r" in header_value:
            bad.append(f"the value of header {name!r} must be a one-line string")
        elif not _HEADER_VALUE.fullmatch(header_value):
            # HTTP drops a value's outer blanks and cannot carry control
            # characters or anything beyond Latin-1: requests would refuse
            # to send it, quoting the value (perhaps a secret) in its error.
            bad.append(
                f"the value of header {name!r} cannot be sent: it must be non-empty Latin-1 text without "
                "control characters or leading or trailing blanks"
            )
    if bad:
        raise ValueError("; ".join(bad))  # every bad header at once, like every other key
    return dict(value)


def _type_name(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _table(document: dict[str, Any], key: str, problems: _Problems) -> dict[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, dict):
        problems.add(key, f"expected a table [{key}], got {_type_name(value)}")
        return {}
    return value


def _section_reader(
    document: dict[str, Any], name: str, defaults: Any, problems: _Problems
) -> Callable[[str, Converter], Any]:
    """
    Given the document, a section's name and its settings dataclass with
    defaults, reject the section's unknown keys and return a function that
    reads one key (converted, or the default when absent or invalid).
    """
    section = _table(document, name, problems)
    keys = [field.name for field in dataclasses.fields(defaults) if not field.metadata.get("derived")]
    _reject_unknown(section, keys, name, problems)

    def read(key: str, convert: Converter) -> Any:
        return _take(section, key, name, convert, getattr(defaults, key), problems)

    return read


_TOP_KEYS = [
    "instance",
    "config_dir",
    "active_link",
    "state_dir",
    "restart_command",
    "restart_timeout",
    "lock_timeout",
    "textfile_dir",
    "servers",
    "prometheus",
    "failover",
    "health",
    "fleet",
]
_SERVER_KEYS = ["endpoint", "priority", "weight"]


def _parse_servers(document: dict[str, Any], config_dir: Path, problems: _Problems) -> tuple[Server, ...]:
    table = _table(document, "servers", problems)
    if "servers" not in document:
        problems.add("servers", "no servers configured (add a [servers.NAME] table per VPN server)")
        return ()
    if not table and isinstance(document.get("servers"), dict):
        problems.add("servers", "no servers configured (add a [servers.NAME] table per VPN server)")
    servers = []
    for name, options in table.items():
        prefix = f"servers.{name}"
        try:
            check_server_name(name)
        except ValueError as error:
            problems.add(prefix, str(error))
            continue
        if not isinstance(options, dict):
            problems.add(prefix, f"expected a table [servers.{name}], got {_type_name(options)}")
            continue
        _reject_unknown(options, _SERVER_KEYS, prefix, problems)
        endpoint = _take(options, "endpoint", prefix, _nonempty_string, None, problems)
        priority = _take(options, "priority", prefix, _priority, None, problems)
        weight = _take(options, "weight", prefix, _positive_number, 1.0, problems)
        servers.append(
            Server(name=name, config_path=config_dir / name, endpoint=endpoint, priority=priority, weight=weight)
        )
    return tuple(servers)


def parse_config(document: dict[str, Any], path: Path) -> Config:
    """
    Given a parsed TOML document and the file it came from, return the
    validated Config. Raise ConfigError listing every problem found.
    """
    problems = _Problems()
    _reject_unknown(document, _TOP_KEYS, "", problems)
    instance = _take(document, "instance", "", _instance_name, None, problems)
    base = Config(path=path, servers=(), **instance_defaults(instance))

    def top(key: str, convert: Converter) -> Any:
        return _take(document, key, "", convert, getattr(base, key), problems)

    config_dir = top("config_dir", _absolute_path)
    top_level = {
        "config_dir": config_dir,
        "active_link": top("active_link", _absolute_path),
        "state_dir": top("state_dir", _absolute_path),
        "restart_command": top("restart_command", _argv),
        "restart_timeout": top("restart_timeout", _timeout),
        "lock_timeout": top("lock_timeout", _timeout),
        "textfile_dir": top("textfile_dir", _absolute_path),
    }
    servers = _parse_servers(document, config_dir, problems)

    prom = _section_reader(document, "prometheus", PrometheusSettings(), problems)
    prometheus = PrometheusSettings(
        urls=prom("url", _urls) or (),
        timeout=prom("timeout", _timeout),
        ca_file=prom("ca_file", _absolute_path),
        insecure_skip_verify=prom("insecure_skip_verify", _boolean),
        bearer_token_file=prom("bearer_token_file", _absolute_path),
        username=prom("username", _nonempty_string),
        password_file=prom("password_file", _absolute_path),
        headers=prom("headers", _headers),
        url_hold_down=prom("url_hold_down", parse_duration),
    )
    if prometheus.password_file and not prometheus.username:
        problems.add("prometheus.password_file", "needs prometheus.username as well")
    if prometheus.username and not prometheus.password_file:
        problems.add("prometheus.username", "needs prometheus.password_file as well")
    if prometheus.bearer_token_file and prometheus.username:
        problems.add("prometheus.bearer_token_file", "use either a bearer token or a username, not both")

    fail = _section_reader(document, "failover", FailoverSettings(), problems)
    failover_placeholders = {"hosts", "label", "window", "scope", "client"}
    failover = FailoverSettings(
        window=fail("window", _positive_duration),
        hold_down=fail("hold_down", parse_duration),
        on_prometheus_error=fail("on_prometheus_error", _choice("random", "fail")),
        label=fail("label", _label_name),
        query=fail("query", _template({"hosts", "window"}, failover_placeholders)),
        latency_query=fail("latency_query", _template({"hosts", "window"}, failover_placeholders, empty_ok=True)),
        tie_epsilon=fail("tie_epsilon", _ratio),
        latency_tie=fail("latency_tie", _ratio),
        failback_after=fail("failback_after", _failback_after),
        probation=fail("probation", parse_duration),
    )

    health_key = _section_reader(document, "health", HealthSettings(), problems)
    health = HealthSettings(
        threshold=health_key("threshold", _ratio),
        max_failures=health_key("max_failures", _positive_int),
        window=health_key("window", _positive_duration),
        min_window=health_key("min_window", _positive_duration),
        selector=health_key("selector", _label_matchers),
        query=health_key("query", _template({"window"}, {"selector", "window", "scope", "client"})),
        on_no_data=health_key("on_no_data", _choice("failure", "ignore")),
        failover_command=health_key("failover_command", _argv),
        interface=health_key("interface", _nonempty_string),
        netns=health_key("netns", _netns_name),
        handshake_timeout=health_key("handshake_timeout", _timeout),
    )
    if health.min_window > health.window:
        problems.add("health.min_window", f"must not be longer than health.window ({health.window:g}s)")
    if health.netns and not health.interface:
        problems.add("health.netns", "needs health.interface as well")
    if failover.failback_after is not None and failover.failback_after < health.min_window:
        # Failback judges the preferred server's loss in slices of
        # min_window; a shorter span would hold less than one slice.
        problems.add(
            "failover.failback_after",
            f"must not be shorter than health.min_window ({health.min_window:g}s)",
        )

    fleet_key = _section_reader(document, "fleet", FleetSettings(), problems)
    fleet = FleetSettings(
        client=fleet_key("client", _label_value) or _short_hostname(),
        client_label=fleet_key("client_label", _optional_label_name),
        ranking_scope=fleet_key("ranking_scope", _choice("client", "fleet")),
    )
    if fleet.client_label and not _uses_client(health.query, health.selector):
        # Without it, one client's dead tunnel is averaged with every other client's healthy ones.
        problems.add(
            "health.query",
            "must use $scope or $client (in the query or health.selector) when fleet.client_label is set, "
            "or it judges every client's tunnel probes together",
        )

    _check_paths_apart(top_level, problems)
    if problems.items:
        raise ConfigError(path, problems.items)
    return Config(
        path=path,
        servers=servers,
        instance=instance,
        prometheus=prometheus,
        failover=failover,
        health=health,
        fleet=fleet,
        **top_level,
    )


def load_config(path: Path) -> Config:
    """
    Given a config path (the commands take it from --config,
    WG_FAILOVER_CONFIG or the default), read and validate it and return the
    Config. Raise ConfigError naming the file if
    it can't be read, isn't TOML, or holds invalid settings.
    """
    path = Path(path)
    try:
        # Followed if a symlink: NixOS links /etc files into the store.
        raw = read_regular_file(path, MAX_CONFIG_BYTES, follow_symlinks=True)
    except FileNotFoundError:
        raise ConfigError(path, "no such file (set --config or WG_FAILOVER_CONFIG)") from None
    except RefusedFile as error:
        raise ConfigError(path, f"cannot read: it {error.strerror}") from None
    except OSError as error:
        raise ConfigError(path, f"cannot read: {error.strerror}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(path, "not valid TOML: nested too deeply") from None
    return parse_config(document, path)


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _check_paths_apart(top_level: dict[str, Any], problems: _Problems) -> None:
    """Given the top-level settings, add a problem for each pair of paths that must not overlap."""
    config_dir, state_dir, active_link = top_level["config_dir"], top_level["state_dir"], top_level["active_link"]
    if _inside(active_link, config_dir):
        # The first switch would replace a server's WireGuard file (its
        # private key) with a symlink, or add a "server" of that name.
        problems.add("active_link", f"must not be inside config_dir ({config_dir}); give it a directory of its own")
    if _inside(state_dir, config_dir) or _inside(config_dir, state_dir):
        # Our state files would read as servers' configs, or theirs as state.
        problems.add("state_dir", f"must not be config_dir ({config_dir}) or inside it, nor contain it")


def check_referenced_files(config: Config) -> tuple[list[str], list[str]]:
    """
    Given a valid config, return (errors, warnings) about the files it names:
    a missing credential or CA file is an error (every query would fail), a
    server without a WireGuard config is a warning (the others still work,
    and secrets may be decrypted only at boot).
    """
    errors = []
    for key in ("ca_file", "bearer_token_file", "password_file"):
        file_path = getattr(config.prometheus, key)
        if file_path is not None and not os.access(file_path, os.R_OK):
            errors.append(f"prometheus.{key}: {file_path} is missing or unreadable")
    warnings = [
        f"servers.{server.name}: its WireGuard config {server.config_path} does not exist"
        for server in config.servers
        if not server.config_path.is_file()
    ]
    if config.servers and len(warnings) == len(config.servers):
        errors.append(f"config_dir: no server has a WireGuard config in {config.config_dir}")
    for server in config.servers:
        if server.config_path.is_file() and server.endpoint is None:
            try:
                resolve_endpoint(server)
            except ConfigError as error:
                errors.append(f"servers.{server.name}: {'; '.join(error.problems)}")
    for key, directory in (("active_link", config.active_link.parent), ("textfile_dir", config.textfile_dir)):
        if directory is not None and not directory.is_dir():
            errors.append(f"{key}: the directory {directory} does not exist")
    commands = (
        ("restart_command", config.restart_command),
        ("health.failover_command", config.health.failover_command),
    )
    for key, argv in commands:
        if argv and shutil.which(argv[0]) is None:
            errors.append(f"{key}: program not found: {argv[0]}")
    errors += check_permissions(config)[0]
    return errors, warnings


# What --check-config cannot know without asking Prometheus and running commands.
NOT_CHECKED_OFFLINE = (
    "not checked: whether Prometheus answers, accepts the credentials and has the prober's series "
    "(--check-config --online asks it), and whether restart_command and failover_command succeed"
)


def check_permissions(config: Config) -> tuple[list[str], list[str]]:
    """
    Given a config, return (errors, warnings) about who may change what it
    trusts. Writable by other users (o+w) is an error: anyone on the host
    could then plant a state file or replace a server's WireGuard config
    (its endpoint and keys, so the tunnel's traffic). Writable by the group
    is a warning: a group of administrators is a deliberate choice. What
    does not exist yet is not checked.
    """
    errors: list[str] = []
    warnings: list[str] = []
    targets = [("state_dir", config.state_dir), ("config_dir", config.config_dir)]
    targets += [(f"servers.{server.name}", server.config_path) for server in config.servers]
    for key, path in targets:
        try:
            status = os.stat(path)
        except OSError:
            continue
        if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
            continue  # a device or FIFO is no config at all; its readers refuse it
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o002:
            errors.append(f"{key}: {path} is writable by other users (mode {mode:04o}); chmod o-w it")
        elif mode & 0o020:
            warnings.append(f"{key}: {path} is writable by its group (mode {mode:04o})")
    return errors, warnings
