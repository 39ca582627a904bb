"""The catalog: datasets, their versions, policies, prices and lifecycle.

The search index (``search_document``, ``search_facet`` and the engine's
full-text part) holds exactly the listed datasets; this service updates it in the
same transaction as the dataset itself.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, insert, text, update
from sqlmodel import Session, col, select

from marketplace.errors import (
    Conflict,
    FieldError,
    InvalidTransition,
    NotFound,
    OrganisationNotAdmitted,
    PermissionDenied,
    ValidationFailed,
)
from marketplace.models import (
    ColumnSpec,
    Dataset,
    DatasetCreate,
    DatasetPublic,
    DatasetStatus,
    DatasetSummary,
    DatasetUpdate,
    DatasetVersion,
    DatasetVersionCreate,
    DatasetVersionPublic,
    Organisation,
    OrganisationStatus,
    ProviderRef,
    Role,
    SearchChange,
    SearchDocument,
    SearchFacet,
    SearchMeta,
    VersionAttestationPublic,
    utcnow,
)
from marketplace.services.identity import Caller
from marketplace.services.ledger import LedgerRecorder, dataset_shares
from marketplace.services.nodes import latest_attestations
from mpc_engine.policy import ColumnInfo, RightsPolicy, check_against_schema
from pricing import PRICING_PLAN_ADAPTER, AnyPlan, reference_price_minor

__all__ = ["CatalogService", "price_bucket"]

_PRICE_BUCKETS: tuple[tuple[int, str], ...] = (
    (1, "0"),
    (1_000, "1-999"),
    (10_000, "1000-9999"),
    (100_000, "10000-99999"),
)


def price_bucket(minor: int) -> str:
    """Return the price-range facet value of a reference price in minor units."""
    for upper, label in _PRICE_BUCKETS:
        if minor < upper:
            return label
    return "100000+"


def _schema_hash(columns: list[ColumnSpec]) -> str:
    data = [c.model_dump(mode="json") for c in columns]
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass(frozen=True)
class _Move:
    actors: frozenset[str]  # "owner" and/or "operator"
    reason_required_for: frozenset[str] = frozenset()


_MOVES: dict[tuple[DatasetStatus, DatasetStatus], _Move] = {
    (DatasetStatus.DRAFT, DatasetStatus.LISTED): _Move(frozenset({"owner"})),
    (DatasetStatus.LISTED, DatasetStatus.SUSPENDED): _Move(
        frozenset({"operator"}), frozenset({"operator"})
    ),
    (DatasetStatus.SUSPENDED, DatasetStatus.LISTED): _Move(frozenset({"operator"})),
    (DatasetStatus.DRAFT, DatasetStatus.DELISTED): _Move(
        frozenset({"owner", "operator"}), frozenset({"operator"})
    ),
    (DatasetStatus.LISTED, DatasetStatus.DELISTED): _Move(
        frozenset({"owner", "operator"}), frozenset({"operator"})
    ),
    (DatasetStatus.SUSPENDED, DatasetStatus.DELISTED): _Move(
        frozenset({"owner", "operator"}), frozenset({"operator"})
    ),
}
"""Who may move a dataset between which states (DESIGN §1: operator governs)."""


class CatalogService:
    """Provider-side catalog management and buyer-side reads."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- validation ------------------------------------------------------------

    @staticmethod
    def _check_policy(policy: RightsPolicy, columns: list[ColumnSpec]) -> None:
        infos = [ColumnInfo(c.name, c.type.numeric, c.sensitivity) for c in columns]
        issues = [
            FieldError(f"policy.{f}", m) for f, m in check_against_schema(policy, infos)
        ]
        if policy.expires_at is not None and policy.expires_at <= utcnow():
            issues.append(FieldError("policy.expires_at", "is already in the past"))
        if issues:
            raise ValidationFailed(
                "the rights policy does not fit the dataset: "
                + "; ".join(f"{e.field}: {e.message}" for e in issues),
                errors=issues,
                code="policy_invalid",
            )

    # -- reads -------------------------------------------------------------------

    def _load(self, caller: Caller, dataset_id: uuid.UUID) -> Dataset:
        """Return a dataset the caller may see, else 404 (existence not leaked)."""
        ds = self.session.get(Dataset, dataset_id)
        if ds is None or not self._visible(caller, ds):
            raise NotFound(f"dataset {dataset_id} not found")
        return ds

    @staticmethod
    def _visible(caller: Caller, ds: Dataset) -> bool:
        if ds.organisation_id == caller.organisation_id:
            return True
        if caller.has_any((Role.OPERATOR, Role.REGULATOR)):
            return True
        return ds.status == DatasetStatus.LISTED.value

    def _owned(self, caller: Caller, dataset_id: uuid.UUID) -> Dataset:
        ds = self._load(caller, dataset_id)
        if ds.organisation_id != caller.organisation_id:
            raise PermissionDenied(
                "only the providing organisation may change this dataset",
                code="not_owner",
            )
        return ds

    def get(self, caller: Caller, dataset_id: uuid.UUID) -> DatasetPublic:
        """Return a dataset the caller may see."""
        return self._public(self._load(caller, dataset_id))

    def load_visible(self, caller: Caller, dataset_id: uuid.UUID) -> Dataset:
        """The dataset row, for other services, if the caller may see it (else 404)."""
        return self._load(caller, dataset_id)

    def load_listed(
        self, caller: Caller, dataset_id: uuid.UUID, *, doing: str
    ) -> tuple[Dataset, DatasetVersion]:
        """A listed dataset the caller may see, and its live version.

        Raises
        ------
        NotFound
            The dataset is not visible to the caller.
        Conflict
            It is not listed (``dataset_not_listed``); ``doing`` says what needs it.
        """
        # One round trip for both rows (the quote path runs this per purchase).
        row = self.session.exec(
            select(Dataset, DatasetVersion)
            .outerjoin(
                DatasetVersion,
                col(DatasetVersion.id) == col(Dataset.live_version_id),
            )
            .where(Dataset.id == dataset_id)
        ).first()
        if row is None or not self._visible(caller, row[0]):
            raise NotFound(f"dataset {dataset_id} not found")
        ds, version = row
        if ds.status != DatasetStatus.LISTED.value or version is None:
            raise Conflict(
                f"dataset {ds.id} is {ds.status}; {doing} listed datasets only",
                code="dataset_not_listed",
            )
        return ds, version

    def version_attestation(
        self, caller: Caller, dataset_id: uuid.UUID, version_id: uuid.UUID
    ) -> VersionAttestationPublic:
        """The latest verified attestation of a version of a visible dataset."""
        ds = self._load(caller, dataset_id)
        version = self.session.get(DatasetVersion, version_id)
        if version is None or version.dataset_id != ds.id:
            raise NotFound(f"version {version_id} of dataset {dataset_id} not found")
        found = latest_attestations(self.session, [version.id]).get(version.id)
        if found is None:
            raise NotFound(
                f"version {version_id} has no verified attestation yet",
                code="no_attestation",
            )
        return found

    def list_for_provider(
        self, caller: Caller, status: DatasetStatus | None = None
    ) -> list[DatasetPublic]:
        """Return the caller's own datasets, newest first."""
        stmt = select(Dataset).where(Dataset.organisation_id == caller.organisation_id)
        if status is not None:
            stmt = stmt.where(Dataset.status == status.value)
        stmt = stmt.order_by(col(Dataset.created_at).desc(), col(Dataset.id))
        return [self._public(d) for d in self.session.exec(stmt)]

    def list_versions(
        self, caller: Caller, dataset_id: uuid.UUID
    ) -> list[DatasetVersionPublic]:
        """Return a dataset's versions, newest first."""
        ds = self._load(caller, dataset_id)
        stmt = (
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == ds.id)
            .order_by(col(DatasetVersion.created_at).desc(), col(DatasetVersion.id))
        )
        versions = list(self.session.exec(stmt))
        attested = latest_attestations(self.session, [v.id for v in versions])
        return [self._version_public(v, ds, attested.get(v.id)) for v in versions]

    # -- writes ------------------------------------------------------------------

    def create(self, caller: Caller, data: DatasetCreate) -> DatasetPublic:
        """Create a draft dataset for the caller's organisation."""
        self._check_policy(data.policy, data.columns)
        for i, share in enumerate(data.co_owners):
            if share.organisation_id == caller.organisation_id:
                raise ValidationFailed.for_field(
                    f"co_owners.{i}.organisation_id",
                    "the provider itself keeps the remainder; do not list it",
                )
            if self.session.get(Organisation, share.organisation_id) is None:
                raise ValidationFailed.for_field(
                    f"co_owners.{i}.organisation_id", "no such organisation"
                )
        plan: AnyPlan = data.pricing_plan
        ds = Dataset(
            organisation_id=caller.organisation_id,
            title=data.title,
            description=data.description,
            keywords=list(data.keywords),
            themes=[t.value for t in data.themes],
            publisher=data.publisher,
            license=data.license,
            temporal_start=data.temporal_start,
            temporal_end=data.temporal_end,
            spatial_coverage=list(data.spatial_coverage),
            update_frequency=data.update_frequency.value,
            languages=list(data.languages),
            columns=[c.model_dump(mode="json") for c in data.columns],
            schema_hash=_schema_hash(data.columns),
            policy=json.loads(data.policy.canonical_json()),
            policy_hash=data.policy.policy_hash(),
            pricing_plan=plan.model_dump(mode="json"),
            reference_price_minor=reference_price_minor(plan),
            currency=plan.currency,
            revenue_shares=[s.model_dump(mode="json") for s in data.co_owners],
        )
        self.session.add(ds)
        self.session.commit()
        return self._public(ds)

    def update(
        self, caller: Caller, dataset_id: uuid.UUID, patch: DatasetUpdate
    ) -> DatasetPublic:
        """Apply a partial update; a listed dataset's index entry follows."""
        ds = self._owned(caller, dataset_id)
        status = DatasetStatus(ds.status)
        if status is DatasetStatus.DELISTED:
            raise InvalidTransition("a delisted dataset can no longer be changed")
        changes = patch.model_dump(exclude_unset=True)
        if "columns" in changes and status is not DatasetStatus.DRAFT:
            raise InvalidTransition(
                "the schema (columns) can only change while the dataset is a draft; "
                "publish a new dataset for a new schema",
                code="schema_frozen",
            )
        for name in ("keywords", "themes", "columns", "policy", "pricing_plan"):
            if name in changes and changes[name] is None:
                raise ValidationFailed.for_field(name, "may not be null")
        merged = self._metadata(ds) | {k: getattr(patch, k) for k in changes}
        columns = (
            patch.columns
            if patch.columns is not None
            else [ColumnSpec.model_validate(c) for c in ds.columns]
        )
        policy = (
            patch.policy
            if patch.policy is not None
            else RightsPolicy.model_validate(ds.policy)
        )
        plan: AnyPlan = (
            patch.pricing_plan
            if patch.pricing_plan is not None
            else PRICING_PLAN_ADAPTER.validate_python(ds.pricing_plan)
        )
        # Re-validate the merged metadata as a whole (e.g. temporal order).
        try:
            DatasetCreate.model_validate(
                merged
                | {
                    "columns": [c.model_dump() for c in columns],
                    "policy": policy.model_dump(),
                    "pricing_plan": plan.model_dump(),
                }
            )
        except ValidationError as exc:
            issues = [
                FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                for e in exc.errors()
            ]
            raise ValidationFailed(
                "the updated dataset is invalid: "
                + "; ".join(f"{i.field}: {i.message}" for i in issues),
                errors=issues,
            ) from exc
        self._check_policy(policy, columns)
        for name in (
            "title",
            "description",
            "publisher",
            "license",
            "temporal_start",
            "temporal_end",
        ):
            if name in changes:
                setattr(ds, name, merged[name])
        if "keywords" in changes:
            ds.keywords = list(merged["keywords"])
        if "themes" in changes:
            ds.themes = [t.value for t in merged["themes"]]
        if "spatial_coverage" in changes:
            ds.spatial_coverage = list(merged["spatial_coverage"])
        if "languages" in changes:
            ds.languages = list(merged["languages"])
        if "update_frequency" in changes:
            ds.update_frequency = merged["update_frequency"].value
        if "columns" in changes:
            ds.columns = [c.model_dump(mode="json") for c in columns]
            ds.schema_hash = _schema_hash(columns)
        if "policy" in changes:
            ds.policy = json.loads(policy.canonical_json())
            ds.policy_hash = policy.policy_hash()
        if "pricing_plan" in changes:
            ds.pricing_plan = plan.model_dump(mode="json")
            ds.reference_price_minor = reference_price_minor(plan)
            ds.currency = plan.currency
        ds.updated_at = utcnow()
        self.session.add(ds)
        if status is DatasetStatus.LISTED:
            self._unindex(ds.id)
            self._index(ds)
        LedgerRecorder(self.session).sync_asset(ds)
        self.session.commit()
        return self._public(ds)

    def add_version(
        self, caller: Caller, dataset_id: uuid.UUID, data: DatasetVersionCreate
    ) -> DatasetVersionPublic:
        """Record a new content version; by default it becomes the live one."""
        ds = self._owned(caller, dataset_id)
        if ds.status == DatasetStatus.DELISTED.value:
            raise InvalidTransition("a delisted dataset takes no new versions")
        existing = self.session.exec(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == ds.id,
                DatasetVersion.content_hash == data.content_hash,
            )
        ).first()
        if existing is not None:
            raise ValidationFailed(
                f"content_hash: version {existing.id} already has this content",
                errors=[
                    FieldError(
                        "content_hash", "this content is already a version", "duplicate"
                    )
                ],
                code="duplicate_version",
            )
        version = DatasetVersion(
            dataset_id=ds.id,
            content_hash=data.content_hash,
            schema_hash=ds.schema_hash,
            row_count=data.row_count,
            byte_size=data.byte_size,
            note=data.note,
        )
        self.session.add(version)
        self.session.flush()
        listed = ds.status == DatasetStatus.LISTED.value
        if data.make_live or ds.live_version_id is None:
            ds.live_version_id = version.id
            ds.updated_at = utcnow()
            self.session.add(ds)
            if listed:
                self._unindex(ds.id)
                self._index(ds)
            LedgerRecorder(self.session).sync_asset(ds)
        self.session.commit()
        return self._version_public(version, ds)

    def set_live_version(
        self, caller: Caller, dataset_id: uuid.UUID, version_id: uuid.UUID
    ) -> DatasetPublic:
        """Make an existing version the live one."""
        ds = self._owned(caller, dataset_id)
        version = self.session.get(DatasetVersion, version_id)
        if version is None or version.dataset_id != ds.id:
            raise NotFound(f"version {version_id} of dataset {dataset_id} not found")
        ds.live_version_id = version.id
        ds.updated_at = utcnow()
        self.session.add(ds)
        listed = ds.status == DatasetStatus.LISTED.value
        if listed:
            self._unindex(ds.id)
            self._index(ds)
        LedgerRecorder(self.session).sync_asset(ds)
        self.session.commit()
        return self._public(ds)

    def transition(
        self,
        caller: Caller,
        dataset_id: uuid.UUID,
        to: DatasetStatus,
        reason: str | None,
    ) -> DatasetPublic:
        """Move a dataset through its lifecycle, if the caller may make that move."""
        ds = self._load(caller, dataset_id)
        current = DatasetStatus(ds.status)
        move = _MOVES.get((current, to))
        if move is None:
            raise InvalidTransition(
                f"a {current.value} dataset cannot become {to.value}"
            )
        actor = None
        if ds.organisation_id == caller.organisation_id and "owner" in move.actors:
            actor = "owner"
        elif Role.OPERATOR in caller.roles and "operator" in move.actors:
            actor = "operator"
        if actor is None:
            who = " or ".join(sorted(move.actors))
            raise PermissionDenied(
                f"only the {who} may move a dataset from {current.value} to {to.value}",
                code="transition_not_allowed",
            )
        if actor in move.reason_required_for and not reason:
            raise ValidationFailed.for_field("reason", "required for this move")
        if to is DatasetStatus.LISTED and actor == "owner":
            self._check_listable(caller, ds)
        ds.status = to.value
        ds.status_reason = reason
        ds.updated_at = utcnow()
        if to is DatasetStatus.LISTED and ds.listed_at is None:
            ds.listed_at = utcnow()
        self.session.add(ds)
        if current is DatasetStatus.LISTED:
            self._unindex(ds.id)
        if to is DatasetStatus.LISTED:
            self._index(ds)
        LedgerRecorder(self.session).sync_asset(ds)
        self.session.commit()
        return self._public(ds)

    def _check_listable(self, caller: Caller, ds: Dataset) -> None:
        if caller.status is not OrganisationStatus.ADMITTED:
            raise OrganisationNotAdmitted(
                f"the organisation is {caller.status.value}; only admitted "
                "organisations can list datasets"
            )
        if ds.live_version_id is None:
            raise ValidationFailed(
                "live_version: a dataset needs a version before it can be listed",
                errors=[FieldError("live_version", "no version recorded", "missing")],
                code="not_listable",
            )
        policy = RightsPolicy.model_validate(ds.policy)
        if policy.expires_at is not None and policy.expires_at <= utcnow():
            raise ValidationFailed.for_field(
                "policy.expires_at", "the policy has expired"
            )

    # -- search index ------------------------------------------------------------

    def _index(self, ds: Dataset) -> None:
        org = self._provider(ds)
        summary = self._summary(ds, org)
        listed_at = ds.listed_at or utcnow()
        result = self.session.execute(
            insert(SearchDocument).values(
                dataset_id=ds.id,
                provider_id=ds.organisation_id,
                title=ds.title,
                title_sort=ds.title.lower(),
                description=ds.description,
                keywords_text=" ".join(ds.keywords),
                reference_price_minor=ds.reference_price_minor,
                currency=ds.currency,
                listed_at=listed_at,
                summary=summary.model_dump(mode="json"),
            )
        )
        doc_id = result.inserted_primary_key[0]  # type: ignore[attr-defined]
        if self.session.get_bind().dialect.name == "sqlite":
            self.session.execute(
                text(
                    "INSERT INTO search_fts(rowid, title, keywords, description) "
                    "VALUES (:id, :t, :k, :d)"
                ),
                {
                    "id": doc_id,
                    "t": ds.title,
                    "k": " ".join(ds.keywords),
                    "d": ds.description,
                },
            )
        facets = {("theme", t) for t in ds.themes}
        facets |= {("kind", k) for k in ds.policy["permitted_kinds"]}
        facets |= {
            ("license", ds.license),
            ("provider", str(ds.organisation_id)),
            ("price", price_bucket(ds.reference_price_minor)),
            ("currency", ds.currency),
        }
        self._bump_generation()
        self.session.add(SearchChange(doc_id=doc_id))
        self.session.execute(
            insert(SearchFacet),
            [{"facet": f, "value": v, "doc_id": doc_id} for f, v in sorted(facets)],
        )

    def _unindex(self, dataset_id: uuid.UUID) -> None:
        doc_id = self.session.exec(
            select(SearchDocument.doc_id).where(SearchDocument.dataset_id == dataset_id)
        ).first()
        if doc_id is None:
            return
        self._bump_generation()
        self.session.add(SearchChange(doc_id=doc_id))
        self.session.execute(
            delete(SearchFacet).where(col(SearchFacet.doc_id) == doc_id)
        )
        if self.session.get_bind().dialect.name == "sqlite":
            self.session.execute(
                text("DELETE FROM search_fts WHERE rowid = :id"), {"id": doc_id}
            )
        self.session.execute(
            delete(SearchDocument).where(col(SearchDocument.doc_id) == doc_id)
        )

    def _bump_generation(self) -> None:
        """Mark the index changed; search caches key on the generation."""
        self.session.execute(
            update(SearchMeta)
            .where(col(SearchMeta.key) == "generation")
            .values(value=col(SearchMeta.value) + 1)
        )

    # -- views ---------------------------------------------------------------------

    @staticmethod
    def _metadata(ds: Dataset) -> dict[str, Any]:
        return {
            "title": ds.title,
            "description": ds.description,
            "keywords": ds.keywords,
            "themes": ds.themes,
            "publisher": ds.publisher,
            "license": ds.license,
            "temporal_start": ds.temporal_start,
            "temporal_end": ds.temporal_end,
            "spatial_coverage": ds.spatial_coverage,
            "update_frequency": ds.update_frequency,
            "languages": ds.languages,
        }

    def _provider(self, ds: Dataset) -> Organisation:
        org = self.session.get(Organisation, ds.organisation_id)
        if org is None:  # the foreign key makes this impossible
            raise NotFound(f"provider of dataset {ds.id} not found")
        return org

    def _live_version(self, ds: Dataset) -> DatasetVersion | None:
        if ds.live_version_id is None:
            return None
        return self.session.get(DatasetVersion, ds.live_version_id)

    def _summary(self, ds: Dataset, org: Organisation) -> DatasetSummary:
        live = self._live_version(ds)
        return DatasetSummary(
            id=ds.id,
            title=ds.title,
            description=ds.description[:280],
            keywords=ds.keywords,
            themes=ds.themes,
            license=ds.license,
            provider=ProviderRef(id=org.id, name=org.name),
            computation_kinds=list(ds.policy["permitted_kinds"]),
            pricing_kind=ds.pricing_plan["kind"],
            reference_price_minor=ds.reference_price_minor,
            currency=ds.currency,
            listed_at=ds.listed_at or utcnow(),
            live_content_hash=live.content_hash if live else None,
        )

    def _public(self, ds: Dataset) -> DatasetPublic:
        org = self._provider(ds)
        live = self._live_version(ds)
        return DatasetPublic.model_validate(
            self._metadata(ds)
            | {
                "id": ds.id,
                "provider": ProviderRef(id=org.id, name=org.name),
                "columns": ds.columns,
                "policy": ds.policy,
                "policy_hash": ds.policy_hash,
                "pricing_plan": ds.pricing_plan,
                "reference_price_minor": ds.reference_price_minor,
                "currency": ds.currency,
                "revenue_shares": [
                    {"organisation_id": org_id, "bps": bps}
                    for org_id, bps in dataset_shares(ds)
                ],
                "status": ds.status,
                "status_reason": ds.status_reason,
                "live_version": (
                    self._version_public(
                        live,
                        ds,
                        latest_attestations(self.session, [live.id]).get(live.id),
                    )
                    if live
                    else None
                ),
                "created_at": ds.created_at,
                "updated_at": ds.updated_at,
                "listed_at": ds.listed_at,
            }
        )

    @staticmethod
    def _version_public(
        v: DatasetVersion,
        ds: Dataset,
        attestation: VersionAttestationPublic | None = None,
    ) -> DatasetVersionPublic:
        return DatasetVersionPublic(
            id=v.id,
            content_hash=v.content_hash,
            schema_hash=v.schema_hash,
            row_count=v.row_count,
            byte_size=v.byte_size,
            note=v.note,
            created_at=v.created_at,
            is_live=ds.live_version_id == v.id,
            attestation=attestation,
        )
