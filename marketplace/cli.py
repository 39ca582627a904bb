"""The ``veilx`` command line: serve, worker, demo, db, admin.

Errors are printed as one line, ``veilx: error: <what and why>``, with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from ledger import LedgerError
from ledger.cli import app as chain_app
from marketplace.config import Settings
from marketplace.errors import VeilxError
from mpc_engine.node.cli import app as node_app
from sdk.cli import (
    compute_app,
    datasets_app,
    jobs_app,
    keys_app,
    receipts_app,
    settlements_app,
    wallet_app,
)
from sdk.errors import VeilxError as SdkError

if TYPE_CHECKING:
    from marketplace.services.identity import IdentityService

app = typer.Typer(
    name="veilx",
    help="veilx: a privacy-preserving data exchange (usable but invisible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
admin_app = typer.Typer(help="Operator administration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
# The buyer's and the provider's commands live with the code they drive: the SDK
# (which never imports marketplace) and the data node.
app.add_typer(node_app, name="node")
app.add_typer(compute_app, name="compute")
app.add_typer(jobs_app, name="jobs")
app.add_typer(receipts_app, name="receipts")
app.add_typer(keys_app, name="keys")
app.add_typer(datasets_app, name="datasets")
app.add_typer(wallet_app, name="wallet")
app.add_typer(settlements_app, name="settlements")
app.add_typer(chain_app, name="chain")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    err_console.print(f"veilx: error: {message}", markup=False, highlight=False)
    raise typer.Exit(2)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "settings"
        name = f"VEILX_{loc.upper()}" if loc != "settings" else "settings"
        fail(f"{name}: {first['msg'].removeprefix('Value error, ')}")


def _database(settings: Settings) -> object:
    from marketplace.db import Database

    db = Database.from_url(settings.effective_database_url)
    db.upgrade()
    return db


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the exchange API (migrations are applied first); docs at /docs."""
    import uvicorn

    settings = _settings()
    from marketplace.db import Database

    Database.from_url(settings.effective_database_url).upgrade()
    console.print(
        f"veilx exchange on http://{host or settings.host}:{port or settings.port} "
        f"(docs: /docs) · database {settings.effective_database_url.split('://')[0]} · "
        f"kv {'redis' if settings.redis_url else 'in-process'}"
    )
    uvicorn.run(
        "marketplace.api.main:serve_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level,
    )


@app.command()
def worker(
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between deadline sweeps.")
    ] = 5.0,
    once: Annotated[
        bool, typer.Option("--once", help="Sweep once, print what it did, exit.")
    ] = False,
    relay: Annotated[
        bool,
        typer.Option(
            "--relay/--no-relay", help="Also relay the ledger outbox to the chain."
        ),
    ] = True,
) -> None:
    """Run the exchange worker: job deadlines, wake-ups, the ledger relay.

    It ends jobs past their deadline, re-sends wake-ups, and relays the ledger
    outbox to the chain.

    With VEILX_REDIS_URL set, run any number of these next to the API replicas;
    on the embedded defaults `veilx serve` sweeps by itself.
    """
    import signal
    import threading

    from marketplace.db import Database
    from marketplace.payments import make_providers
    from marketplace.queue import open_queue
    from marketplace.services.trading import TradingConfig
    from marketplace.worker import run_worker, sweep

    settings = _settings()
    queue = open_queue(settings.redis_url, namespace=settings.redis_namespace)
    if not queue.ping():
        queue.close()
        fail("VEILX_REDIS_URL: Redis does not answer; start it or fix the URL")
    db = Database.from_url(settings.effective_database_url)
    db.upgrade()
    from marketplace.chain import LazyChain

    chain = LazyChain(settings)  # opened on first use: the relay, onchain payments
    payments = make_providers(settings, chain)
    trading = TradingConfig.from_settings(settings)
    try:
        if once:
            report = sweep(db, queue, payments=payments, trading=trading)
            console.print(f"swept: {report}", markup=False, highlight=False)
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(
            f"veilx worker: sweeping every {interval:g} s · database "
            f"{settings.effective_database_url.split('://')[0]} · queue "
            f"{'redis' if settings.redis_url else 'in-process'}",
            markup=False,
            highlight=False,
        )
        relay_thread = None
        if relay:
            from marketplace.services.relay import RelayThread, make_relay

            relay_thread = RelayThread(
                lambda: make_relay(db, chain.get().ledger, settings),
                settings.ledger_relay_interval_seconds,
            )
            relay_thread.start()
        try:
            run_worker(db, queue, interval, stop, payments=payments, trading=trading)
        except KeyboardInterrupt:
            pass
        finally:
            if relay_thread is not None:
                relay_thread.stop()
        console.print("veilx worker: stopped", markup=False, highlight=False)
    finally:
        chain.close()
        queue.close()
        db.dispose()


@app.command()
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its database (recreated each run)."),
    ] = None,
) -> None:
    """Run the exchange end to end on the embedded defaults, ending with verify.

    Lists the sample datasets, runs private computations through data nodes,
    relays every trade and receipt to the embedded chain, and ends with what
    `veilx verify` reports (exit status 1 if anything does not match).
    """
    from marketplace.demo import run_demo

    settings = _settings()
    run = run_demo(settings, data_dir or settings.data_dir / "demo", console)
    if not run.results["verify"].ok:
        fail("veilx verify found records that do not match the chain")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all pending migrations to VEILX_DATABASE_URL (or the SQLite file)."""
    from marketplace.db import Database, current_revision

    settings = _settings()
    db = Database.from_url(settings.effective_database_url)
    db.upgrade()
    console.print(f"database at revision {current_revision(db.engine)}")


def _identity(settings: Settings) -> IdentityService:
    """An identity service on the configured database (migrated first).

    The session lives until the command's process exits.
    """
    from sqlmodel import Session

    from marketplace.db import Database
    from marketplace.services.identity import IdentityService

    db = Database.from_url(settings.effective_database_url)
    db.upgrade()
    return IdentityService(Session(db.engine, expire_on_commit=False))


@admin_app.command("create-operator")
def create_operator(
    name: Annotated[
        str, typer.Option(help="The exchange operator's organisation name.")
    ],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code.")],
    email: Annotated[str, typer.Option(help="The first operator user's e-mail.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="At least 12 characters.")
    ],
    key_name: Annotated[
        str, typer.Option(help="Name of the API key issued.")
    ] = "admin",
) -> None:
    """Create the operator organisation (admitted), a user and an API key."""
    from marketplace.models import OrganisationCreate, OrganisationStatus, Role

    settings = _settings()
    identity = _identity(settings)
    if len(password) < 12:
        fail("--password: must be at least 12 characters")
    try:
        data = OrganisationCreate(name=name, country=country, roles=[Role.OPERATOR])
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{first['loc'][0]}: {first['msg']}")
    existing = [o for o in identity.list_organisations() if Role.OPERATOR in o.roles]
    if existing:
        fail(f"an operator organisation exists already: {existing[0].name}")
    org = identity.create_organisation(data, status=OrganisationStatus.ADMITTED)
    identity.create_user(org.id, email, name, password)
    key = identity.create_api_key(org.id, key_name)
    console.print(f"operator {org.name} ({org.id}) created")
    console.print(f"API key (shown once): {key.secret}", markup=False)


@admin_app.command("list-orgs")
def list_orgs() -> None:
    """List organisations with their roles and status."""
    from rich.table import Table

    identity = _identity(_settings())
    table = Table("id", "name", "roles", "status", "since")
    for org in identity.list_organisations():
        table.add_row(
            str(org.id),
            org.name,
            ", ".join(org.roles),
            org.status.value,
            org.status_changed_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@admin_app.command("admit")
def admit(
    organisation: Annotated[str, typer.Argument(help="Organisation name or id.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept on record).")] = None,
) -> None:
    """Admit a pending (or re-admit a suspended) organisation."""
    from marketplace.models import OrganisationStatus

    identity = _identity(_settings())
    org = identity.find_organisation(organisation)
    org = identity.set_status(org.id, OrganisationStatus.ADMITTED, reason)
    console.print(f"{org.name} is {org.status.value}")


@admin_app.command("suspend")
def suspend(
    organisation: Annotated[str, typer.Argument(help="Organisation name or id.")],
    reason: Annotated[str, typer.Option(help="Why (required, kept on record).")],
) -> None:
    """Suspend an admitted organisation."""
    from marketplace.models import OrganisationStatus

    identity = _identity(_settings())
    org = identity.find_organisation(organisation)
    org = identity.set_status(org.id, OrganisationStatus.SUSPENDED, reason)
    console.print(f"{org.name} is {org.status.value}: {reason}")


@admin_app.command("issue-key")
def issue_key(
    organisation: Annotated[str, typer.Argument(help="Organisation name or id.")],
    name: Annotated[str, typer.Option(help="A name for the key.")],
) -> None:
    """Issue an API key for an organisation; the secret is printed once."""
    identity = _identity(_settings())
    org = identity.find_organisation(organisation)
    key = identity.create_api_key(org.id, name)
    console.print(f"key {key.prefix} ({key.id}) for {org.name}")
    console.print(f"API key (shown once): {key.secret}", markup=False)


@admin_app.command("revoke-key")
def revoke_key(
    key: Annotated[str, typer.Argument(help="The key's prefix or id.")],
) -> None:
    """Revoke an API key."""
    identity = _identity(_settings())
    found = identity.find_api_key(key)
    revoked = identity.revoke_api_key(found.organisation_id, found.id)
    console.print(
        f"key {revoked.prefix} revoked at {revoked.revoked_at:%Y-%m-%d %H:%M:%S}Z"
    )


@app.command()
def verify(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
    flush: Annotated[
        bool,
        typer.Option(
            "--flush", help="First relay everything pending (the operator's check)."
        ),
    ] = False,
) -> None:
    """Match every asset, trade and receipt in the database against the chain.

    Prints "all N assets, M trades, R receipts match the chain", or each record
    that does not match (exit status 1).
    """
    from marketplace.verify_report import print_verify_report, verify_configured

    report = verify_configured(_settings(), console, flush=flush)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_verify_report(console, report)
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``veilx`` console script."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("veilx: error: aborted", markup=False)
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: missing option, bad value
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        err_console.print(
            f"veilx: error: {message}{where}; see --help", markup=False, highlight=False
        )
        sys.exit(2)
    except VeilxError as exc:
        err_console.print(f"veilx: error: {exc.detail}", markup=False, highlight=False)
        sys.exit(2)
    except (SdkError, LedgerError) as exc:
        err_console.print(f"veilx: error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        err_console.print(f"veilx: error: {loc}: {first['msg']}", markup=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
