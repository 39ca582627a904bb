"""The SDK's trading namespaces against the real exchange in-process (SQLite).

Quote, operator top-up, order with credits (replayed by key), entitlements and
charges, a job charged to a named entitlement (directly and through
``compute``), settlement and the statement as JSON and CSV, the journal check;
the 402 / 503 problems as SDK errors; the ``datasets quote | buy | entitlements``
commands. Argument checks are proved to send nothing.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Role
from sdk import (
    APIError,
    Client,
    InputError,
    InvalidRequestError,
    NotFoundError,
    PaymentRequiredError,
    PaymentUnavailableError,
    ServerError,
)
from sdk._http import HTTP
from sdk.cli import datasets_app, settlements_app
from tests.conftest import make_settings
from tests.factories import buy_entitlement, create_random_org
from tests.job_factories import (
    COUNT_BY_REGION,
    Served,
    claim,
    create_served_dataset,
    post_result,
    start,
    success,
)

PRICE = 2500
"""The factory plan's price per query, in cents."""
PRIVACY_PRICED = {
    "kind": "privacy_priced",
    "currency": "EUR",
    "base_price_minor": 100,
    "price_per_epsilon_minor": 1000,
    "exponent": 0.5,
}


@pytest.fixture
def app_client(sqlite_only_db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The exchange app on SQLite, in-process."""
    app = create_app(
        make_settings(tmp_path), db=sqlite_only_db, kv=MemoryStore(), migrate=False
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def served(app_client: TestClient, sqlite_only_db: Database) -> Served:
    """A listed dataset served by a node, and a buyer with no entitlement yet."""
    return create_served_dataset(app_client, sqlite_only_db, funded=False)


@pytest.fixture
def operator(app_client: TestClient, sqlite_only_db: Database) -> Client:
    """An SDK client of an operator organisation."""
    return _sdk(app_client, create_random_org(sqlite_only_db, Role.OPERATOR).key)


def _sdk(app_client: TestClient, key: str, key_dir: Path | None = None) -> Client:
    return Client(
        key, base_url=str(app_client.base_url), http_client=app_client, key_dir=key_dir
    )


def _run_node(app_client: TestClient, served: Served, job_id: uuid.UUID) -> None:
    """The node claims, starts and finishes the job with a signed receipt."""
    assert claim(app_client, served.node).json()["job_id"] == str(job_id)
    assert start(app_client, served.node, str(job_id)).status_code == 200
    job = app_client.get(f"/v1/jobs/{job_id}", headers=served.buyer.headers).json()
    r = post_result(app_client, served.node, str(job_id), success(job, served))
    assert r.status_code == 200, r.text


# -- buying, using and settling ------------------------------------------------------


def test_quote_top_up_order_use_and_settle(
    app_client: TestClient,
    sqlite_only_db: Database,
    served: Served,
    operator: Client,
    tmp_path: Path,
) -> None:
    buyer = _sdk(app_client, served.buyer.key)
    started = datetime.now(UTC) - timedelta(seconds=1)

    quote = buyer.quotes.create(served.dataset_id, queries=2)
    assert (quote.queries, quote.currency, quote.payment_method) == (
        2,
        "EUR",
        "credits",
    )
    assert quote.gross_minor == quote.amount_minor == 2 * PRICE
    assert quote.exchange_fee_minor == 2 * PRICE // 10
    assert quote.expires_at > datetime.now(UTC)

    with pytest.raises(PaymentRequiredError) as poor:
        buyer.orders.create(quote.id)
    assert isinstance(poor.value, APIError)
    assert (poor.value.http_status, poor.value.code) == (402, "insufficient_funds")
    assert poor.value.request_id

    credited = operator.credits.top_up(
        served.buyer.org_id, 10 * PRICE, reference=f"bank-{uuid.uuid4().hex[:8]}"
    )
    assert (credited.kind, credited.currency) == ("buyer_funds", "EUR")
    assert credited.balance_minor == 10 * PRICE

    order = buyer.orders.create(quote.id, idempotency_key="buy-once")
    assert order.status == "active" and order.entitlement_id is not None
    assert (order.quote_id, order.amount_minor) == (quote.id, 2 * PRICE)
    again = buyer.orders.create(quote.id, idempotency_key="buy-once")
    assert again == order
    assert buyer.orders.get(order.id) == order
    funds = [b for b in buyer.balances.list() if b.kind == "buyer_funds"]
    assert [b.balance_minor for b in funds] == [8 * PRICE]

    ent = buyer.entitlements.get(order.entitlement_id)
    assert (ent.status, ent.quota_queries, ent.queries_used) == ("active", 2, 0)
    assert (ent.order_id, ent.buyer_id) == (order.id, served.buyer.org_id)
    assert ent.amount_authorized_minor == 2 * PRICE
    assert [e.id for e in buyer.entitlements.list()] == [ent.id]
    assert [e.id for e in buyer.entitlements.list(served.dataset_id)] == [ent.id]
    assert buyer.entitlements.list(uuid.uuid4()) == []
    provider = _sdk(app_client, served.provider.key)
    assert [e.id for e in provider.entitlements.list()] == [ent.id]

    job = buyer.jobs.create(
        served.dataset_id,
        kind="aggregate",
        purpose="research",
        params=COUNT_BY_REGION,
        entitlement_id=str(order.entitlement_id),
    )
    _run_node(app_client, served, job.id)
    used = buyer.entitlements.get(ent.id)
    assert (used.queries_used, used.queries_reserved) == (1, 0)
    assert used.amount_captured_minor == PRICE
    (charge,) = buyer.entitlements.charges(ent.id)
    assert (charge.kind, charge.job_id, charge.status) == ("job", job.id, "captured")
    assert (charge.entitlement_id, charge.amount_minor) == (ent.id, PRICE)

    closed = buyer.entitlements.close(ent.id)
    assert closed.status == "closed" and closed.finalized_at is not None
    funds = [b for b in buyer.balances.list() if b.kind == "buyer_funds"]
    assert [b.balance_minor for b in funds] == [9 * PRICE]  # the unused query back

    run = operator.settlements.run(started, datetime.now(UTC))
    assert (run.charges, run.gross_minor, run.currency) == (1, PRICE, "EUR")
    net = PRICE - PRICE // 10
    assert [(p.payee_id, p.amount_minor) for p in run.payouts] == [
        (served.provider.org_id, net)
    ]
    assert operator.settlements.get(run.id) == run
    assert [r.id for r in operator.settlements.list()] == [run.id]

    statement = provider.settlements.statement(run.id, served.provider.org_id)
    assert (statement.settlement_id, statement.payout_minor) == (run.id, net)
    (line,) = statement.lines
    assert (line.job_id, line.gross_minor, line.payee_minor) == (job.id, PRICE, net)
    text = provider.settlements.statement_csv(run.id, served.provider.org_id)
    header, *rows, total = list(csv.reader(io.StringIO(text)))
    assert header[0] == "captured_at" and header[-1] == "payee_minor"
    assert [r[2] for r in rows] == [str(job.id)]
    assert int(rows[0][header.index("gross_minor")]) == PRICE
    assert total[0] == "total" and int(total[-1]) == statement.payout_minor

    assert provider.settlements.statement(run.id) == statement  # yours by default

    # The command line: the provider's statement with its revenue charts.
    runner = CliRunner()
    env = {
        "COLUMNS": "200",
        "VEILX_API_KEY": served.provider.key,
        "VEILX_URL": str(app_client.base_url),
    }
    out = tmp_path / "statement.csv"
    shown = runner.invoke(
        settlements_app,
        ["statement", str(run.id), "--by", "hour", "--csv", str(out)],
        env=env,
        obj=app_client,
    )
    assert shown.exit_code == 0, shown.output
    assert "revenue per hour" in shown.stdout and "revenue per dataset" in shown.stdout
    assert f"paid to you {net / 100:.2f} EUR" in shown.stdout
    assert "█" * 40 in shown.stdout and str(served.dataset_id) in shown.stdout
    assert out.read_text(encoding="utf-8") == text
    bad = runner.invoke(
        settlements_app, ["statement", str(run.id), "--by", "week"], env=env,
        obj=app_client,
    )  # fmt: skip
    assert bad.exit_code == 2 and "--by" in bad.stderr
    listed = runner.invoke(
        settlements_app,
        ["list"],
        env={
            **env,
            "VEILX_API_KEY": create_random_org(sqlite_only_db, Role.OPERATOR).key,
        },
        obj=app_client,
    )
    assert listed.exit_code == 0, listed.output
    assert str(run.id) in listed.stdout and "completed" in listed.stdout

    check = operator.journal.check()
    assert check.ok and check.entries > 0
    assert check.unbalanced_entries == [] and check.drifted_accounts == []


def test_a_job_without_an_entitlement_is_payment_required(
    app_client: TestClient, served: Served
) -> None:
    buyer = _sdk(app_client, served.buyer.key)
    with pytest.raises(PaymentRequiredError) as none:
        buyer.jobs.create(
            served.dataset_id,
            kind="aggregate",
            purpose="research",
            params=COUNT_BY_REGION,
        )
    assert none.value.code == "entitlement_required"


def test_compute_charges_the_named_entitlement(
    app_client: TestClient, sqlite_only_db: Database, served: Served, tmp_path: Path
) -> None:
    first = buy_entitlement(
        app_client, sqlite_only_db, served.buyer, served.dataset_id, queries=3
    )
    second = buy_entitlement(
        app_client, sqlite_only_db, served.buyer, served.dataset_id, queries=3
    )
    buyer = _sdk(app_client, served.buyer.key, tmp_path / "keys")
    with pytest.raises(InputError) as bad:
        buyer.compute.aggregate(
            served.dataset_id,
            statistics=["count"],
            group_by=["region"],
            purpose="research",
            entitlement_id="not-a-uuid",
        )
    assert bad.value.field == "entitlement_id"

    job = buyer.compute.aggregate(
        served.dataset_id,
        statistics=["count"],
        group_by=["region"],
        purpose="research",
        entitlement_id=second["entitlement_id"],
        wait=False,
    )
    assert [c.job_id for c in buyer.entitlements.charges(second["entitlement_id"])] == [
        job.id
    ]
    assert buyer.entitlements.charges(first["entitlement_id"]) == []
    assert buyer.entitlements.get(second["entitlement_id"]).queries_reserved == 1
    with pytest.raises(NotFoundError):
        buyer.jobs.create(
            served.dataset_id,
            kind="aggregate",
            purpose="research",
            params=COUNT_BY_REGION,
            entitlement_id=uuid.uuid4(),
        )


def test_the_provider_revokes_an_entitlement(
    app_client: TestClient, sqlite_only_db: Database, served: Served
) -> None:
    order = buy_entitlement(app_client, sqlite_only_db, served.buyer, served.dataset_id)
    provider = _sdk(app_client, served.provider.key)
    with pytest.raises(InputError) as short:
        provider.entitlements.revoke(order["entitlement_id"], reason=" x ")
    assert short.value.field == "reason"
    revoked = provider.entitlements.revoke(
        order["entitlement_id"], reason="licence breach"
    )
    assert (revoked.status, revoked.revoke_reason) == ("revoked", "licence breach")
    assert revoked.revoked_at is not None
    buyer = _sdk(app_client, served.buyer.key)
    with pytest.raises(PaymentRequiredError) as gone:
        buyer.jobs.create(
            served.dataset_id,
            kind="aggregate",
            purpose="research",
            params=COUNT_BY_REGION,
        )
    assert gone.value.code == "entitlement_required"


def test_the_menu_prices_never_fall_as_epsilon_grows(
    app_client: TestClient, sqlite_only_db: Database
) -> None:
    served = create_served_dataset(
        app_client, sqlite_only_db, funded=False, plan=PRIVACY_PRICED
    )
    buyer = _sdk(app_client, served.buyer.key)
    menu = buyer.quotes.menu(served.dataset_id, sensitivity=2.0, epsilons=[1, 0.25, 4])
    assert (menu.dataset_id, menu.mechanism, menu.sensitivity) == (
        uuid.UUID(served.dataset_id),
        "laplace",
        2.0,
    )
    assert [o.epsilon for o in menu.options] == [0.25, 1.0, 4.0]
    assert [o.quote.gross_minor for o in menu.options] == [600, 1100, 2100]
    assert [o.expected_abs_error for o in menu.options] == [8.0, 2.0, 0.5]

    default = buyer.quotes.menu(served.dataset_id, sensitivity=1.0)
    assert [o.epsilon for o in default.options] == [0.1, 0.25, 0.5, 1.0, 2.0]
    prices = [o.quote.gross_minor for o in default.options]
    assert prices == sorted(prices)
    errors = [o.expected_abs_error for o in default.options]
    assert errors == sorted(errors, reverse=True)

    quote = buyer.quotes.create(served.dataset_id, epsilon=1.0, sensitivity=2.0)
    assert quote.epsilon == 1.0 and quote.expected_abs_error == 2.0
    assert quote.ci95_half_width is not None and quote.ci95_half_width > 2.0


# -- errors ---------------------------------------------------------------------------


class _Scripted:
    """A transport answering each request with the next scripted response."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected {request.method} {request.url}")
        return self.answers.pop(0)

    def client(self, **options: Any) -> Client:
        return Client(
            "vx_test",
            base_url="https://exchange.test",
            http_client=httpx.Client(transport=httpx.MockTransport(self)),
            **options,
        )


def _problem(status: int, code: str, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "status": status, "code": code, "detail": detail}
    return httpx.Response(
        status,
        json=body,
        headers={"Content-Type": "application/problem+json", "X-Request-Id": "r-1"},
    )


def _order_json(quote_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "quote_id": str(quote_id),
        "dataset_id": str(uuid.uuid4()),
        "status": "active",
        "payment_method": "credits",
        "amount_minor": 100,
        "currency": "EUR",
        "client_secret": None,
        "failure_reason": None,
        "entitlement_id": str(uuid.uuid4()),
        "created_at": "2026-01-01T00:00:00Z",
    }


def test_payment_unavailable_is_retried_with_the_same_idempotency_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(HTTP, "_sleep", staticmethod(lambda _: None))
    quote_id = uuid.uuid4()
    down = _problem(503, "payment_unavailable", "Stripe is unreachable")
    exchange = _Scripted(down, httpx.Response(201, json=_order_json(quote_id)))
    with exchange.client(max_network_retries=2) as client:
        order = client.orders.create(quote_id)
    assert order.quote_id == quote_id
    keys = [r.headers["Idempotency-Key"] for r in exchange.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and uuid.UUID(keys[0])
    assert json.loads(exchange.requests[0].content) == {"quote_id": str(quote_id)}

    exchange = _Scripted(down)
    with exchange.client() as client, pytest.raises(PaymentUnavailableError) as err:
        client.orders.create(quote_id, idempotency_key="mine-1")
    assert isinstance(err.value, ServerError)
    assert (err.value.http_status, err.value.code) == (503, "payment_unavailable")
    assert exchange.requests[0].headers["Idempotency-Key"] == "mine-1"


@pytest.mark.parametrize(
    "code",
    [
        "insufficient_funds",
        "payment_declined",
        "entitlement_required",
        "entitlement_exhausted",
    ],
)
def test_every_402_is_payment_required_and_not_retried(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HTTP, "_sleep", staticmethod(lambda _: None))
    exchange = _Scripted(_problem(402, code, "pay first"))
    with exchange.client(max_network_retries=3) as client:
        with pytest.raises(PaymentRequiredError) as err:
            client.orders.create(uuid.uuid4())
    assert (err.value.code, err.value.request_id) == (code, "r-1")
    assert str(err.value) == f"pay first (HTTP 402, {code}, request r-1)"
    assert len(exchange.requests) == 1


def test_other_503s_stay_plain_server_errors() -> None:
    exchange = _Scripted(_problem(503, "chain_unavailable", "no chain"))
    with exchange.client() as client, pytest.raises(ServerError) as err:
        client.journal.check()
    assert type(err.value) is ServerError


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.quotes.create("nope"), "dataset_id"),
        (lambda c: c.quotes.create(uuid.uuid4(), queries=0), "queries"),
        (lambda c: c.quotes.create(uuid.uuid4(), queries=True), "queries"),
        (lambda c: c.quotes.create(uuid.uuid4(), epsilon=-1), "epsilon"),
        (lambda c: c.quotes.create(uuid.uuid4(), epsilon=float("nan")), "epsilon"),
        (lambda c: c.quotes.create(uuid.uuid4(), delta=0.5), "delta"),
        (lambda c: c.quotes.create(uuid.uuid4(), periods=37), "periods"),
        (
            lambda c: c.quotes.create(uuid.uuid4(), payment_method="cash"),
            "payment_method",
        ),
        (lambda c: c.quotes.create(uuid.uuid4(), sensitivity=0), "sensitivity"),
        (lambda c: c.quotes.create(uuid.uuid4(), mechanism="exp"), "mechanism"),
        (lambda c: c.quotes.menu(uuid.uuid4(), sensitivity=1, epsilons=[]), "epsilons"),
        (
            lambda c: c.quotes.menu(uuid.uuid4(), sensitivity=1, epsilons=[1, 0]),
            "epsilons[1]",
        ),
        (lambda c: c.quotes.menu(uuid.uuid4(), sensitivity=-2), "sensitivity"),
        (lambda c: c.orders.create("q"), "quote_id"),
        (
            lambda c: c.orders.create(uuid.uuid4(), idempotency_key=""),
            "idempotency_key",
        ),
        (
            lambda c: c.orders.create(uuid.uuid4(), idempotency_key="k" * 256),
            "idempotency_key",
        ),
        (lambda c: c.orders.get("o"), "order_id"),
        (lambda c: c.entitlements.list("d"), "dataset_id"),
        (lambda c: c.entitlements.charges("e"), "entitlement_id"),
        (lambda c: c.entitlements.revoke(uuid.uuid4(), reason=""), "reason"),
        (lambda c: c.credits.top_up("o", 100, reference="r"), "organisation_id"),
        (lambda c: c.credits.top_up(uuid.uuid4(), 0, reference="r"), "amount_minor"),
        (lambda c: c.credits.top_up(uuid.uuid4(), 1, reference=" "), "reference"),
        (
            lambda c: c.credits.top_up(uuid.uuid4(), 1, reference="r", currency="eur"),
            "currency",
        ),
        (
            lambda c: c.settlements.run(
                datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2)
            ),
            "period_end",
        ),
        (
            lambda c: c.settlements.run(
                datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
            ),
            "period_end",
        ),
        (lambda c: c.settlements.statement(uuid.uuid4(), "p"), "payee_id"),
        (
            lambda c: c.wallets.register(uuid.uuid4(), "0x12", "0x" + "a" * 130),
            "address",
        ),
        (
            lambda c: c.wallets.register(uuid.uuid4(), "0x" + "1" * 40, "0xab"),
            "signature",
        ),
        (lambda c: c.wallets.get("o"), "organisation_id"),
        (lambda c: c.settlements.statement_csv("s", uuid.uuid4()), "settlement_id"),
    ],
)
def test_bad_arguments_are_refused_before_sending(call: Any, field: str) -> None:
    exchange = _Scripted()
    with exchange.client() as client, pytest.raises(InputError) as err:
        call(client)
    assert err.value.field == field
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{field}: ")
    assert exchange.requests == []


# -- the command line ----------------------------------------------------------------


def test_quote_buy_and_entitlements_commands(
    app_client: TestClient, sqlite_only_db: Database, served: Served, operator: Client
) -> None:
    runner = CliRunner()
    env = {
        "COLUMNS": "200",
        "VEILX_API_KEY": served.buyer.key,
        "VEILX_URL": str(app_client.base_url),
    }

    def run(*args: str) -> Any:
        return runner.invoke(datasets_app, list(args), env=env, obj=app_client)

    shown = run("quote", served.dataset_id, "--queries", "2")
    assert shown.exit_code == 0, shown.output
    assert "50.00 EUR by credits" in shown.stdout
    done = run("quote", served.dataset_id, "--queries", "2", "--json")
    assert done.exit_code == 0, done.output
    quote = json.loads(done.stdout)
    assert quote["gross_minor"] == 2 * PRICE

    poor = run("buy", quote["id"])
    assert poor.exit_code == 2
    (line,) = poor.stderr.strip().splitlines()
    assert line.startswith("veilx: error: ") and "insufficient_funds" in line

    operator.credits.top_up(served.buyer.org_id, 2 * PRICE, reference="cli-test")
    bought = run("buy", quote["id"], "--idempotency-key", "cli-1")
    assert bought.exit_code == 0, bought.output
    assert "paid 50.00 EUR: entitlement " in bought.stdout
    again = run("buy", quote["id"], "--idempotency-key", "cli-1", "--json")
    entitlement_id = json.loads(again.stdout)["entitlement_id"]
    assert entitlement_id in bought.stdout

    listed = run("entitlements", served.dataset_id, "--json")
    assert [e["id"] for e in json.loads(listed.stdout)] == [entitlement_id]
    table = run("entitlements")
    assert table.exit_code == 0 and "0 / 2" in table.stdout
    assert "0.00 EUR of 50.00 EUR" in table.stdout

    bad = run("entitlements", "nope")
    assert bad.exit_code == 2
    assert bad.stderr.strip() == "veilx: error: dataset_id: 'nope' is not a UUID"


def test_a_wallet_is_registered_with_its_signature_and_read_back(
    app_client: TestClient, served: Served
) -> None:
    import secrets

    from marketplace.payments.onchain import sign_wallet_proof

    buyer = _sdk(app_client, served.buyer.key)
    key = "0x" + secrets.token_hex(32)
    address, signature = sign_wallet_proof(key, served.buyer.org_id)
    with pytest.raises(NotFoundError):
        buyer.wallets.get(served.buyer.org_id)
    _, other = sign_wallet_proof("0x" + secrets.token_hex(32), served.buyer.org_id)
    with pytest.raises(InvalidRequestError) as refused:
        buyer.wallets.register(served.buyer.org_id, address, other)
    assert refused.value.http_status == 422
    assert [e.field for e in refused.value.errors] == ["signature"]
    wallet = buyer.wallets.register(served.buyer.org_id, address, signature)
    assert wallet.address == address and wallet.escrow_balance_minor == 0
    assert buyer.wallets.get(served.buyer.org_id).address == address


def test_the_sdk_signs_the_proof_the_exchange_checks() -> None:
    import secrets

    from marketplace.models import WALLET_PROOF as SERVER_PROOF
    from marketplace.payments.onchain import verify_wallet_proof
    from sdk import WALLET_PROOF, wallet_proof

    assert WALLET_PROOF == SERVER_PROOF
    org = uuid.uuid4()
    address, signature = wallet_proof("0x" + secrets.token_hex(32), org)
    assert verify_wallet_proof(org, address, signature) == address
    with pytest.raises(InputError) as err:
        wallet_proof("0x12", org)
    assert err.value.field == "private_key"


def test_wallet_commands_and_an_onchain_purchase(
    app_client: TestClient, served: Served, tmp_path: Path
) -> None:
    from sdk.cli import wallet_app
    from tests.api.test_onchain_payments import Wallet

    ledger = app_client.app.state.chain.get().ledger  # type: ignore[attr-defined]
    wallet = Wallet(ledger)
    key_file = tmp_path / "wallet.key"
    key_file.write_text(wallet.key + "\n", encoding="utf-8")
    key_file.chmod(0o644)
    runner = CliRunner()
    env = {
        "COLUMNS": "200",
        "VEILX_API_KEY": served.buyer.key,
        "VEILX_URL": str(app_client.base_url),
    }

    def run(app: Any, *args: str) -> Any:
        return runner.invoke(app, list(args), env=env, obj=app_client)

    loose = run(wallet_app, "register", "--key-file", str(key_file))
    assert loose.exit_code == 2 and "chmod 600" in loose.stderr
    key_file.chmod(0o600)
    missing = run(wallet_app, "show")
    assert missing.exit_code == 2 and "has no wallet" in missing.stderr
    done = run(wallet_app, "register", "--key-file", str(key_file))
    assert done.exit_code == 0, done.output
    assert wallet.address in done.stdout and wallet.key not in done.stdout
    wallet.deposit(ledger, 3 * PRICE)
    shown = run(wallet_app, "show", "--json")
    assert json.loads(shown.stdout)["escrow_balance_minor"] == 3 * PRICE

    quoted = run(
        datasets_app,
        "quote",
        served.dataset_id,
        "--queries",
        "2",
        "--payment-method",
        "onchain",
        "--json",
    )
    assert quoted.exit_code == 0, quoted.output
    bought = run(datasets_app, "buy", json.loads(quoted.stdout)["id"])
    assert bought.exit_code == 0, bought.output
    assert "paid 50.00 EUR" in bought.stdout
    shown = run(wallet_app, "show")
    assert f"escrow balance {PRICE / 100:.2f} EUR" in shown.stdout
    bad = run(datasets_app, "quote", served.dataset_id, "--payment-method", "gold")
    assert bad.exit_code == 2 and "--payment-method" in bad.stderr
