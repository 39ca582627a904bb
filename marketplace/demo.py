"""``veilx demo``: an embedded exchange with sample providers, datasets and a search.

It starts the real API server on a free loopback port (SQLite, in-process
key-value store), bootstraps the operator, signs up two providers, a buyer and a
regulator over HTTP, admits them, lists the sample datasets with their metadata,
rights policies, prices and content versions, and prints catalog searches. Then
each provider starts its data node next to its CSV files (signed quality
attestations appear on the listings), the buyer buys entitlements with prepaid
credits after a look at a DP price menu (:mod:`marketplace.demo_trading`), runs
the three computations through the SDK (:mod:`marketplace.demo_compute`), and the
operator settles the period: payouts, statements, the journal checked, then the
trades on the chain (:mod:`marketplace.demo_ledger`).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from marketplace.api import create_app
from marketplace.api.main import EMBEDDED_SWEEP_INTERVAL
from marketplace.chain import LazyChain
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.demo_compute import (
    CREDIT_FEATURES,
    DemoNode,
    fit_logistic,
    read_columns,
    run_computations,
    running_nodes,
    write_node_config,
)
from marketplace.demo_ledger import show_ledger, verify_after_restart
from marketplace.demo_trading import buy_entitlements, settle_period
from marketplace.models import OrganisationCreate, OrganisationStatus, Role
from marketplace.samples import SampleDataset, load_catalog, write_csv
from marketplace.services.identity import IdentityService

__all__ = ["DemoRun", "DemoServer", "run_demo"]

PASSWORD = "demo-password-not-secret"  # noqa: S105 - demo accounts only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoServer:
    """The API served by uvicorn in a background thread on 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self.port = _free_port()
        self.db = Database.from_url(settings.effective_database_url)
        self.db.upgrade()
        self.chain = LazyChain(settings)
        app = create_app(
            settings,
            db=self.db,
            migrate=False,
            sweep_interval=EMBEDDED_SWEEP_INTERVAL,
            chain=self.chain,
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DemoServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the demo API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.db.dispose()


def _client(base: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _post(client: httpx.Client, path: str, body: Any = None) -> Any:
    r = client.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    if r.status_code >= 400:
        raise RuntimeError(f"POST {path} failed: {r.status_code} {r.text}")
    return r.json() if r.content else None


def _sign_up(base: str, name: str, country: str, roles: list[str], email: str) -> str:
    """Sign up, log in and issue an API key; return the key."""
    with _client(base) as c:
        _post(
            c,
            "/v1/auth/signup",
            {
                "organisation_name": name,
                "country": country,
                "roles": roles,
                "email": email,
                "display_name": name,
                "password": PASSWORD,
            },
        )
        token = _post(c, "/v1/auth/login", {"email": email, "password": PASSWORD})[
            "token"
        ]
    with _client(base, token) as c:
        key = _post(c, "/v1/api-keys", {"name": "demo"})
    return str(key["secret"])


def _get(base: str, key: str, path: str) -> Any:
    with _client(base, key) as c:
        r = c.get(path)
    if r.status_code >= 400:
        raise RuntimeError(f"GET {path} failed: {r.status_code} {r.text}")
    return r.json()


def _money(minor: int, currency: str) -> str:
    return f"{minor / 100:,.2f} {currency}"


@dataclass(frozen=True)
class DemoRun:
    """What a finished (or running, for ``after``) demo leaves to look at.

    Attributes
    ----------
    base_url
        The exchange's URL (only reachable inside ``after``).
    db
        The exchange's database.
    keys
        API keys by party: ``operator``, ``buyer``, ``regulator``, and each
        provider's key (``meridian``, ``northwind``).
    datasets
        The listings by short name (``smart_meter``, ``inpatient``, …).
    csv_paths
        The providers' CSV files by dataset id.
    results
        What :func:`marketplace.demo_compute.run_computations` returned.
    """

    base_url: str
    db: Database
    keys: dict[str, str]
    datasets: dict[str, dict[str, Any]]
    csv_paths: dict[str, Path]
    results: dict[str, Any]


def run_demo(
    settings: Settings,
    data_dir: Path,
    console: Console,
    *,
    after: Callable[[DemoRun], None] | None = None,
) -> DemoRun:
    """Run the demo in ``data_dir`` (recreated).

    ``after``, if given, is called with the run while the exchange and the data
    nodes are still up (the privacy tests use it to probe the live system).
    """
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    settings = settings.model_copy(
        update={
            "data_dir": data_dir,
            "database_url": None,
            "redis_url": None,
            "rate_limit_per_minute": 100_000,
            "rate_limit_burst": 10_000,
        }
    )
    catalog = load_catalog()
    console.rule("[bold]veilx demo[/] — usable but invisible")
    with DemoServer(settings) as server:
        base = server.url
        console.print(
            f"exchange API on {base} (docs at {base}/docs), SQLite at {data_dir}"
        )
        with server.db.session() as session:
            identity = IdentityService(session)
            op = identity.create_organisation(
                OrganisationCreate(
                    name="veilx Exchange", country="DE", roles=[Role.OPERATOR]
                ),
                status=OrganisationStatus.ADMITTED,
            )
            operator_key = identity.create_api_key(op.id, "demo").secret
        console.print("operator [bold]veilx Exchange[/] bootstrapped (admitted)")

        keys: dict[str, str] = {}
        for p in catalog.providers:
            keys[p.key] = _sign_up(
                base, p.name, p.country, ["provider"], f"admin@{p.key}.example"
            )
        buyer_key = _sign_up(
            base, "Aurora Analytics", "NL", ["buyer"], "team@aurora.example"
        )
        regulator_key = _sign_up(
            base, "Data Protection Authority", "DE", ["regulator"], "audit@dpa.example"
        )
        with _client(base, operator_key) as op_client:
            pending = op_client.get(
                "/v1/organisations", params={"status": "pending"}
            ).json()
            for org in pending:
                _post(
                    op_client,
                    f"/v1/organisations/{org['id']}/admit",
                    {"reason": "KYC passed"},
                )
            orgs = op_client.get("/v1/organisations").json()
        table = Table("organisation", "roles", "status", title="Participants")
        for org in orgs:
            table.add_row(org["name"], ", ".join(org["roles"]), org["status"])
        console.print(table)

        listed: list[dict[str, Any]] = []
        csv_paths: dict[str, Path] = {}
        files = data_dir / "provider-data"
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(
                "listing sample datasets", total=len(catalog.datasets)
            )
            for sample in catalog.datasets:
                body = sample.body
                path = (
                    files
                    / sample.provider
                    / f"{body.title.lower().replace(' ', '-')[:40]}.csv"
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                content_hash = write_csv(sample, path)
                with _client(base, keys[sample.provider]) as c:
                    ds = _post(c, "/v1/datasets", body.model_dump(mode="json"))
                    _post(
                        c,
                        f"/v1/datasets/{ds['id']}/versions",
                        {
                            "content_hash": content_hash,
                            "row_count": sample.rows,
                            "byte_size": path.stat().st_size,
                            "note": "initial load",
                        },
                    )
                    listed.append(
                        _post(
                            c, f"/v1/datasets/{ds['id']}/transitions", {"to": "listed"}
                        )
                    )
                    csv_paths[ds["id"]] = path
                progress.advance(task)

        table = Table(
            "dataset",
            "provider",
            "computations",
            "price",
            "policy",
            title="Listed datasets",
        )
        for ds in listed:
            pol = ds["policy"]
            table.add_row(
                ds["title"],
                ds["provider"]["name"],
                ", ".join(pol["permitted_kinds"]),
                f"{ds['pricing_plan']['kind']}: "
                f"{_money(ds['reference_price_minor'], ds['currency'])}",
                f"k≥{pol['min_group_size']}, "
                f"ε/buyer {pol['budget_per_buyer']['epsilon']}, "
                f"{ds['policy_hash'][:12]}…",
            )
        console.print(table)

        with _client(base, buyer_key) as buyer:
            for q in ("health", None):
                params: dict[str, Any] = {"limit": 10}
                if q:
                    params["q"] = q
                res = buyer.get("/v1/catalog/search", params=params).json()
                _print_search(console, q, res)
            bad = buyer.get("/v1/catalog/search", params={"sort": "relevance"})
            console.print(
                f"a malformed search is refused with {bad.status_code} "
                f"{bad.headers['content-type']}: [italic]{bad.json()['detail']}[/]"
            )
        with _client(base, regulator_key) as reg:
            n = len(reg.get("/v1/organisations").json())
        console.print(f"the regulator sees {n} organisations on record")

        by_name = {_short_name(ds["title"]): ds for ds in listed}
        nodes = _node_configs(
            data_dir, base, keys, catalog.datasets, listed, csv_paths, by_name
        )
        console.rule("[bold]data nodes[/] — the raw rows stay here")
        with running_nodes(nodes) as services:
            table = Table(
                "node",
                "dataset",
                "rows",
                "null rate (max)",
                "content hash",
                "signature",
                title="Quality attestations, verified by the exchange",
            )
            with _client(base, regulator_key) as reg:
                for svc in services:
                    for dataset_id in svc.datasets:
                        ds = reg.get(f"/v1/datasets/{dataset_id}").json()
                        att = (ds["live_version"] or {}).get("attestation") or {}
                        body = att.get("attestation", {})
                        worst = max(
                            (c["null_rate"] for c in body.get("columns", [])),
                            default=0.0,
                        )
                        table.add_row(
                            svc.config.name,
                            ds["title"][:44],
                            f"{body.get('row_count', 0):,}",
                            f"{worst:.1%}",
                            body.get("content_hash", "")[:12] + "…",
                            "verified" if att.get("verified") else "MISSING",
                        )
            console.print(table)
            trading_started = datetime.now(UTC)
            buyer_id = _get(base, buyer_key, "/v1/me")["organisation"]["id"]
            trading = buy_entitlements(
                console,
                base_url=base,
                operator_key=operator_key,
                buyer_key=buyer_key,
                buyer_id=buyer_id,
                datasets=by_name,
                ledger=server.chain.get().ledger,
                key_dir=data_dir / "buyer-wallet",
            )
            results = run_computations(
                console,
                base_url=base,
                buyer_key=buyer_key,
                provider_keys=keys,
                datasets=by_name,
                key_dir=data_dir / "buyer-keys",
            )
            results["trading"] = trading
            results["settlement"] = settle_period(
                console,
                base_url=base,
                operator_key=operator_key,
                buyer_key=buyer_key,
                regulator_key=regulator_key,
                provider_keys=keys,
                bought=trading["bought"],
                period_start=trading_started,
                out_dir=data_dir / "statements",
                ledger=server.chain.get().ledger,
                wallet_dir=data_dir / "provider-wallets",
                buyer_wallet_dir=data_dir / "buyer-wallet",
            )
            ledger_report = show_ledger(
                console,
                settings=settings,
                db=server.db,
                chain=server.chain,
                base_url=base,
                buyer_key=buyer_key,
                regulator_key=regulator_key,
                key_dir=data_dir / "buyer-keys",
            )
            results["ledger"] = ledger_report
            run = DemoRun(
                base_url=base,
                db=server.db,
                keys={
                    **keys,
                    "operator": operator_key,
                    "buyer": buyer_key,
                    "regulator": regulator_key,
                },
                datasets=by_name,
                csv_paths={k: Path(v) for k, v in csv_paths.items()},
                results=results,
            )
            if after is not None:
                after(run)
    results["verify"] = verify_after_restart(console, settings)
    console.rule("demo finished")
    return run


_SHORT_NAMES = {
    "Inpatient admissions": "inpatient",
    "Type 2 diabetes": "diabetes",
    "Loyalty members": "loyalty",
    "Co-branded credit card": "credit",
    "Household smart-meter": "smart_meter",
    "Shared e-bike": "mobility",
}


def _short_name(title: str) -> str:
    for prefix, name in _SHORT_NAMES.items():
        if title.startswith(prefix):
            return name
    raise KeyError(f"no short name for sample dataset {title!r}")


def _node_configs(
    data_dir: Path,
    base: str,
    keys: dict[str, str],
    samples: Sequence[SampleDataset],
    listed: list[dict[str, Any]],
    csv_paths: dict[str, Path],
    by_name: dict[str, dict[str, Any]],
) -> list[DemoNode]:
    """Write one node config per provider; Northwind also fits its risk model."""
    provider_of = {s.body.title: s.provider for s in samples}
    domains = {s.body.title: s.categories for s in samples}
    nodes = []
    for provider in sorted(keys):
        mine = [ds for ds in listed if provider_of[ds["title"]] == provider]
        models: list[dict[str, Any]] = []
        credit = by_name["credit"]
        if credit in mine:
            data = read_columns(
                csv_paths[credit["id"]], [*CREDIT_FEATURES, "defaulted_next_6m"]
            )
            weights, bias = fit_logistic(data[:, :-1], data[:, -1])
            models.append(
                {
                    "name": "default-risk-v1",
                    "dataset_id": credit["id"],
                    "kind": "logistic",
                    "features": CREDIT_FEATURES,
                    "weights": weights,
                    "bias": bias,
                    "description": "6-month default logit, fitted on the card book",
                }
            )
        config = write_node_config(
            data_dir / "nodes" / provider,
            exchange_url=base,
            api_key=keys[provider],
            provider=provider,
            datasets=[
                (uuid.UUID(ds["id"]), csv_paths[ds["id"]], domains[ds["title"]])
                for ds in mine
            ],
            models=models,
        )
        nodes.append(
            DemoNode(provider, config, tuple(uuid.UUID(ds["id"]) for ds in mine))
        )
    return nodes


def _print_search(console: Console, q: str | None, res: dict[str, Any]) -> None:
    title = f"catalog search q={q!r}" if q else "catalog browse (newest first)"
    table = Table(
        "title", "provider", "themes", "price", title=f"{title}: {res['total']} hits"
    )
    for item in res["items"]:
        table.add_row(
            item["title"],
            item["provider"]["name"],
            ", ".join(item["themes"]),
            _money(item["reference_price_minor"], item["currency"]),
        )
    console.print(table)
    for facet in ("theme", "kind"):
        counts = res["facets"].get(facet, [])
        if not counts:
            continue
        top = max(c["count"] for c in counts)
        console.print(f"[bold]{facet}[/]")
        for c in counts:
            bar = "█" * max(1, round(20 * c["count"] / top))
            console.print(f"  {c['label']:<24} {bar} {c['count']}")
