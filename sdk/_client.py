"""The :class:`Client`: one object per exchange and credential, no module state."""

from __future__ import annotations

import os
from types import TracebackType

import httpx

from sdk._compute import Compute
from sdk._http import HTTP
from sdk._keys import Keys
from sdk._resources import Blobs, Datasets, Jobs, Nodes, Receipts
from sdk._trading import (
    Balances,
    Credits,
    Entitlements,
    Journal,
    Orders,
    Quotes,
    Settlements,
    Wallets,
)

__all__ = ["DEFAULT_BASE_URL", "Client"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class Client:
    """A client of one veilx exchange.

    Parameters
    ----------
    api_key
        An API key of your organisation (``vx_…``).
    base_url
        The exchange's root URL; API paths are under ``/v1``.
    timeout
        Seconds allowed per HTTP request (connect, read, write, pool): 30 by
        default. With ``http_client``, applied only when given; otherwise that
        client's own timeout applies.
    max_network_retries
        How many times to retry a request that failed on the network, was
        rate-limited (429; ``Retry-After`` is honoured) or hit a server error
        (5xx), with capped, jittered exponential backoff. Off (0) by default.
        Every POST carries an ``Idempotency-Key`` reused by its retries, so a
        retried POST never acts twice.
    http_client
        An ``httpx.Client`` to send requests with (a custom transport, proxies,
        ``httpx.MockTransport`` in tests). It is not closed by :meth:`close`.
    key_dir
        Where local HE keys live (default ``~/.config/veilx/keys``).

    Attributes
    ----------
    datasets
        Listings, catalog search, versions, privacy budgets.
    jobs
        Submit, read, list, approve, deny and wait for jobs.
    receipts
        Read and independently verify a job's receipt.
    nodes
        The node registry (receipt signing keys).
    blobs
        Upload and download content-addressed ciphertext blobs.
    keys
        Local HE key management and public-context uploads.
    compute
        ``aggregate``, ``model_eval`` and ``inference``, end to end.
    quotes
        Prices for entitlements, and DP quote menus (ε, expected error, price).
    orders
        Buy a quote with credits or a card (idempotent by key).
    entitlements
        What jobs are charged against: quota, ε budget and money left; charges;
        close (buyer) or revoke (provider, operator).
    balances
        Your organisation's accounts: credits and payables.
    credits
        Top up a buyer's prepaid credits (operator).
    settlements
        Settlement runs (operator) and payee statements (JSON or CSV).
    journal
        Check the money journal's invariants (operator, regulator).

    Examples
    --------
    >>> with Client("vx_…") as client:  # doctest: +SKIP
    ...     result = client.compute.aggregate(
    ...         dataset_id, statistics=["count", "mean"], columns=["income"],
    ...         group_by=["region"], purpose="research")
    ...     for group in result.groups:
    ...         print(group.key, group.count, group.mean["income"])
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | None = None,
        max_network_retries: int = 0,
        http_client: httpx.Client | None = None,
        key_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._http = HTTP(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_network_retries=max_network_retries,
            http_client=http_client,
        )
        self.datasets = Datasets(self._http)
        self.nodes = Nodes(self._http)
        self.blobs = Blobs(self._http)
        self.jobs = Jobs(self._http)
        self.receipts = Receipts(self._http, self.jobs, self.nodes, self.datasets)
        self.keys = Keys(key_dir, http=self._http)
        self.quotes = Quotes(self._http)
        self.orders = Orders(self._http)
        self.entitlements = Entitlements(self._http)
        self.balances = Balances(self._http)
        self.settlements = Settlements(self._http)
        self.wallets = Wallets(self._http)
        self.credits = Credits(self._http)
        self.journal = Journal(self._http)
        self.compute = Compute(
            jobs=self.jobs,
            receipts=self.receipts,
            blobs=self.blobs,
            datasets=self.datasets,
            keys=self.keys,
        )

    @property
    def base_url(self) -> str:
        """The exchange's root URL."""
        return self._http.base_url

    @property
    def max_network_retries(self) -> int:
        """Retries per request after the first attempt."""
        return self._http.max_network_retries

    def close(self) -> None:
        """Close the connection pool (unless it was passed in as ``http_client``)."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"
