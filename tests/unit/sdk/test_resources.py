"""Datasets, search pagination, jobs (create, list, wait, approve, deny), blobs."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from pathlib import Path

import pytest

from mpc_engine.protocol import JobState
from sdk import (
    Client,
    InputError,
    InvalidRequestError,
    JobProgress,
    NotFoundError,
    ResultError,
    WaitTimeoutError,
)
from tests.unit.sdk._fake import MODEL, FakeExchange, make_policy

AGGREGATE = {"statistics": ["count"], "group_by": ["region"]}


def test_get_dataset(client: Client, exchange: FakeExchange) -> None:
    dataset = client.datasets.get(str(exchange.dataset_id))
    assert dataset.id == exchange.dataset_id
    assert dataset.policy == exchange.policy
    assert dataset.policy_hash == exchange.policy.policy_hash()
    assert dataset.column_types()["income"] == "float"
    assert [m.name for m in dataset.models] == [MODEL]
    live = dataset.live_version
    assert live is not None and live.content_hash == exchange.content_hash
    assert live.attestation is not None
    assert live.attestation.attestation.node_id == exchange.node_id


def test_versions_and_budget(client: Client, exchange: FakeExchange) -> None:
    [version] = client.datasets.versions(exchange.dataset_id)
    assert version.id == exchange.version_id and version.is_live
    budget = client.datasets.budget(exchange.dataset_id)
    assert budget.total is None and budget.buyers == []
    assert budget.budget_per_buyer.epsilon == 4.0
    exchange.spent[exchange.buyer_id] = [0.5, 0.25]
    budget = client.datasets.budget(exchange.dataset_id)
    [row] = budget.buyers
    assert (row.buyer_id, row.epsilon_spent, row.queries) == (
        exchange.buyer_id,
        0.75,
        2,
    )
    assert budget.total is not None and budget.total.epsilon_budget == 20.0


def test_unknown_dataset_is_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.datasets.get(uuid.uuid4())
    assert caught.value.http_status == 404


def test_ids_are_checked_before_sending(client: Client, exchange: FakeExchange) -> None:
    with pytest.raises(InputError) as caught:
        client.datasets.get("not-a-uuid")
    assert caught.value.field == "dataset_id"
    assert exchange.requests == []


def test_search_pages_follow_the_cursor(client: Client, exchange: FakeExchange) -> None:
    page = client.datasets.search("dataset", limit=2)
    assert [h.title for h in page] == ["Dataset 0", "Dataset 1"]
    assert page.total == 5 and page.has_more
    assert page.facets["theme"][0].count == 5
    titles = [h.title for h in page.auto_paging_iter()]
    assert titles == [f"Dataset {i}" for i in range(5)]
    searches = [r for r in exchange.requests if r.path == "/v1/catalog/search"]
    assert len(searches) == 3  # page 1, then pages 2 and 3 fetched lazily
    second = page.next_page()
    assert second is not None and [h.title for h in second] == [
        "Dataset 2",
        "Dataset 3",
    ]
    assert second.facets == {}  # facet counts are computed for the first page only
    last = client.datasets.search(limit=100)
    assert not last.has_more and last.next_page() is None and len(last) == 5


def test_search_limit_is_checked(client: Client) -> None:
    with pytest.raises(InputError) as caught:
        client.datasets.search(limit=0)
    assert caught.value.field == "limit"


def _create(client: Client, exchange: FakeExchange) -> uuid.UUID:
    return client.jobs.create(
        exchange.dataset_id, kind="aggregate", purpose="research", params=AGGREGATE
    ).id


def test_create_validates_locally_and_names_the_field(
    client: Client, exchange: FakeExchange
) -> None:
    with pytest.raises(InputError) as caught:
        client.jobs.create(
            exchange.dataset_id,
            kind="aggregate",
            purpose="research",
            params={"statistics": ["count"], "columns": ["income"]},
        )
    assert caught.value.field == "params.columns"
    assert caught.value.reason.startswith("given, but only count was requested")
    with pytest.raises(InputError) as caught:
        client.jobs.create(
            exchange.dataset_id, kind="psi", purpose="research", params={}
        )
    assert caught.value.field == "kind"
    with pytest.raises(InputError) as caught:
        client.jobs.create(
            exchange.dataset_id,
            kind="encrypted_inference",
            purpose="research",
            params={"model": MODEL, "n_rows": 3},
        )
    assert "inputs" in str(caught.value)
    assert exchange.requests == []


def test_create_refusal_from_the_exchange(tmp_path: Path) -> None:
    exchange = FakeExchange(
        policy=make_policy(permitted_kinds=["aggregate"], inference_row_budget=None)
    )
    with exchange.client(tmp_path) as client:
        blob = client.blobs.upload(b"columns")
        with pytest.raises(InvalidRequestError) as caught:
            client.jobs.create(
                exchange.dataset_id,
                kind="encrypted_inference",
                purpose="research",
                params={"model": MODEL, "n_rows": 3},
                inputs={"columns": blob.sha256},
                context_id="a" * 64,
            )
    assert caught.value.code == "kind_not_permitted"
    assert caught.value.fields == ["kind"]


def test_wait_reports_each_state_change(client: Client, exchange: FakeExchange) -> None:
    job_id = _create(client, exchange)
    seen: list[JobProgress] = []
    job = client.jobs.wait(job_id, poll_interval=0, progress=seen.append)
    assert job.state is JobState.SUCCEEDED and job.terminal
    assert [p.state for p in seen] == [
        JobState.DISPATCHED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]
    assert [p.previous_state for p in seen] == [
        None,
        JobState.DISPATCHED,
        JobState.RUNNING,
    ]
    assert all(p.changed for p in seen)
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(seen))


def test_wait_times_out_with_the_last_state(tmp_path: Path) -> None:
    exchange = FakeExchange(policy=make_policy(human_approval=True))
    with exchange.client(tmp_path) as client:
        job_id = _create(client, exchange)
        seen: list[JobProgress] = []
        with pytest.raises(WaitTimeoutError) as caught:
            client.jobs.wait(
                job_id, timeout=0.05, poll_interval=0.01, progress=seen.append
            )
    assert caught.value.state == "awaiting_approval"
    assert caught.value.job_id == job_id
    assert seen[0].changed and not seen[-1].changed


def test_approve_then_deny_flow(tmp_path: Path) -> None:
    exchange = FakeExchange(policy=make_policy(human_approval=True))
    with exchange.client(tmp_path) as client:
        first = _create(client, exchange)
        second = _create(client, exchange)
        approved = client.jobs.approve(first, note="fine")
        assert approved.state is JobState.QUEUED
        assert approved.approved_by == "provider@example.com"
        denied = client.jobs.deny(second, reason="not for marketing")
        assert (denied.state, denied.reason_code) == (JobState.REJECTED, "denied")
        assert client.jobs.wait(first, poll_interval=0).succeeded
        with pytest.raises(InputError):
            client.jobs.deny(first, reason=" ")
    approve = [r for r in exchange.requests if r.path.endswith("/approve")]
    assert approve[0].content == b'{"note":"fine"}'


def test_list_auto_pages_and_filters_by_state(
    client: Client, exchange: FakeExchange
) -> None:
    ids = [_create(client, exchange) for _ in range(5)]
    client.jobs.wait(ids[0], poll_interval=0)
    page = client.jobs.list(limit=2)
    assert len(page) == 2 and page.has_more
    assert [j.id for j in page.auto_paging_iter()] == list(reversed(ids))
    queued = client.jobs.list(state="queued", limit=10)
    assert {j.id for j in queued} == set(ids[1:])
    both = client.jobs.list(state=["queued", JobState.SUCCEEDED], limit=10)
    assert len(both) == 5
    sent = [r for r in exchange.requests if r.path == "/v1/jobs" and r.method == "GET"]
    assert sent[-1].params.get_list("state") == ["queued", "succeeded"]
    assert sent[-1].params["limit"] == "10" and "cursor" not in sent[-1].params
    with pytest.raises(InputError) as caught:
        client.jobs.list(state="done")
    assert caught.value.field == "state"


def test_blob_round_trip_is_hash_checked(
    client: Client, exchange: FakeExchange
) -> None:
    ref = client.blobs.upload(b"\x00\x01payload")
    assert ref.sha256 == hashlib.sha256(b"\x00\x01payload").hexdigest()
    assert client.blobs.download(ref.sha256) == b"\x00\x01payload"
    exchange.blobs[ref.sha256] = b"swapped"
    with pytest.raises(ResultError) as caught:
        client.blobs.download(ref.sha256)
    assert "refusing" in caught.value.reason
    with pytest.raises(InputError):
        client.blobs.download("ABC")
    with pytest.raises(InputError):
        client.blobs.upload(b"")
