"""Catalog search for buyers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from marketplace.api.deps import SearchDep, allow
from marketplace.models import Role
from marketplace.services.identity import Caller
from marketplace.services.search import SearchResults, SearchService, SortOrder

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])

Searcher = Annotated[Caller, allow(Role.BUYER, Role.OPERATOR, Role.REGULATOR)]


@router.get("/search", operation_id="search_catalog")
def search_catalog(
    caller: Searcher,
    search: SearchDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Words to find.")
    ] = None,
    theme: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    license: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    kind: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    provider: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    price: Annotated[
        list[str], Query(max_length=20, description="Price-range facet values.")
    ] = [],  # noqa: B006
    currency: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    price_min: Annotated[int | None, Query(ge=0, le=10**12)] = None,
    price_max: Annotated[int | None, Query(ge=0, le=10**12)] = None,
    sort: SortOrder | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    facets: bool = True,
) -> SearchResults:
    """Search listed datasets: full text, facet filters and counts, cursor pages."""
    query = SearchService.parse(
        q=q,
        theme=theme,
        license=license,
        kind=kind,
        provider=provider,
        price=price,
        currency=currency,
        price_min=price_min,
        price_max=price_max,
        sort=sort,
        limit=limit,
        cursor=cursor,
        facets=facets,
    )
    return search.search(query)
