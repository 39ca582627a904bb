"""Seed a catalog of listed datasets directly into the database, faithfully.

Going through the API (create → version → list) costs several commits per
dataset, far too slow for 100,000 listings. Instead each listing is

1. generated from the vocabularies in :mod:`bench._vocab` as a ``DatasetCreate``
   body and validated by that model (so every listing is one the API accepts);
2. turned into the ``dataset`` and ``dataset_version`` rows exactly as
   ``CatalogService.create`` / ``add_version`` / ``transition`` would write them;
3. indexed with rows built exactly as ``CatalogService._index`` builds them
   (``search_document`` with its summary, ``search_fts`` on SQLite, the facets),
   inserted with ``executemany`` in large transactions.

Step 3 replicates ``_index``; :func:`verify_against_index` keeps the replica
honest by re-indexing a sample through the real ``CatalogService._index`` (in a
transaction that is rolled back) and comparing every column, facet and FTS row.
Seeding refuses to finish when they differ.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlmodel import Session, col, select

from bench import _vocab as vocab
from marketplace.db import Database, _alembic_config
from marketplace.models import (
    ColumnSpec,
    Dataset,
    DatasetCreate,
    DatasetStatus,
    DatasetSummary,
    DatasetVersion,
    Organisation,
    OrganisationCreate,
    OrganisationStatus,
    ProviderRef,
    Role,
    SearchDocument,
    SearchFacet,
)
from marketplace.services.catalog import CatalogService, _schema_hash, price_bucket
from marketplace.services.identity import IdentityService
from mpc_engine.policy import RightsPolicy
from pricing import reference_price_minor

__all__ = [
    "SEED_VERSION",
    "SeedReport",
    "create_buyer",
    "seed_catalog",
    "seed_key",
    "verify_against_index",
]

SEED_VERSION: Final = "catalog-seed-v1"
"""Bump when the generated catalog changes; cached databases are keyed by it."""

N_PROVIDERS: Final = 50
BATCH: Final = 5_000
_RANDOM_SEED: Final = 20_261_122

_doc_t = SearchDocument.__table__  # type: ignore[attr-defined]
_facet_t = SearchFacet.__table__  # type: ignore[attr-defined]
_dataset_t = Dataset.__table__  # type: ignore[attr-defined]
_version_t = DatasetVersion.__table__  # type: ignore[attr-defined]
_FTS_INSERT = sa.text(
    "INSERT INTO search_fts(rowid, title, keywords, description) "
    "VALUES (:id, :t, :k, :d)"
)


def seed_key(n_datasets: int) -> str:
    """A key for a seeded database: changes whenever what seeding writes may change.

    It covers the seed version, the catalog size, the migration head and the code
    that decides what an index entry looks like.
    """
    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    parts = [
        SEED_VERSION,
        str(n_datasets),
        str(head),
        inspect.getsource(CatalogService._index),
        inspect.getsource(CatalogService._summary),
        inspect.getsource(price_bucket),
        json.dumps(DatasetSummary.model_json_schema(), sort_keys=True),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# -- templates: schemas and rights policies ----------------------------------------

_COLUMNS: Final[tuple[list[dict[str, Any]], ...]] = (
    [
        {
            "name": "record_id",
            "type": "string",
            "sensitivity": "identifier",
            "description": "Pseudonymous record id",
        },
        {
            "name": "age",
            "type": "integer",
            "sensitivity": "quasi_identifier",
            "unit": "years",
            "description": "Age in years",
        },
        {
            "name": "region",
            "type": "categorical",
            "sensitivity": "public",
            "description": "Region code",
        },
        {
            "name": "amount",
            "type": "float",
            "sensitivity": "sensitive",
            "unit": "EUR",
            "description": "Amount",
        },
        {
            "name": "period",
            "type": "date",
            "sensitivity": "public",
            "description": "Reporting period",
        },
    ],
    [
        {
            "name": "customer_id",
            "type": "string",
            "sensitivity": "identifier",
            "description": "Hashed customer id",
        },
        {
            "name": "postcode",
            "type": "categorical",
            "sensitivity": "quasi_identifier",
            "description": "Postcode district",
        },
        {
            "name": "segment",
            "type": "categorical",
            "sensitivity": "public",
            "description": "Segment",
        },
        {
            "name": "spend",
            "type": "float",
            "sensitivity": "sensitive",
            "unit": "EUR",
            "description": "Spend in the period",
        },
        {
            "name": "visits",
            "type": "integer",
            "sensitivity": "sensitive",
            "description": "Visits in the period",
        },
        {
            "name": "month",
            "type": "date",
            "sensitivity": "public",
            "description": "Month",
        },
    ],
    [
        {
            "name": "device_id",
            "type": "string",
            "sensitivity": "identifier",
            "description": "Device pseudonym",
        },
        {
            "name": "zone",
            "type": "categorical",
            "sensitivity": "public",
            "description": "Zone",
        },
        {
            "name": "measurement",
            "type": "float",
            "sensitivity": "public",
            "unit": "units",
            "description": "Measured value",
        },
        {
            "name": "duration",
            "type": "integer",
            "sensitivity": "sensitive",
            "unit": "seconds",
            "description": "Duration",
        },
        {
            "name": "observed_at",
            "type": "datetime",
            "sensitivity": "public",
            "description": "Observation time",
        },
    ],
)

_NUMERIC: Final = {
    "age": (0, 110),
    "amount": (0, 100_000),
    "spend": (0, 50_000),
    "visits": (0, 1_000),
    "measurement": (0, 10_000),
    "duration": (0, 86_400),
}


def _policy(columns: list[dict[str, Any]], kinds: list[str]) -> dict[str, Any]:
    ident = next(c["name"] for c in columns if c["sensitivity"] == "identifier")
    usable = [c["name"] for c in columns if c["sensitivity"] != "identifier"]
    needs_columns = set(kinds) - {"psi", "encrypted_inference"}
    permitted = usable if needs_columns else []
    policy: dict[str, Any] = {
        "permitted_kinds": kinds,
        "permitted_columns": permitted,
        "join_keys": [ident] if "psi" in kinds else [],
        "purposes": ["research", "product_development"],
        "prohibitions": ["marketing", "reidentification"],
        "regions": ["DE", "FR", "NL", "AT"],
        "min_group_size": 10,
        "budget_per_buyer": {"epsilon": 1.0, "delta": 1e-6},
        "budget_per_dataset": {"epsilon": 10.0, "delta": 1e-5},
        "column_bounds": {
            n: {"lower": _NUMERIC[n][0], "upper": _NUMERIC[n][1]}
            for n in permitted
            if n in _NUMERIC
        },
    }
    if "encrypted_inference" in kinds:
        policy["inference_row_budget"] = 500
    return policy


_KIND_SETS: Final[tuple[tuple[list[str], float], ...]] = (
    (["aggregate"], 0.34),
    (["aggregate", "psi"], 0.2),
    (["psi"], 0.08),
    (["aggregate", "secure_aggregate"], 0.12),
    (["aggregate", "federated_train"], 0.1),
    (["encrypted_model_eval"], 0.06),
    (["encrypted_inference"], 0.04),
    (["aggregate", "encrypted_model_eval", "federated_train"], 0.06),
)


@dataclass(frozen=True)
class _Template:
    """A validated schema + policy pair, with what ``create`` derives from it."""

    columns: list[dict[str, Any]]
    columns_json: list[dict[str, Any]]
    schema_hash: str
    policy_body: dict[str, Any]
    policy_json: dict[str, Any]
    policy_hash: str


def _templates() -> list[list[_Template]]:
    """Per kind set, one template per schema; each checked like ``create`` does."""
    out: list[list[_Template]] = []
    for kinds, _ in _KIND_SETS:
        row: list[_Template] = []
        for columns in _COLUMNS:
            body = _policy(columns, kinds)
            policy = RightsPolicy.model_validate(body)
            specs = [ColumnSpec.model_validate(c) for c in columns]
            CatalogService._check_policy(policy, specs)
            row.append(
                _Template(
                    columns=columns,
                    columns_json=[c.model_dump(mode="json") for c in specs],
                    schema_hash=_schema_hash(specs),
                    policy_body=body,
                    policy_json=json.loads(policy.canonical_json()),
                    policy_hash=policy.policy_hash(),
                )
            )
        out.append(row)
    return out


# -- listings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """A provider organisation and the themes it mostly publishes in."""

    id: uuid.UUID
    name: str
    themes: tuple[str, ...]


def _weighted(rng: random.Random, items: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items])[0]


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _pricing_plan(rng: random.Random, currency: str) -> dict[str, Any]:
    kind = _weighted(
        rng,
        (
            ("fixed_per_query", 0.5),
            ("subscription", 0.2),
            ("metered", 0.1),
            ("privacy_priced", 0.1),
            ("volume_tiered", 0.1),
        ),
    )
    if kind == "fixed_per_query":
        price = 0 if rng.random() < 0.06 else _log_uniform(rng, 50, 500_000)
        return {"kind": kind, "currency": currency, "price_per_query_minor": price}
    if kind == "subscription":
        return {
            "kind": kind,
            "currency": currency,
            "price_per_period_minor": _log_uniform(rng, 5_000, 5_000_000),
            "period": rng.choice(["week", "month", "year"]),
            "queries_per_period": rng.choice([10, 50, 100, 500, 1000]),
            "overage_per_query_minor": rng.choice([None, 500, 2_500]),
        }
    if kind == "metered":
        return {
            "kind": kind,
            "currency": currency,
            "price_per_million_rows_minor": _log_uniform(rng, 10, 50_000),
            "price_per_compute_unit_minor": rng.choice([0, 5, 20, 100]),
            "minimum_charge_minor": rng.choice([0, 100, 1_000]),
        }
    if kind == "privacy_priced":
        return {
            "kind": kind,
            "currency": currency,
            "base_price_minor": _log_uniform(rng, 100, 20_000),
            "price_per_epsilon_minor": _log_uniform(rng, 100, 100_000),
            "exponent": rng.choice([0.5, 0.75, 1.0]),
        }
    top = _log_uniform(rng, 200, 200_000)
    return {
        "kind": kind,
        "currency": currency,
        "tiers": [
            {"up_to_queries": 100, "price_per_query_minor": top},
            {"up_to_queries": 1000, "price_per_query_minor": top * 3 // 4},
            {"up_to_queries": None, "price_per_query_minor": top // 2},
        ],
    }


def _title(rng: random.Random, theme: str, provider: Provider) -> str:
    words = vocab.THEMES[theme]
    topic = rng.choice(words.topics)
    y2 = rng.randint(2016, 2026)
    y1 = y2 - rng.choice([0, 1, 2, 4, 9])
    years = f"{y1}-{y2}" if y1 != y2 else str(y2)
    region = rng.choice(vocab.REGIONS)
    adjective = rng.choice(vocab.ADJECTIVES)
    breakdown = rng.choice(vocab.BREAKDOWNS)
    form = rng.random()
    if form < 0.35:
        text = f"{adjective} {topic} {breakdown}, {years}"
    elif form < 0.6:
        text = f"{topic} in {region} ({years})"
    elif form < 0.75:
        text = f"{provider.name.split()[0]} {topic} panel {y2}"
    elif form < 0.9:
        other = rng.choice([t for t in words.topics if t != topic])
        text = f"{topic} and {other} {breakdown}"
    else:
        text = f"{adjective} {topic} – {region}"
    return text[0].upper() + text[1:]


def _description(rng: random.Random, theme: str, title: str, provider: Provider) -> str:
    words = vocab.THEMES[theme]
    fields = rng.sample(words.fields, k=min(len(words.fields), rng.randint(2, 4)))
    region = rng.choice(vocab.REGIONS)
    sentences = [
        f"{title} from {provider.name}, covering {region} and neighbouring areas.",
        f"Each record includes {', '.join(fields[:-1])} and {fields[-1]}.",
    ]
    extra = [
        f"Suitable for {rng.choice(words.uses)} and {rng.choice(words.uses)}.",
        "Records are pseudonymised at source and never leave the provider; "
        "computations run under the rights policy.",
        f"Refreshed {rng.choice(['daily', 'weekly', 'monthly', 'quarterly'])} "
        f"with a quality report on {rng.choice(words.fields)}.",
        f"Coverage is about {rng.randint(2, 98)} percent of "
        f"{rng.choice(words.topics)} in the area.",
        "Definitions follow the national statistical office where available.",
        f"Related keywords: {', '.join(rng.sample(words.keywords, 3))}.",
    ]
    sentences += rng.sample(extra, k=rng.randint(1, 4))
    return " ".join(sentences)


def _keywords(rng: random.Random, themes: list[str]) -> list[str]:
    words = rng.sample(vocab.THEMES[themes[0]].keywords, k=rng.randint(3, 6))
    for t in themes[1:]:
        words.append(rng.choice(vocab.THEMES[t].keywords))
    if rng.random() < 0.3:
        words.append(rng.choice(vocab.REGIONS).lower())
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w.strip().lower(), None)
    return list(seen)


@dataclass
class Listing:
    """One generated, validated listing with the ids seeding assigns it."""

    id: uuid.UUID
    version_id: uuid.UUID
    provider: Provider
    body: DatasetCreate
    template: _Template
    plan: dict[str, Any]
    reference_price_minor: int
    listed_at: datetime
    content_hash: str


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def generate(
    n: int, providers: list[Provider], *, now: datetime, seed: int = _RANDOM_SEED
) -> Iterator[Listing]:
    """Yield ``n`` valid listings, listed over the two years before ``now``."""
    rng = random.Random(seed)
    templates = _templates()
    kind_weights = [w for _, w in _KIND_SETS]
    provider_weights = [1.0 / (i + 1) ** 0.8 for i in range(len(providers))]
    themes_all = list(vocab.THEMES)
    span = timedelta(days=730)
    for i in range(n):
        provider = rng.choices(providers, weights=provider_weights)[0]
        own_theme = rng.random() < 0.85
        primary = rng.choice(provider.themes if own_theme else themes_all)
        themes = [primary]
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            t = rng.choice(themes_all)
            if t not in themes:
                themes.append(t)
        title = _title(rng, primary, provider)
        currency = _weighted(rng, vocab.CURRENCIES)
        plan = _pricing_plan(rng, currency)
        kind_idx = rng.choices(range(len(_KIND_SETS)), weights=kind_weights)[0]
        template = rng.choice(templates[kind_idx])
        y_end = rng.randint(2016, 2025)
        body = DatasetCreate.model_validate(
            {
                "title": title,
                "description": _description(rng, primary, title, provider),
                "keywords": _keywords(rng, themes),
                "themes": themes,
                "publisher": provider.name,
                "license": _weighted(rng, vocab.LICENSES),
                "temporal_start": date(y_end - rng.randint(0, 8), 1, 1),
                "temporal_end": date(y_end, 12, 31),
                "spatial_coverage": sorted(
                    set(rng.sample(vocab.COUNTRIES, k=rng.randint(1, 3)))
                ),
                "update_frequency": rng.choice(
                    ["daily", "weekly", "monthly", "quarterly", "annual", "irregular"]
                ),
                "languages": ["en"] + (["de"] if rng.random() < 0.4 else []),
                "columns": template.columns,
                "policy": template.policy_body,
                "pricing_plan": plan,
            }
        )
        # Listing times rise with insertion order (as on a live exchange), jittered.
        offset = span * (1 - (i + rng.random()) / n)
        yield Listing(
            id=_uuid(rng),
            version_id=_uuid(rng),
            provider=provider,
            body=body,
            template=template,
            plan=body.pricing_plan.model_dump(mode="json"),
            reference_price_minor=reference_price_minor(body.pricing_plan),
            listed_at=now - offset,
            content_hash=hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(),
        )


# -- rows, as the catalog service writes them --------------------------------------


def dataset_row(item: Listing) -> dict[str, Any]:
    """The ``dataset`` row ``CatalogService.create`` + versions + listing leave."""
    data = item.body
    created = item.listed_at - timedelta(days=3)
    return {
        "id": item.id,
        "organisation_id": item.provider.id,
        "title": data.title,
        "description": data.description,
        "keywords": list(data.keywords),
        "themes": [t.value for t in data.themes],
        "publisher": data.publisher,
        "license": data.license,
        "temporal_start": data.temporal_start,
        "temporal_end": data.temporal_end,
        "spatial_coverage": list(data.spatial_coverage),
        "update_frequency": data.update_frequency.value,
        "languages": list(data.languages),
        "columns": item.template.columns_json,
        "schema_hash": item.template.schema_hash,
        "policy": item.template.policy_json,
        "policy_hash": item.template.policy_hash,
        "pricing_plan": item.plan,
        "reference_price_minor": item.reference_price_minor,
        "currency": data.pricing_plan.currency,
        "status": DatasetStatus.LISTED.value,
        "status_reason": None,
        "live_version_id": item.version_id,
        "created_at": created,
        "updated_at": item.listed_at,
        "listed_at": item.listed_at,
    }


def version_row(item: Listing) -> dict[str, Any]:
    """The live ``dataset_version`` row."""
    return {
        "id": item.version_id,
        "dataset_id": item.id,
        "content_hash": item.content_hash,
        "schema_hash": item.template.schema_hash,
        "row_count": 10_000 + item.reference_price_minor % 9_000_000,
        "byte_size": 520_000 + item.reference_price_minor % 400_000_000,
        "note": None,
        "created_at": item.listed_at - timedelta(days=1),
    }


@dataclass(frozen=True)
class IndexRows:
    """What ``CatalogService._index`` writes for one dataset (doc_id aside)."""

    doc: dict[str, Any]
    fts: dict[str, str]
    facets: list[tuple[str, str]]


def index_rows(ds: dict[str, Any], org_name: str, live_hash: str | None) -> IndexRows:
    """Replicate ``CatalogService._index`` for a ``dataset`` row.

    Keep in step with ``marketplace/services/catalog.py``;
    :func:`verify_against_index` fails seeding when they drift apart.
    """
    summary = DatasetSummary(
        id=ds["id"],
        title=ds["title"],
        description=ds["description"][:280],
        keywords=ds["keywords"],
        themes=ds["themes"],
        license=ds["license"],
        provider=ProviderRef(id=ds["organisation_id"], name=org_name),
        computation_kinds=list(ds["policy"]["permitted_kinds"]),
        pricing_kind=ds["pricing_plan"]["kind"],
        reference_price_minor=ds["reference_price_minor"],
        currency=ds["currency"],
        listed_at=ds["listed_at"],
        live_content_hash=live_hash,
    )
    keywords_text = " ".join(ds["keywords"])
    doc = {
        "dataset_id": ds["id"],
        "provider_id": ds["organisation_id"],
        "title": ds["title"],
        "title_sort": ds["title"].lower(),
        "description": ds["description"],
        "keywords_text": keywords_text,
        "reference_price_minor": ds["reference_price_minor"],
        "currency": ds["currency"],
        "listed_at": ds["listed_at"],
        "summary": summary.model_dump(mode="json"),
    }
    facets = {("theme", t) for t in ds["themes"]}
    facets |= {("kind", k) for k in ds["policy"]["permitted_kinds"]}
    facets |= {
        ("license", ds["license"]),
        ("provider", str(ds["organisation_id"])),
        ("price", price_bucket(ds["reference_price_minor"])),
        ("currency", ds["currency"]),
    }
    fts = {"t": ds["title"], "k": keywords_text, "d": ds["description"]}
    return IndexRows(doc, fts, sorted(facets))


def _insert_batch(conn: sa.Connection, items: list[Listing]) -> None:
    datasets = [dataset_row(i) for i in items]
    conn.execute(sa.insert(_dataset_t), datasets)
    conn.execute(sa.insert(_version_t), [version_row(i) for i in items])
    rows = [
        index_rows(d, i.provider.name, i.content_hash)
        for d, i in zip(datasets, items, strict=True)
    ]
    result = conn.execute(
        sa.insert(_doc_t).returning(_doc_t.c.doc_id, sort_by_parameter_order=True),
        [r.doc for r in rows],
    )
    doc_ids = [row[0] for row in result]
    if conn.dialect.name == "sqlite":
        conn.execute(
            _FTS_INSERT,
            [r.fts | {"id": d} for r, d in zip(rows, doc_ids, strict=True)],
        )
    conn.execute(
        sa.insert(_facet_t),
        [
            {"facet": f, "value": v, "doc_id": d}
            for r, d in zip(rows, doc_ids, strict=True)
            for f, v in r.facets
        ],
    )


# -- organisations -----------------------------------------------------------------


def _create_providers(db: Database, rng: random.Random) -> list[Provider]:
    themes = list(vocab.THEMES)
    providers: list[Provider] = []
    with db.session() as session:
        identity = IdentityService(session)
        for i, stem in enumerate(vocab.ORG_STEMS[:N_PROVIDERS]):
            own = (themes[i % len(themes)], *rng.sample(themes, k=rng.randint(0, 2)))
            name = f"{stem} {vocab.ORG_SUFFIXES[own[0]]}"
            org = identity.create_organisation(
                OrganisationCreate(
                    name=name,
                    country=rng.choice(vocab.COUNTRIES),
                    website=f"https://{stem.lower()}.example",
                    roles=[Role.PROVIDER],
                ),
                status=OrganisationStatus.ADMITTED,
            )
            providers.append(Provider(org.id, org.name, tuple(dict.fromkeys(own))))
    return providers


def create_buyer(db: Database, name: str = "Bench Analytics Buyer") -> str:
    """Create an admitted buyer organisation and return a new API key for it."""
    with db.session() as session:
        identity = IdentityService(session)
        org = identity.create_organisation(
            OrganisationCreate(name=name, country="DE", roles=[Role.BUYER]),
            status=OrganisationStatus.ADMITTED,
        )
        return identity.create_api_key(org.id, "bench").secret


# -- seeding and verification ------------------------------------------------------


@dataclass(frozen=True)
class SeedReport:
    """What seeding did."""

    datasets: int
    providers: int
    seconds: float
    verified: int


def seed_catalog(
    db: Database,
    n: int,
    *,
    progress: Callable[[int], None] | None = None,
    verify_sample: int = 200,
) -> SeedReport:
    """Seed ``n`` listed datasets from ~50 providers into a migrated, empty ``db``."""
    started = time.perf_counter()
    rng = random.Random(_RANDOM_SEED + 1)
    providers = _create_providers(db, rng)
    now = datetime.now(UTC)
    batch: list[Listing] = []
    done = 0
    for item in generate(n, providers, now=now):
        batch.append(item)
        if len(batch) >= BATCH:
            with db.engine.begin() as conn:
                _insert_batch(conn, batch)
            done += len(batch)
            batch = []
            if progress is not None:
                progress(done)
    if batch:
        with db.engine.begin() as conn:
            _insert_batch(conn, batch)
        done += len(batch)
        if progress is not None:
            progress(done)
    if db.dialect == "postgresql":
        with db.engine.begin() as conn:  # what autovacuum does soon after a load
            conn.execute(sa.text("ANALYZE"))
    verified = verify_against_index(db, verify_sample)
    return SeedReport(done, len(providers), time.perf_counter() - started, verified)


def _doc_state(session: Session, dataset_id: uuid.UUID) -> tuple[Any, ...]:
    doc = session.execute(
        sa.select(_doc_t).where(_doc_t.c.dataset_id == dataset_id)
    ).one()
    mapping = dict(doc._mapping)
    doc_id = mapping.pop("doc_id")
    mapping.pop("tsv", None)
    facets = sorted(
        (f, v)
        for f, v in session.execute(
            sa.select(_facet_t.c.facet, _facet_t.c.value).where(
                _facet_t.c.doc_id == doc_id
            )
        )
    )
    fts: tuple[Any, ...] = ()
    if session.get_bind().dialect.name == "sqlite":
        fts = tuple(
            session.execute(
                sa.text(
                    "SELECT title, keywords, description FROM search_fts "
                    "WHERE rowid = :id"
                ),
                {"id": doc_id},
            ).one()
        )
    return mapping, facets, fts


def verify_against_index(db: Database, sample: int) -> int:
    """Re-index ``sample`` seeded datasets with the real ``_index``; compare; undo.

    Raises
    ------
    AssertionError
        When a seeded index entry differs from what the catalog service writes.
    """
    with db.session() as session:
        ids = list(
            session.exec(select(Dataset.id).order_by(col(Dataset.id)).limit(sample))
        )
        service = CatalogService(session)
        mismatches: list[str] = []
        try:
            for dataset_id in ids:
                seeded = _doc_state(session, dataset_id)
                ds = session.get(Dataset, dataset_id)
                assert ds is not None
                service._unindex(dataset_id)
                service._index(ds)
                session.flush()
                real = _doc_state(session, dataset_id)
                parts = ("document", "facets", "fts")
                for part, a, b in zip(parts, seeded, real, strict=True):
                    if a != b:
                        mismatches.append(f"{dataset_id} {part}: seeded {a!r} != {b!r}")
        finally:
            session.rollback()
    if mismatches:
        raise AssertionError(
            "the seeded search index differs from CatalogService._index "
            f"({len(mismatches)} differences); first: {mismatches[0]}"
        )
    return len(ids)


def provider_ids(db: Database) -> list[str]:
    """Ids of the provider organisations, most prolific first."""
    with db.session() as session:
        rows = session.execute(
            sa.select(_doc_t.c.provider_id, sa.func.count())
            .group_by(_doc_t.c.provider_id)
            .order_by(sa.func.count().desc())
        ).all()
    return [str(r[0]) for r in rows]


def organisation_names(db: Database) -> dict[str, str]:
    """Organisation id → name."""
    with db.session() as session:
        return {
            str(i): n
            for i, n in session.execute(
                sa.select(col(Organisation.id), col(Organisation.name))
            )
        }
