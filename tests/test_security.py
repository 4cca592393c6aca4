"""Security: the client secret and the gateway's tokens never reach a log line, an error, a repr,
a command's output or the database; TLS is verified by default; plain http goes to loopback only;
the sandbox gateway listens on loopback only unless told otherwise."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from kci_engine import Engine
from kci_engine.cli import main
from kci_engine.delivery.client import GatewayClient, check_base_url
from kci_engine.delivery.dispatcher import Dispatcher
from kci_engine.delivery.policy import RetryPolicy
from kci_engine.delivery.settings import load_settings
from kci_engine.errors import ConfigurationError, CredentialsRejected
from kci_engine.store.outbox import Outbox
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import OUTBOX
from kci_engine.tooling.demo import play
from kci_engine.tooling.sandbox import SandboxConfig, running_sandbox
from kci_engine.tooling.sandbox.command import sandbox as sandbox_command

ROOT = Path(__file__).resolve().parent.parent
SECRET = "S3cret-kci-security-4f1a9c"
CLIENT_ID = "sandbox-client"
#: What a token of the sandbox looks like (``secrets.token_urlsafe(32)``): 43 URL-safe characters.
TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
LOGGERS = ("kci_engine", "httpx", "httpcore", "uvicorn", "uvicorn.error", "uvicorn.access")


def _forms_of(secret: str) -> list[str]:
    """The secret as it could leak: itself, in a Basic header, form-encoded."""
    basic = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    return [secret, basic, httpx.QueryParams({"client_secret": secret}).__str__()]


class _Everything(logging.Handler):
    """Keeps every record, formatted with its traceback, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.names.add(record.name.split(".")[0])


@dataclass
class Run:
    log: str
    loggers: set[str]
    tokens: list[str]
    errors: list[str]
    url: str


@pytest.fixture(scope="module")
def delivery_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The demo lifecycles delivered to the sandbox under token-expiry, 5xx and dropped
    connection faults (and a token fetched with Basic credentials), every logger at DEBUG; one
    KCI is made invalid so that a gateway error is stored as a dead letter."""
    handler = _Everything()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *LOGGERS)}
    root.addHandler(handler)
    for name in ("", *LOGGERS):
        logging.getLogger(name).setLevel(logging.DEBUG)
    url = f"sqlite:///{tmp_path_factory.mktemp('security') / 'kci.db'}"
    store = SqlStore(url)
    played = list(play(Engine(store)))
    broken = played[0].kcis[3]  # the DELAY: without its problemCode the gateway answers 422
    body = dict(broken.body)
    body.pop("problemCode")
    with store.db.begin() as conn:
        conn.execute(
            OUTBOX.update().where(OUTBOX.c.kci_id == broken.kci_id).values(body=json.dumps(body))
        )
    tokens: list[str] = []
    errors: list[str] = []
    config = SandboxConfig(
        client_secret=SECRET, fault_rate=0.4, fault_kinds=["token_expiry", "5xx", "drop"], seed=3
    )
    try:
        with running_sandbox(config) as gateway:
            issue = gateway.state.issue_token

            def recording() -> str:
                token = issue()
                tokens.append(token)
                return token

            gateway.state.issue_token = recording  # type: ignore[method-assign]
            wrong = GatewayClient(gateway.base_url, CLIENT_ID, "wrong-" + SECRET, timeout_s=2)
            with pytest.raises(CredentialsRejected) as refused:
                wrong.send("{}", "c")
            wrong.close()
            errors += [str(refused.value), repr(refused.value)]
            basic = GatewayClient(gateway.base_url, CLIENT_ID, SECRET, token_auth="basic")
            basic.tokens.token()
            basic.close()
            outbox = Outbox(store)
            for _ in range(12):
                client = GatewayClient(gateway.base_url, CLIENT_ID, SECRET, timeout_s=2)
                dispatcher = Dispatcher(
                    store, client, policy=RetryPolicy(0.01, 0.05), concurrency=4, poll_s=0.01
                )
                try:
                    dispatcher.run(idle_exit=True)
                except CredentialsRejected as exc:  # two token-expiry faults in a row
                    errors += [str(exc), repr(exc)]
                finally:
                    errors += [repr(client), repr(client.tokens), repr(dispatcher.stats)]
                    client.close()
                if outbox.deliverable() == 0:
                    break
            # The broken DELAY is dead; the 7 KCIs of its order after it wait behind it.
            assert store.outbox_status()["counts"] == {"PENDING": 7, "DELIVERED": 23, "DEAD": 1}
    finally:
        store.close()
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return Run("\n".join(handler.lines), handler.names, tokens, errors, url)


def test_logs_and_errors_hold_neither_the_secret_nor_any_issued_token(delivery_run: Run) -> None:
    assert len(delivery_run.tokens) >= 3  # token-expiry faults made the client fetch new ones
    assert {"kci_engine", "httpx", "httpcore"} <= delivery_run.loggers  # DEBUG really was captured
    assert "obtained a gateway token" in delivery_run.log
    text = delivery_run.log + "\n".join(delivery_run.errors)
    for secret in _forms_of(SECRET) + _forms_of("wrong-" + SECRET):
        assert secret not in text
    leaked = [token for token in delivery_run.tokens if token in text]
    assert leaked == []


def test_no_token_or_secret_is_stored_in_the_database(delivery_run: Run) -> None:
    """Every text value of every table, error notes included, after a run with 401s and a
    dead letter."""
    db = sa.create_engine(delivery_run.url)
    texts: list[str] = []
    with db.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        assert {"kci_order", "kci_outbox", "kci_event", "kci_delivery_lease"} <= set(tables)
        for table in tables:
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                texts.extend(value for value in row if isinstance(value, str))
    db.dispose()
    assert any("INVALID_REQUEST" in text for text in texts)  # the dead letter's stored error
    blob = "\n".join(texts)
    for secret in _forms_of(SECRET):
        assert secret not in blob
    assert [token for token in delivery_run.tokens if token in blob] == []


def test_the_dispatch_and_sandbox_commands_print_neither_secret_nor_token(tmp_path: Path) -> None:
    """`kci-engine sandbox` (secret from the environment) and `kci-engine dispatch -v` (every
    delivery logged) under token-expiry faults: nothing in their output looks like a token."""
    url = f"sqlite:///{tmp_path / 'kci.db'}"
    store = SqlStore(url)
    list(play(Engine(store)))
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCI_")}
    sandbox = subprocess.Popen(
        [
            *(sys.executable, "-m", "kci_engine.cli", "sandbox", "--port", "0"),
            *("--fault-rate", "0.3", "--faults", "token_expiry,5xx", "--seed", "4"),
        ],
        cwd=ROOT,
        env={**env, "KCI_SANDBOX_CLIENT_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outputs: list[str] = []
    try:
        assert sandbox.stdout is not None
        first = sandbox.stdout.readline()
        outputs.append(first)
        base = re.search(r"(http://\S+/v1)", first)
        assert base is not None, first
        dispatch_env = {
            **env,
            "KCI_ENGINE_DB": url,
            "KCI_GATEWAY_URL": base.group(1),
            "KCI_CLIENT_ID": CLIENT_ID,
            "KCI_CLIENT_SECRET": SECRET,
            "KCI_RETRY_BASE_S": "0.01",
            "KCI_RETRY_CAP_S": "0.05",
            "KCI_POLL_S": "0.02",
        }
        for _ in range(8):  # a dispatcher stopped by two 401s in a row is started again
            done = subprocess.run(
                [sys.executable, "-m", "kci_engine.cli", "dispatch", "--once", "-v"],
                cwd=ROOT,
                env=dispatch_env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            outputs += [done.stdout, done.stderr]
            if done.returncode == 0:
                break
        assert done.returncode == 0, done.stderr[-2000:]
        stats = httpx.get(base.group(1).rsplit("/v1", 1)[0] + "/_sandbox/stats").json()
        assert stats["tokens_issued"] >= 2
        assert stats["accepted"] == 31
    finally:
        sandbox.send_signal(signal.SIGTERM)
        out, err = sandbox.communicate(timeout=30)
        outputs += [out, err]
    text = "\n".join(outputs)
    assert "delivered " in text  # the -v output really is there
    for secret in _forms_of(SECRET):
        assert secret not in text
    assert TOKEN_SHAPE.findall(text) == []


def test_the_token_detector_sees_a_real_token() -> None:
    """The shape the command test scans for is what the sandbox issues."""
    with running_sandbox() as gateway:
        assert TOKEN_SHAPE.fullmatch(gateway.state.issue_token())


def test_reprs_of_settings_client_token_cache_and_errors_hide_secret_and_token() -> None:
    token = "tok-" + "Q" * 40

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/access-token"):
            return httpx.Response(200, json={"access_token": token, "expires_in": 3600})
        return httpx.Response(422, json={"uuid": "u", "code": "INVALID_REQUEST", "messages": []})

    env = {
        "KCI_GATEWAY_URL": "https://gw.example/v1",
        "KCI_CLIENT_ID": CLIENT_ID,
        "KCI_CLIENT_SECRET": SECRET,
    }
    with mock.patch.dict(os.environ, env, clear=True):
        settings = load_settings()
        with pytest.raises(ConfigurationError) as bad:
            load_settings(timeout_s=-1)
    client = GatewayClient(
        settings.gateway_url,
        settings.client_id,
        settings.client_secret,
        transport=httpx.MockTransport(route),
    )
    attempt = client.send("{}", "c")
    assert client.tokens.token() == token  # the cache does hold it
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        repr(client),
        repr(client.tokens),
        repr(attempt),
        str(bad.value),
        repr(bad.value),
    ]
    client.close()
    text = "\n".join(shown)
    assert "**********" in text
    assert SECRET not in text
    assert token not in text


# --- TLS and plain http ------------------------------------------------------------------------


def _verify_mode(client: GatewayClient) -> ssl.SSLContext:
    transport: Any = client._http._transport
    context: ssl.SSLContext = transport._pool._ssl_context
    return context


def test_tls_verification_is_on_by_default() -> None:
    default = GatewayClient("https://gw.example/v1", CLIENT_ID, SECRET)
    context = _verify_mode(default)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    default.close()
    off = GatewayClient("https://gw.example/v1", CLIENT_ID, SECRET, verify_tls=False)
    assert _verify_mode(off).verify_mode == ssl.CERT_NONE  # the inspection can tell them apart
    off.close()
    with mock.patch.dict(
        os.environ,
        {"KCI_GATEWAY_URL": "https://gw/v1", "KCI_CLIENT_ID": "c", "KCI_CLIENT_SECRET": "s"},
        clear=True,
    ):
        assert load_settings().verify_tls is True


@pytest.fixture
def self_signed_gateway(tmp_path: Path) -> Iterator[str]:
    """An HTTPS gateway on 127.0.0.1 with a self-signed certificate for localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.endswith("/access-token"):
                body = b'{"access_token": "tls-token", "expires_in": 3600}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(204)
                self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_gateway_certificate_that_cannot_be_verified_is_refused(self_signed_gateway: str) -> None:
    """Nothing is sent to a gateway whose certificate does not verify (the credentials
    included); with verification turned off the same gateway is reached."""
    verified = GatewayClient(self_signed_gateway, CLIENT_ID, SECRET, timeout_s=5)
    attempt = verified.send("{}", "c")
    verified.close()
    assert attempt.outcome.value == "RETRY"
    assert "CERTIFICATE_VERIFY_FAILED" in (attempt.error or "")
    unverified = GatewayClient(
        self_signed_gateway, CLIENT_ID, SECRET, timeout_s=5, verify_tls=False
    )
    assert unverified.send("{}", "c").outcome.value == "DELIVERED"
    unverified.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://gw.example/v1",
        "HTTP://gw.example/v1",
        "http://localhost.gw.example/v1",
        "http://127.0.0.1.nip.io/v1",
        "http://localhost:80@gw.example/v1",
        "http://0.0.0.0:8780/v1",
        "http://10.0.0.1/v1",
        "http://[fe80::1]/v1",
        "http:///v1",
        "ws://127.0.0.1/v1",
    ],
)
def test_plain_http_to_anything_but_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="gateway URL"):
        check_base_url(url)
    with pytest.raises(ConfigurationError, match="gateway URL"):
        GatewayClient(url, CLIENT_ID, SECRET)


# --- the sandbox's address -----------------------------------------------------------------------


def _own_address() -> str | None:
    """This machine's address on its default route, if it has one (nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_sandbox_listens_on_loopback_only_by_default() -> None:
    assert SandboxConfig().host == "127.0.0.1"
    host_option = next(p for p in sandbox_command.params if p.name == "host")
    assert host_option.default == "127.0.0.1"
    address = _own_address()
    with running_sandbox() as gateway:
        port = int(gateway.root_url.rsplit(":", 1)[1])
        assert gateway.root_url == f"http://127.0.0.1:{port}"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        if address is None:
            pytest.skip("no address other than loopback to try")
        with pytest.raises(ConnectionRefusedError):  # nothing listens there
            socket.create_connection((address, port), timeout=5).close()


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "192.168.1.10", "127.0.0.1.nip.io", "localhost.gw.example"]
)
def test_the_sandbox_refuses_a_remote_address_unless_allowed(host: str) -> None:
    with pytest.raises(ConfigurationError, match="loopback only"):
        SandboxConfig(host=host)
    result = CliRunner().invoke(main, ["sandbox", "--host", host, "--port", "0"])
    assert result.exit_code == 1
    assert "is not loopback" in result.output
