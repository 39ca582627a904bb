"""Trading: quotes, orders, entitlements, credits, webhooks, settlement, statements."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field

from marketplace.api.deps import SessionDep, SettlementDep, TradingDep, allow
from marketplace.errors import ValidationFailed
from marketplace.models import (
    AccountPublic,
    ChargePublic,
    CreditTopUp,
    EntitlementPublic,
    EntitlementRevocation,
    OrderCreate,
    OrderPublic,
    PayoutAccountPublic,
    QuoteMenuPublic,
    QuotePublic,
    QuoteRequestBody,
    Role,
    SettlementCreate,
    SettlementRunPublic,
    StatementPublic,
    WalletPublic,
    WalletRegistration,
)
from marketplace.services.identity import Caller
from marketplace.services.journal import check_journal
from marketplace.services.settlement import SettlementService

router = APIRouter(tags=["trading"])

Buyer = Annotated[Caller, allow(Role.BUYER)]
Member = Annotated[Caller, allow()]
Operator = Annotated[Caller, allow(Role.OPERATOR)]
Overseer = Annotated[Caller, allow(Role.OPERATOR, Role.REGULATOR)]
Revoker = Annotated[Caller, allow(Role.PROVIDER, Role.OPERATOR)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Required: the same key never buys twice.",
    ),
]


class MenuRequest(QuoteRequestBody):
    """A quote request and the ε choices to price."""

    epsilons: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default=[0.1, 0.25, 0.5, 1.0, 2.0], min_length=1, max_length=12
    )


class CreditBalance(AccountPublic):
    """A buyer's credit balance after a top-up."""


class JournalCheckPublic(BaseModel):
    """The journal's invariants, recomputed from its lines."""

    ok: bool
    entries: int
    unbalanced_entries: list[int]
    drifted_accounts: list[str]
    negative_accounts: list[str]


# -- quotes and orders ---------------------------------------------------------------


@router.post("/v1/quotes", status_code=201, operation_id="create_quote")
def create_quote(
    body: QuoteRequestBody, caller: Buyer, trading: TradingDep
) -> QuotePublic:
    """Price an entitlement (computations, ε budget, periods) on a listed dataset.

    The quote holds its price until ``expires_at``. With ``sensitivity`` it also
    states the expected error and 95% confidence half-width of a DP answer at the
    quoted ε.
    """
    return trading.quote(caller, body)


@router.post("/v1/quotes/menu", status_code=201, operation_id="create_quote_menu")
def create_quote_menu(
    body: MenuRequest, caller: Buyer, trading: TradingDep
) -> QuoteMenuPublic:
    """Several (ε, expected error, price) choices for one DP question.

    Each option carries a quote to order. Prices never fall as ε grows, and
    splitting a question into smaller-ε questions never costs less.
    """
    request = QuoteRequestBody.model_validate(body.model_dump(exclude={"epsilons"}))
    return trading.menu(caller, request, body.epsilons)


@router.post("/v1/orders", status_code=201, operation_id="create_order")
def create_order(
    body: OrderCreate, caller: Buyer, trading: TradingDep, key: IdempotencyKey
) -> OrderPublic:
    """Buy a quote: the payment is authorised and the entitlement granted.

    Credits are held from the buyer's balance at once (402 ``insufficient_funds``
    otherwise). A card is authorised through Stripe; when it needs the buyer's
    confirmation the order is ``requires_action`` with a ``client_secret`` and a
    webhook completes it.
    """
    return trading.order(caller, body, key)


@router.get("/v1/orders/{order_id}", operation_id="get_order")
def get_order(order_id: uuid.UUID, caller: Member, trading: TradingDep) -> OrderPublic:
    """One of the caller's orders."""
    return trading.get_order(caller, order_id)


# -- entitlements --------------------------------------------------------------------


@router.get("/v1/entitlements", operation_id="list_entitlements")
def list_entitlements(
    caller: Member, trading: TradingDep, dataset_id: uuid.UUID | None = None
) -> list[EntitlementPublic]:
    """The caller's entitlements as buyer, and those sold on its datasets."""
    return trading.entitlements(caller, dataset_id)


@router.get("/v1/entitlements/{entitlement_id}", operation_id="get_entitlement")
def get_entitlement(
    entitlement_id: uuid.UUID, caller: Member, trading: TradingDep
) -> EntitlementPublic:
    """Quota, ε budget and money: used, reserved by running jobs, and left."""
    return trading.entitlement(caller, entitlement_id)


@router.get(
    "/v1/entitlements/{entitlement_id}/charges", operation_id="list_entitlement_charges"
)
def list_entitlement_charges(
    entitlement_id: uuid.UUID, caller: Member, trading: TradingDep
) -> list[ChargePublic]:
    """What each job reserved and was charged."""
    return trading.charges(caller, entitlement_id)


@router.post(
    "/v1/entitlements/{entitlement_id}/revoke", operation_id="revoke_entitlement"
)
def revoke_entitlement(
    entitlement_id: uuid.UUID,
    body: EntitlementRevocation,
    caller: Revoker,
    trading: TradingDep,
) -> EntitlementPublic:
    """The dataset's provider or the operator ends an entitlement, with a reason."""
    return trading.revoke(caller, entitlement_id, body)


@router.post(
    "/v1/entitlements/{entitlement_id}/close", operation_id="close_entitlement"
)
def close_entitlement(
    entitlement_id: uuid.UUID, caller: Buyer, trading: TradingDep
) -> EntitlementPublic:
    """The buyer ends its entitlement; the unused part of the hold is released."""
    return trading.close(caller, entitlement_id)


# -- credits and balances ------------------------------------------------------------


@router.post(
    "/v1/organisations/{organisation_id}/credits", operation_id="top_up_credits"
)
def top_up_credits(
    organisation_id: uuid.UUID, body: CreditTopUp, caller: Operator, trading: TradingDep
) -> CreditBalance:
    """Record a buyer's prepaid payment as credits (``reference`` is unique)."""
    balance = trading.top_up(organisation_id, body)
    return CreditBalance(
        code=f"funds:{organisation_id}:{body.currency}",
        kind="buyer_funds",
        currency=body.currency,
        balance_minor=balance,
    )


@router.get("/v1/balances", operation_id="list_balances")
def list_balances(caller: Member, trading: TradingDep) -> list[AccountPublic]:
    """The caller's organisation's accounts: credits and payables, per currency."""
    return trading.balances(caller)


@router.put(
    "/v1/organisations/{organisation_id}/payout-account",
    operation_id="set_payout_account",
)
def set_payout_account(
    organisation_id: uuid.UUID,
    caller: Operator,
    trading: TradingDep,
    country: Annotated[str, Query(pattern=r"^[A-Z]{2}$")] = "DE",
) -> PayoutAccountPublic:
    """Open (once) the provider's Stripe connected account that card money pays."""
    return trading.payout_account(organisation_id, country)


@router.put(
    "/v1/organisations/{organisation_id}/wallet", operation_id="register_wallet"
)
def register_wallet(
    organisation_id: uuid.UUID,
    body: WalletRegistration,
    caller: Member,
    trading: TradingDep,
) -> WalletPublic:
    """Make a wallet the organisation's (the onchain way of paying and being paid).

    ``signature`` is the wallet's EIP-191 signature of ``veilx: organisation <id>
    pays and is paid from wallet <checksummed address>``.
    """
    return trading.register_wallet(caller, organisation_id, body)


@router.get("/v1/organisations/{organisation_id}/wallet", operation_id="get_wallet")
def get_wallet(
    organisation_id: uuid.UUID, caller: Member, trading: TradingDep
) -> WalletPublic:
    """The organisation's wallet and what it holds in the payment escrow."""
    return trading.wallet(caller, organisation_id)


# -- webhooks ------------------------------------------------------------------------


@router.post(
    "/v1/webhooks/stripe", operation_id="stripe_webhook", include_in_schema=True
)
async def stripe_webhook(
    request: Request,
    trading: TradingDep,
    signature: Annotated[str, Header(alias="Stripe-Signature", max_length=4096)] = "",
) -> dict[str, str]:
    """Stripe's events, verified by their signature and processed exactly once."""
    payload = await request.body()
    if not signature:
        raise ValidationFailed.for_field("header.Stripe-Signature", "required")
    return {"result": trading.stripe_webhook(payload, signature)}


# -- settlement ----------------------------------------------------------------------


@router.post("/v1/settlements", status_code=201, operation_id="run_settlement")
def run_settlement(
    body: SettlementCreate, caller: Operator, settlement: SettlementDep
) -> SettlementRunPublic:
    """Settle a past period: payables per payee, payouts, statements.

    Idempotent: the same period again resumes unpaid payouts or answers the run.
    """
    return settlement.run(caller, body)


@router.get("/v1/settlements", operation_id="list_settlements")
def list_settlements(
    caller: Overseer, settlement: SettlementDep
) -> list[SettlementRunPublic]:
    """Every settlement run, newest period first."""
    return settlement.runs(caller)


@router.get("/v1/settlements/{settlement_id}", operation_id="get_settlement")
def get_settlement(
    settlement_id: uuid.UUID, caller: Overseer, settlement: SettlementDep
) -> SettlementRunPublic:
    """One settlement run and its payouts."""
    return settlement.get(caller, settlement_id)


@router.get(
    "/v1/settlements/{settlement_id}/statements/{payee_id}",
    operation_id="get_statement",
    responses={200: {"content": {"text/csv": {}}}},
)
def get_statement(
    settlement_id: uuid.UUID,
    payee_id: uuid.UUID,
    caller: Member,
    settlement: SettlementDep,
    format: Literal["json", "csv"] = "json",
) -> StatementPublic:
    """A payee's statement for a run, as JSON or CSV (``?format=csv``).

    To the payee itself, the operator and the regulator.
    """
    statement = settlement.statement(caller, settlement_id, payee_id)
    if format == "csv":
        return Response(  # type: ignore[return-value]
            SettlementService.statement_csv(statement),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="statement-'
                f'{settlement_id}-{payee_id}.csv"'
            },
        )
    return statement


@router.get("/v1/journal/check", operation_id="check_journal")
def get_journal_check(caller: Overseer, session: SessionDep) -> JournalCheckPublic:
    """Recompute the journal's invariants: entries balance, balances match lines."""
    found = check_journal(session)
    return JournalCheckPublic(
        ok=found.ok,
        entries=found.entries,
        unbalanced_entries=found.unbalanced_entries,
        drifted_accounts=found.drifted_accounts,
        negative_accounts=found.negative_accounts,
    )
