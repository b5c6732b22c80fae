"""Credentials stay secret, and TLS is verified unless the config says not to.

The commands run as real processes, with --verbose, against a Prometheus
that is hostile in every way it can be: it echoes the request's headers
(the Authorization header included) back in its error messages, warnings
and redirects. The token or password, in clear or base64 as it travels in
the header, must appear in no output, no state file, no metrics file and
no argv of the commands wg-failover runs.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.helpers import FakePrometheus, Install, refusing_port, run, serve, write_install

TOKEN = "wgf-secret-token-7f3a9c1e5b"
USERNAME = "wgf-user"
PASSWORD = "wgf-secret-pass-2d8e4b6a"
FORMS = {
    "token": [TOKEN],
    "password": [PASSWORD, base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()],
}

# Writes its argv and environment where the test can grep them, then succeeds.
DUMP = "import json, os, sys; open(sys.argv[1], 'a').write(json.dumps([sys.argv, dict(os.environ)]) + '\\n')"


def echo(status: int, shape: str) -> Callable[[FakePrometheus], Callable[[str], tuple[int, dict[str, str], bytes]]]:
    """An answer that quotes every request header back, in the given shape."""

    def make(fake: FakePrometheus) -> Callable[[str], tuple[int, dict[str, str], bytes]]:
        def answer(query: str) -> tuple[int, dict[str, str], bytes]:
            headers = json.dumps(fake.requests[-1]["headers"])
            if shape == "json-error":
                body = {"status": "error", "errorType": "unauthorized", "error": f"bad credentials {headers}"}
                return status, {"Content-Type": "application/json"}, json.dumps(body).encode()
            if shape == "text":
                return status, {"Content-Type": "text/plain"}, f"denied: {headers}".encode()
            if shape == "warnings":
                body = {
                    "status": "success",
                    "warnings": [f"you sent {headers}"],
                    "data": {"resultType": "vector", "result": [{"metric": {"host": headers}, "value": [0, "0.9"]}]},
                }
                return status, {"Content-Type": "application/json"}, json.dumps(body).encode()
            if shape == "redirect":
                auth = fake.requests[-1]["headers"].get("Authorization", "")
                return status, {"Location": f"http://127.0.0.1:1/login?echo={auth}&t={TOKEN}"}, b""
            return status, {"Content-Type": "text/html"}, f"<html>{headers}</html>".encode()

        return answer

    return make


HOSTILE = {
    "401-json-echo": echo(401, "json-error"),
    "500-text-echo": echo(500, "text"),
    "200-error-status-echo": echo(200, "json-error"),
    "200-warnings-echo": echo(200, "warnings"),
    "302-redirect-echo": echo(302, "redirect"),
    "502-html-echo": echo(502, "html"),
}


@pytest.fixture
def port() -> Iterator[int]:
    yield from refusing_port()


def write_secret(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def secured_install(tmp_path: Path, url: str, kind: str, extra: str = "") -> Install:
    secrets = tmp_path / "credentials"
    secrets.mkdir(exist_ok=True)
    if kind == "token":
        auth = f'bearer_token_file = "{write_secret(secrets / "token", TOKEN)}"\n'
    else:
        auth = f'username = "{USERNAME}"\npassword_file = "{write_secret(secrets / "password", PASSWORD)}"\n'
    dump = tmp_path / "argv.jsonl"
    install = write_install(
        tmp_path,
        prometheus_url=url,
        restart_command=(sys.executable, "-c", DUMP, str(dump)),
        extra=(
            '[health]\nmax_failures = 1\nmin_window = "1s"\n'
            f"failover_command = {json.dumps([sys.executable, '-c', DUMP, str(dump)])}\n{extra}"
        ),
    )
    text = install.config.read_text().replace("timeout = 10\n", f"timeout = 10\n{auth}", 1)
    install.config.write_text(text)
    return install


def assert_nowhere(kind: str, root: Path, *outputs: str) -> None:
    """No form of the secret in the outputs, nor in any file under root but the secret's own and the config."""
    for form in FORMS[kind]:
        for output in outputs:
            assert form not in output, output
        for path in root.rglob("*"):
            if path.is_file() and path.parent.name != "credentials" and path.name != "config.toml":
                assert form not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("kind", ["token", "password"])
@pytest.mark.parametrize("scenario", sorted(HOSTILE))
def test_a_hostile_prometheus_echoing_credentials_never_gets_them_into_output_or_files(
    tmp_path: Path, kind: str, scenario: str
) -> None:
    fake = FakePrometheus()
    fake.answer = HOSTILE[scenario](fake)
    for server in serve(fake):
        install = secured_install(tmp_path, server.url, kind)
        assert run("wg-select", install).returncode == 0
        # Health first: right after a switch it would wait for new data.
        health = run("wg-health-check", install, "--verbose")
        failover = run("wg-failover", install, "--verbose")
        # Against a 200 with data a switch happens; otherwise random fallback.
        assert failover.returncode == 0, failover.stderr
        assert health.returncode in (0, 69), health.stderr
        assert len(fake.requests) >= 2
        assert any("Authorization" in request["headers"] for request in fake.requests)
        assert_nowhere(kind, tmp_path, failover.stdout, failover.stderr, health.stdout, health.stderr)


@pytest.mark.parametrize("kind", ["token", "password"])
def test_credentials_are_not_in_the_argv_or_environment_of_restart_and_failover_commands(
    tmp_path: Path, kind: str
) -> None:
    for server in serve(FakePrometheus(loss=0.9)):
        install = secured_install(tmp_path, server.url, kind)
        assert run("wg-select", install).returncode == 0
        health = run("wg-health-check", install)
        assert health.returncode == 0, health.stderr
        assert "failover triggered" in health.stdout
        other = next(name for name in install.servers if f"{name}\n".encode() != install.read("current"))
        assert run("wg-failover", install, "--to", other).returncode == 0
        dumps = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
        assert len(dumps) == 2  # the triggered failover, then the restart
        assert_nowhere(kind, tmp_path, health.stdout, health.stderr)


@pytest.mark.parametrize("kind", ["token", "password"])
def test_unreachable_prometheus_errors_carry_no_credentials(tmp_path: Path, port: int, kind: str) -> None:
    install = secured_install(tmp_path, f"http://127.0.0.1:{port}", kind)
    assert run("wg-select", install).returncode == 0
    health = run("wg-health-check", install, "--verbose")
    failover = run("wg-failover", install, "--verbose")
    assert failover.returncode == 0 and health.returncode == 69
    assert "connection refused" in health.stderr
    assert_nowhere(kind, tmp_path, failover.stdout, failover.stderr, health.stdout, health.stderr)


def test_a_password_in_the_url_is_masked_in_every_message(tmp_path: Path, port: int) -> None:
    install = write_install(tmp_path, prometheus_url=f"http://{USERNAME}:{PASSWORD}@127.0.0.1:{port}")
    health = run("wg-health-check", install, "--verbose")
    assert health.returncode == 69
    assert f"http://***@127.0.0.1:{port}" in health.stderr
    assert_nowhere("password", tmp_path, health.stdout, health.stderr)


def test_a_token_with_spaces_is_a_config_error_that_does_not_quote_it(tmp_path: Path, port: int) -> None:
    install = secured_install(tmp_path, f"http://127.0.0.1:{port}", "token")
    write_secret(tmp_path / "credentials" / "token", f"{TOKEN} {TOKEN}")
    health = run("wg-health-check", install)
    assert health.returncode == 78
    assert health.stderr.strip().splitlines() == [
        f"wg-health-check: error: {tmp_path / 'credentials' / 'token'}: "
        "prometheus.bearer_token_file: the token contains spaces or control characters"
    ]
    assert TOKEN not in health.stderr


# --- secret files readable by others ---------------------------------------------


@pytest.mark.parametrize("kind", ["token", "password"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secret_file_readable_by_other_users_is_warned_about(tmp_path: Path, kind: str, mode: int) -> None:
    for server in serve(FakePrometheus(loss=0.0)):
        install = secured_install(tmp_path, server.url, kind)
        secret = next((tmp_path / "credentials").iterdir())
        secret.chmod(mode)
        health = run("wg-health-check", install)
        assert health.returncode == 0, health.stderr
        key = "bearer_token_file" if kind == "token" else "password_file"
        warnings = [line for line in health.stderr.splitlines() if "readable by other users" in line]
        assert warnings == [
            f"wg-health-check: warning: {secret} (prometheus.{key}) is readable by other users "
            f"(mode {mode:04o}); chmod 600 it"
        ]
        assert_nowhere(kind, tmp_path, health.stdout, health.stderr)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_secret_file_is_not_warned_about(tmp_path: Path, mode: int) -> None:
    for server in serve(FakePrometheus(loss=0.0)):
        install = secured_install(tmp_path, server.url, "token")
        (tmp_path / "credentials" / "token").chmod(mode)
        health = run("wg-health-check", install)
        assert health.returncode == 0
        assert "readable by other users" not in health.stderr


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made by the openssl CLI: (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=wg-failover test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_prometheus(certificate: tuple[Path, Path]) -> Iterator[FakePrometheus]:
    yield from serve(FakePrometheus(loss=0.0), tls=certificate)


def test_an_untrusted_certificate_is_refused_by_default_before_credentials_are_sent(
    tmp_path: Path, https_prometheus: FakePrometheus
) -> None:
    install = secured_install(tmp_path, https_prometheus.url, "token")
    health = run("wg-health-check", install)
    assert health.returncode == 69
    [line] = health.stderr.strip().splitlines()
    assert line.startswith(f"wg-health-check: error: cannot reach Prometheus at {https_prometheus.url}: ")
    assert "TLS certificate verification failed" in line and "prometheus.ca_file" in line
    assert https_prometheus.requests == []  # the handshake failed: no header, no token went out
    failover = run("wg-failover", install)
    assert failover.returncode == 0  # the random fallback
    assert "TLS certificate verification failed" in failover.stderr
    assert https_prometheus.requests == []


def test_ca_file_makes_the_certificate_trusted(
    tmp_path: Path, https_prometheus: FakePrometheus, certificate: tuple[Path, Path]
) -> None:
    install = secured_install(tmp_path, https_prometheus.url, "token", extra="")
    text = install.config.read_text().replace("timeout = 10\n", f'timeout = 10\nca_file = "{certificate[0]}"\n', 1)
    install.config.write_text(text)
    health = run("wg-health-check", install)
    assert health.returncode == 0, health.stderr
    assert health.stderr.count("warning") == 0
    assert https_prometheus.requests[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_insecure_skip_verify_accepts_the_certificate_and_warns(
    tmp_path: Path, https_prometheus: FakePrometheus
) -> None:
    install = secured_install(tmp_path, https_prometheus.url, "token")
    text = install.config.read_text().replace("timeout = 10\n", "timeout = 10\ninsecure_skip_verify = true\n", 1)
    install.config.write_text(text)
    health = run("wg-health-check", install)
    assert health.returncode == 0, health.stderr
    assert f"TLS certificate of Prometheus at {https_prometheus.url} is not verified" in health.stderr
    assert len(https_prometheus.requests) == 1
