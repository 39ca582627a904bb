"""The catalog search index: one document and its facet values per listed dataset.

Only listed datasets are in the index; the catalog service keeps it in step with
the datasets in the same transaction. The full-text part is engine-specific and
created by the migration: an FTS5 table ``search_fts`` on SQLite, a generated
``tsv`` column with a GIN index on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime

__all__ = ["SearchChange", "SearchDocument", "SearchFacet", "SearchMeta"]


class SearchDocument(SQLModel, table=True):
    """A listed dataset as the search sees it, with its ready-made result summary."""

    __tablename__ = "search_document"
    __table_args__ = (
        Index("ix_search_document_price", "reference_price_minor", "doc_id"),
        Index("ix_search_document_listed", "listed_at", "doc_id"),
        Index("ix_search_document_title", "title_sort", "doc_id"),
    )

    doc_id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    dataset_id: uuid.UUID = Field(unique=True)
    provider_id: uuid.UUID = Field(index=True)
    title: str = Field(max_length=200)
    title_sort: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    keywords_text: str = Field(sa_column=Column(Text, nullable=False))
    reference_price_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    listed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    summary: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))


class SearchFacet(SQLModel, table=True):
    """One facet value of an indexed dataset (theme, license, kind, provider, price)."""

    __tablename__ = "search_facet"
    # Covering: facet counts over a set of documents read only this index.
    __table_args__ = (Index("ix_search_facet_doc_cover", "doc_id", "facet", "value"),)

    facet: str = Field(sa_column=Column(String(16), primary_key=True))
    value: str = Field(sa_column=Column(String(64), primary_key=True))
    doc_id: int = Field(sa_column=Column(Integer, primary_key=True))


class SearchMeta(SQLModel, table=True):
    """Counters of the search index; ``generation`` grows with every index change.

    Search results are cached per generation, so a cached answer is exactly the
    answer for that state of the index, in every process that reads it.
    """

    __tablename__ = "search_meta"

    key: str = Field(sa_column=Column(String(32), primary_key=True))
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class SearchChange(SQLModel, table=True):
    """One change of the search index: the document whose entry was (re)written.

    Written after the generation bump, which serialises writers, so sequence
    numbers follow commit order. Processes replay it to keep their in-memory
    facet values current (``marketplace.services.facets``).
    """

    __tablename__ = "search_change"

    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    doc_id: int = Field(sa_column=Column(Integer, nullable=False))
