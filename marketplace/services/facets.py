"""In-memory facet values ("doc values") of the search index, one copy per process.

Counting facets in SQL touches every (document, facet) row of a result set: tens
of milliseconds for a few thousand hits. Here each listed document is a row of a
small integer matrix of facet-value codes, plus its price, so that

* a facet filter is a vectorised comparison over the matrix,
* the counts of a result set are one ``numpy.bincount`` over its rows.

The copy follows the database by replaying ``search_change`` (which the catalog
service writes in the same transaction as the index, after the generation bump
that serialises writers, so sequence numbers follow commit order). Replaying
re-reads the current facets of each touched document, so it is idempotent. If
this process has fallen too far behind, it reloads everything.

Memory: about ``4 × 16`` bytes per listed document (64 MB per million).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlmodel import Session

from marketplace.models import SearchChange, SearchDocument, SearchFacet

__all__ = ["FacetIndex", "FacetSnapshot"]

_doc = SearchDocument.__table__  # type: ignore[attr-defined]
_facet = SearchFacet.__table__  # type: ignore[attr-defined]
_change = SearchChange.__table__  # type: ignore[attr-defined]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

WIDTH = 24
"""Facet values per document at most (themes ≤ 5, kinds ≤ 6, four single ones)."""
REPLAY_LIMIT = 20_000
"""Past this many touched documents a full reload is cheaper than a replay."""


@dataclass(frozen=True)
class FacetSnapshot:
    """Counts over one result set."""

    total: int
    counts: dict[tuple[str, str], int]


class FacetIndex:
    """The facet values and prices of every indexed document, kept in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False
        self._last_seq = 0
        self._codes: dict[tuple[str, str], int] = {}
        self._names: list[tuple[str, str]] = []
        self._matrix: npt.NDArray[np.int32] = np.full((0, WIDTH), -1, np.int32)
        self._price: IntArray = np.zeros(0, np.int64)
        self._present: BoolArray = np.zeros(0, np.bool_)
        self._postings: list[IntArray] | None = None

    # -- keeping up with the database -------------------------------------------------

    def sync(self, session: Session) -> None:
        """Bring this copy up to the database's latest committed change."""
        with self._lock:
            max_seq = session.execute(sa.select(sa.func.max(_change.c.seq))).scalar()
            max_seq = int(max_seq or 0)
            if self._loaded and max_seq == self._last_seq:
                return
            if not self._loaded:
                self._reload(session, max_seq)
                return
            touched = [
                int(d)
                for (d,) in session.execute(
                    sa.select(_change.c.doc_id)
                    .where(_change.c.seq > self._last_seq, _change.c.seq <= max_seq)
                    .distinct()
                    .limit(REPLAY_LIMIT + 1)
                )
            ]
            if len(touched) > REPLAY_LIMIT:
                self._reload(session, max_seq)
                return
            self._replay(session, touched)
            self._last_seq = max_seq
            self._postings = None

    def _reload(self, session: Session, max_seq: int) -> None:
        self._codes.clear()
        self._names.clear()
        top = session.execute(sa.select(sa.func.max(_doc.c.doc_id))).scalar()
        size = int(top or 0) + 1
        self._matrix = np.full((size, WIDTH), -1, np.int32)
        self._price = np.zeros(size, np.int64)
        self._present = np.zeros(size, np.bool_)
        self._load_docs(session, None)
        self._postings = None
        self._loaded = True
        self._last_seq = max_seq

    def _replay(self, session: Session, docs: Sequence[int]) -> None:
        if not docs:
            return
        self._grow(max(docs) + 1)
        for start in range(0, len(docs), 500):
            chunk = list(docs[start : start + 500])
            idx = np.asarray(chunk, np.int64)
            self._matrix[idx] = -1
            self._present[idx] = False
            self._load_docs(session, chunk)

    def _load_docs(self, session: Session, docs: list[int] | None) -> None:
        prices = sa.select(_doc.c.doc_id, _doc.c.reference_price_minor)
        facets = sa.select(_facet.c.doc_id, _facet.c.facet, _facet.c.value)
        if docs is not None:
            prices = prices.where(_doc.c.doc_id.in_(docs))
            facets = facets.where(_facet.c.doc_id.in_(docs))
        rows = session.execute(prices).all()
        if rows:
            arr = np.asarray(rows, np.int64)
            self._grow(int(arr[:, 0].max()) + 1)
            self._price[arr[:, 0]] = arr[:, 1]
            self._present[arr[:, 0]] = True
        doc_ids: list[int] = []
        codes: list[int] = []
        for doc_id, facet, value in session.execute(facets):
            doc_ids.append(doc_id)
            codes.append(self._code(facet, value))
        if not doc_ids:
            return
        d = np.asarray(doc_ids, np.int64)
        c = np.asarray(codes, np.int32)
        order = np.argsort(d, kind="stable")
        d, c = d[order], c[order]
        # Column of each value within its document's row: its rank among the
        # document's values.
        starts = np.r_[0, np.flatnonzero(np.diff(d)) + 1]
        run = np.repeat(starts, np.diff(np.r_[starts, d.size]))
        col = np.arange(d.size) - run
        if col.size and int(col.max()) >= WIDTH:
            raise ValueError(f"a document has more than {WIDTH} facet values")
        self._matrix[d, col] = c

    def _code(self, facet: str, value: str) -> int:
        key = (facet, value)
        code = self._codes.get(key)
        if code is None:
            code = self._codes[key] = len(self._names)
            self._names.append(key)
        return code

    def _grow(self, size: int) -> None:
        if size <= self._matrix.shape[0]:
            return
        size = max(size, int(self._matrix.shape[0] * 1.25) + 1024)
        matrix = np.full((size, WIDTH), -1, np.int32)
        matrix[: self._matrix.shape[0]] = self._matrix
        price = np.zeros(size, np.int64)
        price[: self._price.shape[0]] = self._price
        present = np.zeros(size, np.bool_)
        present[: self._present.shape[0]] = self._present
        self._matrix, self._price, self._present = matrix, price, present

    # -- queries ---------------------------------------------------------------

    def select(
        self,
        *,
        text_hits: Iterable[int] | None,
        filters: dict[str, Sequence[str]],
        price_min: int | None,
        price_max: int | None,
    ) -> BoolArray:
        """Return the mask of documents matching everything given.

        ``text_hits``: the documents the full-text search found (``None``: no text
        condition). ``filters``: per facet, the accepted values (OR within a facet,
        AND across facets).
        """
        with self._lock:
            mask = self._present.copy()
            if text_hits is not None:
                hits = np.asarray(text_hits, np.int64)
                hits = hits[hits < mask.size]
                text = np.zeros_like(mask)
                text[hits] = True
                mask &= text
            postings = self._posting_lists()
            for facet, values in filters.items():
                wanted = np.zeros_like(mask)
                for v in values:
                    code = self._codes.get((facet, v))
                    if code is not None:
                        wanted[postings[code]] = True
                mask &= wanted
            if price_min is not None:
                mask &= self._price >= price_min
            if price_max is not None:
                mask &= self._price <= price_max
            return mask

    def _posting_lists(self) -> list[IntArray]:
        """Per facet-value code, the documents carrying it (built lazily)."""
        if self._postings is None:
            flat = self._matrix.ravel()
            where = np.flatnonzero(flat >= 0)
            codes = flat[where]
            order = np.argsort(codes, kind="stable")
            docs = (where // WIDTH)[order]
            bounds = np.searchsorted(codes[order], np.arange(len(self._names) + 1))
            self._postings = [
                docs[bounds[i] : bounds[i + 1]] for i in range(len(self._names))
            ]
        return self._postings

    def count(self, mask: BoolArray) -> FacetSnapshot:
        """Return the total and the count of every facet value over ``mask``."""
        with self._lock:
            rows = self._matrix[mask[: self._matrix.shape[0]]].ravel()
            rows = rows[rows >= 0]
            counts = np.bincount(rows, minlength=len(self._names))
            names = list(self._names)
        return FacetSnapshot(
            total=int(mask.sum()),
            counts={names[i]: int(counts[i]) for i in np.flatnonzero(counts)},
        )
