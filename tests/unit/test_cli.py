"""The ``veilx`` command line, run through its entry point against a temp data dir.

Most commands run in-process through ``marketplace.cli.main`` (the console script's
entry point, so its error handling is included); a few run the installed script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from marketplace.api import create_app
from marketplace.cli import main
from marketplace.db import Database, current_revision
from marketplace.errors import AuthenticationRequired
from marketplace.kv import MemoryStore
from marketplace.models import OrganisationStatus, Trade
from marketplace.services.identity import IdentityService
from tests.conftest import TEST_SECRET, make_settings
from tests.job_factories import (
    claim,
    create_job,
    create_served_dataset,
    post_result,
    start,
    success,
)

VEILX = Path(sys.executable).with_name("veilx")
PASSWORD = "correct horse battery staple"
KEY_LINE = re.compile(r"^API key \(shown once\): (vx_\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Result:
    """What a command did."""

    code: int
    out: str
    err: str


Veilx = Callable[..., Result]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment whose database is a SQLite file in ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith("VEILX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VEILX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


@pytest.fixture
def veilx(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Veilx]:
    """Run ``veilx <args>`` in-process and return its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["veilx", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield run


@pytest.fixture
def database(data_dir: Path) -> Iterator[Database]:
    """The database the CLI uses, opened by the test to check effects."""
    db = Database.from_url(f"sqlite:///{data_dir / 'veilx.db'}")
    db.upgrade()
    yield db
    db.dispose()


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """Exit code 2 and exactly one ``veilx: error:`` line on stderr, nothing else."""
    assert result.code == 2, result
    assert result.out == "", result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert result.err.endswith("\n")
    line = lines[0]
    assert line.startswith("veilx: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def _status(db: Database, name: str) -> OrganisationStatus:
    with db.session() as session:
        return IdentityService(session).find_organisation(name).status


def _create_operator(veilx: Veilx, name: str = "Exchange Operator") -> Result:
    return veilx(
        "admin",
        "create-operator",
        "--name",
        name,
        "--country",
        "DE",
        "--email",
        f"{name.split()[0].lower()}@example.org",
        "--password",
        PASSWORD,
    )


def _sign_up(db: Database, tmp_path: Path, name: str) -> None:
    """Sign an organisation up through the API, as a newcomer would."""
    app = create_app(make_settings(tmp_path), db=db, kv=MemoryStore(), migrate=False)
    with TestClient(app) as client:
        r = client.post(
            "/v1/auth/signup",
            json={
                "organisation_name": name,
                "country": "FR",
                "roles": ["buyer"],
                "email": f"{name.split()[0].lower()}@example.org",
                "display_name": "Ada",
                "password": PASSWORD,
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["organisation"]["status"] == "pending"


# -- db --------------------------------------------------------------------------


def test_db_upgrade_prints_the_revision(veilx: Veilx, data_dir: Path) -> None:
    result = veilx("db", "upgrade")
    assert result.code == 0, result
    assert result.err == ""
    match = re.fullmatch(r"database at revision (\S+)\n", result.out)
    assert match, result.out
    db = Database.from_url(f"sqlite:///{data_dir / 'veilx.db'}")
    try:
        assert current_revision(db.engine) == match.group(1)
    finally:
        db.dispose()
    # Running it again is a no-op at the same revision.
    again = veilx("db", "upgrade")
    assert again.code == 0 and again.out == result.out


# -- create-operator -----------------------------------------------------------------


def test_create_operator_prints_a_key_once(veilx: Veilx, database: Database) -> None:
    result = _create_operator(veilx)
    assert result.code == 0, result
    assert result.err == ""
    keys = KEY_LINE.findall(result.out)
    assert len(keys) == 1
    assert result.out.count(keys[0]) == 1
    assert "operator Exchange Operator (" in result.out
    with database.session() as session:
        caller = IdentityService(session).authenticate(keys[0])
    assert caller.organisation_name == "Exchange Operator"
    assert {r.value for r in caller.roles} == {"operator"}
    assert caller.status is OrganisationStatus.ADMITTED


def test_a_second_operator_is_refused(veilx: Veilx, database: Database) -> None:
    assert _create_operator(veilx).code == 0
    result = _create_operator(veilx, "Second Operator")
    assert_one_line_error(
        result, "operator organisation exists already", "Exchange Operator"
    )
    with database.session() as session:
        names = [o.name for o in IdentityService(session).list_organisations()]
    assert names == ["Exchange Operator"]


def test_create_operator_rejects_bad_input(veilx: Veilx) -> None:
    result = veilx(
        "admin",
        "create-operator",
        "--name",
        "Op",
        "--country",
        "DE",
        "--email",
        "op@example.org",
        "--password",
        "short",
    )
    assert_one_line_error(result, "--password", "12 characters")
    result = veilx(
        "admin",
        "create-operator",
        "--name",
        "Op",
        "--country",
        "Germany",
        "--email",
        "op@example.org",
        "--password",
        PASSWORD,
    )
    assert_one_line_error(result, "--country")


# -- admission -----------------------------------------------------------------------


def test_admit_unknown_organisation(veilx: Veilx) -> None:
    assert_one_line_error(veilx("admin", "admit", "Nobody Ltd"), "Nobody Ltd")
    missing = "00000000-0000-0000-0000-000000000000"
    assert_one_line_error(veilx("admin", "admit", missing), missing)
    assert_one_line_error(veilx("admin", "suspend", "Nobody Ltd", "--reason", "x"))
    assert_one_line_error(veilx("admin", "issue-key", "Nobody Ltd", "--name", "k"))
    assert_one_line_error(veilx("admin", "revoke-key", "nosuchprefix"), "nosuchprefix")


def test_admit_and_suspend_a_signed_up_organisation(
    veilx: Veilx, database: Database, data_dir: Path
) -> None:
    _sign_up(database, data_dir, "Acme Analytics")
    assert _status(database, "Acme Analytics") is OrganisationStatus.PENDING

    # A pending organisation cannot be suspended.
    assert_one_line_error(
        veilx("admin", "suspend", "Acme Analytics", "--reason", "x"),
        "pending",
    )

    result = veilx("admin", "admit", "Acme Analytics")
    assert result == Result(0, "Acme Analytics is admitted\n", "")
    assert _status(database, "Acme Analytics") is OrganisationStatus.ADMITTED

    # Admitting twice is an invalid transition.
    assert_one_line_error(veilx("admin", "admit", "Acme Analytics"), "admitted")

    # --reason is required (a usage error) and must not be empty.
    missing = veilx("admin", "suspend", "Acme Analytics")
    assert missing.code == 2
    assert "--reason" in missing.err
    assert_one_line_error(
        veilx("admin", "suspend", "Acme Analytics", "--reason", ""),
        "reason",
    )
    assert _status(database, "Acme Analytics") is OrganisationStatus.ADMITTED

    result = veilx("admin", "suspend", "Acme Analytics", "--reason", "unpaid invoices")
    assert result == Result(0, "Acme Analytics is suspended: unpaid invoices\n", "")
    assert _status(database, "Acme Analytics") is OrganisationStatus.SUSPENDED

    # Re-admission, by id this time.
    with database.session() as session:
        org_id = str(IdentityService(session).find_organisation("Acme Analytics").id)
    result = veilx("admin", "admit", org_id, "--reason", "paid")
    assert result == Result(0, "Acme Analytics is admitted\n", "")

    listing = veilx("admin", "list-orgs")
    assert (
        listing.code == 0
        and "Acme Analytics" in listing.out
        and "admitted" in listing.out
    )


# -- keys ----------------------------------------------------------------------------


def test_issue_and_revoke_a_key(veilx: Veilx, database: Database) -> None:
    assert _create_operator(veilx).code == 0
    issued = veilx("admin", "issue-key", "Exchange Operator", "--name", "ci")
    assert issued.code == 0, issued
    match = re.match(
        r"key (\S+) \(([0-9a-f-]{36})\) for Exchange Operator\n", issued.out
    )
    assert match, issued.out
    prefix = match.group(1)
    (secret,) = KEY_LINE.findall(issued.out)
    assert secret.startswith(f"vx_{prefix}_")
    with database.session() as session:
        assert IdentityService(session).authenticate(secret).organisation_name == (
            "Exchange Operator"
        )

    # The same name again is refused while the first key is active.
    assert_one_line_error(
        veilx("admin", "issue-key", "Exchange Operator", "--name", "ci"),
        "'ci'",
    )

    revoked = veilx("admin", "revoke-key", prefix)
    assert revoked.code == 0, revoked
    assert re.fullmatch(
        rf"key {prefix} revoked at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ\n", revoked.out
    ), revoked.out
    with database.session() as session, pytest.raises(AuthenticationRequired) as exc:
        IdentityService(session).authenticate(secret)
    assert exc.value.code == "credential_revoked"

    # Revoking again (by id) reports the same revocation.
    again = veilx("admin", "revoke-key", match.group(2))
    assert again == Result(0, revoked.out, "")

    # Now the name is free again.
    assert veilx("admin", "issue-key", "Exchange Operator", "--name", "ci").code == 0


# -- configuration errors --------------------------------------------------------------


def test_production_with_the_default_secret_is_refused(
    veilx: Veilx, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setenv("VEILX_ENVIRONMENT", "production")
    for args in (("db", "upgrade"), ("admin", "list-orgs"), ("admin", "admit", "x")):
        assert_one_line_error(veilx(*args), "VEILX_SECRET_KEY")
    monkeypatch.setenv("VEILX_SECRET_KEY", "too-short")
    assert_one_line_error(veilx("db", "upgrade"), "VEILX_SECRET_KEY")
    assert not (data_dir / "veilx.db").exists()
    monkeypatch.setenv("VEILX_SECRET_KEY", TEST_SECRET)
    assert veilx("db", "upgrade").code == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VEILX_PORT", "not-a-port"),
        ("VEILX_DATABASE_URL", "mysql://localhost/veilx"),
        ("VEILX_REDIS_URL", "http://localhost:6379"),
        ("VEILX_ENVIRONMENT", "staging"),
    ],
)
def test_invalid_settings_name_the_variable(
    veilx: Veilx, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert_one_line_error(veilx("db", "upgrade"), name)


def test_the_installed_script(data_dir: Path) -> None:
    """The console script: exit codes and one-line errors from a real process."""
    assert VEILX.exists(), VEILX
    env = {**os.environ, "VEILX_ENVIRONMENT": "production"}
    proc = subprocess.run(  # noqa: S603 - our own console script
        [str(VEILX), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("veilx: error: ")
    assert "VEILX_SECRET_KEY" in proc.stderr

    proc = subprocess.run(  # noqa: S603 - our own console script
        [str(VEILX), "admin", "admit", "Nobody Ltd"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "veilx: error: no organisation named 'Nobody Ltd'\n"


# -- veilx verify ------------------------------------------------------------


def _release(db: Database, data_dir: Path, n: int) -> None:
    app = create_app(make_settings(data_dir), db=db, kv=MemoryStore(), migrate=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        served = create_served_dataset(client, db)
        for _ in range(n):
            job = create_job(client, served)
            claim(client, served.node)
            assert start(client, served.node, job["id"]).status_code == 200
            r = post_result(client, served.node, job["id"], success(job, served))
            assert r.status_code == 200, r.text


def test_verify_relays_then_matches_and_then_names_a_tampered_trade(
    veilx: Veilx, database: Database, data_dir: Path
) -> None:
    _release(database, data_dir, 2)
    pending = veilx("verify")
    assert pending.code == 0, pending.err
    assert "records pending in the outbox" in pending.out

    flushed = veilx("verify", "--flush")
    assert flushed.code == 0, flushed.err
    assert "all 1 assets, 2 trades, 2 receipts match the chain" in flushed.out

    with database.session() as s:
        trade = s.exec(select(Trade)).first()
        assert trade is not None
        s.execute(update(Trade).where(col(Trade.id) == trade.id).values(currency="USD"))
        s.commit()
    tampered = veilx("verify")
    assert tampered.code == 1
    assert str(trade.id) in tampered.out and "currency" in tampered.out
    assert "1 mismatches" in tampered.out

    as_json = veilx("verify", "--json")
    assert as_json.code == 1 and '"ok": false' in as_json.out


def test_verify_with_an_unreachable_node_is_one_line(
    veilx: Veilx, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEILX_CHAIN_URL", "http://127.0.0.1:9")
    result = veilx("verify")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("veilx: error: ") and len(result.err.splitlines()) == 1
