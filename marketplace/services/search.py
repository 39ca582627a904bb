"""Catalog search: full text, facet filters and counts, sorting, cursor pagination.

Full text runs on the engine's own index: FTS5 (porter stemming, BM25 with title,
keywords and description weighted 10 : 5 : 1) on SQLite, a weighted ``tsvector``
(A/B/C) with ``websearch_to_tsquery`` and ``ts_rank_cd`` on PostgreSQL. Facet
counts are conjunctive: counts over the current result set.

Pagination is by keyset: the cursor carries the last hit's sort key and a hash of
the query, so a cursor is stable under inserts and refused for another query.
Pages and counts are cached per process under the index *generation*
(``search_meta``, bumped by every index change in the same transaction), so a
cached answer is exactly the current one; repeated and concurrent searches are
answered once. Relevance on SQLite is top-k inside FTS5 (its ``rank`` column),
and counts read only the FTS table and the covering facet index where they can.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, col

from marketplace.errors import ValidationFailed
from marketplace.models import (
    DatasetSummary,
    Organisation,
    SearchDocument,
    SearchFacet,
    SearchMeta,
)
from marketplace.services.facets import FacetIndex

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
_meta = SearchMeta.__table__  # type: ignore[attr-defined]
_fts = sa.table("search_fts", sa.column("rowid"))
_tsv: sa.ColumnElement[Any] = sa.literal_column("search_document.tsv")
_T = TypeVar("_T")
_PROVIDER_NAMES: dict[str, str] = {}
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
    """Search answers per index generation, shared by one process's threads.

    Keys carry the index generation (``search_meta``), so an entry is exactly the
    answer for that state of the index and never stale: a change anywhere bumps
    the generation and later searches miss. Concurrent misses on one key are
    computed once (single flight); the others wait for that result.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._inflight: dict[str, threading.Event] = {}
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], _T]) -> _T:
        """Return the cached value for ``key``, computing it once if absent."""
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    self.hits += 1
                    return cast(_T, self._data[key])
                event = self._inflight.get(key)
                if event is None:
                    event = self._inflight[key] = threading.Event()
                    self.misses += 1
                    break
            # Another thread computes this key; wait, then look again (if it
            # failed, this thread takes over).
            event.wait(timeout=30)
        try:
            value = compute()
            with self._lock:
                self._data[key] = value
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._inflight[key]
            event.set()


def _tsquery(words: tuple[str, ...]) -> Any:
    return sa.func.websearch_to_tsquery(
        sa.literal_column("'english'::regconfig"), " ".join(words)
    )


def _fts5_query(words: tuple[str, ...]) -> str:
    # Each word quoted, so no FTS5 operator can be injected. No prefix expansion:
    # stemming finds word forms, and a prefix ("cover*") can match most of the
    # catalog, making ranking cost grow with it.
    return " ".join(f'"{w}"' for w in words)


class SearchService:
    """Runs catalog searches against the search index."""

    def __init__(
        self,
        session: Session,
        cache: SearchCache | None = None,
        facets: FacetIndex | None = None,
    ) -> None:
        self.session = session
        self.cache = cache
        self.facets = facets
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

    # -- query building ----------------------------------------------------------

    def _text_match(self, words: tuple[str, ...]) -> Any:
        """The full-text condition: on ``search_fts`` (SQLite) or the tsvector."""
        if self.dialect == "sqlite":
            return sa.text("search_fts MATCH :fts").bindparams(fts=_fts5_query(words))
        return _tsv.op("@@")(_tsquery(words))

    def _filters(self, query: SearchQuery, ids: Any) -> list[Any]:
        """Facet and price conditions on the document id column ``ids``."""
        conds: list[Any] = []
        for name in FACETS:
            values = getattr(query, name)
            if values:
                conds.append(
                    ids.in_(
                        sa.select(_facet.c.doc_id).where(
                            _facet.c.facet == name, _facet.c.value.in_(values)
                        )
                    )
                )
        price: list[Any] = []
        if query.price_min is not None:
            price.append(_doc.c.reference_price_minor >= query.price_min)
        if query.price_max is not None:
            price.append(_doc.c.reference_price_minor <= query.price_max)
        if price and ids is _doc.c.doc_id:
            conds.extend(price)
        elif price:
            conds.append(ids.in_(sa.select(_doc.c.doc_id).where(*price)))
        return conds

    def _conditions(self, query: SearchQuery, *, ordered: bool = False) -> list[Any]:
        """Every condition of ``query`` on ``search_document``.

        ``ordered``: for a page read in index order. SQLite would otherwise drive
        the query from the facet list and sort every hit; ``doc_id + 0`` keeps it
        walking the sort index and stopping after one page.
        """
        ids = _doc.c.doc_id
        if ordered and self.dialect == "sqlite":
            ids = _doc.c.doc_id + 0
        conds: list[Any] = []
        if query.words:
            if self.dialect == "sqlite":
                conds.append(
                    ids.in_(
                        sa.select(_fts.c.rowid).where(self._text_match(query.words))
                    )
                )
            else:
                conds.append(self._text_match(query.words))
        return conds + self._filters(query, ids)

    @staticmethod
    def _only_text(query: SearchQuery) -> bool:
        return bool(query.words) and not (
            any(getattr(query, f) for f in FACETS)
            or query.price_min is not None
            or query.price_max is not None
        )

    # -- execution ------------------------------------------------------------------

    def generation(self) -> int:
        """The search index's current generation."""
        value = self.session.execute(
            sa.select(_meta.c.value).where(_meta.c.key == "generation")
        ).scalar_one()
        return int(value)

    def _cached(self, key: str, compute: Callable[[], _T]) -> _T:
        if self.cache is None:
            return compute()
        return self.cache.get_or_compute(f"{self.dialect}:{key}", compute)

    def search(self, query: SearchQuery) -> SearchResults:
        """Run ``query`` and return one page with counts and the next cursor."""
        sort = query.sort or (SortOrder.RELEVANCE if query.words else SortOrder.NEWEST)
        qhash = hashlib.sha256(f"{query.filters_key()}|{sort}".encode()).hexdigest()[
            :16
        ]
        after = (
            self._cursor_key(sort, self._decode_cursor(query.cursor, qhash))
            if query.cursor
            else None
        )
        generation = self.generation()
        items, next_cursor = self._cached(
            f"page:{generation}:{qhash}:{query.limit}:{query.cursor or ''}",
            lambda: self._page(query, sort, qhash, after),
        )
        total, facets = self._cached(
            f"counts:{generation}:{query.filters_key()}:{int(query.with_facets)}",
            lambda: self._counts(query),
        )
        return SearchResults(
            items=items, total=total, facets=facets, sort=sort, next_cursor=next_cursor
        )

    def _page(
        self,
        query: SearchQuery,
        sort: SortOrder,
        qhash: str,
        after: tuple[Any, int] | None,
    ) -> tuple[list[DatasetSummary], str | None]:
        n = query.limit + 1
        if sort is SortOrder.RELEVANCE and self.dialect == "sqlite":
            # Top-k inside FTS5 (its rank column is BM25 with our weights), then
            # fetch the few summaries.
            rank: Any = sa.literal_column("search_fts.rank")
            ids = _fts.c.rowid
            # rowid + 0: a plain rowid IN (...) is pushed into FTS5 as one MATCH
            # per listed rowid, a thousand times slower.
            stmt = (
                sa.select(ids, rank)
                .select_from(_fts)
                .where(self._text_match(query.words), *self._filters(query, ids + 0))
            )
            if after is not None:
                stmt = stmt.where(self._keyset([rank, ids], sort, after))
            hits = self.session.execute(stmt.order_by(rank, ids).limit(n)).all()
            summaries = dict(
                self.session.execute(
                    sa.select(_doc.c.doc_id, _doc.c.summary).where(
                        _doc.c.doc_id.in_([h[0] for h in hits])
                    )
                ).all()
            )
            rows = [(summaries[doc], value, doc) for doc, value in hits]
        else:
            if sort is SortOrder.RELEVANCE:
                # float8, so the cursor's value round-trips exactly (real does not).
                key: Any = sa.cast(
                    -sa.func.ts_rank_cd(_tsv, _tsquery(query.words)), sa.Double()
                )
            else:
                key = {
                    SortOrder.NEWEST: _doc.c.listed_at,
                    SortOrder.PRICE_ASC: _doc.c.reference_price_minor,
                    SortOrder.PRICE_DESC: _doc.c.reference_price_minor,
                    SortOrder.TITLE: _doc.c.title_sort,
                }[sort]
            cols = [key, _doc.c.doc_id]
            stmt = sa.select(_doc.c.summary, *cols).where(
                *self._conditions(query, ordered=True)
            )
            if after is not None:
                stmt = stmt.where(self._keyset(cols, sort, after))
            stmt = stmt.order_by(*self._order(cols, sort)).limit(n)
            rows = [tuple(r) for r in self.session.execute(stmt).all()]
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = [DatasetSummary.model_validate(r[0]) for r in rows]
        next_cursor = None
        if more and rows:
            next_cursor = self._encode_cursor(
                qhash, [_jsonable(v) for v in rows[-1][1:]]
            )
        return items, next_cursor

    def _counts(self, query: SearchQuery) -> tuple[int, dict[str, list[FacetCount]]]:
        if self.facets is not None:
            total, rows = self._counts_in_memory(query, self.facets)
        else:
            total, rows = self._counts_in_sql(query)
        facets: dict[str, list[FacetCount]] = {}
        if query.with_facets and total:
            labels = self._provider_labels([v for f, v, _ in rows if f == "provider"])
            for f, v, count in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
                facets.setdefault(f, []).append(
                    FacetCount(value=v, label=labels.get(v, v), count=count)
                )
        return total, facets

    def _counts_in_memory(
        self, query: SearchQuery, index: FacetIndex
    ) -> tuple[int, list[tuple[str, str, int]]]:
        index.sync(self.session)
        hits: Any = None
        if query.words:
            if self.dialect == "sqlite":
                ids: Any = sa.select(_fts.c.rowid).where(self._text_match(query.words))
            else:
                ids = sa.select(_doc.c.doc_id).where(self._text_match(query.words))
            # One aggregated string instead of a row per hit: C-speed on both
            # engines, then parsed by numpy.
            agg = (
                sa.func.group_concat(ids.selected_columns[0])
                if self.dialect == "sqlite"
                else sa.func.string_agg(
                    sa.cast(ids.selected_columns[0], sa.Text), sa.literal(",")
                )
            )
            joined = self.session.execute(ids.with_only_columns(agg)).scalar()
            hits = (
                np.array(joined.split(","), np.int64)
                if joined
                else np.zeros(0, np.int64)
            )
        mask = index.select(
            text_hits=hits,
            filters={f: getattr(query, f) for f in FACETS if getattr(query, f)},
            price_min=query.price_min,
            price_max=query.price_max,
        )
        snap = index.count(mask)
        return snap.total, [(f, v, n) for (f, v), n in snap.counts.items()]

    def _counts_in_sql(
        self, query: SearchQuery
    ) -> tuple[int, list[tuple[str, str, int]]]:
        """The same counts in SQL (the reference the in-memory index is tested on)."""
        conds = self._conditions(query)
        ids: Any
        if not conds:
            ids = None
            total_stmt: Any = sa.select(sa.func.count()).select_from(_doc)
        elif self.dialect == "sqlite" and self._only_text(query):
            ids = sa.select(_fts.c.rowid).where(self._text_match(query.words))
            total_stmt = (
                sa.select(sa.func.count())
                .select_from(_fts)
                .where(self._text_match(query.words))
            )
        else:
            ids = sa.select(_doc.c.doc_id).where(*conds)
            total_stmt = sa.select(sa.func.count()).select_from(ids.subquery())
        total = int(self.session.execute(total_stmt).scalar_one())
        if not (query.with_facets and total):
            return total, []
        stmt = sa.select(_facet.c.facet, _facet.c.value, sa.func.count())
        if ids is not None:
            stmt = stmt.where(_facet.c.doc_id.in_(ids))
        rows = self.session.execute(stmt.group_by(_facet.c.facet, _facet.c.value)).all()
        return total, [(str(f), str(v), int(n)) for f, v, n in rows]

    def _provider_labels(self, ids: list[str]) -> dict[str, str]:
        """Organisation names (immutable once created), cached per process."""
        missing = [i for i in ids if i not in _PROVIDER_NAMES]
        if missing:
            rows = self.session.execute(
                sa.select(col(Organisation.id), col(Organisation.name)).where(
                    col(Organisation.id).in_([uuid.UUID(i) for i in missing])
                )
            ).all()
            _PROVIDER_NAMES.update({str(i): n for i, n in rows})
        return {i: _PROVIDER_NAMES[i] for i in ids if i in _PROVIDER_NAMES}

    # -- ordering and cursors ----------------------------------------------------

    @staticmethod
    def _descending(sort: SortOrder) -> bool:
        return sort in (SortOrder.NEWEST, SortOrder.PRICE_DESC)

    def _order(self, cols: list[Any], sort: SortOrder) -> list[Any]:
        if self._descending(sort):
            return [c.desc() for c in cols]
        return [c.asc() for c in cols]

    def _keyset(self, cols: list[Any], sort: SortOrder, after: tuple[Any, int]) -> Any:
        first, doc = cols
        value, last_doc = after
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
