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
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import FakePrometheus, Install, refusing_port, run, serve, write_install
from wgfailover.commands import wg_failover, wg_health_check, wg_select

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


# --- every form, every echo position (property) --------------------------------------

# What a header value may hold (RFC 9110 field-vchar, space and tab); a bearer
# token is one token68-like word, so no blanks.
HEADER_CHARS = "".join(chr(code) for code in range(0x21, 0x7F)) + " \t"
TOKEN_CHARS = "".join(chr(code) for code in range(0x21, 0x7F))
# Where a hostile server puts what it echoes. A body of any length: the echo
# sits at a random offset inside filler text.
POSITIONS = ["error", "error-200", "warning", "info", "status", "result-type", "value", "label", "location", "reason"]
POSITIONS += ["text-body"]
# What it echoes: the secret as we read it, the header that carries it,
# URL-encoded, JSON-escaped (a text body quoting the headers as JSON), base64.
ECHOES = ["raw", "header", "url-encoded", "json-escaped", "base64"]
FILLER = "\u00b7"  # outside both alphabets, so filler never completes a piece of a secret


def secret_texts(alphabet: str) -> st.SearchStrategy[str]:
    # Credential files are stripped, and HTTP drops a header value's outer blanks.
    return st.text(alphabet=alphabet, min_size=12, max_size=40).filter(lambda text: text == text.strip())


def pieces(text: str, size: int = 8) -> set[str]:
    return {text[start : start + size] for start in range(len(text) - size + 1)}


def secret_pieces(kind: str, secret: str) -> set[str]:
    """Every 8-character piece of the secret, of its base64, and of the credential as the header carries it."""
    sent = {secret, base64.b64encode(secret.encode()).decode()}
    if kind in ("password", "url-password"):
        sent.add(base64.b64encode(f"{USERNAME}:{secret}".encode()).decode())
    return set().union(*(pieces(text) for text in sent))


def configure(root: Path, url: str, kind: str, secret: str) -> Install:
    """An installation under root whose Prometheus credential of this kind is secret."""
    credentials = root / "credentials"
    credentials.mkdir(parents=True)
    headers = ""
    if kind == "token":
        auth = f'bearer_token_file = "{write_secret(credentials / "token", secret)}"\n'
    elif kind == "password":
        auth = f'username = "{USERNAME}"\npassword_file = "{write_secret(credentials / "password", secret)}"\n'
    elif kind == "url-password":
        auth = ""
        url = url.replace("://", f"://{USERNAME}:{urllib.parse.quote(secret, safe='')}@", 1)
    else:
        auth = ""
        headers = f"[prometheus.headers]\nX-Api-Key = {json.dumps(secret)}\n"
    install = write_install(root, prometheus_url=url, extra=f'[health]\nmax_failures = 1\nmin_window = "1s"\n{headers}')
    text = install.config.read_text().replace("timeout = 10\n", f"timeout = 10\n{auth}", 1)
    install.config.write_text(text)
    return install


def hostile_answer(
    fake: FakePrometheus, kind: str, secret: str, echo: str, position: str, before: int, after: int
) -> Callable[[str], tuple[int, dict[str, str], bytes]]:
    """An answer that puts one form of the secret at one position, inside filler of the given lengths."""

    def answer(query: str) -> tuple[int, dict[str, str], bytes]:
        sent = fake.requests[-1]["headers"]
        header = sent.get("X-Api-Key" if kind == "header" else "Authorization", "")
        payload = {
            "raw": secret,
            "header": header,
            "url-encoded": urllib.parse.quote(secret, safe=""),
            "json-escaped": json.dumps(secret)[1:-1],
            "base64": base64.b64encode(secret.encode()).decode(),
        }[echo]
        padded = FILLER * before + payload + FILLER * after
        as_json = {"Content-Type": "application/json"}
        sample: dict[str, Any] = {"metric": {"host": "192.0.2.10"}, "value": [0, "0.9"]}
        document: dict[str, Any] = {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
        status = 200
        fake.reason = None
        if position == "error":
            status, document = 401, {"status": "error", "errorType": "unauthorized", "error": padded}
        elif position == "error-200":
            document = {"status": "error", "errorType": padded, "error": padded}
        elif position == "warning":
            document["warnings"] = [padded]
        elif position == "info":
            document["infos"] = [padded]
        elif position == "status":
            document["status"] = padded
        elif position == "result-type":
            document["data"]["resultType"] = padded
        elif position == "value":
            sample["value"] = [0, padded]
        elif position == "label":
            sample["metric"] = {"host": padded, padded.replace(FILLER, "_"): "x"}
        elif position == "location":
            return 302, {"Location": f"http://127.0.0.1:1/login?echo={payload}"}, b""
        elif position == "reason":
            fake.reason = f"Denied {payload}"
            return 403, {"Content-Type": "text/plain"}, b""
        else:
            return 500, {"Content-Type": "text/plain; charset=utf-8"}, f"denied: {padded}".encode()
        return status, as_json, json.dumps(document).encode()

    return answer


def everything_written(root: Path, result_texts: list[str]) -> str:
    """Given an installation root and the commands' outputs, return all of it and every file written, as one text."""
    written = [
        path.read_text(errors="replace")
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.parent.name != "credentials" and path.name != "config.toml"
    ]
    return "\n".join(result_texts + written)


def run_hostile(
    fake: FakePrometheus, root: Path, kind: str, secret: str, echo: str, position: str, pad: tuple[int, int]
) -> str:
    """Run wg-select, wg-health-check and wg-failover (--verbose) in-process; return every output and file."""
    install = configure(root, fake.url, kind, secret)
    fake.answer = hostile_answer(fake, kind, secret, echo, position, *pad)
    runner = CliRunner()
    outputs = []
    for command in (wg_select.main, wg_health_check.main, wg_failover.main):
        result = runner.invoke(command, ["--config", str(install.config), "--verbose"])
        assert "Traceback" not in result.output and "internal error" not in result.output, result.output
        outputs += [result.stdout, result.stderr]
    return everything_written(root, outputs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    kind=st.sampled_from(["token", "password", "url-password", "header"]),
    echo=st.sampled_from(ECHOES),
    position=st.sampled_from(POSITIONS),
    pad=st.tuples(st.integers(0, 600), st.integers(0, 600)),
)
def test_no_piece_of_any_secret_form_echoed_anywhere_reaches_output_state_or_metrics(
    tmp_path: Path,
    hostile_prometheus: FakePrometheus,
    data: st.DataObject,
    kind: str,
    echo: str,
    position: str,
    pad: tuple[int, int],
) -> None:
    alphabet = TOKEN_CHARS if kind == "token" else HEADER_CHARS
    secret = data.draw(secret_texts(alphabet), label="secret")
    # The control run: the same everything with an unrelated secret. A piece
    # of the secret found there is a coincidence with our own text, not a leak.
    other = data.draw(secret_texts(alphabet), label="other")
    assume(not secret_pieces(kind, secret) & secret_pieces(kind, other))
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    control = run_hostile(hostile_prometheus, root / "control", kind, other, echo, position, pad)
    seen = run_hostile(hostile_prometheus, root / "secret", kind, secret, echo, position, pad)
    found = {piece for piece in secret_pieces(kind, secret) if piece in seen}
    coincidences = {piece for piece in found if piece in control}
    assert found - coincidences == set(), seen
    shutil.rmtree(root)


@pytest.fixture
def hostile_prometheus() -> Iterator[FakePrometheus]:
    yield from serve(FakePrometheus())
