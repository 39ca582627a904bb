"""Trading: quotes, orders, entitlements and the charge of each job.

A buyer asks for a :meth:`TradingService.quote` (or a DP
:meth:`~TradingService.menu` of several ε), buys it with an
:meth:`~TradingService.order` (an idempotency key; the payment provider authorises
the quote's amount) and gets an :class:`~marketplace.models.Entitlement`. Each job
then reserves its most possible charge against the entitlement
(:meth:`Billing.reserve`), is metered, and is charged only when its output is
released (:meth:`Billing.capture`); a failed, refused or expired job is voided
(:meth:`Billing.void`) and costs nothing.

When an entitlement ends (closed by the buyer, used up, expired or revoked) and
no job holds a reservation, :meth:`Billing.finalize` settles the payment with the
provider: the captured total is collected and the rest of the hold released. For
a card this is one partial capture of the PaymentIntent (or a cancel when nothing
was released). The provider call is idempotent (its key names the entitlement)
and :meth:`Billing.finalize_due` re-runs every unfinished one, so a process
killed between the capture and the journal entry is reconciled on restart.

Journal entries (:mod:`marketplace.services.journal`)::

    top-up            Dr cash:credits         Cr funds:<buyer>
    order (credits)   Dr funds:<buyer>        Cr hold:<ent>
    order (card,      Dr auth:<ent>           Cr hold:<ent>
      onchain)
    capture (a job)   Dr hold:<ent>           Cr payable:<payee>…, fees
    finalize credits  Dr hold:<ent> (rest)    Cr funds:<buyer>
    finalize card     Dr cash:stripe          Cr auth:<ent>       (captured)
     (onchain: cash:onchain, no surcharge)
    card subscription Dr cash:stripe          Cr auth:<ent>       (captured at once)
     (onchain: cash:onchain; the refund goes to the wallet's escrow balance)
      its end         Dr hold:<ent>           Cr surcharges
                      Dr hold:<ent> (rest)    Cr cash:stripe      (refunded)
                      Dr hold:<ent>           Cr surcharges       (card surcharge)
                      Dr hold:<ent> (rest)    Cr auth:<ent>       (released)
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

import pricing
from marketplace.errors import (
    Conflict,
    IdempotencyKeyReused,
    NotFound,
    PaymentRequired,
    PaymentUnavailable,
    PermissionDenied,
    ValidationFailed,
)
from marketplace.models import (
    Account,
    AccountPublic,
    Charge,
    ChargePublic,
    ChargeStatus,
    CreditTopUp,
    Dataset,
    DatasetVersion,
    Entitlement,
    EntitlementPublic,
    EntitlementRevocation,
    EntitlementStatus,
    Job,
    MenuOptionPublic,
    Order,
    OrderCreate,
    OrderPublic,
    OrderStatus,
    Organisation,
    OrgWallet,
    PayoutAccount,
    PayoutAccountPublic,
    Quote,
    QuoteMenuPublic,
    QuotePublic,
    QuoteRequestBody,
    Role,
    WalletPublic,
    WalletRegistration,
    WebhookEvent,
    utcnow,
)
from marketplace.payments import (
    Authorization,
    AuthorizationStatus,
    Capture,
    ConnectProvider,
    PaymentDeclined,
    PaymentError,
    PaymentProvider,
)
from marketplace.payments import PaymentUnavailable as ProviderUnavailable
from marketplace.payments.onchain import OnchainProvider, verify_wallet_proof
from marketplace.services.catalog import CatalogService
from marketplace.services.identity import Caller
from marketplace.services.journal import (
    AccountRef,
    Journal,
    auth_account,
    cash_account,
    fees_account,
    funds_account,
    hold_account,
    payable_account,
    surcharges_account,
)
from marketplace.services.ledger import LedgerRecorder, dataset_shares
from mpc_engine.protocol import JobKind, SignedReceipt, parse_params

__all__ = [
    "Billing",
    "Meter",
    "TradingConfig",
    "TradingService",
    "meter_job",
    "planned_loss",
]

log = logging.getLogger("veilx.trading")

CARD_HOLD_DAYS = 7
"""A card authorisation lasts about seven days; card entitlements end sooner."""
UPFRONT_METHODS = frozenset({"stripe", "onchain"})
"""Payment methods whose subscriptions are captured when bought (see ``_activate``)."""
_PERIOD_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_RETRIES = 50


@dataclass(frozen=True)
class TradingConfig:
    """The exchange's trading settings."""

    fee_bps: int = 1_000
    quote_ttl: timedelta = timedelta(minutes=15)
    entitlement_ttl: timedelta = timedelta(days=30)
    card_surcharge: pricing.Surcharge = field(
        default_factory=lambda: pricing.Surcharge(bps=150, fixed_minor=25)
    )

    @classmethod
    def from_settings(cls, settings: Any) -> TradingConfig:
        """Read the trading fields of :class:`marketplace.config.Settings`."""
        return cls(
            fee_bps=settings.exchange_fee_bps,
            quote_ttl=timedelta(seconds=settings.quote_ttl_seconds),
            entitlement_ttl=timedelta(days=settings.entitlement_ttl_days),
            card_surcharge=pricing.Surcharge(
                bps=settings.card_surcharge_bps,
                fixed_minor=settings.card_surcharge_fixed_minor,
            ),
        )

    def surcharge_for(self, method: str) -> pricing.Surcharge | None:
        """What paying with ``method`` adds on top (cards only)."""
        return self.card_surcharge if method == "stripe" else None


@dataclass(frozen=True)
class Meter:
    """What a job uses, metered by the exchange from the job and the dataset."""

    rows_scanned: int
    compute_units: int


def meter_job(kind: JobKind, params: Mapping[str, Any], row_count: int) -> Meter:
    """Meter a job from what the exchange knows before it runs (so it is exact).

    Aggregates scan every row for one unit of compute; an encrypted model
    evaluation scans every row and costs a unit per feature plus one; an encrypted
    inference scans its ``n_rows`` and costs a unit per 100 rows, rounded up.
    """
    parsed = parse_params(kind, params)
    if kind is JobKind.ENCRYPTED_INFERENCE:
        n_rows = int(getattr(parsed, "n_rows", 1))
        return Meter(n_rows, max(1, math.ceil(n_rows / 100)))
    if kind is JobKind.ENCRYPTED_MODEL_EVAL:
        return Meter(row_count, 1 + len(getattr(parsed, "features", [])))
    return Meter(row_count, 1)


def planned_loss(kind: JobKind, params: Mapping[str, Any]) -> tuple[int, float]:
    """The most privacy loss a job can spend: (micro-ε, δ); zero without DP."""
    if kind is not JobKind.AGGREGATE:
        return 0, 0.0
    dp = getattr(parse_params(kind, params), "dp", None)
    if dp is None:
        return 0, 0.0
    return pricing.epsilon_to_micro(float(dp.epsilon)), float(dp.delta)


def _plan(raw: Mapping[str, Any]) -> pricing.AnyPlan:
    return pricing.PRICING_PLAN_ADAPTER.validate_python(dict(raw))


class TradingService:
    """Quotes, orders, entitlements and credits, for the API."""

    def __init__(
        self,
        session: Session,
        config: TradingConfig,
        providers: Mapping[str, PaymentProvider],
    ) -> None:
        self.session = session
        self.config = config
        self.providers = providers
        self.billing = Billing(session, config, providers)

    # -- quotes -----------------------------------------------------------------------

    def quote(self, caller: Caller, body: QuoteRequestBody) -> QuotePublic:
        """Price an entitlement on a listed dataset for the caller.

        Raises
        ------
        NotFound
            The dataset is not visible to the caller.
        Conflict
            The dataset is not listed.
        ValidationFailed
            The payment method is not configured, or the terms do not fit the
            plan (a subscription's quota without overage, ε on a plan that
            prices none).
        """
        ds, version = self._listed(caller, body.dataset_id)
        plan = _plan(ds.pricing_plan)
        self._check_method(body.payment_method)
        terms = self._terms(plan, body, version)
        accuracy = self._accuracy(body)
        priced = self._make_quote(plan, terms, body, accuracy)
        quote = self._store(caller, ds, plan, terms, body, priced)
        self.session.commit()
        return self._quote_public(quote)

    def menu(
        self, caller: Caller, body: QuoteRequestBody, epsilons: Sequence[float]
    ) -> QuoteMenuPublic:
        """Several (ε, expected error, price) choices for one DP question.

        Each option is a stored quote the buyer may order. ``sensitivity`` is
        required: the expected error depends on it.
        """
        if body.sensitivity is None:
            raise ValidationFailed.for_field(
                "sensitivity", "required for a menu: the error depends on it"
            )
        ds, version = self._listed(caller, body.dataset_id)
        plan = _plan(ds.pricing_plan)
        self._check_method(body.payment_method)
        accuracy = self._accuracy(body)
        if accuracy is None:  # sensitivity is set, so this cannot happen
            raise ValidationFailed.for_field("sensitivity", "required")
        options: list[MenuOptionPublic] = []
        for eps in sorted(set(epsilons)):
            one = body.model_copy(update={"epsilon": eps})
            terms = self._terms(plan, one, version)
            priced = self._make_quote(plan, terms, one, accuracy)
            quote = self._store(caller, ds, plan, terms, one, priced)
            error, half = accuracy.error_at(eps)
            options.append(
                MenuOptionPublic(
                    epsilon=eps,
                    delta=body.delta,
                    expected_abs_error=error,
                    ci95_half_width=half,
                    quote=self._quote_public(quote),
                )
            )
        self.session.commit()
        return QuoteMenuPublic(
            dataset_id=ds.id,
            mechanism=body.mechanism,
            sensitivity=body.sensitivity,
            options=options,
        )

    def _listed(
        self, caller: Caller, dataset_id: uuid.UUID
    ) -> tuple[Dataset, DatasetVersion]:
        return CatalogService(self.session).load_listed(
            caller, dataset_id, doing="the exchange sells"
        )

    def _check_method(self, method: str) -> None:
        if method not in self.providers:
            raise ValidationFailed.for_field(
                "payment_method",
                f"{method} is not configured on this exchange; use "
                f"{', '.join(sorted(self.providers))}",
            )

    def _terms(
        self,
        plan: pricing.AnyPlan,
        body: QuoteRequestBody,
        version: DatasetVersion,
    ) -> pricing.EntitlementTerms:
        if body.periods != 1 and not isinstance(plan, pricing.Subscription):
            raise ValidationFailed.for_field(
                "periods", f"only subscriptions have periods; this plan is {plan.kind}"
            )
        try:
            terms = pricing.EntitlementTerms(
                queries=body.queries,
                epsilon_micro=pricing.epsilon_to_micro(body.epsilon),
                max_rows_per_query=version.row_count,
                max_compute_units_per_query=body.compute_units_per_query,
                periods=body.periods,
            )
            pricing.authorization_minor(plan, terms)
        except pricing.QuotaExceeded as exc:
            raise ValidationFailed.for_field(
                "queries",
                f"the subscription allows {exc.quota} computations per period and "
                "no overage; buy more periods or fewer queries",
            ) from None
        except (pricing.MoneyError, ValueError) as exc:
            raise ValidationFailed.for_field("queries", str(exc)) from None
        return terms

    @staticmethod
    def _accuracy(body: QuoteRequestBody) -> pricing.Accuracy | None:
        if body.sensitivity is None:
            return None
        if body.mechanism == "gaussian" and not 0 < body.delta < 1:
            raise ValidationFailed.for_field(
                "delta", "the gaussian mechanism needs 0 < delta < 1"
            )
        return pricing.Accuracy(
            sensitivity=body.sensitivity, mechanism=body.mechanism, delta=body.delta
        )

    def _make_quote(
        self,
        plan: pricing.AnyPlan,
        terms: pricing.EntitlementTerms,
        body: QuoteRequestBody,
        accuracy: pricing.Accuracy | None,
    ) -> pricing.Quote:
        if accuracy is not None and terms.epsilon_micro == 0:
            accuracy = None  # no DP release: no noise to state
        return pricing.make_quote(
            plan,
            pricing.QuoteRequest(terms=terms),
            now=utcnow(),
            ttl=self.config.quote_ttl,
            fee_bps=self.config.fee_bps,
            surcharge=self.config.surcharge_for(body.payment_method),
            accuracy=accuracy,
        )

    def _store(
        self,
        caller: Caller,
        ds: Dataset,
        plan: pricing.AnyPlan,
        terms: pricing.EntitlementTerms,
        body: QuoteRequestBody,
        priced: pricing.Quote,
    ) -> Quote:
        quote = Quote(
            buyer_id=caller.organisation_id,
            dataset_id=ds.id,
            provider_id=ds.organisation_id,
            plan=plan.model_dump(mode="json"),
            terms={
                "queries": terms.queries,
                "epsilon_micro": terms.epsilon_micro,
                "delta": body.delta,
                "max_rows_per_query": terms.max_rows_per_query,
                "max_compute_units_per_query": terms.max_compute_units_per_query,
                "periods": terms.periods,
            },
            currency=priced.currency,
            payment_method=body.payment_method,
            gross_minor=priced.breakdown.gross_minor,
            surcharge_minor=priced.breakdown.surcharge_minor,
            amount_minor=priced.breakdown.total_minor,
            fee_minor=priced.breakdown.exchange_fee_minor,
            fee_bps=self.config.fee_bps,
            epsilon_micro=terms.epsilon_micro,
            delta=body.delta,
            expected_abs_error=priced.expected_abs_error,
            ci95_half_width=priced.ci95_half_width,
            compute_units_estimate=priced.compute_units_estimate,
            rows_estimate=priced.rows_estimate,
            expires_at=priced.expires_at,
        )
        self.session.add(quote)
        self.session.flush()
        return quote

    @staticmethod
    def _quote_public(quote: Quote) -> QuotePublic:
        return QuotePublic(
            id=quote.id,
            dataset_id=quote.dataset_id,
            plan_kind=str(quote.plan["kind"]),
            currency=quote.currency,
            payment_method=quote.payment_method,
            queries=int(quote.terms["queries"]),
            periods=int(quote.terms["periods"]),
            epsilon=pricing.micro_to_epsilon(quote.epsilon_micro),
            delta=quote.delta,
            gross_minor=quote.gross_minor,
            surcharge_minor=quote.surcharge_minor,
            amount_minor=quote.amount_minor,
            exchange_fee_minor=quote.fee_minor,
            expected_abs_error=quote.expected_abs_error,
            ci95_half_width=quote.ci95_half_width,
            compute_units_estimate=quote.compute_units_estimate,
            rows_estimate=quote.rows_estimate,
            expires_at=quote.expires_at,
        )

    # -- orders -----------------------------------------------------------------------

    def order(
        self, caller: Caller, body: OrderCreate, idempotency_key: str
    ) -> OrderPublic:
        """Buy a quote: authorise its amount and grant the entitlement.

        The same ``idempotency_key`` with the same quote answers the same order
        (and never charges twice); with another quote it is refused.

        Raises
        ------
        IdempotencyKeyReused
            The key was used for another quote.
        NotFound
            No such quote for the caller.
        Conflict
            The quote expired (``quote_expired``) or was ordered already
            (``quote_ordered``).
        PaymentRequired
            Not enough credits (``insufficient_funds``) or the card was declined
            (``payment_declined``); nothing is held.
        PaymentUnavailable
            The provider could not be reached; retry with the same key.
        """
        buyer = caller.organisation_id
        quote = self.session.get(Quote, body.quote_id)
        problem: Exception | None = None
        if quote is None or quote.buyer_id != buyer:
            problem = NotFound(f"quote {body.quote_id} not found")
        elif quote.expires_at <= utcnow():
            problem = Conflict(
                f"quote {quote.id} expired at {quote.expires_at.isoformat()}; ask "
                "for a new one",
                code="quote_expired",
            )
        if problem is not None or quote is None:
            # A replay of a finished order still answers, whatever its quote is now.
            replayed = self._replay(caller, body, idempotency_key)
            if replayed is not None:
                return replayed
            raise problem or NotFound(f"quote {body.quote_id} not found")
        self._check_method(quote.payment_method)
        if quote.payment_method == "onchain":
            body = body.model_copy(
                update={"payment_method_token": self._buyer_wallet(buyer, body)}
            )
        elif quote.payment_method != "credits" and not body.payment_method_token:
            raise ValidationFailed.for_field(
                "payment_method_token", f"required to pay by {quote.payment_method}"
            )
        now = utcnow()
        order = Order(
            id=uuid.uuid4(),
            buyer_id=buyer,
            quote_id=quote.id,
            dataset_id=quote.dataset_id,
            idempotency_key=idempotency_key,
            status=OrderStatus.PENDING.value,
            payment_method=quote.payment_method,
            amount_minor=quote.amount_minor,
            currency=quote.currency,
            created_at=now,
            updated_at=now,
        )
        credits = quote.payment_method == "credits"
        auth = self._credits_authorization(order) if credits else None
        if auth is not None:
            # Credits are held in this transaction: the order is born active.
            order.status = OrderStatus.ACTIVE.value
            order.payment_reference = auth.reference
        self.session.add(order)
        try:
            self.session.flush()
        except IntegrityError:
            # The same key (a replay, or a concurrent request just now) or the
            # same quote ordered under another key.
            self.session.rollback()
            replayed = self._replay(caller, body, idempotency_key)
            if replayed is not None:
                return replayed
            raise Conflict(
                f"quote {body.quote_id} was ordered already", code="quote_ordered"
            ) from None
        if auth is not None:
            ent_id = self._activate(order, quote, auth, born_active=True)
            self.session.commit()
            return self._order_public(order, ent_id)
        # An external provider: keep the order, whatever happens at the provider.
        self.session.commit()
        return self._authorize(order, body)

    def _replay(
        self, caller: Caller, body: OrderCreate, idempotency_key: str
    ) -> OrderPublic | None:
        """The order this key made before (resumed if pending), or ``None``.

        Raises
        ------
        IdempotencyKeyReused
            The key bought another quote.
        """
        buyer = caller.organisation_id
        existing = self.session.exec(
            select(Order).where(
                Order.buyer_id == buyer, Order.idempotency_key == idempotency_key
            )
        ).first()
        if existing is None:
            return None
        if existing.quote_id != body.quote_id:
            raise IdempotencyKeyReused(
                "this Idempotency-Key already bought another quote"
            )
        if existing.status == OrderStatus.PENDING.value:
            if existing.payment_method == "onchain":
                body = body.model_copy(
                    update={"payment_method_token": self._buyer_wallet(buyer, body)}
                )
            return self._authorize(existing, body)
        return self._order_public(existing)

    def _buyer_wallet(self, buyer: uuid.UUID, body: OrderCreate) -> str:
        """The buyer's registered wallet; a given token must name it."""
        wallet = self.session.get(OrgWallet, buyer)
        if wallet is None:
            raise ValidationFailed.for_field(
                "payment_method",
                "onchain needs the buyer's wallet: register one with PUT "
                f"/v1/organisations/{buyer}/wallet",
            )
        token = body.payment_method_token
        if token is not None and token.lower() != wallet.address.lower():
            raise ValidationFailed.for_field(
                "payment_method_token",
                f"not the organisation's registered wallet {wallet.address}",
            )
        return wallet.address

    def _credits_authorization(self, order: Order) -> Authorization:
        return self.providers["credits"].authorize(
            order_id=order.id,
            buyer_id=order.buyer_id,
            amount_minor=order.amount_minor,
            currency=order.currency,
            idempotency_key=f"order_{order.id}",
        )

    def _authorize(self, order: Order, body: OrderCreate) -> OrderPublic:
        provider = self.providers[order.payment_method]
        try:
            auth = provider.authorize(
                order_id=order.id,
                buyer_id=order.buyer_id,
                amount_minor=order.amount_minor,
                currency=order.currency,
                idempotency_key=f"order_{order.id}",
                payment_method=body.payment_method_token,
            )
        except PaymentDeclined as exc:
            self._fail(order, str(exc), exc.reference)
            raise PaymentRequired(
                f"the payment was declined: {exc}", code="payment_declined"
            ) from None
        except ProviderUnavailable as exc:
            raise PaymentUnavailable(
                f"{order.payment_method} could not be reached ({exc}); retry with "
                "the same Idempotency-Key"
            ) from None
        except PaymentError as exc:
            self._fail(order, str(exc), exc.reference)
            raise PaymentRequired(
                f"the payment failed: {exc}", code="payment_declined"
            ) from None
        self.apply_authorization(order, auth)
        return self._order_public(self._reload(order))

    def apply_authorization(self, order: Order, auth: Authorization) -> None:
        """Move an order on from its provider's answer (also from webhooks)."""
        fresh = self.session.get(Order, order.id, populate_existing=True)
        if fresh is None:
            raise NotFound(f"order {order.id} not found")
        order = fresh
        if order.status in (OrderStatus.ACTIVE.value, OrderStatus.FAILED.value):
            return
        order.payment_reference = auth.reference
        order.updated_at = utcnow()
        if auth.status is AuthorizationStatus.AUTHORIZED:
            quote = self.session.get(Quote, order.quote_id)
            if quote is None:  # a foreign key
                raise NotFound(f"quote {order.quote_id} not found")
            self._activate(order, quote, auth)
        elif auth.status is AuthorizationStatus.REQUIRES_ACTION:
            order.status = OrderStatus.REQUIRES_ACTION.value
            order.client_secret = auth.client_secret
            self.session.add(order)
        else:
            order.status = OrderStatus.FAILED.value
            order.failure_reason = f"the payment is {auth.status.value}"
            self.session.add(order)
        self.session.commit()

    def _reload(self, order: Order) -> Order:
        fresh = self.session.get(Order, order.id, populate_existing=True)
        if fresh is None:  # orders are never deleted
            raise NotFound(f"order {order.id} not found")
        return fresh

    def _fail(self, order: Order, reason: str, reference: str | None) -> None:
        order.status = OrderStatus.FAILED.value
        order.failure_reason = reason[:1000]
        order.payment_reference = reference or order.payment_reference
        order.updated_at = utcnow()
        self.session.add(order)
        self.session.commit()

    def _activate(
        self,
        order: Order,
        quote: Quote,
        auth: Authorization,
        *,
        born_active: bool = False,
    ) -> uuid.UUID | None:
        """Grant the entitlement and move the authorised money into its hold.

        ``born_active``: the order row was inserted active in this transaction
        (credits), so no one else can be activating it. Returns the entitlement's
        id, or ``None`` when a concurrent request or webhook activated it first.
        """
        now = utcnow()
        if not born_active and not self._won_activation(order, auth, now):
            return None
        return self._grant(order, quote, auth, now)

    def _won_activation(self, order: Order, auth: Authorization, now: datetime) -> bool:
        won = self.session.execute(
            update(Order)
            .where(
                col(Order.id) == order.id,
                col(Order.status).in_(
                    [OrderStatus.PENDING.value, OrderStatus.REQUIRES_ACTION.value]
                ),
            )
            .values(
                status=OrderStatus.ACTIVE.value,
                payment_reference=auth.reference,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(won.rowcount == 1)  # type: ignore[attr-defined]

    def _grant(
        self, order: Order, quote: Quote, auth: Authorization, now: datetime
    ) -> uuid.UUID:
        plan = _plan(quote.plan)
        terms = quote.terms
        ttl = self.config.entitlement_ttl
        if isinstance(plan, pricing.Subscription):
            ttl = timedelta(days=_PERIOD_DAYS[plan.period] * int(terms["periods"]))
        # A subscription outlives a card authorisation and an escrow hold: it is
        # captured up front and what it does not use is refunded when it ends.
        upfront = order.payment_method in UPFRONT_METHODS and isinstance(
            plan, pricing.Subscription
        )
        if order.payment_method == "stripe" and not upfront:
            ttl = min(ttl, timedelta(days=CARD_HOLD_DAYS))
        elif order.payment_method == "onchain" and not upfront:
            provider = self.providers.get("onchain")
            if isinstance(provider, OnchainProvider):
                ttl = min(ttl, timedelta(days=provider.hold_days))
        snapshot = dict(quote.plan)
        if isinstance(plan, pricing.Subscription):
            # The entitlement's quota covers all the periods bought.
            snapshot["queries_per_period"] = plan.queries_per_period * int(
                terms["periods"]
            )
        ent = Entitlement(
            id=uuid.uuid4(),
            order_id=order.id,
            buyer_id=order.buyer_id,
            dataset_id=order.dataset_id,
            provider_id=quote.provider_id,
            plan=snapshot,
            currency=quote.currency,
            payment_method=order.payment_method,
            fee_bps=quote.fee_bps,
            status=EntitlementStatus.ACTIVE.value,
            quota_queries=int(terms["queries"]),
            epsilon_budget_micro=int(terms["epsilon_micro"]),
            amount_authorized_minor=quote.gross_minor,
            expires_at=now + ttl,
            created_at=now,
            updated_at=now,
        )
        self.session.add(ent)
        self.session.flush()
        source = self.billing.funding_account(ent)
        Journal(self.session).post(
            f"authorize:{order.id}",
            "authorize",
            [
                (source, quote.amount_minor),
                (hold_account(ent.id, ent.currency), -quote.amount_minor),
            ],
            memo=f"{order.payment_method} {auth.reference}",
        )
        if upfront:
            self.billing.capture_upfront(ent, auth)
        if isinstance(plan, pricing.Subscription):
            periods = int(terms["periods"])
            self.billing.prepay(ent, plan.price_per_period_minor * periods)
        return ent.id

    def get_order(self, caller: Caller, order_id: uuid.UUID) -> OrderPublic:
        """An order of the caller's (operator: any)."""
        order = self.session.get(Order, order_id)
        if order is None or not (
            order.buyer_id == caller.organisation_id or caller.has_any({Role.OPERATOR})
        ):
            raise NotFound(f"order {order_id} not found")
        return self._order_public(order)

    def _order_public(
        self, order: Order, ent_id: uuid.UUID | None = None
    ) -> OrderPublic:
        if ent_id is None:
            ent_id = self.session.exec(
                select(Entitlement.id).where(Entitlement.order_id == order.id)
            ).first()
        return OrderPublic(
            id=order.id,
            quote_id=order.quote_id,
            dataset_id=order.dataset_id,
            status=order.status,
            payment_method=order.payment_method,
            amount_minor=order.amount_minor,
            currency=order.currency,
            client_secret=order.client_secret,
            failure_reason=order.failure_reason,
            entitlement_id=ent_id,
            created_at=order.created_at,
        )

    # -- entitlements -----------------------------------------------------------------

    def entitlements(
        self, caller: Caller, dataset_id: uuid.UUID | None = None
    ) -> list[EntitlementPublic]:
        """The caller's entitlements as buyer, and those on its datasets as provider."""
        org = caller.organisation_id
        stmt = select(Entitlement).where(
            (col(Entitlement.buyer_id) == org) | (col(Entitlement.provider_id) == org)
        )
        if dataset_id is not None:
            stmt = stmt.where(Entitlement.dataset_id == dataset_id)
        rows = self.session.exec(stmt.order_by(col(Entitlement.created_at).desc()))
        return [entitlement_public(e) for e in rows]

    def entitlement(self, caller: Caller, ent_id: uuid.UUID) -> EntitlementPublic:
        """One entitlement the caller buys, sells, operates or oversees."""
        return entitlement_public(self._visible(caller, ent_id))

    def charges(self, caller: Caller, ent_id: uuid.UUID) -> list[ChargePublic]:
        """The charges made against an entitlement, newest first."""
        ent = self._visible(caller, ent_id)
        rows = self.session.exec(
            select(Charge)
            .where(Charge.entitlement_id == ent.id)
            .order_by(col(Charge.created_at).desc())
        )
        return [charge_public(c) for c in rows]

    def revoke(
        self, caller: Caller, ent_id: uuid.UUID, body: EntitlementRevocation
    ) -> EntitlementPublic:
        """The dataset's provider or the operator ends an entitlement, with a reason.

        No new job may use it; jobs already running finish and are charged; the
        unused hold is released once they have.
        """
        ent = self._visible(caller, ent_id)
        operator = caller.has_any({Role.OPERATOR})
        if not (operator or ent.provider_id == caller.organisation_id):
            raise PermissionDenied(
                "only the dataset's provider or the operator revokes an entitlement",
                code="not_revoker",
            )
        self._end(ent, EntitlementStatus.REVOKED, caller, body.reason)
        self.billing.finalize_due(entitlement_ids=[ent.id])
        return self.entitlement(caller, ent_id)

    def close(self, caller: Caller, ent_id: uuid.UUID) -> EntitlementPublic:
        """The buyer ends its entitlement early; the unused hold is released."""
        ent = self._visible(caller, ent_id)
        if ent.buyer_id != caller.organisation_id:
            raise PermissionDenied(
                "only the buyer closes its entitlement", code="not_buyer"
            )
        self._end(ent, EntitlementStatus.CLOSED, None, None)
        self.billing.finalize_due(entitlement_ids=[ent.id])
        return self.entitlement(caller, ent_id)

    def _end(
        self,
        ent: Entitlement,
        status: EntitlementStatus,
        caller: Caller | None,
        reason: str | None,
    ) -> None:
        now = utcnow()
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if status is EntitlementStatus.REVOKED and caller is not None:
            values |= {
                "revoked_at": now,
                "revoked_by": caller.organisation_id,
                "revoke_reason": reason,
            }
        result = self.session.execute(
            update(Entitlement)
            .where(
                col(Entitlement.id) == ent.id,
                col(Entitlement.status) == EntitlementStatus.ACTIVE.value,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            self.session.rollback()
            fresh = self.session.get(Entitlement, ent.id, populate_existing=True)
            found = fresh.status if fresh else "gone"
            raise Conflict(
                f"entitlement {ent.id} is {found}; only an active one can end",
                code="entitlement_ended",
            )
        self.session.commit()

    def _visible(self, caller: Caller, ent_id: uuid.UUID) -> Entitlement:
        ent = self.session.get(Entitlement, ent_id, populate_existing=True)
        org = caller.organisation_id
        if ent is None or not (
            ent.buyer_id == org
            or ent.provider_id == org
            or caller.has_any({Role.OPERATOR, Role.REGULATOR})
        ):
            raise NotFound(f"entitlement {ent_id} not found")
        return ent

    # -- webhooks ---------------------------------------------------------------------

    def stripe_webhook(self, payload: bytes, signature: str) -> str:
        """Process one signed Stripe event exactly once; returns what was done.

        The event only says *that* a PaymentIntent changed: its current state is
        read back from Stripe, so events delivered late, twice or out of order
        all lead to the same result. ``processed``, ``duplicate`` or ``ignored``.

        Raises
        ------
        ValidationFailed
            The signature does not verify (``bad_signature``), or Stripe is not
            configured.
        """
        provider = self.providers.get("stripe")
        if not isinstance(provider, ConnectProvider):
            raise ValidationFailed.for_field(
                "Stripe-Signature", "card payments are not configured here"
            )
        try:
            event = provider.parse_webhook(payload, signature)
        except PaymentError as exc:
            raise ValidationFailed.for_field(
                "Stripe-Signature", str(exc), code="bad_signature"
            ) from None
        if self.session.get(WebhookEvent, event.id) is not None:
            return "duplicate"
        self.session.add(
            WebhookEvent(
                id=event.id,
                provider="stripe",
                type=event.type,
                object_id=event.object_id,
            )
        )
        outcome = "ignored"
        if event.object_type == "payment_intent":
            order = self._order_for_payment(event.object_id, event.data)
            if order is not None:
                try:
                    auth = provider.retrieve_authorization(event.object_id)
                except ProviderUnavailable as exc:
                    self.session.rollback()
                    raise PaymentUnavailable(str(exc)) from None
                except PaymentError as exc:  # unknown to Stripe: nothing to do
                    log.warning("webhook %s: %s", event.id, exc)
                else:
                    self.apply_authorization(order, auth)
                    outcome = "processed"
        try:
            self.session.commit()
        except IntegrityError:  # the same event, processed concurrently
            self.session.rollback()
            return "duplicate"
        return outcome

    def _order_for_payment(
        self, reference: str, data: Mapping[str, Any]
    ) -> Order | None:
        order = self.session.exec(
            select(Order).where(Order.payment_reference == reference)
        ).first()
        if order is not None:
            return order
        metadata = data.get("metadata") or {}
        raw = metadata.get("order_id") if isinstance(metadata, Mapping) else None
        try:
            return self.session.get(Order, uuid.UUID(str(raw))) if raw else None
        except ValueError:
            return None

    # -- balances and payout accounts -------------------------------------------------

    def balances(self, caller: Caller) -> list[AccountPublic]:
        """The caller's organisation's accounts (credits, payables)."""
        rows = self.session.exec(
            select(Account)
            .where(Account.organisation_id == caller.organisation_id)
            .order_by(col(Account.code))
        )
        return [
            AccountPublic(
                code=a.code,
                kind=a.kind,
                currency=a.currency,
                balance_minor=a.balance_minor,
            )
            for a in rows
        ]

    def payout_account(self, org_id: uuid.UUID, country: str) -> PayoutAccountPublic:
        """Open the organisation's Stripe connected account, once."""
        org = self.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} not found")
        found = self.session.get(PayoutAccount, org_id)
        if found is None:
            provider = self.providers.get("stripe")
            if not isinstance(provider, ConnectProvider):
                raise ValidationFailed.for_field(
                    "organisation_id", "card payments are not configured here"
                )
            try:
                account_id = provider.create_connected_account(
                    organisation_id=org_id,
                    country=country,
                    email=None,
                    idempotency_key=f"account_{org_id}",
                )
            except ProviderUnavailable as exc:
                raise PaymentUnavailable(str(exc)) from None
            found = PayoutAccount(organisation_id=org_id, stripe_account_id=account_id)
            self.session.add(found)
            self.session.commit()
        return PayoutAccountPublic(
            organisation_id=found.organisation_id,
            stripe_account_id=found.stripe_account_id,
        )

    # -- wallets (onchain) ------------------------------------------------------------

    def register_wallet(
        self, caller: Caller, org_id: uuid.UUID, body: WalletRegistration
    ) -> WalletPublic:
        """Make a wallet the organisation's, proven by the wallet's signature.

        A member of the organisation (or the operator) registers it; registering
        the same wallet again changes nothing, another one replaces it.

        Raises
        ------
        ValidationFailed
            The signature is not the wallet's proof for this organisation
            (``signature``), or the wallet is another organisation's (``address``).
        """
        self._own_org(caller, org_id)
        try:
            address = verify_wallet_proof(org_id, body.address, body.signature)
        except ValueError as exc:
            raise ValidationFailed.for_field("signature", str(exc)) from None
        taken = self.session.exec(
            select(OrgWallet).where(
                OrgWallet.address == address, OrgWallet.organisation_id != org_id
            )
        ).first()
        if taken is not None:
            raise ValidationFailed.for_field(
                "address", "this wallet is another organisation's"
            )
        found = self.session.get(OrgWallet, org_id)
        if found is None:
            self.session.add(OrgWallet(organisation_id=org_id, address=address))
        elif found.address != address:
            found.address = address
            found.created_at = utcnow()
            self.session.add(found)
        self.session.commit()
        return self.wallet(caller, org_id)

    def wallet(self, caller: Caller, org_id: uuid.UUID) -> WalletPublic:
        """The organisation's wallet and its escrow balance (if the chain answers)."""
        self._own_org(caller, org_id, overseers=True)
        found = self.session.get(OrgWallet, org_id)
        if found is None:
            raise NotFound(f"organisation {org_id} has no wallet")
        balance: int | None = None
        provider = self.providers.get("onchain")
        if isinstance(provider, OnchainProvider):
            try:
                balance = provider.balance_of(found.address)
            except PaymentError as exc:
                log.info("escrow balance of %s unknown: %s", found.address, exc)
        onchain = provider if isinstance(provider, OnchainProvider) else None
        return WalletPublic(
            organisation_id=org_id,
            address=found.address,
            escrow_balance_minor=balance,
            currency=onchain.currency if onchain is not None else None,
        )

    def _own_org(
        self, caller: Caller, org_id: uuid.UUID, *, overseers: bool = False
    ) -> None:
        roles = {Role.OPERATOR, Role.REGULATOR} if overseers else {Role.OPERATOR}
        if caller.organisation_id != org_id and not caller.has_any(roles):
            raise NotFound(f"organisation {org_id} not found")
        if self.session.get(Organisation, org_id) is None:
            raise NotFound(f"organisation {org_id} not found")

    # -- credits ----------------------------------------------------------------------

    def top_up(self, org_id: uuid.UUID, body: CreditTopUp) -> int:
        """The operator records a buyer's prepaid payment; returns the new balance.

        ``reference`` (the bank transfer's id) is unique: recording it again changes
        nothing.
        """
        org = self.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} not found")
        account = funds_account(org_id, body.currency)
        Journal(self.session).post(
            f"topup:{body.reference}",
            "top_up",
            [
                (cash_account("credits", body.currency), body.amount_minor),
                (account, -body.amount_minor),
            ],
            memo=f"credits for {org.name}",
        )
        self.session.commit()
        return Journal(self.session).balance(account)


def entitlement_public(ent: Entitlement) -> EntitlementPublic:
    """An entitlement as the API shows it."""
    return EntitlementPublic(
        id=ent.id,
        order_id=ent.order_id,
        dataset_id=ent.dataset_id,
        buyer_id=ent.buyer_id,
        status=ent.status,
        currency=ent.currency,
        payment_method=ent.payment_method,
        plan_kind=str(ent.plan["kind"]),
        quota_queries=ent.quota_queries,
        queries_used=ent.queries_used,
        queries_reserved=ent.queries_reserved,
        epsilon_budget=pricing.micro_to_epsilon(ent.epsilon_budget_micro),
        epsilon_used=pricing.micro_to_epsilon(ent.epsilon_used_micro),
        epsilon_reserved=pricing.micro_to_epsilon(ent.epsilon_reserved_micro),
        amount_authorized_minor=ent.amount_authorized_minor,
        amount_reserved_minor=ent.amount_reserved_minor,
        amount_captured_minor=ent.amount_captured_minor,
        expires_at=ent.expires_at,
        revoked_at=ent.revoked_at,
        revoke_reason=ent.revoke_reason,
        finalized_at=ent.finalized_at,
    )


def charge_public(charge: Charge) -> ChargePublic:
    """A charge as the API shows it."""
    return ChargePublic(
        kind=charge.kind,
        job_id=charge.job_id,
        entitlement_id=charge.entitlement_id,
        status=charge.status,
        currency=charge.currency,
        reserved_minor=charge.reserved_minor,
        amount_minor=charge.amount_minor,
        epsilon=pricing.micro_to_epsilon(charge.epsilon_micro),
        rows_scanned=charge.rows_scanned,
        compute_units=charge.compute_units,
        void_reason=charge.void_reason,
    )


FinalizeHook = Callable[[str, Entitlement], None]
"""Called at named points of :meth:`Billing.finalize` (tests kill the process)."""


class Billing:
    """Reservations, captures, voids and the final payment of entitlements."""

    def __init__(
        self,
        session: Session,
        config: TradingConfig,
        providers: Mapping[str, PaymentProvider],
        *,
        hook: FinalizeHook | None = None,
    ) -> None:
        self.session = session
        self.config = config
        self.providers = providers
        self.hook = hook

    def funding_account(self, ent: Entitlement) -> AccountRef:
        """Where an entitlement's hold came from: the buyer's credits or a card."""
        if ent.payment_method == "credits":
            return funds_account(ent.buyer_id, ent.currency)
        return auth_account(ent.id, ent.currency)

    # -- jobs -------------------------------------------------------------------------

    def reserve(
        self,
        job: Job,
        ds: Dataset,
        version: DatasetVersion,
        entitlement_id: uuid.UUID | None,
    ) -> Charge | None:
        """Reserve a new job's most possible charge (not committed).

        Uses ``entitlement_id``, or else the buyer's active entitlement on the
        dataset that expires first and still has room. ``None`` when the dataset is
        free for this job.

        Raises
        ------
        PaymentRequired
            ``entitlement_required``: the buyer has none; ``entitlement_exhausted``:
            its quota, ε budget or money does not cover the job, or it ended.
        NotFound
            ``entitlement_id`` is not the buyer's entitlement on this dataset.
        """
        kind = JobKind(job.kind)
        try:
            meter = meter_job(kind, job.params, version.row_count)
            eps, delta = planned_loss(kind, job.params)
        except ValidationError as exc:  # params were validated at submission
            raise ValidationFailed.for_field("params", str(exc)) from None
        usage = pricing.Usage(
            queries=1,
            rows_scanned=meter.rows_scanned,
            compute_units=meter.compute_units,
            epsilon_micro=eps,
            delta=delta,
        )
        if entitlement_id is None and self._free(_plan(ds.pricing_plan), usage):
            return None
        if entitlement_id is not None:
            ent = self.session.get(Entitlement, entitlement_id)
            if (
                ent is None
                or ent.buyer_id != job.buyer_id
                or ent.dataset_id != job.dataset_id
            ):
                raise NotFound(
                    f"entitlement {entitlement_id} is not yours on dataset "
                    f"{job.dataset_id}"
                )
            candidates = [ent]
        else:
            candidates = list(
                self.session.exec(
                    select(Entitlement)
                    .where(
                        Entitlement.buyer_id == job.buyer_id,
                        Entitlement.dataset_id == job.dataset_id,
                        Entitlement.status == EntitlementStatus.ACTIVE.value,
                        col(Entitlement.expires_at) > utcnow(),
                    )
                    .order_by(col(Entitlement.expires_at))
                )
            )
            if not candidates:
                raise PaymentRequired(
                    f"you hold no entitlement on dataset {job.dataset_id}; ask for a "
                    "quote (POST /v1/quotes) and order it (POST /v1/orders)",
                    code="entitlement_required",
                )
        reasons: list[str] = []
        for ent in candidates:
            charge, reason = self._try_reserve(ent, job, meter, usage)
            if charge is not None:
                return charge
            reasons.append(f"{ent.id}: {reason}")
        raise PaymentRequired(
            "no entitlement covers this job — " + "; ".join(reasons),
            code="entitlement_exhausted",
        )

    @staticmethod
    def _free(plan: pricing.AnyPlan, usage: pricing.Usage) -> bool:
        try:
            return pricing.charge_minor(plan, usage) == 0 and not isinstance(
                plan, pricing.Subscription
            )
        except pricing.QuotaExceeded:
            return False

    def _try_reserve(
        self, ent: Entitlement, job: Job, meter: Meter, usage: pricing.Usage
    ) -> tuple[Charge | None, str]:
        plan = _plan(ent.plan)
        for _ in range(_RETRIES):
            fresh = self.session.get(Entitlement, ent.id, populate_existing=True)
            if fresh is None:
                return None, "gone"
            ent = fresh
            if ent.status != EntitlementStatus.ACTIVE.value:
                return None, f"it is {ent.status}"
            if ent.expires_at <= utcnow():
                return None, f"it expired at {ent.expires_at.isoformat()}"
            if ent.queries_used + ent.queries_reserved + 1 > ent.quota_queries:
                return None, f"its quota of {ent.quota_queries} computations is used"
            eps_left = (
                ent.epsilon_budget_micro
                - ent.epsilon_used_micro
                - ent.epsilon_reserved_micro
            )
            if usage.epsilon_micro > eps_left:
                return None, (
                    f"the job needs ε={pricing.micro_to_epsilon(usage.epsilon_micro)}"
                    f" and ε={pricing.micro_to_epsilon(max(0, eps_left))} is left"
                )
            try:
                # The highest price the job can cost: unit prices only fall with
                # volume, so price it as if no reserved job were captured first.
                amount = pricing.charge_minor(
                    plan, usage, prior_queries=ent.queries_used
                )
            except pricing.QuotaExceeded:
                return None, "its subscription quota is used"
            money_left = (
                ent.amount_authorized_minor
                - ent.amount_captured_minor
                - ent.amount_reserved_minor
            )
            if amount > money_left:
                return None, f"the job costs up to {amount} and {money_left} is left"
            result = self.session.execute(
                update(Entitlement)
                .where(
                    col(Entitlement.id) == ent.id,
                    col(Entitlement.status) == EntitlementStatus.ACTIVE.value,
                    col(Entitlement.queries_reserved) == ent.queries_reserved,
                    col(Entitlement.queries_used) == ent.queries_used,
                    col(Entitlement.amount_captured_minor) == ent.amount_captured_minor,
                )
                .values(
                    queries_reserved=ent.queries_reserved + 1,
                    epsilon_reserved_micro=ent.epsilon_reserved_micro
                    + usage.epsilon_micro,
                    amount_reserved_minor=ent.amount_reserved_minor + amount,
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another job moved the counters; look again
            charge = Charge(
                kind="job",
                job_id=job.id,
                entitlement_id=ent.id,
                dataset_id=job.dataset_id,
                provider_id=ent.provider_id,
                buyer_id=job.buyer_id,
                currency=ent.currency,
                status=ChargeStatus.RESERVED.value,
                reserved_minor=amount,
                reserved_epsilon_micro=usage.epsilon_micro,
                rows_scanned=meter.rows_scanned,
                compute_units=meter.compute_units,
                payment_method=ent.payment_method,
            )
            self.session.add(charge)
            return charge, ""
        return None, "too much contention; retry"

    def capture(self, job: Job, ds: Dataset, signed: SignedReceipt) -> tuple[int, int]:
        """Charge a released job for what it used; returns (amount, fee).

        The amount is the plan's price for the job's metered use and its actual
        privacy loss (a replayed answer spends no ε), never more than reserved.
        (0, 0) for a free job. Not committed.
        """
        charge = self.session.exec(
            select(Charge).where(Charge.job_id == job.id)
        ).first()
        if charge is None:
            return 0, 0
        if charge.status == ChargeStatus.CAPTURED.value:
            return charge.amount_minor, charge.fee_minor
        loss = signed.receipt.privacy_loss
        eps = min(pricing.epsilon_to_micro(loss.epsilon), charge.reserved_epsilon_micro)
        usage = pricing.Usage(
            queries=1,
            rows_scanned=charge.rows_scanned,
            compute_units=charge.compute_units,
            epsilon_micro=eps,
            delta=loss.delta,
        )
        for _ in range(_RETRIES):
            ent = self.session.get(
                Entitlement, charge.entitlement_id, populate_existing=True
            )
            if ent is None:  # a foreign key
                raise NotFound(f"entitlement {charge.entitlement_id} not found")
            plan = _plan(ent.plan)
            try:
                price = pricing.charge_minor(
                    plan, usage, prior_queries=ent.queries_used
                )
            except pricing.QuotaExceeded:
                price = charge.reserved_minor
            amount = min(price, charge.reserved_minor)
            result = self.session.execute(
                update(Entitlement)
                .where(
                    col(Entitlement.id) == ent.id,
                    col(Entitlement.queries_used) == ent.queries_used,
                    col(Entitlement.queries_reserved) == ent.queries_reserved,
                )
                .values(
                    queries_reserved=ent.queries_reserved - 1,
                    queries_used=ent.queries_used + 1,
                    epsilon_reserved_micro=ent.epsilon_reserved_micro
                    - charge.reserved_epsilon_micro,
                    epsilon_used_micro=ent.epsilon_used_micro + eps,
                    amount_reserved_minor=ent.amount_reserved_minor
                    - charge.reserved_minor,
                    amount_captured_minor=ent.amount_captured_minor + amount,
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                break
        else:
            raise Conflict(
                f"entitlement {charge.entitlement_id} is too contended; retry",
                code="entitlement_contended",
            )
        fee = self._book_capture(charge, ent, ds, amount, f"capture:{charge.id}")
        charge.status = ChargeStatus.CAPTURED.value
        charge.amount_minor = amount
        charge.fee_minor = fee
        charge.epsilon_micro = eps
        charge.captured_at = utcnow()
        self.session.add(charge)
        return amount, fee

    def _book_capture(
        self,
        charge: Charge,
        ent: Entitlement,
        ds: Dataset,
        amount: int,
        reference: str,
    ) -> int:
        """Post hold → payees' payables and the exchange's fee; returns the fee."""
        fee = pricing.fee_bps(amount, ent.fee_bps)
        net = amount - fee
        payees = dataset_shares(ds)
        parts = pricing.split_bps(net, [bps for _, bps in payees])
        charge.shares = [
            {"payee": str(org), "bps": bps, "amount_minor": part}
            for (org, bps), part in zip(payees, parts, strict=True)
        ]
        lines: list[tuple[AccountRef, int]] = [
            (hold_account(ent.id, ent.currency), amount),
            (fees_account(ent.currency), -fee),
        ]
        lines += [
            (payable_account(org, ent.currency), -part)
            for (org, _), part in zip(payees, parts, strict=True)
        ]
        Journal(self.session).post(reference, "capture", lines)
        return fee

    def capture_upfront(self, ent: Entitlement, auth: Authorization) -> None:
        """Capture a card or onchain subscription's whole payment when it is bought.

        A card authorisation lapses after about seven days and an escrow hold
        after ``VEILX_ONCHAIN_HOLD_DAYS``; a subscription runs its periods, which
        may be longer. So the money is captured at once (idempotency key
        ``upfront_<order>``: a retried activation captures once) and what the
        subscription did not use is refunded when it ends (:meth:`finalize`).

        Raises
        ------
        PaymentUnavailable
            The provider could not be reached; the activation rolls back and is
            retried (the order stays pending).
        PaymentRequired
            The provider refused the capture.
        """
        provider = self.providers.get(ent.payment_method)
        if provider is None:
            raise PaymentUnavailable(f"{ent.payment_method} is not configured")
        amount = auth.amount_minor
        try:
            provider.capture(auth, amount, idempotency_key=f"upfront_{ent.order_id}")
        except ProviderUnavailable as exc:
            raise PaymentUnavailable(
                f"{ent.payment_method} could not be reached ({exc}); retry"
            ) from None
        except PaymentError as exc:
            state = (
                provider.retrieve_authorization(auth.reference)
                if isinstance(provider, ConnectProvider)
                else None
            )
            if state is None or state.status is not AuthorizationStatus.CAPTURED:
                raise PaymentRequired(
                    f"the payment could not be captured: {exc}",
                    code="payment_declined",
                ) from None
        Journal(self.session).post(
            f"upfront:{ent.order_id}",
            "capture_upfront",
            [
                (cash_account(provider.name, ent.currency), amount),
                (auth_account(ent.id, ent.currency), -amount),
            ],
            memo=f"{provider.name} {auth.reference}: captured {amount} up front",
        )
        ent.payment_captured_minor = amount
        self.session.add(ent)

    def prepay(self, ent: Entitlement, amount: int) -> None:
        """Capture a subscription's periods when it is bought (not committed)."""
        ds = self.session.get(Dataset, ent.dataset_id)
        if ds is None:  # a foreign key
            raise NotFound(f"dataset {ent.dataset_id} not found")
        charge = Charge(
            kind="prepaid",
            job_id=None,
            entitlement_id=ent.id,
            dataset_id=ent.dataset_id,
            provider_id=ent.provider_id,
            buyer_id=ent.buyer_id,
            currency=ent.currency,
            status=ChargeStatus.CAPTURED.value,
            reserved_minor=amount,
            reserved_epsilon_micro=0,
            rows_scanned=0,
            compute_units=0,
            amount_minor=amount,
            payment_method=ent.payment_method,
            captured_at=utcnow(),
        )
        charge.fee_minor = self._book_capture(
            charge, ent, ds, amount, f"prepay:{ent.id}"
        )
        LedgerRecorder(self.session).record_prepaid(
            ent.buyer_id,
            ds,
            amount_minor=amount,
            fee_minor=charge.fee_minor,
            currency=ent.currency,
        )
        ent.amount_captured_minor += amount
        self.session.add(ent)
        self.session.add(charge)

    def void(self, job_id: uuid.UUID, reason: str) -> bool:
        """Release a job's reservation: it ended without a release (not committed).

        Returns whether a reservation was released (False if there was none or it
        was captured or voided already).
        """
        charge = self.session.exec(
            select(Charge).where(Charge.job_id == job_id)
        ).first()
        if charge is None or charge.status != ChargeStatus.RESERVED.value:
            return False
        result = self.session.execute(
            update(Charge)
            .where(
                col(Charge.id) == charge.id,
                col(Charge.status) == ChargeStatus.RESERVED.value,
            )
            .values(
                status=ChargeStatus.VOIDED.value,
                void_reason=reason[:40],
                voided_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self.session.execute(
            update(Entitlement)
            .where(col(Entitlement.id) == charge.entitlement_id)
            .values(
                queries_reserved=col(Entitlement.queries_reserved) - 1,
                epsilon_reserved_micro=col(Entitlement.epsilon_reserved_micro)
                - charge.reserved_epsilon_micro,
                amount_reserved_minor=col(Entitlement.amount_reserved_minor)
                - charge.reserved_minor,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return True

    def void_ended_jobs(self) -> int:
        """Void every reservation whose job ended without a release; commits."""
        ended = ("failed", "rejected", "expired")
        rows = self.session.exec(
            select(Charge.job_id, Job.state)
            .join(Job, col(Job.id) == col(Charge.job_id))
            .where(
                Charge.status == ChargeStatus.RESERVED.value,
                col(Job.state).in_(ended),
            )
        ).all()
        voided = 0
        for job_id, state in rows:
            if job_id is not None and self.void(job_id, f"job {state}"):
                voided += 1
        self.session.commit()
        return voided

    # -- the end of an entitlement ----------------------------------------------------

    def expire(self, now: datetime | None = None) -> int:
        """End every active entitlement past its expiry, and those used up; commits."""
        now = now or utcnow()
        expired = self.session.execute(
            update(Entitlement)
            .where(
                col(Entitlement.status) == EntitlementStatus.ACTIVE.value,
                col(Entitlement.expires_at) <= now,
            )
            .values(status=EntitlementStatus.EXPIRED.value, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        used_up = self.session.execute(
            update(Entitlement)
            .where(
                col(Entitlement.status) == EntitlementStatus.ACTIVE.value,
                col(Entitlement.queries_reserved) == 0,
                col(Entitlement.queries_used) >= col(Entitlement.quota_queries),
            )
            .values(status=EntitlementStatus.CLOSED.value, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        return int(expired.rowcount + used_up.rowcount)  # type: ignore[attr-defined]

    def finalize_due(self, entitlement_ids: Sequence[uuid.UUID] | None = None) -> int:
        """Finalise every ended entitlement with no reservation left; commits each.

        Also the reconciliation after a crash: an entitlement whose provider
        capture happened but whose journal entry did not is finished here, with
        the same idempotency key, so the money moves once.
        """
        stmt = select(Entitlement.id).where(
            col(Entitlement.status) != EntitlementStatus.ACTIVE.value,
            col(Entitlement.finalized_at).is_(None),
            col(Entitlement.queries_reserved) == 0,
        )
        if entitlement_ids is not None:
            stmt = stmt.where(col(Entitlement.id).in_(list(entitlement_ids)))
        done = 0
        for ent_id in list(self.session.exec(stmt)):
            try:
                if self.finalize(ent_id):
                    done += 1
            except (PaymentUnavailable, ProviderUnavailable) as exc:
                self.session.rollback()
                log.warning("finalizing entitlement %s: %s; will retry", ent_id, exc)
        return done

    def finalize(self, ent_id: uuid.UUID) -> bool:
        """Collect an ended entitlement's captured total and release the rest."""
        ent = self.session.get(Entitlement, ent_id, populate_existing=True)
        if ent is None or ent.finalized_at is not None or ent.queries_reserved:
            return False
        if ent.status == EntitlementStatus.ACTIVE.value:
            return False
        journal = Journal(self.session)
        hold = hold_account(ent.id, ent.currency)
        remaining = journal.balance(hold)
        collected = ent.amount_captured_minor
        if ent.payment_method == "credits":
            journal.post(
                f"finalize:{ent.id}",
                "release",
                [
                    (hold, remaining),
                    (funds_account(ent.buyer_id, ent.currency), -remaining),
                ],
                memo="unused credits returned",
            )
        else:
            self._finalize_external(ent, remaining, collected)
        ent.finalized_at = utcnow()
        ent.payment_captured_minor = collected
        self.session.add(ent)
        self.session.commit()
        return True

    def _finalize_external(
        self, ent: Entitlement, remaining: int, collected: int
    ) -> None:
        provider = self.providers.get(ent.payment_method)
        if provider is None:
            raise PaymentUnavailable(
                f"{ent.payment_method} is not configured; cannot finalize {ent.id}"
            )
        order = self.session.get(Order, ent.order_id)
        if order is None or order.payment_reference is None:
            raise NotFound(f"order of entitlement {ent.id} has no payment")
        auth = Authorization(
            provider=provider.name,
            reference=order.payment_reference,
            amount_minor=order.amount_minor,
            currency=ent.currency,
            status=AuthorizationStatus.AUTHORIZED,
        )
        upfront = ent.payment_captured_minor or 0
        surcharge = 0
        if collected > 0:
            surcharge = pricing.breakdown(
                collected,
                fee_bps=ent.fee_bps,
                surcharge=self.config.surcharge_for(ent.payment_method),
            ).surcharge_minor
            surcharge = min(surcharge, remaining)
        total = collected + surcharge
        if upfront > 0:
            self._refund_unused(ent, provider, order, upfront, remaining, surcharge)
            return
        if self.hook:
            self.hook("before_provider", ent)
        try:
            if total > 0:
                provider.capture(auth, total, idempotency_key=f"finalize_{ent.id}")
            else:
                provider.cancel(auth, idempotency_key=f"finalize_{ent.id}")
        except ProviderUnavailable:
            raise
        except PaymentError:
            # Done before a crash, with an idempotency key the provider no longer
            # remembers? Then the payment's own state says so.
            if not isinstance(provider, ConnectProvider):
                raise
            state = provider.retrieve_authorization(auth.reference)
            wanted = (
                AuthorizationStatus.CAPTURED
                if total > 0
                else AuthorizationStatus.CANCELED
            )
            if state.status is not wanted:
                raise
        if self.hook:
            self.hook("after_provider", ent)
        source = auth_account(ent.id, ent.currency)
        hold = hold_account(ent.id, ent.currency)
        released = remaining - surcharge
        Journal(self.session).post(
            f"finalize:{ent.id}",
            "collect",
            [
                (cash_account(provider.name, ent.currency), total),
                (source, -total),
                (hold, surcharge),
                (surcharges_account(ent.currency), -surcharge),
                (hold, released),
                (source, -released),
            ],
            memo=f"{provider.name} {order.payment_reference}: captured {total}",
        )

    def _refund_unused(
        self,
        ent: Entitlement,
        provider: PaymentProvider,
        order: Order,
        upfront: int,
        remaining: int,
        surcharge: int,
    ) -> None:
        """End an entitlement captured up front: refund what it did not use."""
        reference = order.payment_reference or ""
        released = remaining - surcharge
        if self.hook:
            self.hook("before_provider", ent)
        if released > 0:
            provider.refund(
                Capture(provider.name, reference, upfront, ent.currency),
                released,
                idempotency_key=f"finalize_{ent.id}",
            )
        if self.hook:
            self.hook("after_provider", ent)
        hold = hold_account(ent.id, ent.currency)
        Journal(self.session).post(
            f"finalize:{ent.id}",
            "refund",
            [
                (hold, surcharge),
                (surcharges_account(ent.currency), -surcharge),
                (hold, released),
                (cash_account(provider.name, ent.currency), -released),
            ],
            memo=f"{provider.name} {reference}: refunded {released} of {upfront}",
        )
