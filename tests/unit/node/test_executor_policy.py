"""The executor as the policy's authority: each refusal with its reason code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mpc_engine.node import GramStore, NodeIdentity, NodeState, execute
from mpc_engine.node.sources import LoadedDataset
from mpc_engine.node.state import JournalState
from mpc_engine.protocol import JobKind, JobOutcome, ReasonCode
from tests.unit.node.factories import (
    BUYER,
    FakeInputs,
    credit_policy,
    make_spec,
    served,
)

COUNT = {"statistics": ["count"]}


def _run(
    data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    *,
    policy_changes: dict[str, Any] | None = None,
    spec_changes: dict[str, Any] | None = None,
    kind: JobKind = JobKind.AGGREGATE,
    params: dict[str, Any] | None = None,
    served_ds: bool = True,
    now: datetime | None = None,
) -> tuple[Any, Any]:
    ds = served(data, credit_policy(**(policy_changes or {})))
    changes = dict(spec_changes or {})
    spec = make_spec(ds, kind, changes.pop("params", params or COUNT), **changes)
    out = execute(
        spec,
        dataset=ds if served_ds else None,
        state=state,
        grams=grams,
        identity=identity,
        inputs=FakeInputs(),
        now=now,
    )
    return spec, out.result


@pytest.mark.parametrize(
    ("policy_changes", "spec_changes", "code", "reason"),
    [
        ({}, {"content_hash": "0" * 64}, ReasonCode.DATASET_VERSION_UNAVAILABLE,
         "this node serves version"),
        ({}, {"policy_hash": "0" * 64}, ReasonCode.POLICY_CHANGED,
         "the node enforces policy"),
        ({"permitted_kinds": ["encrypted_model_eval"], "inference_row_budget": None},
         {}, ReasonCode.KIND_NOT_PERMITTED, "'aggregate' is not permitted"),
        ({}, {"purpose": "direct-marketing"}, ReasonCode.PURPOSE_NOT_PERMITTED,
         "'direct-marketing' is prohibited"),
        ({}, {"purpose": "astrology"}, ReasonCode.PURPOSE_NOT_PERMITTED,
         "'astrology' is not a permitted purpose"),
        ({}, {"buyer_region": "US"}, ReasonCode.REGION_NOT_PERMITTED,
         "US is not a permitted region"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, {}, ReasonCode.POLICY_EXPIRED,
         "expired at 2020-01-01T00:00:00Z"),
        ({"human_approval": True}, {}, ReasonCode.POLICY_VIOLATION,
         "requires human approval"),
        ({}, {"params": {"statistics": ["count"], "mode": "dp"}},
         ReasonCode.INVALID_PARAMS, "params.dp: required when mode is 'dp'"),
        ({}, {"params": {"statistics": ["sum"], "columns": ["employment_status"]}},
         ReasonCode.INVALID_PARAMS, "statistics need a number column"),
        ({}, {"params": {"statistics": ["count"], "filter": "age_years >"}},
         ReasonCode.INVALID_PARAMS, "filter: at position"),
        ({}, {"params": {"statistics": ["sum"], "columns": ["months_on_book"],
                         "group_by": ["defaulted_next_6m"], "filter": "x = 1"}},
         ReasonCode.INVALID_PARAMS, "no such column"),
        ({"permitted_columns": ["age_years", "defaulted_next_6m"],
          "column_bounds": {"age_years": {"lower": 18, "upper": 100}}},
         {"params": {"statistics": ["sum"], "columns": ["months_on_book"]}},
         ReasonCode.POLICY_VIOLATION, "columns.months_on_book: not a permitted"),
        ({}, {"inputs": {"outer": "1" * 64}}, ReasonCode.INVALID_INPUT,
         "unexpected outer"),
        ({}, {"params": {"statistics": ["count"], "encrypt_result": True}},
         ReasonCode.INVALID_CONTEXT, "context_id: required"),
        ({}, {"context_id": "2" * 64}, ReasonCode.INVALID_CONTEXT,
         "takes no context"),
    ],
)  # fmt: skip
def test_refusals(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    policy_changes: dict[str, Any],
    spec_changes: dict[str, Any],
    code: ReasonCode,
    reason: str,
) -> None:
    spec, result = _run(
        credit_data,
        state,
        grams,
        identity,
        policy_changes=policy_changes,
        spec_changes=spec_changes,
    )
    assert result.outcome is JobOutcome.REJECTED
    assert result.reason_code is code
    assert reason in (result.reason or "")
    assert result.receipt is None and result.output is None
    mine, total = result.budget
    assert mine.buyer_id == BUYER and total.buyer_id is None
    assert mine.queries == 0 and mine.epsilon_spent == 0
    entry = state.job(spec.job_id)
    assert entry is not None and entry.state is JournalState.FINISHED
    assert entry.result == result


def test_a_dataset_the_node_does_not_serve(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    _, result = _run(credit_data, state, grams, identity, served_ds=False)
    assert result.reason_code is ReasonCode.DATASET_VERSION_UNAVAILABLE
    assert "not served by this node" in result.reason
    assert result.budget == []


def test_a_passed_deadline_fails_without_running(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    _, result = _run(credit_data, state, grams, identity, now=later)
    assert result.outcome is JobOutcome.FAILED
    assert result.reason_code is ReasonCode.TIMEOUT


def test_query_limit_counts_successful_jobs(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    changes = {"max_queries_per_buyer": 2}
    results = [
        _run(credit_data, state, grams, identity, policy_changes=changes)[1]
        for _ in range(3)
    ]
    assert [r.outcome for r in results] == [
        JobOutcome.SUCCEEDED,
        JobOutcome.SUCCEEDED,
        JobOutcome.REJECTED,
    ]
    assert results[2].reason_code is ReasonCode.QUERY_LIMIT
    assert "used 2 of its 2 queries" in results[2].reason
    assert results[1].budget[0].queries == 2
    # Another buyer has its own count.
    other = _run(
        credit_data,
        state,
        grams,
        identity,
        policy_changes=changes,
        spec_changes={"buyer_id": uuid.uuid4()},
    )[1]
    assert other.outcome is JobOutcome.SUCCEEDED
    assert other.budget[1].queries == 3  # the dataset's total


def test_approval_present_passes(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    _, result = _run(
        credit_data,
        state,
        grams,
        identity,
        policy_changes={"human_approval": True},
        spec_changes={"approved_by": "dr. provider"},
    )
    assert result.outcome is JobOutcome.SUCCEEDED


def test_a_job_runs_at_most_once(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    ds = served(credit_data, credit_policy())
    params = {"statistics": ["count"], "mode": "dp", "dp": {"epsilon": 0.5}}
    spec = make_spec(ds, JobKind.AGGREGATE, params)
    kwargs: dict[str, Any] = {
        "dataset": ds,
        "state": state,
        "grams": grams,
        "identity": identity,
        "inputs": FakeInputs(),
    }
    first = execute(spec, **kwargs)
    again = execute(spec, **kwargs)
    assert again.replayed_from_journal and again.result == first.result
    accountant = state.accountant(ds.dataset_id, ds.policy)
    assert accountant.spent(str(BUYER)).epsilon == pytest.approx(0.5)  # once
    # A job journaled as started (a crash mid-run) is reported, never re-run.
    crashed = make_spec(ds, JobKind.AGGREGATE, params | {"dp": {"epsilon": 0.25}})
    state.start_job(crashed)
    out = execute(crashed, **kwargs)
    assert out.result.outcome is JobOutcome.FAILED
    assert out.result.reason_code is ReasonCode.NODE_RESTARTED
    assert accountant.spent(str(BUYER)).epsilon == pytest.approx(0.5)
    entry = state.job(crashed.job_id)
    assert entry is not None and entry.state is JournalState.FINISHED


def test_an_unexpected_error_fails_the_job_and_releases_the_budget(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    class Broken(FakeInputs):
        def context(self, context_id: str) -> Any:
            raise RuntimeError("disk on fire at /secret/path")

    ds = served(credit_data, credit_policy())
    params = {
        "model_kind": "linear",
        "features": ["age_years"],
        "label": "months_on_book",
    }
    spec = make_spec(
        ds,
        JobKind.ENCRYPTED_MODEL_EVAL,
        params,
        inputs={"outer": "1" * 64, "linear": "2" * 64},
        context_id="3" * 64,
    )
    result = execute(
        spec, dataset=ds, state=state, grams=grams, identity=identity, inputs=Broken()
    ).result
    assert result.outcome is JobOutcome.FAILED
    assert result.reason_code is ReasonCode.NODE_ERROR
    assert "internal error at the node (RuntimeError)" in result.reason
    assert "secret" not in result.reason
    accountant = state.accountant(ds.dataset_id, ds.policy)
    assert accountant.spent().epsilon == 0
    assert accountant.remaining(str(BUYER)).epsilon == 3.0  # reservation released
