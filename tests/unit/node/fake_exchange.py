"""An in-memory exchange implementing the node's half of ``docs/protocol.md``.

Served through ``httpx.MockTransport``. It checks what the real exchange checks
on the node's requests (attestation signatures, job state transitions, receipts
matching their job, output blobs uploaded, identical re-posts idempotent), and
records everything so tests can assert on it. ``fail`` injects transport errors
or 5xx answers for chosen requests.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import (
    JobKind,
    JobOutcome,
    JobResult,
    JobSpec,
    JobState,
    SignedAttestation,
    inputs_hash,
    params_hash,
    parse_params,
)

Failure = Callable[[httpx.Request], httpx.Response | None]


def _problem(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": "about:blank", "title": code, "status": status,
              "detail": detail, "code": code},
    )  # fmt: skip


@dataclass
class FakeExchange:
    """The exchange's state, as far as the node sees it."""

    columns: list[dict[str, Any]]
    policy: RightsPolicy
    dataset_id: uuid.UUID = field(default_factory=uuid.uuid4)
    api_key: str = "vx_test_key"
    nodes: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    live_version: uuid.UUID | None = None
    attestations: list[SignedAttestation] = field(default_factory=list)
    jobs: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    queue: list[uuid.UUID] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    contexts: dict[str, bytes] = field(default_factory=dict)
    results: dict[uuid.UUID, list[dict[str, Any]]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    idempotency_keys: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    # -- test controls ---------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail(self, failure: Failure) -> None:
        """Answer requests ``failure`` picks (returns a response or raises)."""
        self.failures.append(failure)

    def submit(
        self,
        kind: JobKind,
        params: dict[str, Any],
        *,
        buyer: uuid.UUID,
        inputs: dict[str, str] | None = None,
        context_id: str | None = None,
        queue: bool = True,
    ) -> uuid.UUID:
        """A buyer's job on the dataset, queued for the node."""
        live = self._version(self.live_version)
        now = datetime.now(UTC)
        spec = JobSpec(
            job_id=uuid.uuid4(),
            dataset_id=self.dataset_id,
            dataset_version_id=live["id"],
            content_hash=live["content_hash"],
            policy_hash=self.policy.policy_hash(),
            buyer_id=buyer,
            buyer_region=self.policy.regions[0],
            purpose=self.policy.purposes[0],
            kind=kind,
            params=parse_params(kind, params).model_dump(mode="json"),
            inputs=inputs or {},
            context_id=context_id,
            created_at=now,
            deadline=now + timedelta(hours=1),
            state=JobState.QUEUED,
        )
        self.jobs[spec.job_id] = {"spec": spec, "node_id": None}
        if queue:
            self.queue.append(spec.job_id)
        return spec.job_id

    def add_blob(self, data: bytes) -> str:
        """A blob a buyer uploaded; its SHA-256."""
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def add_context(self, data: bytes) -> str:
        """A public context a buyer uploaded; its id."""
        cid = hashlib.sha256(data).hexdigest()
        self.contexts[cid] = data
        return cid

    def dispatch(self, job_id: uuid.UUID, node_id: uuid.UUID) -> None:
        """Hand a job to a node as ``next`` would, without the node seeing it."""
        self.queue.remove(job_id)
        self._set(job_id, JobState.DISPATCHED, node_id)

    def state_of(self, job_id: uuid.UUID) -> JobState:
        return self.jobs[job_id]["spec"].state  # type: ignore[no-any-return]

    def _set(
        self, job_id: uuid.UUID, state: JobState, node: uuid.UUID | None = None
    ) -> None:
        job = self.jobs[job_id]
        job["spec"] = job["spec"].model_copy(update={"state": state})
        if node is not None:
            job["node_id"] = node

    def _version(self, version_id: uuid.UUID | None) -> dict[str, Any]:
        for v in self.versions:
            if v["id"] == version_id:
                return v
        raise LookupError(version_id)

    # -- HTTP --------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        for failure in self.failures:
            answer = failure(request)
            if answer is not None:
                return answer
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _problem(401, "unauthenticated", "bad API key")
        path = request.url.path
        self.requests[f"{request.method} {path}"] += 1
        if request.method in ("POST", "PUT") and "Idempotency-Key" in request.headers:
            self.idempotency_keys.append(request.headers["Idempotency-Key"])
        for method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and request.method == method:
                return handler(request, *match.groups())
        return _problem(404, "not_found", f"no route {request.method} {path}")

    def _routes(self) -> list[tuple[str, str, Callable[..., httpx.Response]]]:
        u = r"([0-9a-f-]{36})"
        h = r"([0-9a-f]{64})"
        return [
            ("POST", r"/v1/nodes", self._register),
            ("GET", r"/v1/nodes", self._list_nodes),
            ("GET", rf"/v1/nodes/{u}", self._get_node),
            ("POST", rf"/v1/nodes/{u}/attestations", self._attest),
            ("GET", rf"/v1/nodes/{u}/jobs/next", self._next),
            ("GET", rf"/v1/nodes/{u}/jobs", self._list_jobs),
            ("GET", rf"/v1/datasets/{u}", self._dataset),
            ("GET", rf"/v1/datasets/{u}/versions", self._versions),
            ("POST", rf"/v1/datasets/{u}/versions", self._add_version),
            ("PUT", rf"/v1/datasets/{u}/live-version", self._set_live),
            ("POST", rf"/v1/jobs/{u}/start", self._start),
            ("POST", rf"/v1/jobs/{u}/result", self._result),
            ("POST", r"/v1/blobs", self._put_blob),
            ("GET", rf"/v1/blobs/{h}", self._get_blob),
            ("GET", rf"/v1/he-contexts/{h}", self._get_context),
        ]

    def _node_json(self, node: dict[str, Any]) -> dict[str, Any]:
        return {**node, "id": str(node["id"]), "datasets": []}

    def _register(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        for node in self.nodes.values():
            if node["public_key"] == body["public_key"]:
                return _problem(409, "public_key_taken", "this key is registered")
        node_id = uuid.uuid4()
        self.nodes[node_id] = {
            "id": node_id,
            "name": body["name"],
            "public_key": body["public_key"],
        }
        return httpx.Response(201, json=self._node_json(self.nodes[node_id]))

    def _list_nodes(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=[self._node_json(n) for n in self.nodes.values()]
        )

    def _get_node(self, request: httpx.Request, node_id: str) -> httpx.Response:
        node = self.nodes.get(uuid.UUID(node_id))
        if node is None:
            return _problem(404, "not_found", "no such node")
        return httpx.Response(200, json=self._node_json(node))

    def _version_json(self, v: dict[str, Any]) -> dict[str, Any]:
        return {
            **v,
            "id": str(v["id"]),
            "schema_hash": "0" * 64,
            "note": v.get("note"),
            "created_at": "2026-01-01T00:00:00Z",
            "is_live": v["id"] == self.live_version,
        }

    def _dataset(self, request: httpx.Request, dataset_id: str) -> httpx.Response:
        if uuid.UUID(dataset_id) != self.dataset_id:
            return _problem(404, "not_found", "no such dataset")
        live = None
        if self.live_version is not None:
            live = self._version_json(self._version(self.live_version))
        return httpx.Response(
            200,
            json={
                "id": str(self.dataset_id),
                "title": "Credit sample",
                "columns": self.columns,
                "policy": json.loads(self.policy.canonical_json()),
                "policy_hash": self.policy.policy_hash(),
                "status": "listed",
                "live_version": live,
                "pricing_plan": {"kind": "flat"},
            },
        )

    def _versions(self, request: httpx.Request, dataset_id: str) -> httpx.Response:
        return httpx.Response(200, json=[self._version_json(v) for v in self.versions])

    def _add_version(self, request: httpx.Request, dataset_id: str) -> httpx.Response:
        body = json.loads(request.content)
        if any(v["content_hash"] == body["content_hash"] for v in self.versions):
            return _problem(422, "duplicate_version", "already a version")
        version = {
            "id": uuid.uuid4(),
            "content_hash": body["content_hash"],
            "row_count": body["row_count"],
            "byte_size": body["byte_size"],
            "note": body["note"],
        }
        self.versions.append(version)
        if body["make_live"] or self.live_version is None:
            self.live_version = version["id"]
        return httpx.Response(201, json=self._version_json(version))

    def _set_live(self, request: httpx.Request, dataset_id: str) -> httpx.Response:
        self.live_version = uuid.UUID(json.loads(request.content)["version_id"])
        return self._dataset(request, dataset_id)

    def _attest(self, request: httpx.Request, node_id: str) -> httpx.Response:
        signed = SignedAttestation.model_validate_json(request.content)
        node = self.nodes[uuid.UUID(node_id)]
        try:
            signed.verify(node["public_key"])
        except Exception:  # noqa: BLE001 - the fake answers like the exchange
            return _problem(422, "bad_signature", "attestation does not verify")
        att = signed.attestation
        if att.node_id != node["id"]:
            return _problem(422, "bad_attestation", "node_id is another node")
        if not any(v["content_hash"] == att.content_hash for v in self.versions):
            return _problem(409, "unknown_version", "no such content hash")
        self.attestations.append(signed)
        return httpx.Response(201, json={"verified": True})

    def _next(self, request: httpx.Request, node_id: str) -> httpx.Response:
        if not self.queue:
            return httpx.Response(204)
        job_id = self.queue.pop(0)
        self._set(job_id, JobState.DISPATCHED, uuid.UUID(node_id))
        return httpx.Response(
            200, json=self.jobs[job_id]["spec"].model_dump(mode="json")
        )

    def _list_jobs(self, request: httpx.Request, node_id: str) -> httpx.Response:
        wanted = set(request.url.params.get_list("state"))
        out = [
            job["spec"].model_dump(mode="json")
            for job in self.jobs.values()
            if job["node_id"] == uuid.UUID(node_id) and job["spec"].state in wanted
        ]
        return httpx.Response(200, json=out)

    def _start(self, request: httpx.Request, job_id: str) -> httpx.Response:
        job = self.jobs[uuid.UUID(job_id)]
        if job["spec"].state is not JobState.DISPATCHED:
            return _problem(409, "invalid_transition", "not dispatched")
        self._set(uuid.UUID(job_id), JobState.RUNNING)
        return httpx.Response(200, json={"id": job_id, "state": "running"})

    def _result(self, request: httpx.Request, job_id: str) -> httpx.Response:
        jid = uuid.UUID(job_id)
        job = self.jobs[jid]
        spec: JobSpec = job["spec"]
        body = json.loads(request.content)
        result = JobResult.model_validate(body)
        previous = self.results.setdefault(jid, [])
        if spec.state.terminal:
            if previous and previous[-1] == body:
                return httpx.Response(200, json={"id": job_id, "state": spec.state})
            return _problem(409, "result_conflict", "the job has ended differently")
        allowed = {JobState.RUNNING}
        if result.outcome is not JobOutcome.SUCCEEDED:
            allowed.add(JobState.DISPATCHED)
        if spec.state not in allowed:
            return _problem(409, "invalid_transition", f"job is {spec.state.value}")
        if result.outcome is JobOutcome.SUCCEEDED:
            assert result.receipt is not None
            node = self.nodes[job["node_id"]]
            result.receipt.verify(node["public_key"])
            r = result.receipt.receipt
            expected = {
                "job_id": spec.job_id,
                "node_id": node["id"],
                "dataset_id": spec.dataset_id,
                "dataset_version_hash": spec.content_hash,
                "policy_hash": spec.policy_hash,
                "kind": spec.kind,
                "params_hash": params_hash(spec.params),
                "inputs_hash": inputs_hash(spec.inputs, spec.context_id),
            }
            for name, value in expected.items():
                if getattr(r, name) != value:
                    return _problem(422, "bad_receipt", f"receipt.{name} differs")
            for name, sha in result.output_blobs.items():
                if sha not in self.blobs:
                    return _problem(422, "unknown_blob", f"output_blobs.{name}")
        previous.append(body)
        self._set(jid, JobState(result.outcome.value))
        return httpx.Response(200, json={"id": job_id, "state": result.outcome.value})

    def _put_blob(self, request: httpx.Request) -> httpx.Response:
        data = request.content
        sha = hashlib.sha256(data).hexdigest()
        existed = sha in self.blobs
        self.blobs[sha] = data
        return httpx.Response(
            200 if existed else 201, json={"sha256": sha, "size": len(data)}
        )

    def _get_blob(self, request: httpx.Request, sha: str) -> httpx.Response:
        if sha not in self.blobs:
            return _problem(404, "not_found", "no such blob")
        return httpx.Response(200, content=self.blobs[sha])

    def _get_context(self, request: httpx.Request, cid: str) -> httpx.Response:
        if cid not in self.contexts:
            return _problem(404, "not_found", "no such context")
        return httpx.Response(200, content=self.contexts[cid])
