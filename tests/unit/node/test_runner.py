"""NodeService against a fake exchange (httpx.MockTransport): start-up, the loop,
restart recovery — and no job is ever executed twice."""

from __future__ import annotations

import logging
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mpc_engine.he import EncryptedVector, SecretContext, encrypt_columns
from mpc_engine.node import NodeService, StateError
from mpc_engine.node import executor as executor_module
from mpc_engine.node import runner as runner_module
from mpc_engine.node.config import NodeConfig, parse_config
from mpc_engine.node.errors import ConfigError
from mpc_engine.node.state import JournalState
from mpc_engine.protocol import (
    JobKind,
    JobState,
    NodeKey,
    ReasonCode,
    pack_bundle,
    unpack_bundle,
)
from tests.unit.node.factories import (
    BUYER,
    CREDIT,
    SCORE_MODEL,
    credit_policy,
    sample,
    write_sample,
)
from tests.unit.node.fake_exchange import FakeExchange

DP_COUNT = {
    "statistics": ["count"],
    "group_by": ["defaulted_next_6m"],
    "mode": "dp",
    "dp": {"epsilon": 0.25},
}


class Crash(BaseException):
    """Stands in for the process dying mid-job (not an Exception: not caught)."""


@pytest.fixture
def fake() -> FakeExchange:
    s = sample(CREDIT)
    return FakeExchange(
        columns=[c.model_dump(mode="json") for c in s.body.columns],
        policy=credit_policy(),
    )


@pytest.fixture
def config(tmp_path: Path, fake: FakeExchange) -> NodeConfig:
    path, _ = write_sample(sample(CREDIT), tmp_path)
    model = SCORE_MODEL.model_dump(mode="json") | {"dataset_id": str(fake.dataset_id)}
    return parse_config(
        {
            "exchange_url": "http://exchange.test",
            "api_key": fake.api_key,
            "name": "credit-node",
            "state_dir": "state",
            "poll_wait": 0,
            "datasets": [
                {
                    "dataset_id": str(fake.dataset_id),
                    "source": {"kind": "csv", "path": str(path)},
                }
            ],
            "models": [model],
        },
        base=tmp_path,
    )


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[uuid.UUID]]:
    """How many times each job's computation actually ran."""
    counts: Counter[uuid.UUID] = Counter()
    crash_on: set[uuid.UUID] = set()
    for kind, run in list(executor_module._RUNNERS.items()):

        def counting(job: Any, run: Callable[[Any], Any] = run) -> Any:
            counts[job.spec.job_id] += 1
            if job.spec.job_id in crash_on:
                raise Crash
            return run(job)

        monkeypatch.setitem(executor_module._RUNNERS, kind, counting)  # type: ignore[arg-type]
    counts.crash_on = crash_on  # type: ignore[attr-defined]
    yield counts


def _service(config: NodeConfig, fake: FakeExchange) -> NodeService:
    return NodeService(config, transport=fake.transport(), sleep=lambda _: None)


def test_start_registers_publishes_and_attests_once(
    config: NodeConfig, fake: FakeExchange
) -> None:
    service = _service(config, fake)
    service.start()
    (node,) = fake.nodes.values()
    key_file = config.state_dir / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert node["public_key"] == NodeKey.load(key_file).public_key_hex
    assert service.node_id == node["id"] == service.state.node_id
    (version,) = fake.versions
    data = service.datasets[fake.dataset_id].data
    assert version["content_hash"] == data.content_hash
    assert version["row_count"] == 15_000 and fake.live_version == version["id"]
    (attestation,) = fake.attestations
    assert attestation.attestation.content_hash == data.content_hash
    assert [m.name for m in attestation.attestation.models] == ["default-risk"]
    assert service.state.pinned_policy(fake.dataset_id) == fake.policy
    service.close()
    # A restart registers nothing new and creates no version.
    again = _service(config, fake)
    again.start()
    assert again.node_id == service.node_id
    assert fake.requests["POST /v1/nodes"] == 1
    assert fake.requests[f"POST /v1/datasets/{fake.dataset_id}/versions"] == 1
    assert len(fake.attestations) == 2
    again.close()


def test_an_existing_version_is_made_live(
    config: NodeConfig, fake: FakeExchange
) -> None:
    service = _service(config, fake)
    service.start()
    service.close()
    fake.live_version = None
    again = _service(config, fake)
    again.start()
    assert fake.live_version == fake.versions[0]["id"]
    assert fake.requests[f"PUT /v1/datasets/{fake.dataset_id}/live-version"] == 1
    again.close()


def test_a_lost_registration_answer_is_recovered_by_key(
    config: NodeConfig, fake: FakeExchange
) -> None:
    config.state_dir.mkdir(parents=True)
    key, _ = NodeKey.load_or_create(config.state_dir / "node.key")
    known = uuid.uuid4()
    fake.nodes[known] = {"id": known, "name": "x", "public_key": key.public_key_hex}
    service = _service(config, fake)
    service.start()
    assert service.node_id == known
    service.close()


def test_a_state_dir_of_another_node_is_refused(
    config: NodeConfig, fake: FakeExchange
) -> None:
    service = _service(config, fake)
    service.start()
    service.close()
    fake.nodes[service.node_id]["public_key"] = NodeKey.generate().public_key_hex
    with pytest.raises(StateError, match="under another public key"):
        _service(config, fake).start()


def test_the_loop_runs_each_kind_end_to_end(
    config: NodeConfig,
    fake: FakeExchange,
    infer_keys: SecretContext,
    runs: Counter[uuid.UUID],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = _service(config, fake)
    service.start()
    agg = fake.submit(JobKind.AGGREGATE, DP_COUNT, buyer=BUYER)
    x = np.random.default_rng(1).uniform(0, 1, size=(30, 3))
    columns = encrypt_columns(infer_keys, x)
    bundle = pack_bundle([[v.to_bytes() for v in b] for b in columns.batches])
    blob = fake.add_blob(bundle)
    context_id = fake.add_context(infer_keys.public_bytes())
    inf = fake.submit(
        JobKind.ENCRYPTED_INFERENCE,
        {"model": "default-risk", "n_rows": 30},
        buyer=BUYER,
        inputs={"columns": blob},
        context_id=context_id,
    )
    assert service.poll_once() and service.poll_once()
    assert not service.poll_once()
    assert fake.state_of(agg) is JobState.SUCCEEDED
    assert fake.state_of(inf) is JobState.SUCCEEDED
    assert runs == Counter({agg: 1, inf: 1})
    for job in (agg, inf):
        entry = service.state.job(job)
        assert entry is not None and entry.state is JournalState.REPORTED
        assert service.state.blobs(job) == {}  # dropped once acknowledged
    posted = fake.results[inf][0]
    (row,) = unpack_bundle(fake.blobs[posted["output_blobs"]["scores"]])
    scores = infer_keys.decrypt(
        EncryptedVector.from_bytes(infer_keys, row[0], fresh=False)
    )
    w = np.array(SCORE_MODEL.weights)
    assert np.allclose(scores, x @ w + SCORE_MODEL.bias, atol=1e-3)
    budget = fake.results[agg][0]["budget"]
    assert budget[0]["epsilon_spent"] == 0.25 and budget[0]["buyer_id"] == str(BUYER)
    # Every POST carried an idempotency key.
    posts = sum(n for k, n in fake.requests.items() if k.startswith("POST"))
    assert len(fake.idempotency_keys) == posts
    # The logs name jobs and codes, never keys, data or ciphertexts.
    text = caplog.text
    seed = (config.state_dir / "node.key").read_text().strip()
    assert seed not in text and fake.api_key not in text
    refs = service.datasets[fake.dataset_id].data.columns["account_ref"][:50]
    assert not any(str(ref) in text for ref in refs.tolist())
    assert str(agg) in text
    service.close()


def test_restart_recovery_never_executes_a_job_twice(
    config: NodeConfig, fake: FakeExchange, runs: Counter[uuid.UUID]
) -> None:
    service = _service(config, fake)
    service.start()
    node_id = service.node_id
    # A: computed and journaled, but the exchange never got the result.
    a = fake.submit(JobKind.AGGREGATE, DP_COUNT, buyer=BUYER)

    def unreachable(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == f"/v1/jobs/{a}/result":
            raise httpx.ConnectError("down", request=request)
        return None

    fake.fail(unreachable)
    assert service.poll_once()
    assert service.state.job(a).state is JournalState.FINISHED  # type: ignore[union-attr]
    assert fake.state_of(a) is JobState.RUNNING
    fake.failures.clear()
    # B: the process died while computing it.
    b = fake.submit(JobKind.AGGREGATE, DP_COUNT | {"dp": {"epsilon": 0.5}}, buyer=BUYER)
    runs.crash_on.add(b)  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        service.poll_once()
    runs.crash_on.clear()  # type: ignore[attr-defined]
    assert service.state.job(b).state is JournalState.STARTED  # type: ignore[union-attr]
    # C: dispatched to the node, which died before starting it.
    c = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    fake.dispatch(c, node_id)
    # D: started at the exchange, but the node died before journaling it.
    d = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=uuid.uuid4())
    fake.dispatch(d, node_id)
    fake._set(d, JobState.RUNNING)
    service._state.close()  # type: ignore[union-attr]

    restarted = _service(config, fake)
    restarted.start()
    assert runs == Counter({a: 1, b: 1, c: 1, d: 1})
    # A: the stored result, re-posted as it was.
    (posted_a,) = fake.results[a]
    stored = restarted.state.job(a)
    assert stored is not None and stored.result is not None
    assert posted_a == stored.result.model_dump(mode="json")
    assert fake.state_of(a) is JobState.SUCCEEDED
    # B: reported failed, not re-run; its budget was never spent.
    (posted_b,) = fake.results[b]
    assert posted_b["outcome"] == "failed"
    assert posted_b["reason_code"] == ReasonCode.NODE_RESTARTED.value
    assert fake.state_of(b) is JobState.FAILED
    accountant = restarted.state.accountant(fake.dataset_id, fake.policy)
    assert accountant.spent(str(BUYER)).epsilon == 0.25  # A only
    # C: started and run; D: run without a second start.
    assert fake.state_of(c) is JobState.SUCCEEDED
    assert fake.state_of(d) is JobState.SUCCEEDED
    assert fake.requests[f"POST /v1/jobs/{c}/start"] == 1
    assert fake.requests[f"POST /v1/jobs/{d}/start"] == 0
    for job in (a, b, c, d):
        assert restarted.state.job(job).state is JournalState.REPORTED  # type: ignore[union-attr]
    restarted.close()

    # Another restart finds nothing to do and runs nothing.
    before = {job: list(fake.results[job]) for job in (a, b, c, d)}
    third = _service(config, fake)
    third.start()
    assert runs == Counter({a: 1, b: 1, c: 1, d: 1})
    assert {job: fake.results[job] for job in (a, b, c, d)} == before
    third.close()


def test_a_reported_job_still_listed_is_reposted_not_rerun(
    config: NodeConfig, fake: FakeExchange, runs: Counter[uuid.UUID]
) -> None:
    service = _service(config, fake)
    service.start()
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    assert service.poll_once()
    service.close()
    fake._set(job, JobState.RUNNING)  # as if the exchange lost the result
    fake.results[job].clear()
    again = _service(config, fake)
    again.start()
    assert runs[job] == 1
    assert fake.state_of(job) is JobState.SUCCEEDED and len(fake.results[job]) == 1
    again.close()


def test_a_job_that_can_no_longer_start_is_skipped(
    config: NodeConfig, fake: FakeExchange, runs: Counter[uuid.UUID]
) -> None:
    service = _service(config, fake)
    service.start()
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)

    def expired(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == f"/v1/jobs/{job}/start":
            return httpx.Response(
                409, json={"code": "invalid_transition", "detail": "expired"}
            )
        return None

    fake.fail(expired)
    assert service.poll_once()
    assert runs[job] == 0 and service.state.job(job) is None
    service.close()


def test_a_changed_policy_is_fetched_and_enforced(
    config: NodeConfig, fake: FakeExchange
) -> None:
    service = _service(config, fake)
    service.start()
    old_hash = fake.policy.policy_hash()
    fake.policy = credit_policy(purposes=["model-benchmarking"])
    # A job under the new policy makes the node re-read the listing.
    new = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    assert service.poll_once()
    assert fake.state_of(new) is JobState.SUCCEEDED
    assert service.state.pinned_policy(fake.dataset_id) == fake.policy
    # A job admitted under the old policy is now refused.
    old = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    spec = fake.jobs[old]["spec"]
    fake.jobs[old]["spec"] = spec.model_copy(update={"policy_hash": old_hash})
    assert service.poll_once()
    assert fake.results[old][0]["reason_code"] == ReasonCode.POLICY_CHANGED.value
    # The periodic refresh picks up a change before any job names it.
    fake.policy = credit_policy(purposes=["credit-risk-model-validation"])
    service.refresh_policies()
    assert service.datasets[fake.dataset_id].policy == fake.policy
    service.close()


def test_serve_until_stopped_riding_out_an_outage(
    config: NodeConfig, fake: FakeExchange
) -> None:
    service = _service(config, fake)
    service.start()
    down = {"on": True}

    def outage(request: httpx.Request) -> httpx.Response | None:
        if down["on"] and request.url.path.endswith("/jobs/next"):
            return httpx.Response(503, json={"code": "unavailable"})
        return None

    fake.fail(outage)
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,))
    thread.start()
    time.sleep(0.2)
    assert fake.state_of(job) is JobState.QUEUED
    down["on"] = False
    deadline = time.monotonic() + 10
    while fake.state_of(job) is not JobState.SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert fake.state_of(job) is JobState.SUCCEEDED
    service.close()


def test_the_loop_runs_a_job_dispatched_here_but_never_received(
    config: NodeConfig,
    fake: FakeExchange,
    runs: Counter[uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "ORPHAN_CHECK_SECONDS", 0.0)
    service = _service(config, fake)
    service.start()
    # Claimed by a long poll whose answer never arrived (say, the poll of a
    # crashed predecessor, still waiting at the exchange): the node polling now
    # is never handed it.
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    fake.dispatch(job, service.node_id)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while fake.state_of(job) is not JobState.SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert fake.state_of(job) is JobState.SUCCEEDED
    assert runs[job] == 1
    assert fake.requests[f"POST /v1/jobs/{job}/start"] == 1
    service.close()


def test_inputs_the_exchange_does_not_serve_are_refused(
    config: NodeConfig, fake: FakeExchange, infer_keys: SecretContext
) -> None:
    service = _service(config, fake)
    service.start()
    context_id = fake.add_context(infer_keys.public_bytes())
    job = fake.submit(
        JobKind.ENCRYPTED_INFERENCE,
        {"model": "default-risk", "n_rows": 5},
        buyer=BUYER,
        inputs={"columns": "c" * 64},
        context_id=context_id,
    )
    gone = fake.submit(
        JobKind.ENCRYPTED_INFERENCE,
        {"model": "default-risk", "n_rows": 5},
        buyer=BUYER,
        inputs={"columns": "c" * 64},
        context_id="d" * 64,
    )
    assert service.poll_once() and service.poll_once()
    (first,) = fake.results[job]
    assert first["reason_code"] == ReasonCode.INVALID_INPUT.value
    assert first["reason"] == (
        "inputs.columns: the exchange does not serve it (no such blob)"
    )
    (second,) = fake.results[gone]
    assert second["reason_code"] == ReasonCode.INVALID_CONTEXT.value
    assert "does not serve it (no such context)" in second["reason"]
    service.close()


def _pinned(config: NodeConfig, policy_hash: str) -> NodeConfig:
    (entry,) = config.datasets
    pinned = entry.model_copy(update={"policy_sha256": policy_hash})
    return config.model_copy(update={"datasets": [pinned]})


def test_a_pinned_policy_is_the_only_one_enforced(
    config: NodeConfig, fake: FakeExchange, caplog: pytest.LogCaptureFixture
) -> None:
    pinned_hash = fake.policy.policy_hash()
    service = _service(_pinned(config, pinned_hash), fake)
    service.start()
    # The exchange loosens the policy on its own: the node keeps the pinned one.
    fake.policy = credit_policy(purposes=["model-benchmarking"])
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    with caplog.at_level(logging.WARNING, logger="veilx.node"):
        assert service.poll_once()
    assert fake.results[job][0]["reason_code"] == ReasonCode.POLICY_CHANGED.value
    assert service.datasets[fake.dataset_id].policy_hash == pinned_hash
    assert "not the pinned" in caplog.text
    service.refresh_policies()
    assert service.state.pinned_policy(fake.dataset_id).policy_hash() == pinned_hash
    service.close()


def test_a_node_refuses_to_start_on_a_policy_it_did_not_pin(
    config: NodeConfig, fake: FakeExchange
) -> None:
    service = _service(_pinned(config, "ab" * 32), fake)
    with pytest.raises(runner_module.NodeError, match="policy_sha256"):
        service.start()
    service.close()


def test_a_pinned_hash_must_look_like_one(tmp_path: Path, fake: FakeExchange) -> None:
    path, _ = write_sample(sample(CREDIT), tmp_path)
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.policy_sha256"):
        parse_config(
            {
                "exchange_url": "http://exchange.test",
                "api_key": fake.api_key,
                "name": "n",
                "datasets": [
                    {
                        "dataset_id": str(fake.dataset_id),
                        "source": {"kind": "csv", "path": str(path)},
                        "policy_sha256": "not-a-hash",
                    }
                ],
            },
            base=tmp_path,
        )


def _data_path(config: NodeConfig) -> Path:
    (entry,) = config.datasets
    path = entry.source.path  # type: ignore[union-attr]
    assert isinstance(path, Path)
    return path


def test_a_changed_source_is_published_as_the_new_live_version(
    config: NodeConfig, fake: FakeExchange, caplog: pytest.LogCaptureFixture
) -> None:
    service = _service(config, fake)
    service.start()
    first = service.datasets[fake.dataset_id].data.content_hash
    assert service.reload_sources() == []  # nothing changed: nothing read
    assert len(fake.versions) == 1

    path = _data_path(config)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")  # one row fewer
    assert service.reload_sources() == [fake.dataset_id]
    served = service.datasets[fake.dataset_id]
    assert served.data.content_hash != first
    assert served.data.row_count == len(lines) - 2
    assert fake.live_version is not None
    live = fake._version(fake.live_version)
    assert live["content_hash"] == served.data.content_hash
    assert fake.attestations[-1].attestation.content_hash == served.data.content_hash
    # A job on the new version runs; one admitted on the old one is refused.
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    assert service.poll_once()
    assert fake.state_of(job) is JobState.SUCCEEDED
    old = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    spec = fake.jobs[old]["spec"]
    fake.jobs[old]["spec"] = spec.model_copy(update={"content_hash": first})
    assert service.poll_once()
    assert fake.results[old][0]["reason_code"] == (
        ReasonCode.DATASET_VERSION_UNAVAILABLE.value
    )

    # A broken file keeps the current version served (and is retried later).
    path.write_text("not,the,schema\n1,2,3\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="veilx.node"):
        assert service.reload_sources() == []
    assert "cannot reload the source" in caplog.text
    assert service.datasets[fake.dataset_id] is served
    # Rewriting the same content as before: re-read, nothing new published.
    path.write_text("".join(lines[:-1]), encoding="utf-8")
    versions = len(fake.versions)
    assert service.reload_sources() == []
    assert len(fake.versions) == versions
    assert service.reload_sources(force=True) == []  # forced: read, unchanged
    service.close()


def test_a_reload_request_rereads_every_source_on_the_next_pass(
    config: NodeConfig, fake: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(config, fake)
    service.start()
    stop = threading.Event()
    calls: list[bool] = []

    def reload(*, force: bool = False) -> list[uuid.UUID]:
        calls.append(force)
        stop.set()
        return []

    monkeypatch.setattr(service, "reload_sources", reload)
    service.request_reload()  # what SIGHUP does
    service.serve(stop)
    assert calls == [True]
    service.close()


def _approved(fake: FakeExchange, job: uuid.UUID) -> None:
    """The exchange's record of a human approval on ``job``."""
    spec = fake.jobs[job]["spec"]
    fake.jobs[job]["spec"] = spec.model_copy(update={"approved_by": "user:dpo"})


def test_a_node_that_approves_locally_holds_jobs_until_its_own_decision(
    config: NodeConfig, fake: FakeExchange, runs: Counter[uuid.UUID]
) -> None:
    from mpc_engine.node.state import NodeState

    fake.policy = credit_policy(human_approval=True)
    local = config.model_copy(update={"approve_locally": True})
    service = _service(local, fake)
    service.start()
    first = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    second = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    _approved(fake, first)
    _approved(fake, second)
    assert service.poll_once() and service.poll_once()
    # Approved at the exchange, but held here: nothing ran, nothing reported.
    assert runs[first] == runs[second] == 0
    assert first not in fake.results and second not in fake.results
    assert [h.spec.job_id for h in service.state.held(undecided_only=True)] == [
        first,
        second,
    ]
    assert service.run_decided() == 0
    service.resume_orphans()  # a dispatched job the journal lacks: still held
    assert runs[first] == 0

    # The provider decides at the node (another process: the CLI's connection).
    other = NodeState(local.state_dir / runner_module.STATE_FILE)
    other.decide(first, approved=True, by="dpo", note=None)
    other.decide(second, approved=False, by="dpo", note="not for this purpose")
    with pytest.raises(StateError, match="approved already"):
        other.decide(first, approved=False, by="dpo", note=None)
    other.close()
    assert service.run_decided() == 2
    assert fake.state_of(first) is JobState.SUCCEEDED and runs[first] == 1
    result = fake.results[second][0]
    assert result["reason_code"] == ReasonCode.DENIED.value
    assert "denied at the node by dpo: not for this purpose" in result["reason"]
    assert runs[second] == 0
    assert service.run_decided() == 0  # each runs once
    service.close()


def test_without_local_approval_configured_the_exchange_record_suffices(
    config: NodeConfig, fake: FakeExchange
) -> None:
    fake.policy = credit_policy(human_approval=True)
    service = _service(config, fake)
    service.start()
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    _approved(fake, job)
    assert service.poll_once()
    assert fake.state_of(job) is JobState.SUCCEEDED
    service.close()


def test_a_held_job_past_its_deadline_ends_timed_out(
    config: NodeConfig, fake: FakeExchange, runs: Counter[uuid.UUID]
) -> None:
    from datetime import UTC, datetime, timedelta

    fake.policy = credit_policy(human_approval=True)
    now = {"t": datetime.now(UTC)}
    service = NodeService(
        config.model_copy(update={"approve_locally": True}),
        transport=fake.transport(),
        sleep=lambda _: None,
        clock=lambda: now["t"],
    )
    service.start()
    job = fake.submit(JobKind.AGGREGATE, {"statistics": ["count"]}, buyer=BUYER)
    _approved(fake, job)
    assert service.poll_once()
    assert service.run_decided() == 0
    now["t"] += timedelta(hours=2)  # past the one-hour deadline, undecided
    assert service.run_decided() == 1
    assert fake.results[job][0]["reason_code"] == ReasonCode.TIMEOUT.value
    assert runs[job] == 0
    service.close()
