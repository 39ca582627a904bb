"""A Stripe-compatible HTTP server for tests: the endpoints veilx uses, in memory.

No Stripe mock can be installed here, so this module implements, after Stripe's
API reference, exactly what :mod:`marketplace.payments.stripe_provider` calls,
closely enough that the official ``stripe`` SDK talks to it unchanged::

    with StripeTestServer() as server:
        client = stripe.StripeClient(
            server.api_key, base_addresses={"api": server.url}
        )
        client.v1.payment_intents.create(params={...})

What it implements, as Stripe does:

* ``POST /v1/accounts``, ``GET /v1/accounts/{id}`` (Connect accounts).
* ``POST /v1/payment_intents`` (with ``confirm=true`` and a test PaymentMethod,
  see :data:`TEST_PAYMENT_METHODS`), ``GET /v1/payment_intents/{id}``,
  ``POST /v1/payment_intents/{id}/capture`` (partial capture releases the
  rest), ``POST /v1/payment_intents/{id}/cancel``.
* ``GET /v1/charges/{id}``; a charge is made when a card is authorised (or
  declined) and marked captured on capture, as at Stripe.
* ``POST /v1/refunds``, ``GET /v1/refunds/{id}``.
* ``POST /v1/transfers``, ``GET /v1/transfers/{id}``, paid from the platform's
  available balance (captured − refunded − transferred, per currency, plus
  :meth:`StripeTestServer.fund_balance`) — or, with ``source_transaction`` (a
  captured charge), from that charge's own funds, pending or not, at most what
  the charge has left (captured − refunded − transferred from it) — and
  ``GET /v1/balance``.
* ``GET /v1/events/{id}``; every state change appends an Event and, when
  ``webhook_url`` is set, POSTs it there signed with Stripe's scheme
  (``Stripe-Signature: t=<unix>,v1=<HMAC-SHA256(secret, "t.payload")>``).
* Bearer authentication, form-encoded parameters (``metadata[key]=value``),
  unknown parameters refused, Stripe's error shape and status codes, and
  ``Idempotency-Key`` (same key and parameters: the stored answer is replayed
  with ``Idempotent-Replayed: true``; other parameters: ``idempotency_error``).

Simplifications, on purpose: captured funds are available at once unless the
server is made with ``funds_pending=True`` (then they are pending, as at Stripe
for days, until :meth:`StripeTestServer.release_pending`);
transfers need their destination to exist, not an active ``transfers``
capability; ``expand`` is refused; there are no customers or saved methods.

Test control (no HTTP): ``delivery`` (``"immediate"`` / ``"manual"``),
:meth:`~StripeTestServer.pending_events`, :meth:`~StripeTestServer.deliver`,
:meth:`~StripeTestServer.fail_next`, :meth:`~StripeTestServer.complete_action`,
:meth:`~StripeTestServer.complete_onboarding`,
:meth:`~StripeTestServer.fund_balance`, :meth:`~StripeTestServer.balance`,
:meth:`~StripeTestServer.get`, :meth:`~StripeTestServer.objects`,
``events``, ``deliveries``, ``requests`` and :meth:`~StripeTestServer.sign`.
:class:`WebhookRecorder` is a webhook endpoint that records what it receives.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import http.client
import json
import random
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "API_VERSION",
    "TEST_PAYMENT_METHODS",
    "Delivery",
    "ReceivedWebhook",
    "RequestRecord",
    "StripeTestServer",
    "WebhookRecorder",
]

JSON = dict[str, Any]
"""A Stripe object as JSON."""

API_VERSION = "2026-10-28.endive"
"""The API version events carry when a request names none (stripe 16.1.0's)."""

Behaviour = Literal["authorize", "decline", "authenticate"]


@dataclass(frozen=True)
class _TestCard:
    brand: str
    last4: str
    behaviour: Behaviour
    decline_code: str | None = None


TEST_PAYMENT_METHODS: Mapping[str, _TestCard] = {
    "pm_card_visa": _TestCard("visa", "4242", "authorize"),
    "pm_card_mastercard": _TestCard("mastercard", "4444", "authorize"),
    "pm_card_chargeDeclined": _TestCard("visa", "0002", "decline", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": _TestCard(
        "visa", "9995", "decline", "insufficient_funds"
    ),
    "pm_card_authenticationRequired": _TestCard("visa", "3184", "authenticate"),
}
"""Stripe's test PaymentMethods this server knows: authorised, declined (HTTP
402 ``card_declined``) or needing 3-D Secure (``requires_action``; finish it
with :meth:`StripeTestServer.complete_action`)."""

_MINIMUM_CHARGE = {"gbp": 30, "hkd": 400, "jpy": 50, "mxn": 1000, "sek": 300}
"""Stripe's minimum charge amounts (minor units) where they are not 50."""
_MAXIMUM_AMOUNT = 99_999_999
_EURO_COUNTRIES = frozenset(
    "AT BE CY DE EE ES FI FR GR HR IE IT LT LU LV MT NL PT SI SK".split()
)
_COUNTRY_CURRENCY = {"US": "usd", "GB": "gbp", "CH": "chf", "CA": "cad", "AU": "aud"}
_CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
_ID_ALPHABET = string.ascii_letters + string.digits
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_UNRECOGNIZED = (
    "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
    "or we can help at https://support.stripe.com/."
)


def _new_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _now() -> int:
    return int(time.time())


class _Fail(Exception):
    """A Stripe error answer; ``stored`` ones are replayed for their key."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
        extra: JSON | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.stored = stored
        error: JSON = {"type": type_, "message": message}
        if code is not None:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code}"
        if param is not None:
            error["param"] = param
        error.update(extra or {})
        self.body: JSON = {"error": error}


def _missing(param: str) -> _Fail:
    return _Fail(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _no_such(kind: str, object_id: str, param: str = "id") -> _Fail:
    return _Fail(
        404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


# -- form decoding and parameter checks ---------------------------------------------


def _decode_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """``a[b][c]=v`` pairs as nested dicts; ``a[0]=v`` as lists."""
    root: JSON = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise _Fail(400, f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _Fail(400, f"Invalid value for {key}: conflicting", param=key)
            node = child
        last = parts[-1] or str(len(node))  # a[]=x appends
        if isinstance(node.get(last), dict):
            raise _Fail(400, f"Invalid value for {key}: conflicting", param=key)
        node[last] = value
    return cast(JSON, _listify(root))


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        items = {k: _listify(v) for k, v in value.items()}
        if items and all(k.isdigit() for k in items):
            return [items[k] for k in sorted(items, key=int)]
        return items
    return value


def _allow(params: JSON, allowed: Iterable[str]) -> None:
    known = set(allowed)
    for name in params:
        if name not in known:
            hint = (
                " (this test server does not implement expansion)"
                if name == "expand"
                else ""
            )
            raise _Fail(
                400,
                f"Received unknown parameter: {name}{hint}",
                code="parameter_unknown",
                param=name,
            )


def _string(params: JSON, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise _Fail(400, f"Invalid string: {value!r}", param=name)
    return value


def _choice(
    params: JSON, name: str, choices: Iterable[str], default: str | None = None
) -> str | None:
    value = _string(params, name)
    if value is None:
        return default
    options = list(choices)
    if value not in options:
        raise _Fail(
            400,
            f"Invalid {name}: must be one of {', '.join(options)}",
            code="parameter_invalid_string",
            param=name,
        )
    return value


def _integer(params: JSON, name: str, *, required: bool = False) -> int | None:
    value = _string(params, name, required=required)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise _Fail(
            400,
            f"Invalid integer: {value}",
            code="parameter_invalid_integer",
            param=name,
        ) from None
    if number < 1:
        raise _Fail(
            400,
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=name,
        )
    return number


def _boolean(params: JSON, name: str, default: bool) -> bool:
    value = _string(params, name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise _Fail(400, f"Invalid boolean: {value}", param=name)
    return value == "true"


def _currency(params: JSON) -> str:
    value = cast(str, _string(params, "currency", required=True))
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise _Fail(400, f"Invalid currency: {value.lower()}.", param="currency")
    return value.lower()


def _metadata(params: JSON) -> dict[str, str]:
    raw = params.get("metadata")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _Fail(400, "Invalid object", param="metadata")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise _Fail(400, "Invalid object", param=f"metadata[{key}]")
        if len(key) > 40 or len(value) > 500:
            raise _Fail(
                400,
                "Metadata keys can be up to 40 characters and values up to 500.",
                param=f"metadata[{key}]",
            )
        if value != "":  # an empty value unsets the key
            out[key] = value
    if len(out) > 50:
        raise _Fail(400, "Metadata can have up to 50 keys.", param="metadata")
    return out


def _changed(before: JSON, after: JSON) -> JSON:
    """Stripe's ``previous_attributes``: the old values of the changed fields."""
    return {k: before.get(k) for k in after if before.get(k) != after[k]}


# -- records for tests ----------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One API request the server answered."""

    method: str
    path: str
    idempotency_key: str | None
    status: int
    replayed: bool
    """The answer was a stored one (``Idempotent-Replayed: true``)."""
    injected: bool
    """The answer was a fault from :meth:`StripeTestServer.fail_next`."""


@dataclass(frozen=True)
class Delivery:
    """One attempt to POST an event to the webhook endpoint."""

    event_id: str
    event_type: str
    attempt: int
    """1 for the first try of this send, 2 for its first retry, ..."""
    status: int | None
    """The endpoint's HTTP status; ``None`` if it could not be reached."""
    error: str | None
    payload: bytes
    signature: str
    """The ``Stripe-Signature`` header sent."""

    @property
    def ok(self) -> bool:
        """The endpoint answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Fault:
    method: str
    path_prefix: str
    status: int
    times: int
    after: bool


@dataclass
class _Stored:
    method: str
    path: str
    params: JSON
    status: int
    body: bytes


@dataclass
class _Context:
    request_id: str | None
    idempotency_key: str | None
    api_version: str
    outbox: list[JSON]


# -- the server -----------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: StripeTestServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "stripe-test/1.0"
    sys_version = ""

    def do_GET(self) -> None:
        self.server.app._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.app._handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.app._handle(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: :attr:`StripeTestServer.requests` records every request."""


Route = Callable[[JSON, str, "_Context"], tuple[int, JSON]]


class StripeTestServer:
    """An in-memory Stripe API on ``127.0.0.1`` (see the module).

    Parameters
    ----------
    webhook_url
        Where events are POSTed (``http://...`` only); ``None``: kept, not sent.
    delivery
        ``"immediate"``: an API request's events are delivered before its answer
        is sent; ``"manual"``: they wait for :meth:`deliver`.
    max_delivery_attempts
        How often one send of an event is tried while the endpoint answers
        non-2xx or cannot be reached (no waiting in between). An event that
        still failed is queued again (:meth:`pending_events`).
    """

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        delivery: Literal["immediate", "manual"] = "immediate",
        max_delivery_attempts: int = 3,
        funds_pending: bool = False,
    ):
        self.api_key = "sk_test_veilx_" + secrets.token_hex(12)
        self.webhook_secret = "whsec_" + secrets.token_hex(16)
        self.webhook_url = webhook_url
        self.delivery: Literal["immediate", "manual"] = delivery
        self.max_delivery_attempts = max_delivery_attempts
        self._lock = threading.Lock()
        self._objects: dict[str, JSON] = {}
        self._cards: dict[str, _TestCard | None] = {}  # PaymentIntent id -> card
        self._refunded: dict[str, int] = {}  # PaymentIntent id -> refunded so far
        self._available: dict[str, int] = {}
        self.funds_pending = funds_pending
        self._pending_funds: dict[str, int] = {}  # charge id -> its pending funds
        self._moved_from: dict[str, int] = {}  # charge id -> transferred from it
        self._events: list[JSON] = []
        self._pending: list[JSON] = []
        self._deliveries: list[Delivery] = []
        self._requests: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._idempotency: dict[str, _Stored] = {}
        self._routes: list[tuple[str, re.Pattern[str], Route]] = [
            ("POST", re.compile(r"/v1/accounts"), self._create_account),
            ("GET", re.compile(r"/v1/accounts/([^/]+)"), self._retrieve("account")),
            ("POST", re.compile(r"/v1/payment_intents"), self._create_intent),
            (
                "GET",
                re.compile(r"/v1/payment_intents/([^/]+)"),
                self._retrieve("payment_intent", "intent"),
            ),
            (
                "POST",
                re.compile(r"/v1/payment_intents/([^/]+)/capture"),
                self._capture,
            ),
            ("POST", re.compile(r"/v1/payment_intents/([^/]+)/cancel"), self._cancel),
            ("GET", re.compile(r"/v1/charges/([^/]+)"), self._retrieve("charge")),
            ("POST", re.compile(r"/v1/refunds"), self._create_refund),
            ("GET", re.compile(r"/v1/refunds/([^/]+)"), self._retrieve("refund")),
            ("POST", re.compile(r"/v1/transfers"), self._create_transfer),
            ("GET", re.compile(r"/v1/transfers/([^/]+)"), self._retrieve("transfer")),
            ("GET", re.compile(r"/v1/events/([^/]+)"), self._retrieve("event")),
            ("GET", re.compile(r"/v1/balance"), self._get_balance),
        ]
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="stripe-test-server",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> StripeTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- test control ---------------------------------------------------------------

    @property
    def events(self) -> list[JSON]:
        """Every event so far, oldest first (copies)."""
        with self._lock:
            return copy.deepcopy(self._events)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook delivery attempt so far, oldest first."""
        with self._lock:
            return list(self._deliveries)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every API request answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def pending_events(self) -> list[JSON]:
        """Events not delivered yet: manual mode, or every attempt failed (copies)."""
        with self._lock:
            return copy.deepcopy(self._pending)

    def deliver(
        self,
        events: Iterable[Mapping[str, Any] | str] | None = None,
        *,
        shuffle: bool = False,
        duplicate: bool = False,
        seed: int = 0,
    ) -> list[Delivery]:
        """Send events to ``webhook_url``; the final attempt of each send.

        ``events`` (events or their ids) defaults to all pending ones; the ones
        sent leave the queue. ``duplicate`` sends each twice, ``shuffle`` sends
        in an order drawn from ``seed``. A send that fails
        ``max_delivery_attempts`` times is queued again.
        """
        if self.webhook_url is None:
            raise RuntimeError("set webhook_url before delivering events")
        with self._lock:
            if events is None:
                chosen = list(self._pending)
            else:
                ids = [e if isinstance(e, str) else str(e["id"]) for e in events]
                by_id = {e["id"]: e for e in self._events}
                unknown = [i for i in ids if i not in by_id]
                if unknown:
                    raise KeyError(f"no such events: {unknown}")
                chosen = [by_id[i] for i in ids]
            sent = {e["id"] for e in chosen}
            self._pending = [e for e in self._pending if e["id"] not in sent]
            chosen = copy.deepcopy(chosen)
        order = [e for e in chosen for _ in range(2 if duplicate else 1)]
        if shuffle:
            random.Random(seed).shuffle(order)
        return [self._send(event) for event in order]

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int = 500,
        times: int = 1,
        *,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with a Stripe error.

        ``status`` ≥ 500 is an ``api_error``, 429 a rate limit. With ``after``
        the request is carried out (and its answer stored for its idempotency
        key) and the error is sent instead of the answer: a lost response.
        Faults are not stored, so a retry with the same key gets the real answer.
        """
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), path_prefix, status, times, after)
            )

    def complete_action(self, intent_id: str, succeed: bool) -> JSON:
        """The buyer finishes (or fails) 3-D Secure; the PaymentIntent afterwards.

        Success authorises the card (``requires_capture``, or ``succeeded`` for
        automatic capture); failure leaves ``requires_payment_method`` with a
        ``payment_intent_authentication_failure`` error and a
        ``payment_intent.payment_failed`` event.
        """
        ctx = _Context(None, None, API_VERSION, [])
        with self._lock:
            intent = self._objects.get(intent_id)
            if intent is None or intent["object"] != "payment_intent":
                raise KeyError(f"no such PaymentIntent {intent_id}")
            if intent["status"] != "requires_action":
                raise ValueError(
                    f"{intent_id} is {intent['status']}, not requires_action"
                )
            before = copy.deepcopy(intent)
            intent["next_action"] = None
            if succeed:
                self._authorize(intent, before, ctx)
            else:
                intent["status"] = "requires_payment_method"
                intent["last_payment_error"] = {
                    "type": "card_error",
                    "code": "payment_intent_authentication_failure",
                    "message": (
                        "The provided PaymentMethod has failed authentication. You "
                        "can provide payment_method_data or a new PaymentMethod to "
                        "attempt to fulfill this PaymentIntent again."
                    ),
                    "payment_method": {"id": intent["payment_method"]},
                }
                self._emit("payment_intent.payment_failed", intent, ctx, before)
            result = copy.deepcopy(intent)
        self._flush(ctx)
        return result

    def complete_onboarding(self, account_id: str) -> JSON:
        """The organisation finishes Stripe onboarding; the account afterwards."""
        ctx = _Context(None, None, API_VERSION, [])
        with self._lock:
            account = self._objects.get(account_id)
            if account is None or account["object"] != "account":
                raise KeyError(f"no such account {account_id}")
            before = copy.deepcopy(account)
            account["details_submitted"] = True
            account["payouts_enabled"] = True
            account["charges_enabled"] = "card_payments" in account["capabilities"]
            account["capabilities"] = {k: "active" for k in account["capabilities"]}
            account["requirements"] = _requirements(due=False)
            self._emit("account.updated", account, ctx, before)
            result = copy.deepcopy(account)
        self._flush(ctx)
        return result

    def fund_balance(self, currency: str, amount: int) -> None:
        """Add ``amount`` to the platform's available balance (no charge needed)."""
        with self._lock:
            key = currency.lower()
            self._available[key] = self._available.get(key, 0) + amount

    def forget_idempotency_keys(self) -> None:
        """Forget every stored idempotency key (Stripe keeps them 24 hours)."""
        with self._lock:
            self._idempotency.clear()

    def release_pending(self) -> None:
        """Make every captured charge's pending funds available (days passed)."""
        with self._lock:
            for charge_id, amount in self._pending_funds.items():
                currency = self._objects[charge_id]["currency"]
                self._available[currency] = self._available.get(currency, 0) + amount
            self._pending_funds.clear()

    def pending_balance(self, currency: str) -> int:
        """The platform's pending balance in ``currency`` (minor units)."""
        with self._lock:
            return sum(
                amount
                for charge_id, amount in self._pending_funds.items()
                if self._objects[charge_id]["currency"] == currency.lower()
            )

    def balance(self, currency: str) -> int:
        """The platform's available balance in ``currency`` (minor units)."""
        with self._lock:
            return self._available.get(currency.lower(), 0)

    def get(self, object_id: str) -> JSON:
        """Any object by id: ``pi_``, ``ch_``, ``re_``, ``tr_``, ``acct_``, ``evt_``."""
        with self._lock:
            if object_id in self._objects:
                return copy.deepcopy(self._objects[object_id])
            for event in self._events:
                if event["id"] == object_id:
                    return copy.deepcopy(event)
        raise KeyError(object_id)

    def objects(self, kind: str) -> list[JSON]:
        """The objects whose ``object`` is ``kind`` (``"charge"``...), oldest first."""
        with self._lock:
            return [
                copy.deepcopy(o) for o in self._objects.values() if o["object"] == kind
            ]

    def sign(
        self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> str:
        """A ``Stripe-Signature`` header for ``payload`` (now, this server's secret)."""
        t = _now() if timestamp is None else timestamp
        key = (self.webhook_secret if secret is None else secret).encode()
        mac = hmac.new(key, f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    # -- HTTP -------------------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path.rstrip("/") or "/"
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        key = handler.headers.get("Idempotency-Key") if method == "POST" else None
        version = handler.headers.get("Stripe-Version") or API_VERSION
        ctx = _Context(_new_id("req"), key, version, [])
        headers = {"Request-Id": cast(str, ctx.request_id), "Stripe-Version": version}
        if key is not None:
            headers["Idempotency-Key"] = key
        replayed = injected = False
        with self._lock:
            fault = self._fault(method, path)
            if fault is not None and not fault.after:
                status, payload = self._fault_answer(fault)
                injected = True
            else:
                status, payload, replayed = self._answer(
                    handler, method, path, split.query, body, ctx
                )
                if fault is not None:
                    status, payload = self._fault_answer(fault)
                    injected, replayed = True, False
            self._requests.append(
                RequestRecord(method, path, key, status, replayed, injected)
            )
        self._flush(ctx)
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and path.startswith(fault.path_prefix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_answer(fault: _Fault) -> tuple[int, bytes]:
        if fault.status == 429:
            error = _Fail(
                429,
                "Too many requests hit the API too quickly.",
                code="rate_limit",
                type_="invalid_request_error",
            )
        else:
            error = _Fail(
                fault.status,
                "An unknown error occurred (injected by the veilx Stripe test server).",
                type_="api_error",
            )
        return fault.status, _dump(error.body)

    def _answer(
        self,
        handler: _Handler,
        method: str,
        path: str,
        query: str,
        body: bytes,
        ctx: _Context,
    ) -> tuple[int, bytes, bool]:
        """Status, body and whether it is a replay; call with the lock held."""
        try:
            self._authenticate(handler.headers.get("Authorization"))
            text = body.decode() if method == "POST" else query
            params = _decode_form(parse_qsl(text, keep_blank_values=True))
            key = ctx.idempotency_key
            if key is not None:
                stored = self._idempotency.get(key)
                if stored is not None:
                    if (stored.method, stored.path, stored.params) != (
                        method,
                        path,
                        params,
                    ):
                        raise _Fail(
                            400,
                            "Keys for idempotent requests can only be used with the "
                            "same parameters they were first used with. Try using a "
                            f"key other than '{key}' if you meant to execute a "
                            "different request.",
                            type_="idempotency_error",
                        )
                    return stored.status, stored.body, True
            for route_method, pattern, route in self._routes:
                match = pattern.fullmatch(path)
                if match is not None and route_method == method:
                    target = match.group(1) if pattern.groups else ""
                    try:
                        status, answer = route(params, target, ctx)
                    except _Fail as failure:
                        if failure.stored and key is not None:
                            self._idempotency[key] = _Stored(
                                method,
                                path,
                                params,
                                failure.status,
                                _dump(failure.body),
                            )
                        raise
                    payload = _dump(answer)
                    if key is not None:
                        self._idempotency[key] = _Stored(
                            method, path, params, status, payload
                        )
                    return status, payload, False
            raise _Fail(404, _UNRECOGNIZED.format(method=method, path=path))
        except _Fail as failure:
            return failure.status, _dump(failure.body), False
        except UnicodeDecodeError:
            return 400, _dump(_Fail(400, "Invalid request body: not UTF-8").body), False

    def _authenticate(self, header: str | None) -> None:
        if not header:
            raise _Fail(
                401,
                "You did not provide an API key. You need to provide your API key in "
                "the Authorization header, using Bearer auth (e.g. 'Authorization: "
                "Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#"
                "authentication for details, or we can help at "
                "https://support.stripe.com/.",
            )
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            shown = token.strip()[-4:]
            raise _Fail(401, f"Invalid API Key provided: sk_test_****{shown}")

    # -- events and webhooks ----------------------------------------------------------

    def _emit(
        self, type_: str, obj: JSON, ctx: _Context, before: JSON | None = None
    ) -> None:
        """Record an event about ``obj`` as it is now; call with the lock held."""
        data: JSON = {"object": copy.deepcopy(obj)}
        if before is not None:
            data["previous_attributes"] = _changed(before, obj)
        event: JSON = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": ctx.api_version,
            "created": _now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1 if self.webhook_url else 0,
            "request": {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
            "type": type_,
        }
        self._events.append(event)
        if self.delivery == "manual":
            self._pending.append(event)
        else:
            ctx.outbox.append(copy.deepcopy(event))

    def _flush(self, ctx: _Context) -> None:
        """Deliver a request's events (immediate mode); call without the lock."""
        if self.webhook_url is not None:
            for event in ctx.outbox:
                self._send(event)

    def _send(self, event: JSON) -> Delivery:
        """POST one event until 2xx or out of attempts; call without the lock."""
        url = urlsplit(cast(str, self.webhook_url))
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"webhook_url must be http://host:port/...: {url}")
        payload = _dump(event)
        delivery: Delivery | None = None
        for attempt in range(1, max(1, self.max_delivery_attempts) + 1):
            signature = self.sign(payload)
            status: int | None = None
            error: str | None = None
            connection = http.client.HTTPConnection(
                url.hostname, url.port or 80, timeout=30
            )
            try:
                connection.request(
                    "POST",
                    (url.path or "/") + (f"?{url.query}" if url.query else ""),
                    body=payload,
                    headers={
                        "Content-Type": "application/json; charset=utf-8",
                        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                        "Stripe-Signature": signature,
                    },
                )
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                connection.close()
            delivery = Delivery(
                event["id"], event["type"], attempt, status, error, payload, signature
            )
            with self._lock:
                self._deliveries.append(delivery)
            if delivery.ok:
                return delivery
        with self._lock:
            if all(e["id"] != event["id"] for e in self._pending):
                self._pending.append(copy.deepcopy(event))
        return cast(Delivery, delivery)

    # -- endpoints (called with the lock held) ------------------------------------

    def _retrieve(self, kind: str, param: str = "id") -> Route:
        def route(params: JSON, object_id: str, ctx: _Context) -> tuple[int, JSON]:
            _allow(params, ())
            if kind == "event":
                for event in self._events:
                    if event["id"] == object_id:
                        return 200, event
                raise _no_such(kind, object_id, param)
            obj = self._objects.get(object_id)
            if obj is None or obj["object"] != kind:
                raise _no_such(kind, object_id, param)
            return 200, obj

        return route

    def _get_balance(self, params: JSON, _: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(params, ())
        return 200, {
            "object": "balance",
            "available": [
                {
                    "amount": amount,
                    "currency": currency,
                    "source_types": {"card": amount},
                }
                for currency, amount in sorted(self._available.items())
            ],
            "pending": [
                {"amount": amount, "currency": currency}
                for currency, amount in sorted(self._pending_totals().items())
            ],
            "livemode": False,
        }

    def _pending_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for charge_id, amount in self._pending_funds.items():
            currency = self._objects[charge_id]["currency"]
            totals[currency] = totals.get(currency, 0) + amount
        return totals

    def _create_account(self, params: JSON, _: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(
            params,
            (
                "type",
                "country",
                "email",
                "metadata",
                "capabilities",
                "business_type",
                "default_currency",
            ),
        )
        type_ = _choice(params, "type", ("custom", "express", "standard"), "standard")
        country = (_string(params, "country") or "US").upper()
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise _Fail(400, f"Country '{country}' is unknown.", param="country")
        email = _string(params, "email")
        if email is not None and "@" not in email:
            raise _Fail(400, "Invalid email address: " + email, param="email")
        capabilities = params.get("capabilities") or {}
        if not isinstance(capabilities, dict):
            raise _Fail(400, "Invalid object", param="capabilities")
        requested = []
        for name, value in capabilities.items():
            if not isinstance(value, dict) or set(value) != {"requested"}:
                raise _Fail(
                    400, "Invalid object", param=f"capabilities[{name}][requested]"
                )
            if value["requested"] not in ("true", "false"):
                raise _Fail(
                    400,
                    f"Invalid boolean: {value['requested']}",
                    param=f"capabilities[{name}][requested]",
                )
            if value["requested"] == "true":
                requested.append(name)
        if type_ in ("express", "custom") and not requested:
            raise _Fail(
                400,
                f"Accounts of type {type_} must request at least one capability, "
                "e.g. capabilities[transfers][requested]=true.",
                param="capabilities",
            )
        metadata = _metadata(params)
        business_type = _choice(
            params,
            "business_type",
            ("company", "government_entity", "individual", "non_profit"),
        )
        default = _COUNTRY_CURRENCY.get(
            country, "eur" if country in _EURO_COUNTRIES else "usd"
        )
        account: JSON = {
            "id": _new_id("acct"),
            "object": "account",
            "business_profile": {"name": None, "url": None, "mcc": None},
            "business_type": business_type,
            "capabilities": {name: "inactive" for name in requested},
            "charges_enabled": False,
            "country": country,
            "created": _now(),
            "default_currency": (
                _string(params, "default_currency") or default
            ).lower(),
            "details_submitted": False,
            "email": email,
            "metadata": metadata,
            "payouts_enabled": False,
            "requirements": _requirements(due=True),
            "settings": {},
            "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
            "type": type_,
        }
        self._objects[account["id"]] = account
        return 200, account

    def _create_intent(self, params: JSON, _: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(
            params,
            (
                "amount",
                "currency",
                "capture_method",
                "confirm",
                "payment_method",
                "allowed_payment_method_types",
                "automatic_payment_methods",
                "metadata",
                "transfer_group",
                "description",
                "receipt_email",
                "statement_descriptor",
                "statement_descriptor_suffix",
                "return_url",
                "error_on_requires_action",
            ),
        )
        amount = cast(int, _integer(params, "amount", required=True))
        currency = _currency(params)
        minimum = _MINIMUM_CHARGE.get(currency, 50)
        if amount < minimum:
            raise _Fail(
                400,
                f"Amount must be at least {minimum} minor units of {currency}.",
                code="amount_too_small",
                param="amount",
            )
        if amount > _MAXIMUM_AMOUNT:
            raise _Fail(
                400,
                f"Amount must be no more than {_MAXIMUM_AMOUNT} minor units.",
                code="amount_too_large",
                param="amount",
            )
        capture_method = _choice(
            params,
            "capture_method",
            ("automatic", "automatic_async", "manual"),
            "automatic_async",
        )
        confirm = _boolean(params, "confirm", False)
        error_on_action = _boolean(params, "error_on_requires_action", False)
        method = _string(params, "payment_method")
        card = TEST_PAYMENT_METHODS.get(method) if method is not None else None
        if method is not None and card is None:
            raise _no_such("PaymentMethod", method, "payment_method")
        types = params.get("allowed_payment_method_types")
        automatic = params.get("automatic_payment_methods")
        if types is not None and automatic is not None:
            raise _Fail(
                400,
                "You may only specify one of these parameters: "
                "allowed_payment_method_types, automatic_payment_methods.",
                param="automatic_payment_methods",
            )
        if types is not None and (
            not isinstance(types, list) or not all(isinstance(t, str) for t in types)
        ):
            raise _Fail(400, "Invalid array", param="allowed_payment_method_types")
        if types is not None and "card" not in types:
            raise _Fail(
                400,
                "This test server knows only card payments: "
                "allowed_payment_method_types must include card.",
                param="allowed_payment_method_types",
            )
        redirects = "always"
        if isinstance(automatic, dict):
            if automatic.get("enabled") == "false":
                redirects = "never"
            redirects = str(automatic.get("allow_redirects", redirects))
        if (
            confirm
            and types is None
            and redirects != "never"
            and _string(params, "return_url") is None
        ):
            raise _Fail(
                400,
                "This PaymentIntent is configured to accept payment methods enabled "
                "in your Dashboard. Because some of these payment methods might "
                "redirect your customer off of your page, you must provide a "
                "`return_url`. If you don't want to accept redirect-based payment "
                "methods, set `automatic_payment_methods[enabled]` to `true` and "
                "`automatic_payment_methods[allow_redirects]` to `never` when "
                "creating Setup Intents and Payment Intents.",
                param="return_url",
            )
        if confirm and method is None:
            raise _Fail(
                400,
                "You cannot confirm this PaymentIntent because it's missing a "
                "payment method. To confirm the PaymentIntent with a payment "
                "method, provide it in the payment_method parameter.",
                code="payment_intent_unexpected_state",
                param="payment_method",
            )
        metadata = _metadata(params)
        intent_id = _new_id("pi")
        intent: JSON = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": (
                None if types is not None else {"enabled": True}
            ),
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": capture_method,
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "confirmation_method": "automatic",
            "created": _now(),
            "currency": currency,
            "customer": None,
            "description": _string(params, "description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": _new_id("pm") if method is not None else None,
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": _string(params, "receipt_email"),
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "statement_descriptor": _string(params, "statement_descriptor"),
            "statement_descriptor_suffix": _string(
                params, "statement_descriptor_suffix"
            ),
            "status": (
                "requires_payment_method" if method is None else "requires_confirmation"
            ),
            "transfer_data": None,
            "transfer_group": _string(params, "transfer_group"),
        }
        self._objects[intent_id] = intent
        self._cards[intent_id] = card
        self._emit("payment_intent.created", intent, ctx)
        if confirm and card is not None:
            before = copy.deepcopy(intent)
            if card.behaviour == "authorize":
                self._authorize(intent, before, ctx)
            elif card.behaviour == "decline":
                self._decline(intent, before, card, ctx)
            elif error_on_action:
                self._decline(intent, before, card, ctx, authentication=True)
            else:
                intent["status"] = "requires_action"
                intent["next_action"] = {
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {
                        "type": "three_d_secure_redirect",
                        "stripe_js": f"https://hooks.stripe.com/3d_secure/{intent_id}",
                    },
                }
                self._emit("payment_intent.requires_action", intent, ctx, before)
        return 200, intent

    def _authorize(self, intent: JSON, before: JSON, ctx: _Context) -> None:
        card = self._cards[intent["id"]]
        automatic = intent["capture_method"] != "manual"
        charge = self._new_charge(intent, card, ctx, paid=True)
        intent["latest_charge"] = charge["id"]
        if automatic:
            charge["captured"] = True
            charge["amount_captured"] = intent["amount"]
            intent["status"] = "succeeded"
            intent["amount_received"] = intent["amount"]
            self._receive(charge, intent["amount"])
            self._emit("charge.succeeded", charge, ctx)
            self._emit("payment_intent.succeeded", intent, ctx, before)
        else:
            intent["status"] = "requires_capture"
            intent["amount_capturable"] = intent["amount"]
            self._emit("charge.succeeded", charge, ctx)
            self._emit("payment_intent.amount_capturable_updated", intent, ctx, before)

    def _decline(
        self,
        intent: JSON,
        before: JSON,
        card: _TestCard | None,
        ctx: _Context,
        *,
        authentication: bool = False,
    ) -> None:
        charge = self._new_charge(intent, card, ctx, paid=False)
        if authentication:
            code, decline = "authentication_required", "authentication_required"
            message = (
                "Your card was declined. This transaction requires authentication."
            )
        else:
            code = "card_declined"
            decline = (card.decline_code if card else None) or "generic_decline"
            message = (
                "Your card has insufficient funds."
                if decline == "insufficient_funds"
                else "Your card was declined."
            )
        charge["failure_code"] = code
        charge["failure_message"] = message
        charge["outcome"] = {
            "network_status": "declined_by_network",
            "reason": decline,
            "seller_message": "The bank did not return any further details.",
            "type": "issuer_declined",
        }
        error: JSON = {
            "type": "card_error",
            "code": code,
            "decline_code": decline,
            "message": message,
            "charge": charge["id"],
            "payment_method": {
                "id": intent["payment_method"],
                "object": "payment_method",
            },
        }
        intent["status"] = "requires_payment_method"
        intent["latest_charge"] = charge["id"]
        intent["last_payment_error"] = dict(error)
        self._emit("charge.failed", charge, ctx)
        self._emit("payment_intent.payment_failed", intent, ctx, before)
        raise _Fail(
            402,
            message,
            type_="card_error",
            code=code,
            stored=True,
            extra={
                "decline_code": decline,
                "charge": charge["id"],
                "payment_intent": copy.deepcopy(intent),
                "payment_method": error["payment_method"],
            },
        )

    def _new_charge(
        self, intent: JSON, card: _TestCard | None, ctx: _Context, *, paid: bool
    ) -> JSON:
        charge: JSON = {
            "id": _new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "captured": False,
            "created": _now(),
            "currency": intent["currency"],
            "description": intent["description"],
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "outcome": {
                "network_status": "approved_by_network",
                "reason": None,
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            "paid": paid,
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "payment_method_details": {
                "type": "card",
                "card": {
                    "brand": card.brand if card else "visa",
                    "last4": card.last4 if card else "4242",
                    "exp_month": 12,
                    "exp_year": time.gmtime().tm_year + 3,
                    "country": "US",
                },
            },
            "refunded": False,
            "status": "succeeded" if paid else "failed",
            "transfer_group": intent["transfer_group"],
        }
        self._objects[charge["id"]] = charge
        return charge

    def _intent(self, intent_id: str) -> JSON:
        intent = self._objects.get(intent_id)
        if intent is None or intent["object"] != "payment_intent":
            raise _no_such("payment_intent", intent_id, "intent")
        return intent

    def _capture(self, params: JSON, intent_id: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(
            params,
            (
                "amount_to_capture",
                "metadata",
                "statement_descriptor",
                "statement_descriptor_suffix",
            ),
        )
        intent = self._intent(intent_id)
        amount = _integer(params, "amount_to_capture")
        metadata = _metadata(params) if "metadata" in params else None
        if intent["status"] != "requires_capture":
            raise _Fail(
                400,
                "This PaymentIntent could not be captured because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following "
                "statuses may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
                stored=True,
                extra={"payment_intent": copy.deepcopy(intent)},
            )
        capturable = intent["amount_capturable"]
        if amount is None:
            amount = capturable
        if amount > capturable:
            raise _Fail(
                400,
                f"The amount_to_capture ({amount}) must be less than or equal to the "
                f"PaymentIntent's amount_capturable ({capturable}).",
                code="amount_too_large",
                param="amount_to_capture",
                stored=True,
            )
        before = copy.deepcopy(intent)
        charge = self._objects[intent["latest_charge"]]
        charge_before = copy.deepcopy(charge)
        charge["captured"] = True
        charge["amount_captured"] = amount
        intent["status"] = "succeeded"
        intent["amount_received"] = amount
        intent["amount_capturable"] = 0
        if metadata is not None:
            intent["metadata"] = {**intent["metadata"], **metadata}
        self._receive(charge, amount)
        self._emit("charge.captured", charge, ctx, charge_before)
        self._emit("payment_intent.succeeded", intent, ctx, before)
        return 200, intent

    def _cancel(self, params: JSON, intent_id: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(params, ("cancellation_reason",))
        intent = self._intent(intent_id)
        reason = _choice(
            params,
            "cancellation_reason",
            ("duplicate", "fraudulent", "requested_by_customer", "abandoned"),
        )
        if intent["status"] not in _CANCELABLE:
            raise _Fail(
                400,
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following "
                f"statuses may be canceled: {', '.join(_CANCELABLE)}.",
                code="payment_intent_unexpected_state",
                stored=True,
                extra={"payment_intent": copy.deepcopy(intent)},
            )
        before = copy.deepcopy(intent)
        if intent["status"] == "requires_capture":  # the authorisation is released
            charge = self._objects[intent["latest_charge"]]
            charge["refunded"] = True
            charge["amount_refunded"] = charge["amount"]
        intent["status"] = "canceled"
        intent["canceled_at"] = _now()
        intent["cancellation_reason"] = reason
        intent["amount_capturable"] = 0
        intent["next_action"] = None
        self._emit("payment_intent.canceled", intent, ctx, before)
        return 200, intent

    def _create_refund(self, params: JSON, _: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(params, ("payment_intent", "charge", "amount", "metadata", "reason"))
        intent_id = _string(params, "payment_intent")
        charge_id = _string(params, "charge")
        if (intent_id is None) == (charge_id is None):
            raise _Fail(
                400,
                "You must pass exactly one of the following parameters: "
                "payment_intent or charge.",
                param="payment_intent",
            )
        if charge_id is not None:
            charge = self._objects.get(charge_id)
            if charge is None or charge["object"] != "charge":
                raise _no_such("charge", charge_id, "charge")
            intent = self._intent(charge["payment_intent"])
        else:
            intent = self._intent(cast(str, intent_id))
        amount = _integer(params, "amount")
        metadata = _metadata(params)
        reason = _choice(
            params, "reason", ("duplicate", "fraudulent", "requested_by_customer")
        )
        if intent["status"] != "succeeded":
            raise _Fail(
                400,
                f"This PaymentIntent ({intent['id']}) does not have a successful "
                f"charge to refund (status {intent['status']}).",
                code="charge_not_refundable",
                param="payment_intent",
                stored=True,
            )
        charge = self._objects[intent["latest_charge"]]
        left = intent["amount_received"] - self._refunded.get(intent["id"], 0)
        if left == 0:
            raise _Fail(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
                stored=True,
            )
        if amount is None:
            amount = left
        if amount > left:
            raise _Fail(
                400,
                f"Refund amount ({amount} {intent['currency']}) is greater than "
                f"unrefunded amount on charge ({left} {intent['currency']})",
                param="amount",
                stored=True,
            )
        charge_before = copy.deepcopy(charge)
        self._refunded[intent["id"]] = self._refunded.get(intent["id"], 0) + amount
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        self._take(charge, amount)
        refund: JSON = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": _new_id("txn"),
            "charge": charge["id"],
            "created": _now(),
            "currency": intent["currency"],
            "metadata": metadata,
            "payment_intent": intent["id"],
            "reason": reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self._objects[refund["id"]] = refund
        self._emit("charge.refunded", charge, ctx, charge_before)
        self._emit("refund.created", refund, ctx)
        return 200, refund

    def _create_transfer(self, params: JSON, _: str, ctx: _Context) -> tuple[int, JSON]:
        _allow(
            params,
            (
                "amount",
                "currency",
                "destination",
                "transfer_group",
                "metadata",
                "description",
                "source_transaction",
            ),
        )
        amount = cast(int, _integer(params, "amount", required=True))
        source_id = _string(params, "source_transaction")
        currency = _currency(params)
        destination = cast(str, _string(params, "destination", required=True))
        metadata = _metadata(params)
        account = self._objects.get(destination)
        if account is None or account["object"] != "account":
            raise _Fail(
                400,
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        if source_id is not None:
            source = self._objects.get(source_id)
            if source is None or source["object"] != "charge":
                raise _Fail(
                    400,
                    f"No such charge: '{source_id}'",
                    code="resource_missing",
                    param="source_transaction",
                )
            left = (
                source["amount_captured"]
                - source["amount_refunded"]
                - self._moved_from.get(source_id, 0)
            )
            if not source["captured"] or source["currency"] != currency:
                raise _Fail(
                    400,
                    f"The source transaction {source_id} is not a captured "
                    f"{currency} charge.",
                    param="source_transaction",
                )
            if amount > left:
                raise _Fail(
                    400,
                    f"Insufficient funds on source transaction {source_id}: "
                    f"{left} {currency} left, transfer {amount}.",
                    code="balance_insufficient",
                    param="amount",
                    stored=True,
                )
            self._moved_from[source_id] = self._moved_from.get(source_id, 0) + amount
            self._take(source, amount)
        available = self._available.get(currency, 0)
        if source_id is None and amount > available:
            raise _Fail(
                400,
                "You have insufficient available funds in your Stripe account. Try "
                "adding funds directly to your available balance by creating Charges "
                "using the 4000000000000077 test card. See: "
                "https://stripe.com/docs/testing#available-balance "
                f"(available: {available} {currency}, transfer: {amount}).",
                code="balance_insufficient",
                stored=True,
            )
        if source_id is None:
            self._credit(currency, -amount)
        transfer_id = _new_id("tr")
        transfer: JSON = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": _new_id("txn"),
            "created": _now(),
            "currency": currency,
            "description": _string(params, "description"),
            "destination": destination,
            "destination_payment": _new_id("py"),
            "livemode": False,
            "metadata": metadata,
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": source_id,
            "source_type": "card",
            "transfer_group": _string(params, "transfer_group"),
        }
        self._objects[transfer_id] = transfer
        self._emit("transfer.created", transfer, ctx)
        return 200, transfer

    def _credit(self, currency: str, amount: int) -> None:
        self._available[currency] = self._available.get(currency, 0) + amount

    def _receive(self, charge: JSON, amount: int) -> None:
        """A capture's funds: pending (``funds_pending``) or available at once."""
        if self.funds_pending:
            self._pending_funds[charge["id"]] = (
                self._pending_funds.get(charge["id"], 0) + amount
            )
        else:
            self._credit(charge["currency"], amount)

    def _take(self, charge: JSON, amount: int) -> None:
        """Money leaving through ``charge`` (a refund, a sourced transfer): from
        its pending funds first, the rest from the available balance.
        """
        pending = self._pending_funds.get(charge["id"], 0)
        first = min(pending, amount)
        if first:
            self._pending_funds[charge["id"]] = pending - first
        if amount - first:
            self._credit(charge["currency"], -(amount - first))


def _requirements(*, due: bool) -> JSON:
    fields = (
        [
            "business_type",
            "external_account",
            "tos_acceptance.date",
            "tos_acceptance.ip",
        ]
        if due
        else []
    )
    return {
        "currently_due": fields,
        "eventually_due": fields,
        "past_due": [],
        "disabled_reason": "requirements.past_due" if due else None,
    }


def _dump(obj: JSON) -> bytes:
    return json.dumps(obj, indent=2).encode()


# -- a webhook endpoint for tests -----------------------------------------------------


@dataclass(frozen=True)
class ReceivedWebhook:
    """One POST the :class:`WebhookRecorder` received."""

    payload: bytes
    signature: str | None
    """Its ``Stripe-Signature`` header."""
    status: int
    """What the recorder answered."""


class _RecorderServer(ThreadingHTTPServer):
    daemon_threads = True
    recorder: WebhookRecorder


class _RecorderHandler(BaseHTTPRequestHandler):
    server: _RecorderServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length)
        status = self.server.recorder._receive(
            payload, self.headers.get("Stripe-Signature")
        )
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: :attr:`WebhookRecorder.received` records every delivery."""


class WebhookRecorder:
    """A webhook endpoint on ``127.0.0.1`` that records every POST.

    ``handler(payload, signature_header)`` decides the status to answer (as an
    application's endpoint would, e.g. 400 for a bad signature); without one it
    answers 200. :meth:`fail_next` makes the next deliveries fail first.
    """

    def __init__(self, handler: Callable[[bytes, str | None], int] | None = None):
        self._handler = handler
        self._lock = threading.Lock()
        self._received: list[ReceivedWebhook] = []
        self._failures: list[int] = []
        self._httpd = _RecorderServer(("127.0.0.1", 0), _RecorderHandler)
        self._httpd.recorder = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webhook-recorder",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/webhooks/stripe"

    @property
    def received(self) -> list[ReceivedWebhook]:
        """Every POST so far, oldest first."""
        with self._lock:
            return list(self._received)

    def fail_next(self, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` POSTs with ``status`` (without the handler)."""
        with self._lock:
            self._failures.extend([status] * times)

    def _receive(self, payload: bytes, signature: str | None) -> int:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            status = failure
        elif self._handler is not None:
            status = self._handler(payload, signature)
        else:
            status = 200
        with self._lock:
            self._received.append(ReceivedWebhook(payload, signature, status))
        return status

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> WebhookRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
