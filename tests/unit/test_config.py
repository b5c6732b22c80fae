"""The configuration file: every key, its default, and each bad value's message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from wgfailover.commands import wg_failover, wg_health_check, wg_select
from wgfailover.config import (
    DEFAULT_FAILOVER_QUERY,
    DEFAULT_HEALTH_QUERY,
    Config,
    describe_duration,
    load_config,
    parse_config,
    parse_duration,
)
from wgfailover.errors import ConfigError, ExitCode
from wgfailover.policy.ranking import LATENCY_TIE_RATIO

MINIMAL = {"servers": {"server1": {}}}


def problems_of(document: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, Path("/etc/wg-failover/config.toml"))
    assert caught.value.exit_code == ExitCode.CONFIG
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400), ("2w", 1209600), ("30", 30)],
)
def test_durations_take_prometheus_syntax_or_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("number", [0, 45, 2.5])
def test_durations_take_plain_numbers(number: float) -> None:
    assert parse_duration(number) == number


@pytest.mark.parametrize("bad", ["", "m5", "5 m", "5mm", "1h 30m", "-5s", "five", True, [5], "inf", "nan"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_every_default_matches_the_documented_contract() -> None:
    config = parse_config(MINIMAL, Path("c.toml"))
    assert config.instance is None  # one tunnel per host
    assert config.config_dir == Path("/run/secrets/wireguard")
    assert config.active_link == Path("/run/wg-active.conf")
    assert config.state_dir == Path("/var/lib/wg-failover")
    assert config.restart_command == ("systemctl", "restart", "wg.service")
    assert config.restart_timeout == 60
    assert config.lock_timeout == 30
    assert config.textfile_dir is None
    assert config.prometheus.url is None
    assert config.prometheus.urls == ()
    assert config.prometheus.url_hold_down == 300
    assert config.prometheus.timeout == 5
    assert config.prometheus.insecure_skip_verify is False
    assert config.prometheus.headers == {}
    assert config.failover.window == 300
    assert config.failover.hold_down == 1800
    assert config.failover.on_prometheus_error == "random"
    assert config.failover.label == "host"
    assert config.failover.query == DEFAULT_FAILOVER_QUERY
    assert config.failover.failback_after is None  # never fail back
    assert config.failover.probation == 20
    assert config.servers[0].priority is None  # all equal
    assert config.health.threshold == 0.15
    assert config.health.max_failures == 3
    assert config.health.window == 300
    assert config.health.min_window == 30
    assert config.health.selector == 'job="vpn-prober"'
    assert config.health.query == DEFAULT_HEALTH_QUERY
    assert config.health.on_no_data == "failure"
    assert config.health.failover_command is None
    assert config.health.handshake_timeout == 180
    assert config.servers[0].config_path == Path("/run/secrets/wireguard/server1")


def test_every_key_of_the_contract_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
config_dir = "/srv/wg"
active_link = "/run/x/active.conf"
state_dir = "/var/lib/x"
restart_command = ["systemctl", "restart", "wg-quick@wg0.service"]
restart_timeout = "2m"
lock_timeout = 10
textfile_dir = "/var/lib/node"

[servers.server1]
endpoint = "203.0.113.10"
priority = 1
[servers.server2]

[prometheus]
url = "https://prom.example.com/prometheus/"
timeout = "3s"
ca_file = "/etc/ssl/ca.pem"
bearer_token_file = "/run/credentials/token"
headers = { X-Scope-OrgID = "tenant1" }

[failover]
window = "10m"
hold_down = "1h"
on_prometheus_error = "fail"
label = "instance"
tie_epsilon = 0.05
failback_after = "15m"
probation = "0"
query = 'my_loss{instance=~"$hosts"}[$window]'
latency_query = ""

[health]
threshold = 0.2
max_failures = 5
window = "4m"
min_window = "45s"
selector = 'job="tunnel"'
on_no_data = "ignore"
failover_command = ["systemctl", "start", "wg-failover.service"]
interface = "wg0"
netns = "vpn"
handshake_timeout = "4m"
"""
    )
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.config_dir == Path("/srv/wg")
    assert config.active_link == Path("/run/x/active.conf")
    assert config.state_dir == Path("/var/lib/x")
    assert config.restart_command == ("systemctl", "restart", "wg-quick@wg0.service")
    assert config.restart_timeout == 120
    assert config.lock_timeout == 10
    assert config.textfile_dir == Path("/var/lib/node")
    assert [(s.name, s.endpoint, s.config_path) for s in config.servers] == [
        ("server1", "203.0.113.10", Path("/srv/wg/server1")),
        ("server2", None, Path("/srv/wg/server2")),
    ]
    assert config.prometheus.url == "https://prom.example.com/prometheus"
    assert config.prometheus.timeout == 3
    assert config.prometheus.ca_file == Path("/etc/ssl/ca.pem")
    assert config.prometheus.bearer_token_file == Path("/run/credentials/token")
    assert config.prometheus.headers == {"X-Scope-OrgID": "tenant1"}
    assert config.failover.window == 600
    assert config.failover.hold_down == 3600
    assert config.failover.on_prometheus_error == "fail"
    assert config.failover.label == "instance"
    assert config.failover.tie_epsilon == 0.05
    assert config.failover.failback_after == 900
    assert config.failover.probation == 0  # disabled
    assert config.priorities == {"server1": 1, "server2": None}
    assert config.failover.latency_query == ""
    assert config.health.threshold == 0.2
    assert config.health.max_failures == 5
    assert config.health.window == 240
    assert config.health.min_window == 45
    assert config.health.selector == 'job="tunnel"'
    assert config.health.on_no_data == "ignore"
    assert config.health.failover_command == ("systemctl", "start", "wg-failover.service")
    assert config.health.interface == "wg0"
    assert config.health.netns == "vpn"
    assert config.health.handshake_timeout == 240


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"servers": {"s": {}}, "stat_dir": "/x"}, "stat_dir: unknown key (did you mean 'state_dir'?)"),
        (
            {"servers": {"s": {}}, "health": {"treshold": 0.2}},
            "health.treshold: unknown key (did you mean 'health.threshold'?)",
        ),
        ({"servers": {"s": {"endpont": "a"}}}, "servers.s.endpont: unknown key (did you mean 'servers.s.endpoint'?)"),
        ({"servers": {"s": {}}, "zzz": 1}, "zzz: unknown key"),
        (
            {"servers": {"s": {"restart_timeout": "2m"}}},
            "servers.s.restart_timeout: unknown key (a top-level key: move it above the first [table])",
        ),
        (
            {**MINIMAL, "health": {"state_dir": "/x"}},
            "health.state_dir: unknown key (a top-level key: move it above the first [table])",
        ),
        (
            {**MINIMAL, "failover": {"hold_down": "-5m"}},
            "failover.hold_down: '-5m' is not a duration (use Prometheus syntax like '90s', '5m', '1h30m', or a number of seconds)",
        ),
        (
            {**MINIMAL, "failover": {"hold_down": -5}},
            "failover.hold_down: -5 is negative; a duration must be 0 or more",
        ),
        (
            {**MINIMAL, "failover": {"probation": -1}},
            "failover.probation: -1 is negative; a duration must be 0 or more",
        ),
        ({}, "servers: no servers configured (add a [servers.NAME] table per VPN server)"),
        ({"servers": {}}, "servers: no servers configured (add a [servers.NAME] table per VPN server)"),
        (
            {"servers": {"../x": {}}},
            "servers.../x: server name '../x' is not a safe file name (letters, digits, '_', '.', '-'; no leading dot)",
        ),
        (
            {"servers": {".hidden": {}}},
            "servers..hidden: server name '.hidden' is not a safe file name (letters, digits, '_', '.', '-'; no leading dot)",
        ),
        ({"servers": {"s": "x"}}, "servers.s: expected a table [servers.s], got a string"),
        ({**MINIMAL, "config_dir": "relative/dir"}, "config_dir: must be an absolute path, got 'relative/dir'"),
        ({**MINIMAL, "state_dir": 5}, "state_dir: expected a string, got a number"),
        (
            {**MINIMAL, "restart_command": "systemctl restart wg"},
            'restart_command: expected a list of arguments like ["systemctl", "restart", "wg.service"], got the string \'systemctl restart wg\'',
        ),
        (
            {**MINIMAL, "restart_command": []},
            'restart_command: is empty; give the program and its arguments, e.g. ["systemctl", "restart", "wg.service"]',
        ),
        ({**MINIMAL, "restart_command": ["a", ""]}, "restart_command: every argument must be a non-empty string"),
        ({**MINIMAL, "restart_timeout": "0s"}, "restart_timeout: must be longer than zero"),
        (
            {**MINIMAL, "prometheus": {"url": "prom:9090"}},
            "prometheus.url: expected an http:// or https:// URL, got 'prom:9090'",
        ),
        (
            {**MINIMAL, "prometheus": {"url": ["https://a.example", "prom:9090"]}},
            "prometheus.url: [1]: expected an http:// or https:// URL, got 'prom:9090'",
        ),
        (
            {**MINIMAL, "prometheus": {"url": []}},
            "prometheus.url: expected a URL or a non-empty list of URLs, got a list",
        ),
        (
            {**MINIMAL, "prometheus": {"url": ["https://a.example", "https://a.example/"]}},
            "prometheus.url: lists the same URL twice",
        ),
        (
            {**MINIMAL, "prometheus": {"urls": ["https://a.example"]}},
            "prometheus.urls: unknown key (did you mean 'prometheus.url'?)",
        ),
        (
            {**MINIMAL, "prometheus": {"url_hold_down": "-1m"}},
            "prometheus.url_hold_down: '-1m' is not a duration (use Prometheus syntax like '90s', '5m', '1h30m', or a number of seconds)",
        ),
        (
            {**MINIMAL, "prometheus": {"timeout": "soon"}},
            "prometheus.timeout: 'soon' is not a duration (use Prometheus syntax like '90s', '5m', '1h30m', or a number of seconds)",
        ),
        (
            {**MINIMAL, "prometheus": {"insecure_skip_verify": "yes"}},
            "prometheus.insecure_skip_verify: expected true or false, got a string",
        ),
        ({**MINIMAL, "prometheus": {"username": "u"}}, "prometheus.username: needs prometheus.password_file as well"),
        (
            {**MINIMAL, "prometheus": {"password_file": "/p"}},
            "prometheus.password_file: needs prometheus.username as well",
        ),
        (
            {**MINIMAL, "prometheus": {"headers": {"Bad Header": "x"}}},
            "prometheus.headers: 'Bad Header' is not a valid HTTP header name",
        ),
        (
            {**MINIMAL, "prometheus": {"headers": {"X-A": "a\nb"}}},
            "prometheus.headers: the value of header 'X-A' must be a one-line string",
        ),
        (
            {**MINIMAL, "prometheus": {"headers": {"X Bad": "x", "Authorization": 5}}},
            "prometheus.headers: 'X Bad' is not a valid HTTP header name; "
            "the value of header 'Authorization' must be a one-line string",
        ),
        ({**MINIMAL, "prometheus": "x"}, "prometheus: expected a table [prometheus], got a string"),
        (
            {**MINIMAL, "failover": {"on_prometheus_error": "panic"}},
            "failover.on_prometheus_error: must be one of 'random', 'fail', got 'panic'",
        ),
        ({**MINIMAL, "failover": {"label": "1host"}}, "failover.label: '1host' is not a Prometheus label name"),
        ({**MINIMAL, "failover": {"query": 'loss{host=~"$hosts"}'}}, "failover.query: must use $window"),
        (
            {**MINIMAL, "failover": {"query": "loss[$window] $host"}},
            "failover.query: unknown placeholder $host (allowed: $client, $hosts, $label, $scope, $window)",
        ),
        ({**MINIMAL, "failover": {"tie_epsilon": 2}}, "failover.tie_epsilon: must be between 0 and 1, got 2"),
        ({**MINIMAL, "health": {"threshold": 1.5}}, "health.threshold: must be between 0 and 1, got 1.5"),
        (
            {**MINIMAL, "health": {"threshold": "15%"}},
            "health.threshold: expected a number between 0 and 1, got a string",
        ),
        ({**MINIMAL, "health": {"max_failures": 0}}, "health.max_failures: must be at least 1, got 0"),
        ({**MINIMAL, "health": {"max_failures": 2.5}}, "health.max_failures: expected a whole number, got a number"),
        (
            {**MINIMAL, "health": {"min_window": "10m"}},
            "health.min_window: must not be longer than health.window (300s)",
        ),
        (
            {**MINIMAL, "health": {"on_no_data": "panic"}},
            "health.on_no_data: must be one of 'failure', 'ignore', got 'panic'",
        ),
        ({**MINIMAL, "health": {"netns": "vpn"}}, "health.netns: needs health.interface as well"),
        (
            {"servers": {"s": {"priority": "high"}}},
            "servers.s.priority: expected a whole number (lower is preferred), got a string",
        ),
        (
            {"servers": {"s": {"priority": 1.5}}},
            "servers.s.priority: expected a whole number (lower is preferred), got a number",
        ),
        (
            {"servers": {"s": {"priority": True}}},
            "servers.s.priority: expected a whole number (lower is preferred), got a boolean",
        ),
        ({"servers": {"s": {"priority": -1}}}, "servers.s.priority: must be 0 or more, got -1"),
        ({"servers": {"s": {"priorty": 1}}}, "servers.s.priorty: unknown key (did you mean 'servers.s.priority'?)"),
        (
            {**MINIMAL, "failover": {"failback_after": "0s"}},
            "failover.failback_after: must be longer than zero (leave it unset never to fail back)",
        ),
        (
            {**MINIMAL, "failover": {"failback_after": "10s"}},
            "failover.failback_after: must not be shorter than health.min_window (30s)",
        ),
        (
            {**MINIMAL, "failover": {"failback_after": "soon"}},
            "failover.failback_after: 'soon' is not a duration (use Prometheus syntax like '90s', '5m', '1h30m', or a number of seconds)",
        ),
        (
            {**MINIMAL, "health": {"interface": "wg0", "netns": "/run/netns/wg"}},
            "health.netns: expected a namespace name as in /run/netns/NAME, got '/run/netns/wg'",
        ),
        (
            {**MINIMAL, "health": {"failover_command": "systemctl start x"}},
            'health.failover_command: expected a list of arguments like ["systemctl", "restart", "wg.service"], got the string \'systemctl start x\'',
        ),
    ],
)
def test_each_bad_value_is_reported_with_its_key(document: dict, problem: str) -> None:
    assert problems_of(document) == [problem]


def test_an_instance_gets_its_own_state_link_and_tunnel_by_default() -> None:
    # Two instances on one host must never share a lock, `current` or a link,
    # nor restart each other's tunnel.
    config = parse_config({**MINIMAL, "instance": "wg1"}, Path("wg1.toml"))
    assert config.instance == "wg1"
    assert config.state_dir == Path("/var/lib/wg-failover/wg1")
    assert config.active_link == Path("/run/wg-active-wg1.conf")
    assert config.restart_command == ("systemctl", "restart", "wg-quick@wg1.service")
    assert config.config_dir == Path("/run/secrets/wireguard")  # servers may be shared: unchanged


def test_what_the_config_sets_wins_over_the_instance_defaults() -> None:
    document = {
        **MINIMAL,
        "instance": "office",
        "state_dir": "/srv/state",
        "active_link": "/run/office/active.conf",
        "restart_command": ["systemctl", "restart", "wg-office.service"],
    }
    config = parse_config(document, Path("office.toml"))
    assert (config.state_dir, config.active_link, config.restart_command) == (
        Path("/srv/state"),
        Path("/run/office/active.conf"),
        ("systemctl", "restart", "wg-office.service"),
    )


@pytest.mark.parametrize("name", ["wg0", "office", "site-b.v6", "0", "a_b", "x" * 64])
def test_an_instance_name_is_a_file_unit_and_label_safe_word(name: str) -> None:
    assert parse_config({**MINIMAL, "instance": name}, Path("c.toml")).instance == name


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "'' is not an instance name"),
        ("..", "'..' is not an instance name"),
        (".wg0", "'.wg0' is not an instance name"),
        ("../etc", "'../etc' is not an instance name"),
        ("wg 0", "'wg 0' is not an instance name"),
        ("wg@0", "'wg@0' is not an instance name"),
        ("x" * 65, f"'{'x' * 65}' is not an instance name"),
        (0, "expected a string, got a number"),
    ],
)
def test_a_bad_instance_name_is_refused_with_its_key(value: object, problem: str) -> None:
    (reported,) = problems_of({**MINIMAL, "instance": value})
    assert reported.startswith(f"instance: {problem}")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"servers": {"s": {}}, "state_dir": "x", "health": {"threshold": 3, "max_failures": 0}})
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["state_dir", "health.threshold", "health.max_failures"]


def test_the_message_names_the_file_and_counts_the_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"servers": {"s": {}}, "a": 1, "b": 2}, Path("/etc/wg.toml"))
    assert str(caught.value) == "/etc/wg.toml: 2 problems: a: unknown key; b: unknown key"


def test_a_directory_given_as_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: it is a directory, not a regular file"


def test_a_missing_file_says_how_to_point_at_another(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert str(caught.value) == f"{tmp_path / 'nope.toml'}: no such file (set --config or WG_FAILOVER_CONFIG)"


def test_invalid_toml_names_the_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[servers.a\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not valid TOML: ")
    assert "line 1" in str(caught.value)


def test_binary_content_is_refused_as_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_the_environment_variable_names_the_config_file_of_every_command(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[servers.from_env]\n")
    for main in (wg_select.main, wg_failover.main, wg_health_check.main):
        # Offline: the defaults' directories (config_dir, active_link's) do not exist here.
        result = CliRunner().invoke(main, ["--check-config", "--offline"], env={"WG_FAILOVER_CONFIG": str(path)})
        assert result.output.splitlines()[-1].startswith(f"{path}: valid; 1 servers (from_env) (offline")
        assert result.exit_code == 0


def test_prometheus_url_takes_a_list_asked_in_order() -> None:
    urls = ["https://prom-a.example.com", "https://prom-b.example.com/"]
    config = parse_config({**MINIMAL, "prometheus": {"url": urls, "url_hold_down": "10m"}}, Path("c.toml"))
    assert config.prometheus.urls == ("https://prom-a.example.com", "https://prom-b.example.com")
    assert config.prometheus.url == "https://prom-a.example.com"
    assert config.prometheus.url_hold_down == 600


def test_a_single_prometheus_url_is_a_list_of_one() -> None:
    config = parse_config({**MINIMAL, "prometheus": {"url": "https://prom.example.com"}}, Path("c.toml"))
    assert config.prometheus.urls == ("https://prom.example.com",)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"), (86400 * 30, "30d"), (90061, "1d1h1m1s")],
)
def test_a_duration_is_described_as_a_person_writes_it(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_fleet_defaults_to_one_client_per_backend_named_after_the_host() -> None:
    import socket

    fleet = parse_config(MINIMAL, Path("c.toml")).fleet
    assert (fleet.client, fleet.client_label, fleet.ranking_scope) == (socket.gethostname().split(".")[0], "", "client")


def test_fleet_and_weights_are_read() -> None:
    document = {
        "servers": {"a": {"weight": 2}, "b": {}},
        "fleet": {"client": "laptop-17", "client_label": "wg_client", "ranking_scope": "fleet"},
    }
    config = parse_config(document, Path("c.toml"))
    assert [server.weight for server in config.servers] == [2.0, 1.0]
    assert (config.fleet.client, config.fleet.client_label, config.fleet.ranking_scope) == (
        "laptop-17",
        "wg_client",
        "fleet",
    )


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"servers": {"a": {"weight": 0}}}, "servers.a.weight: must be a number above 0, got 0"),
        ({"servers": {"a": {"weight": "2"}}}, "servers.a.weight: expected a number, got a string"),
        (
            {**MINIMAL, "fleet": {"client_label": "wg-client"}},
            "fleet.client_label: 'wg-client' is not a Prometheus label name",
        ),
        (
            {**MINIMAL, "fleet": {"ranking_scope": "own"}},
            "fleet.ranking_scope: must be one of 'client', 'fleet', got 'own'",
        ),
        ({**MINIMAL, "fleet": {"client": ""}}, "fleet.client: must not be empty"),
        (
            {**MINIMAL, "fleet": {"client_label": "wg_client"}, "health": {"query": "up{$selector}[$window]"}},
            "health.query: must use $scope or $client (in the query or health.selector) when fleet.client_label is set, "
            "or it judges every client's tunnel probes together",
        ),
    ],
)
def test_bad_fleet_and_weight_values_are_reported(document: dict, problem: str) -> None:
    assert problems_of(document) == [problem]


def test_failover_latency_tie_defaults_to_the_ranking_rule_and_is_read() -> None:
    assert parse_config(MINIMAL, Path("c.toml")).failover.latency_tie == LATENCY_TIE_RATIO == 0.10
    document = {**MINIMAL, "failover": {"latency_tie": 0.5}}
    assert parse_config(document, Path("c.toml")).failover.latency_tie == 0.5


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1.5, "failover.latency_tie: must be between 0 and 1, got 1.5"),
        (-0.1, "failover.latency_tie: must be between 0 and 1, got -0.1"),
        ("10%", "failover.latency_tie: expected a number between 0 and 1, got a string"),
    ],
)
def test_a_bad_latency_tie_is_reported(value: object, problem: str) -> None:
    assert problems_of({**MINIMAL, "failover": {"latency_tie": value}}) == [problem]


def test_a_custom_health_selector_may_carry_the_client_itself() -> None:
    document = {
        **MINIMAL,
        "fleet": {"client_label": "wg_client"},
        "health": {"selector": 'job="vpn-prober",instance=~"$client:.*"', "query": "1 - avg(up{$selector}[$window])"},
    }
    assert parse_config(document, Path("c.toml")).fleet.client_label == "wg_client"
