"""Catalog search: full text, facet filters and counts, sorting, cursor pagination.

Full text runs on the engine's own index: FTS5 (porter stemming, BM25 with title,
keywords and description weighted 10 : 5 : 1) on SQLite, a weighted ``tsvector``
(A/B/C) with ``websearch_to_tsquery`` and ``ts_rank_cd`` on PostgreSQL. Facet
counts are conjunctive: counts over the current result set.

Pagination is by keyset: the cursor carries the last hit's sort key and a hash of
the query, so a cursor is stable under inserts and refused for another query.
Total and facet counts for a query are cached in-process for a few seconds (and
dropped at once when this process changes the index), so paging through a result
set does not recount it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, col

from marketplace.errors import ValidationFailed
from marketplace.models import DatasetSummary, Organisation, SearchDocument, SearchFacet

__all__ = [
    "FacetCount",
    "SearchCache",
    "SearchQuery",
    "SearchResults",
    "SearchService",
    "SortOrder",
]

FACETS = ("theme", "license", "kind", "provider", "price", "currency")

_doc = SearchDocument.__table__  # type: ignore[attr-defined]
_facet = SearchFacet.__table__  # type: ignore[attr-defined]
_fts = sa.table("search_fts", sa.column("rowid"))
_tsv: sa.ColumnElement[Any] = sa.literal_column("search_document.tsv")
_WORD = re.compile(r"\w+", re.UNICODE)


class SortOrder(StrEnum):
    """Result orderings."""

    RELEVANCE = "relevance"
    NEWEST = "newest"
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"
    TITLE = "title"


@dataclass(frozen=True)
class SearchQuery:
    """A validated search request."""

    q: str | None = None
    theme: tuple[str, ...] = ()
    license: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    price: tuple[str, ...] = ()
    currency: tuple[str, ...] = ()
    price_min: int | None = None
    price_max: int | None = None
    sort: SortOrder | None = None
    limit: int = 20
    cursor: str | None = None
    with_facets: bool = True
    words: tuple[str, ...] = field(default=(), compare=False)

    def filters_key(self) -> str:
        """A hash of everything that selects the result set (not sort or page)."""
        parts = [
            " ".join(self.words),
            *(",".join(sorted(getattr(self, f))) for f in FACETS),
            str(self.price_min),
            str(self.price_max),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


class FacetCount(BaseModel):
    """How many hits carry one facet value."""

    value: str
    label: str
    count: int


class SearchResults(BaseModel):
    """One page of search hits."""

    items: list[DatasetSummary]
    total: int = Field(description="Hits in the whole result set.")
    facets: dict[str, list[FacetCount]] = Field(
        description="Per facet, the values present in the result set with counts."
    )
    sort: SortOrder
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class SearchCache:
    """Counts (total and facets) per result set, for a few seconds, per process."""

    def __init__(self, ttl_seconds: float = 5.0, size: int = 2048) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self._lock = threading.Lock()
        self._generation = 0
        self._data: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()

    def invalidate(self) -> None:
        """Drop every entry (the index changed in this process)."""
        with self._lock:
            self._generation += 1
            self._data.clear()

    def get(self, key: str) -> Any | None:
        """Return a fresh entry or ``None``."""
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            expires, generation, value = hit
            if expires < time.monotonic() or generation != self._generation:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        """Store an entry."""
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, self._generation, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def _fts5_query(words: tuple[str, ...]) -> str:
    # Each word quoted (no operator injection); the last one also as a prefix.
    quoted = [f'"{w}"' for w in words]
    quoted[-1] = quoted[-1] + "*"
    return " ".join(quoted)


class SearchService:
    """Runs catalog searches against the search index."""

    def __init__(self, session: Session, cache: SearchCache | None = None) -> None:
        self.session = session
        self.cache = cache
        self.dialect = session.get_bind().dialect.name

    @staticmethod
    def parse(
        *,
        q: str | None,
        theme: list[str],
        license: list[str],
        kind: list[str],
        provider: list[str],
        price: list[str],
        currency: list[str],
        price_min: int | None,
        price_max: int | None,
        sort: SortOrder | None,
        limit: int,
        cursor: str | None,
        facets: bool,
    ) -> SearchQuery:
        """Validate raw parameters into a query (errors name the parameter)."""
        words: tuple[str, ...] = ()
        if q is not None:
            words = tuple(w.lower() for w in _WORD.findall(q))[:16]
            if not words:
                raise ValidationFailed.for_field("q", "contains no searchable word")
        for pid in provider:
            try:
                uuid.UUID(pid)
            except ValueError:
                raise ValidationFailed.for_field(
                    "provider", f"{pid!r} is not an organisation id"
                ) from None
        if price_min is not None and price_max is not None and price_min > price_max:
            raise ValidationFailed.for_field("price_min", "must not exceed price_max")
        if sort is SortOrder.RELEVANCE and not words:
            raise ValidationFailed.for_field("sort", "'relevance' needs a text query q")
        return SearchQuery(
            q=q,
            theme=tuple(sorted(set(theme))),
            license=tuple(sorted(set(license))),
            kind=tuple(sorted(set(kind))),
            provider=tuple(sorted(set(provider))),
            price=tuple(sorted(set(price))),
            currency=tuple(sorted(set(currency))),
            price_min=price_min,
            price_max=price_max,
            sort=sort,
            limit=limit,
            cursor=cursor,
            with_facets=facets,
            words=words,
        )

    # -- query building ------------------------------------------------------------

    def _matched(self, query: SearchQuery) -> sa.Select[Any]:
        """Select doc_id, rank and the sort columns of every hit."""
        cols: list[Any] = [
            _doc.c.doc_id,
            _doc.c.listed_at,
            _doc.c.reference_price_minor,
            _doc.c.title_sort,
        ]
        conditions: list[Any] = []
        from_: Any = _doc
        if query.words:
            if self.dialect == "sqlite":
                from_ = _doc.join(_fts, _fts.c.rowid == _doc.c.doc_id)
                conditions.append(
                    sa.text("search_fts MATCH :fts").bindparams(
                        fts=_fts5_query(query.words)
                    )
                )
                rank: sa.ColumnElement[Any] = sa.literal_column(
                    "bm25(search_fts, 10.0, 5.0, 1.0)"
                )
            else:
                tsq = sa.func.websearch_to_tsquery(
                    sa.literal_column("'english'::regconfig"), " ".join(query.words)
                )
                conditions.append(_tsv.op("@@")(tsq))
                rank = -sa.func.ts_rank_cd(_tsv, tsq)
            cols.append(sa.cast(rank, sa.Float).label("rank"))
        else:
            cols.append(sa.literal(0.0, sa.Float).label("rank"))
        for name in FACETS:
            values = getattr(query, name)
            if values:
                conditions.append(
                    _doc.c.doc_id.in_(
                        sa.select(_facet.c.doc_id).where(
                            _facet.c.facet == name, _facet.c.value.in_(values)
                        )
                    )
                )
        if query.price_min is not None:
            conditions.append(_doc.c.reference_price_minor >= query.price_min)
        if query.price_max is not None:
            conditions.append(_doc.c.reference_price_minor <= query.price_max)
        stmt = sa.select(*cols).select_from(from_)
        if conditions:
            stmt = stmt.where(*conditions)
        return stmt

    # -- execution ------------------------------------------------------------------

    def search(self, query: SearchQuery) -> SearchResults:
        """Run ``query`` and return one page with counts and the next cursor."""
        sort = query.sort or (SortOrder.RELEVANCE if query.words else SortOrder.NEWEST)
        qhash = hashlib.sha256(f"{query.filters_key()}|{sort}".encode()).hexdigest()[
            :16
        ]
        after = self._decode_cursor(query.cursor, qhash) if query.cursor else None
        matched = self._matched(query).subquery("m")
        key_cols = self._sort_columns(matched, sort)
        page = sa.select(_doc.c.summary, *key_cols).join(
            matched, matched.c.doc_id == _doc.c.doc_id
        )
        if after is not None:
            page = page.where(self._after(key_cols, sort, after))
        page = page.order_by(*self._order(key_cols, sort)).limit(query.limit + 1)
        rows = self.session.execute(page).all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = [DatasetSummary.model_validate(r[0]) for r in rows]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = self._encode_cursor(qhash, [_jsonable(v) for v in last[1:]])
        total, facets = self._counts(query, matched)
        return SearchResults(
            items=items, total=total, facets=facets, sort=sort, next_cursor=next_cursor
        )

    def _counts(
        self, query: SearchQuery, matched: sa.Subquery
    ) -> tuple[int, dict[str, list[FacetCount]]]:
        cache_key = f"{self.dialect}:{query.filters_key()}:{int(query.with_facets)}"
        if self.cache is not None:
            hit = self.cache.get(cache_key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        total = self.session.execute(
            sa.select(sa.func.count()).select_from(matched)
        ).scalar_one()
        facets: dict[str, list[FacetCount]] = {}
        if query.with_facets and total:
            rows = self.session.execute(
                sa.select(_facet.c.facet, _facet.c.value, sa.func.count())
                .join(matched, matched.c.doc_id == _facet.c.doc_id)
                .group_by(_facet.c.facet, _facet.c.value)
            ).all()
            labels = self._provider_labels([v for f, v, _ in rows if f == "provider"])
            for f, v, n in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
                facets.setdefault(f, []).append(
                    FacetCount(value=v, label=labels.get(v, v), count=n)
                )
        result = (total, facets)
        if self.cache is not None:
            self.cache.put(cache_key, result)
        return result

    def _provider_labels(self, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        rows = self.session.execute(
            sa.select(col(Organisation.id), col(Organisation.name)).where(
                col(Organisation.id).in_([uuid.UUID(i) for i in ids])
            )
        ).all()
        return {str(i): n for i, n in rows}

    # -- ordering and cursors ----------------------------------------------------

    @staticmethod
    def _sort_columns(m: sa.Subquery, sort: SortOrder) -> list[Any]:
        first = {
            SortOrder.RELEVANCE: m.c.rank,
            SortOrder.NEWEST: m.c.listed_at,
            SortOrder.PRICE_ASC: m.c.reference_price_minor,
            SortOrder.PRICE_DESC: m.c.reference_price_minor,
            SortOrder.TITLE: m.c.title_sort,
        }[sort]
        return [first, m.c.doc_id]

    @staticmethod
    def _descending(sort: SortOrder) -> bool:
        return sort in (SortOrder.NEWEST, SortOrder.PRICE_DESC)

    def _order(self, cols: list[Any], sort: SortOrder) -> list[Any]:
        if self._descending(sort):
            return [c.desc() for c in cols]
        return [c.asc() for c in cols]

    def _after(self, cols: list[Any], sort: SortOrder, after: list[Any]) -> Any:
        first, doc = cols
        value, last_doc = self._cursor_key(sort, after)
        if self._descending(sort):
            return sa.or_(first < value, sa.and_(first == value, doc < last_doc))
        return sa.or_(first > value, sa.and_(first == value, doc > last_doc))

    @staticmethod
    def _cursor_key(sort: SortOrder, key: list[Any]) -> tuple[Any, int]:
        """Check a decoded key's types against the sort order, parsing dates.

        A tampered cursor must be refused with 422, not reach the database.
        """
        value, last_doc = key
        ok = not isinstance(last_doc, bool) and abs(last_doc) < 2**63
        if sort is SortOrder.NEWEST:
            try:
                value = datetime.fromisoformat(value)
                ok = ok and value.utcoffset() is not None
            except (TypeError, ValueError):
                ok = False
        elif sort is SortOrder.TITLE:
            ok = ok and isinstance(value, str)
        elif sort is SortOrder.RELEVANCE:
            ok = ok and isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and abs(value) < 1e300
        else:
            ok = ok and type(value) is int and abs(value) < 2**63
        if not ok:
            raise ValidationFailed.for_field(
                "cursor", "is not a cursor returned by search"
            )
        return value, last_doc

    @staticmethod
    def _encode_cursor(qhash: str, key: list[Any]) -> str:
        raw = json.dumps({"h": qhash, "k": key}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(cursor: str, qhash: str) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = json.loads(raw)
            key = data["k"]
            ok = (
                isinstance(key, list)
                and len(key) == 2
                and isinstance(key[1], int)
                and isinstance(key[0], (int, float, str))
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ValidationFailed.for_field(
                "cursor", "is not a cursor returned by search"
            )
        if data.get("h") != qhash:
            raise ValidationFailed.for_field(
                "cursor", "belongs to a different query or sort order"
            )
        return key  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
