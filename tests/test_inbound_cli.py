"""``kci-engine serve`` as an operator runs it (a real process on 127.0.0.1, a SQLite file) and
the owed KCIs ``kci-engine outbox status`` shows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from kci_engine.cli import main
from kci_engine.cli.serve import load_logic
from kci_engine.errors import ConfigurationError
from kci_engine.inbound import AnswerLater

from tests.test_inbound_http import AMEND_EXAMPLE, CREATE_EXAMPLE, HEADERS, TOKEN


def _serve(db_url: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "KCI_SERVE_BEARER_TOKENS": f"other,{TOKEN}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kci_engine.cli", "serve", "--db", db_url, "--port", "0", *extra],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if found := re.search(r"Supplier API on (http://127\.0\.0\.1:\d+)", line):
            return process, found.group(1)
        if not line and process.poll() is not None:
            break
    process.kill()
    process.wait(30)
    process.stderr.close()
    pytest.fail("kci-engine serve did not start")


def test_serve_answers_and_outbox_status_shows_what_the_202s_owe(sqlite_url: str) -> None:
    process, url = _serve(sqlite_url, "--no-cancellation-in", "IN_PROGRESS")
    try:
        created = httpx.post(url + "/service-orders", json=CREATE_EXAMPLE, headers=HEADERS)
        assert created.status_code == 202  # the default logic: answer later
        unknown = httpx.post(url + "/service-order-amendments", json=AMEND_EXAMPLE, headers=HEADERS)
        assert unknown.status_code == 422  # an order not yet acknowledged cannot be amended
        refused = httpx.post(url + "/service-orders", json=CREATE_EXAMPLE, headers={})
        assert refused.status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
        assert process.stderr is not None
        process.stderr.close()
    assert process.returncode == 0

    status = CliRunner().invoke(main, ["outbox", "status", "--db", sqlite_url, "--json"])
    assert status.exit_code == 0, status.output
    owed = json.loads(status.output)["owed"]
    assert owed["count"] == 1
    assert owed["oldest"][0]["owes"] == "ACKNOWLEDGED or ORDER_REJECTED"
    assert owed["oldest"][0]["order_id"] == "TENANT1:123"
    assert owed["oldest_age_s"] >= 0
    text = CliRunner().invoke(main, ["outbox", "status", "--db", sqlite_url])
    assert "owed KCIs  1" in text.output
    assert "order 123 of TENANT1:123 owes ACKNOWLEDGED or ORDER_REJECTED" in text.output


def test_serve_refuses_no_credentials_and_anonymous_off_loopback(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KCI_SERVE_BEARER_TOKENS", "KCI_SERVE_BASIC_USER", "KCI_SERVE_BASIC_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    none = runner.invoke(main, ["serve", "--db", sqlite_url, "--port", "0"])
    assert none.exit_code == 1
    assert none.output.startswith("Error: no credentials")
    remote = runner.invoke(
        main, ["serve", "--db", sqlite_url, "--port", "0", "--no-auth", "--host", "0.0.0.0"]
    )
    assert remote.exit_code == 1
    assert "not loopback" in remote.output
    monkeypatch.setenv("KCI_SERVE_BASIC_USER", "gateway")
    half = runner.invoke(main, ["serve", "--db", sqlite_url, "--port", "0"])
    assert "go together" in half.output
    bad_status = runner.invoke(
        main, ["serve", "--db", sqlite_url, "--no-auth", "--no-cancellation-in", "DONE"]
    )
    assert "unknown statuses ['DONE']" in bad_status.output


def test_load_logic(tmp_path: Path) -> None:
    assert isinstance(load_logic("kci_engine.inbound:AnswerLater"), AnswerLater)
    for spec, says in [
        ("nocolon", "module:attribute"),
        ("kci_engine.nothing:X", "cannot load it"),
        ("kci_engine.inbound:Nope", "cannot load it"),
        ("kci_engine.inbound:Later", "has no decide_order"),
    ]:
        with pytest.raises(ConfigurationError, match=says):
            load_logic(spec)


def test_serve_names_the_extra_it_needs(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "kci_engine.inbound.server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # not installed
    result = CliRunner().invoke(main, ["serve", "--db", sqlite_url, "--no-auth"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: kci-engine serve needs the serve extra (uvicorn is missing): "
        "pip install 'kci-engine[serve]'"
    )
