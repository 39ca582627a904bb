"""A fake exchange with one data node, served through ``httpx.MockTransport``.

It follows ``docs/protocol.md``: problem JSON with ``X-Request-Id``, content-
addressed blobs, HE contexts refused when they carry a secret key, jobs that
move ``queued → dispatched → running → succeeded`` one step per ``GET``, and a
node that really computes — ``run_aggregate`` on a table, ``evaluate_model`` on a
Gram matrix, ``score_linear`` on uploaded ciphertexts — and signs receipts with
an Ed25519 ``NodeKey``. ``tamper`` makes it lie in one way, so receipt checks can
be shown to catch it; ``faults`` serves canned failures before real answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import ValidationError

from mpc_engine.aggregate import ColumnSpec, ColumnType, Table, run_aggregate
from mpc_engine.aggregate.errors import AggregateError
from mpc_engine.he import (
    EncryptedColumns,
    EncryptedModel,
    PublicContext,
    flooding_std,
    gram_matrix,
    rerandomize,
    score_linear,
)
from mpc_engine.he._context import wrap_vector
from mpc_engine.he.errors import HEError, SecretKeyPresent
from mpc_engine.policy import RightsPolicy, Sensitivity
from mpc_engine.protocol import (
    AggregateParams,
    Attestation,
    JobCreate,
    JobKind,
    Loss,
    ModelInfo,
    NodeKey,
    Receipt,
    SignedAttestation,
    SignedReceipt,
    flatten_aggregate,
    inputs_hash,
    iso_utc,
    model_eval_bounds,
    output_hash,
    pack_bundle,
    params_hash,
    unpack_bundle,
    utc_now,
)
from sdk import Client

API_KEY = "vx_test_0123456789abcdef"
N_ROWS = 400
REGIONS = ("east", "north", "south", "west")
MODEL = "spend-v1"
MODEL_FEATURES = ("age", "income")
MODEL_WEIGHTS = np.array([0.8, 1.5])
MODEL_BIAS = 10.0

COLUMNS = [
    ("region", "string", Sensitivity.PUBLIC),
    ("age", "integer", Sensitivity.QUASI_IDENTIFIER),
    ("income", "float", Sensitivity.SENSITIVE),
    ("spend", "float", Sensitivity.SENSITIVE),
    ("defaulted", "boolean", Sensitivity.SENSITIVE),
    ("email", "string", Sensitivity.IDENTIFIER),
]
BOUNDS = {"age": (18.0, 90.0), "income": (0.0, 200.0), "spend": (0.0, 500.0)}


def make_policy(**changes: Any) -> RightsPolicy:
    """A policy permitting the three job kinds on every non-identifier column."""
    doc: dict[str, Any] = {
        "permitted_kinds": [
            "aggregate",
            "encrypted_model_eval",
            "encrypted_inference",
        ],
        "permitted_columns": ["age", "defaulted", "income", "region", "spend"],
        "purposes": ["research"],
        "regions": ["DE"],
        "min_group_size": 5,
        "budget_per_buyer": {"epsilon": 4.0, "delta": 1e-5},
        "budget_per_dataset": {"epsilon": 20.0, "delta": 1e-4},
        "inference_row_budget": 10_000,
        "column_bounds": {
            name: {"lower": lo, "upper": hi} for name, (lo, hi) in BOUNDS.items()
        },
    }
    doc.update(changes)
    return RightsPolicy.model_validate(doc)


def make_data(seed: int = 7, n: int = N_ROWS) -> dict[str, np.ndarray]:
    """Rows inside the policy bounds; spend is linear in age and income."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 91, n).astype(np.float64)
    income = rng.uniform(0, 200, n)
    spend = np.clip(10 + 0.8 * age + 1.5 * income + rng.normal(0, 5, n), 0, 500)
    logits = 0.02 * (age - 50) - 0.01 * (income - 100)
    defaulted = rng.uniform(size=n) < 1 / (1 + np.exp(-logits))
    return {
        "region": np.array(REGIONS)[rng.integers(0, 4, n)],
        "age": age,
        "income": income,
        "spend": spend,
        "defaulted": defaulted,
    }


@dataclass
class Captured:
    """A request as the exchange received it."""

    method: str
    path: str
    params: httpx.QueryParams
    headers: httpx.Headers
    content: bytes


Fault = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeExchange:
    """The exchange, its node and one dataset."""

    policy: RightsPolicy = field(default_factory=make_policy)
    data: dict[str, np.ndarray] = field(default_factory=make_data)
    tamper: str | None = None
    """``signature``, ``output``, ``foreign_key``, ``params`` or ``None``."""
    faults: list[Fault] = field(default_factory=list)
    fail_kind: tuple[str, str] | None = None
    """Make the node reject every job with this (reason_code, reason)."""
    forget_contexts: bool = False
    """Refuse known context ids once (a reset exchange)."""

    def __post_init__(self) -> None:
        self.requests: list[Captured] = []
        self.base_url = f"https://exchange-{uuid.uuid4().hex[:8]}.test"
        self.node_key = NodeKey.generate()
        self.node_id = uuid.uuid4()
        self.org_id = uuid.uuid4()
        self.buyer_id = uuid.uuid4()
        self.dataset_id = uuid.uuid4()
        self.version_id = uuid.uuid4()
        self.content_hash = hashlib.sha256(b"dataset content v1").hexdigest()
        self.blobs: dict[str, bytes] = {}
        self.contexts: dict[str, bytes] = {}
        self.jobs: dict[uuid.UUID, dict[str, Any]] = {}
        self.spent: dict[uuid.UUID, list[float]] = {}
        self.catalog = [self._hit(i) for i in range(5)]
        self._counter = 0
        self.table = Table(
            self.data,
            [
                ColumnSpec(
                    "region",
                    ColumnType.STRING,
                    Sensitivity.PUBLIC,
                    categories=REGIONS,
                ),
                ColumnSpec("age", ColumnType.NUMBER, Sensitivity.QUASI_IDENTIFIER),
                ColumnSpec("income", ColumnType.NUMBER, Sensitivity.SENSITIVE),
                ColumnSpec("spend", ColumnType.NUMBER, Sensitivity.SENSITIVE),
                ColumnSpec("defaulted", ColumnType.BOOLEAN, Sensitivity.SENSITIVE),
            ],
        )

    # -- wiring ----------------------------------------------------------------------

    def client(self, key_dir: Path, **options: Any) -> Client:
        """An SDK client whose requests this exchange answers."""
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return Client(
            API_KEY,
            base_url=self.base_url,
            key_dir=key_dir,
            http_client=http,
            **options,
        )

    def bodies(self) -> list[bytes]:
        """Every request body received."""
        return [r.content for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request."""
        content = request.read()
        self.requests.append(
            Captured(
                request.method,
                request.url.path,
                request.url.params,
                request.headers,
                content,
            )
        )
        self._counter += 1
        rid = f"req-{self._counter:06d}"
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            response = fault(request) if callable(fault) else fault
            response.headers.setdefault("X-Request-Id", rid)
            return response
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            response = problem(401, "authentication_required", "unknown API key")
        else:
            response = self._route(request, content)
        response.headers["X-Request-Id"] = rid
        return response

    def _route(self, request: httpx.Request, content: bytes) -> httpx.Response:
        method, path = request.method, request.url.path
        routes: list[tuple[str, str, Callable[..., httpx.Response]]] = [
            ("GET", r"/v1/datasets/([^/]+)", self._get_dataset),
            ("GET", r"/v1/datasets/([^/]+)/versions", self._versions),
            ("GET", r"/v1/datasets/([^/]+)/budget", self._budget),
            ("GET", r"/v1/catalog/search", self._search),
            ("GET", r"/v1/nodes/([^/]+)", self._node),
            ("POST", r"/v1/blobs", self._post_blob),
            ("GET", r"/v1/blobs/([0-9a-f]{64})", self._get_blob),
            ("POST", r"/v1/he-contexts", self._post_context),
            ("POST", r"/v1/jobs", self._post_job),
            ("GET", r"/v1/jobs", self._list_jobs),
            ("GET", r"/v1/jobs/([^/]+)", self._get_job),
            ("POST", r"/v1/jobs/([^/]+)/approve", self._approve),
            ("POST", r"/v1/jobs/([^/]+)/deny", self._deny),
            ("GET", r"/v1/jobs/([^/]+)/receipt", self._receipt),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return handler(request, content, *match.groups())
        return problem(404, "not_found", f"no endpoint at {path}")

    # -- catalog ---------------------------------------------------------------------

    def _hit(self, i: int) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "title": f"Dataset {i}",
            "description": "Synthetic households.",
            "keywords": ["households"],
            "themes": ["economy"],
            "license": "CC-BY-4.0",
            "provider": {"id": str(self.org_id), "name": "Provider"},
            "computation_kinds": ["aggregate"],
            "pricing_kind": "per_query",
            "reference_price_minor": 100 * i,
            "currency": "EUR",
            "listed_at": "2025-01-01T00:00:00Z",
            "live_content_hash": None,
        }

    def dataset_json(self) -> dict[str, Any]:
        """The dataset as ``GET /v1/datasets/{id}`` shows it."""
        attestation = SignedAttestation.sign(
            Attestation(
                dataset_id=self.dataset_id,
                node_id=self.node_id,
                content_hash=self.content_hash,
                row_count=N_ROWS,
                columns=[],
                source_modified_at="2025-01-01T00:00:00Z",
                computed_at="2025-01-01T00:00:00Z",
                models=[
                    ModelInfo(name=MODEL, kind="linear", features=list(MODEL_FEATURES))
                ],
            ),
            self.node_key,
        )
        now = "2025-01-01T00:00:00Z"
        return {
            "id": str(self.dataset_id),
            "title": "Household spending",
            "description": "Synthetic households with spending.",
            "keywords": ["households"],
            "themes": ["economy"],
            "publisher": "Provider",
            "license": "CC-BY-4.0",
            "update_frequency": "monthly",
            "provider": {"id": str(self.org_id), "name": "Provider"},
            "columns": [
                {
                    "name": n,
                    "type": t,
                    "sensitivity": s.value,
                    "description": f"the {n}",
                    "nullable": False,
                    "unit": None,
                }
                for n, t, s in COLUMNS
            ],
            "policy": self.policy.model_dump(mode="json"),
            "policy_hash": self.policy.policy_hash(),
            "pricing_plan": {"kind": "per_query", "price_minor": 100},
            "reference_price_minor": 100,
            "currency": "EUR",
            "status": "listed",
            "status_reason": None,
            "live_version": {
                **self.version_json(),
                "attestation": {
                    "node_id": str(self.node_id),
                    "signature": attestation.signature,
                    "attestation": attestation.attestation.model_dump(mode="json"),
                    "verified": True,
                    "received_at": now,
                },
            },
            "created_at": now,
            "updated_at": now,
            "listed_at": now,
        }

    def version_json(self) -> dict[str, Any]:
        """The live version."""
        return {
            "id": str(self.version_id),
            "content_hash": self.content_hash,
            "schema_hash": "0" * 64,
            "row_count": N_ROWS,
            "byte_size": 12_345,
            "note": None,
            "created_at": "2025-01-01T00:00:00Z",
            "is_live": True,
        }

    def _known(self, raw: str) -> bool:
        return raw == str(self.dataset_id)

    def _get_dataset(self, _: httpx.Request, __: bytes, did: str) -> httpx.Response:
        if not self._known(did):
            return problem(404, "not_found", f"no dataset {did}")
        return httpx.Response(200, json=self.dataset_json())

    def _versions(self, _: httpx.Request, __: bytes, did: str) -> httpx.Response:
        if not self._known(did):
            return problem(404, "not_found", f"no dataset {did}")
        return httpx.Response(200, json=[self.version_json()])

    def _budget(self, _: httpx.Request, __: bytes, did: str) -> httpx.Response:
        if not self._known(did):
            return problem(404, "not_found", f"no dataset {did}")
        per, total = self.policy.budget_per_buyer, self.policy.budget_per_dataset

        def usage(buyer: uuid.UUID | None, eps: float, queries: int) -> dict[str, Any]:
            return {
                "dataset_id": did,
                "buyer_id": None if buyer is None else str(buyer),
                "epsilon_spent": eps,
                "delta_spent": 0.0,
                "epsilon_budget": (per if buyer else total).epsilon,
                "delta_budget": (per if buyer else total).delta,
                "queries": queries,
                "inference_rows": 0,
            }

        buyers = [usage(b, sum(s), len(s)) for b, s in self.spent.items()]
        all_spent = [e for s in self.spent.values() for e in s]
        return httpx.Response(
            200,
            json={
                "dataset_id": did,
                "budget_per_buyer": per.model_dump(),
                "budget_per_dataset": total.model_dump(),
                "total": usage(None, sum(all_spent), len(all_spent))
                if all_spent
                else None,
                "buyers": buyers,
            },
        )

    def _search(self, request: httpx.Request, _: bytes) -> httpx.Response:
        limit = int(request.url.params.get("limit", "20"))
        start = int(request.url.params.get("cursor") or 0)
        q = request.url.params.get("q")
        hits = [h for h in self.catalog if not q or q.lower() in h["title"].lower()]
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        want_facets = request.url.params.get("facets", "true") == "true"
        return httpx.Response(
            200,
            json={
                "items": page,
                "total": len(hits),
                "facets": {
                    "theme": [
                        {"value": "economy", "label": "Economy", "count": len(hits)}
                    ]
                }
                if want_facets
                else {},
                "sort": "relevance",
                "next_cursor": str(start + limit) if more else None,
            },
        )

    def _node(self, _: httpx.Request, __: bytes, nid: str) -> httpx.Response:
        if nid != str(self.node_id):
            return problem(404, "not_found", f"no node {nid}")
        return httpx.Response(
            200,
            json={
                "id": str(self.node_id),
                "organisation_id": str(self.org_id),
                "name": "node-1",
                "public_key": self.node_key.public_key_hex,
                "created_at": "2025-01-01T00:00:00Z",
                "last_seen_at": "2025-01-02T00:00:00Z",
                "datasets": [str(self.dataset_id)],
            },
        )

    # -- blobs and contexts ----------------------------------------------------------

    def _post_blob(self, request: httpx.Request, content: bytes) -> httpx.Response:
        if request.headers.get("Content-Type") != "application/octet-stream":
            return problem(415, "unsupported_media_type", "send octet-stream")
        if not content:
            return problem(422, "validation_failed", "empty blob")
        sha = hashlib.sha256(content).hexdigest()
        existed = sha in self.blobs
        self.blobs[sha] = content
        return httpx.Response(
            200 if existed else 201, json={"sha256": sha, "size": len(content)}
        )

    def _get_blob(self, _: httpx.Request, __: bytes, sha: str) -> httpx.Response:
        if sha not in self.blobs:
            return problem(404, "not_found", f"no blob {sha}")
        return httpx.Response(
            200,
            content=self.blobs[sha],
            headers={"Content-Type": "application/octet-stream"},
        )

    def _post_context(self, _: httpx.Request, content: bytes) -> httpx.Response:
        try:
            ctx = PublicContext.from_bytes(content, n_threads=1)
        except SecretKeyPresent:
            return problem(
                422, "secret_key_present", "the context carries a secret key"
            )
        except HEError as exc:
            return problem(422, "malformed_context", str(exc))
        existed = ctx.context_id in self.contexts
        self.contexts[ctx.context_id] = content
        return httpx.Response(
            200 if existed else 201,
            json={
                "context_id": ctx.context_id,
                "size": len(content),
                "has_galois_keys": ctx.has_galois_keys,
                "params": {
                    "poly_modulus_degree": ctx.params.poly_modulus_degree,
                    "coeff_mod_bit_sizes": list(ctx.params.coeff_mod_bit_sizes),
                    "scale_bits": ctx.params.scale_bits,
                },
            },
        )

    # -- jobs ------------------------------------------------------------------------

    def _post_job(self, request: httpx.Request, content: bytes) -> httpx.Response:
        if not request.headers.get("Idempotency-Key"):
            return problem(400, "bad_request", "this fake wants an Idempotency-Key")
        try:
            body = JobCreate.model_validate_json(content)
        except ValidationError as exc:
            errors = [
                {
                    "field": ".".join(str(p) for p in e["loc"]) or "body",
                    "message": e["msg"],
                    "code": e["type"],
                }
                for e in exc.errors()
            ]
            return problem(
                422, "validation_failed", errors[0]["message"], errors=errors
            )
        if body.dataset_id != self.dataset_id:
            return problem(404, "not_found", f"no dataset {body.dataset_id}")
        if body.kind.value not in self.policy.permitted_kinds:
            return problem(
                422,
                "kind_not_permitted",
                f"{body.kind.value} is not permitted",
                errors=[{"field": "kind", "reason": "not permitted by the policy"}],
            )
        for name, sha in body.inputs.items():
            if sha not in self.blobs:
                return problem(
                    422,
                    "unknown_blob",
                    f"inputs.{name}: no such blob",
                    errors=[{"field": f"inputs.{name}", "reason": "no such blob"}],
                )
        if body.context_id is not None and (
            body.context_id not in self.contexts or self.forget_contexts
        ):
            self.forget_contexts = False
            self.contexts.pop(body.context_id, None)
            return problem(
                422,
                "unknown_context",
                "context_id: no such HE context",
                errors=[{"field": "context_id", "reason": "no such HE context"}],
            )
        now = datetime.now(UTC).replace(microsecond=0)
        job = {
            "id": str(uuid.uuid4()),
            "dataset_id": str(self.dataset_id),
            "dataset_version_id": str(self.version_id),
            "buyer_id": str(self.buyer_id),
            "node_id": None,
            "kind": body.kind.value,
            "purpose": body.purpose,
            "params": body.params,
            "inputs": body.inputs,
            "context_id": body.context_id,
            "state": "awaiting_approval" if self.policy.human_approval else "queued",
            "reason_code": None,
            "reason": None,
            "approved_by": None,
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "deadline": (now + timedelta(seconds=body.timeout_seconds)).isoformat(),
            "output": None,
            "output_blobs": {},
            "privacy_loss": None,
            "receipt": None,
        }
        self.jobs[uuid.UUID(job["id"])] = job
        return httpx.Response(201, json=job)

    def _job(self, jid: str) -> dict[str, Any] | None:
        try:
            return self.jobs.get(uuid.UUID(jid))
        except ValueError:
            return None

    def _list_jobs(self, request: httpx.Request, _: bytes) -> httpx.Response:
        states = request.url.params.get_list("state")
        limit = int(request.url.params.get("limit", "2"))
        start = int(request.url.params.get("cursor") or 0)
        jobs = [j for j in reversed(self.jobs.values())]
        if states:
            jobs = [j for j in jobs if j["state"] in states]
        page = jobs[start : start + limit]
        more = start + limit < len(jobs)
        return httpx.Response(
            200,
            json={"items": page, "next_cursor": str(start + limit) if more else None},
        )

    def _get_job(self, _: httpx.Request, __: bytes, jid: str) -> httpx.Response:
        job = self._job(jid)
        if job is None:
            return problem(404, "not_found", f"no job {jid}")
        self._advance(job)
        return httpx.Response(200, json=job)

    def _approve(self, _: httpx.Request, content: bytes, jid: str) -> httpx.Response:
        job = self._job(jid)
        if job is None:
            return problem(404, "not_found", f"no job {jid}")
        if job["state"] != "awaiting_approval":
            return problem(409, "invalid_transition", f"the job is {job['state']}")
        job.update(state="queued", approved_by="provider@example.com")
        return httpx.Response(200, json=job)

    def _deny(self, _: httpx.Request, content: bytes, jid: str) -> httpx.Response:
        job = self._job(jid)
        if job is None:
            return problem(404, "not_found", f"no job {jid}")
        if job["state"] != "awaiting_approval":
            return problem(409, "invalid_transition", f"the job is {job['state']}")
        reason = json.loads(content)["reason"]
        job.update(state="rejected", reason_code="denied", reason=reason)
        return httpx.Response(200, json=job)

    def _receipt(self, _: httpx.Request, __: bytes, jid: str) -> httpx.Response:
        job = self._job(jid)
        if job is None or job["receipt"] is None:
            return problem(404, "not_found", f"job {jid} has no receipt")
        return httpx.Response(
            200,
            json={
                "receipt": job["receipt"],
                "node_id": str(self.node_id),
                "node_public_key": self.node_key.public_key_hex,
                "verified": True,
            },
        )

    # -- the node --------------------------------------------------------------------

    def _advance(self, job: dict[str, Any]) -> None:
        """One step of the job's life per read: the node pulls, starts, finishes."""
        state = job["state"]
        if state == "queued":
            job.update(state="dispatched", node_id=str(self.node_id))
        elif state == "dispatched":
            job.update(state="running")
        elif state == "running":
            self._run(job)

    def _run(self, job: dict[str, Any]) -> None:
        if self.fail_kind is not None:
            code, reason = self.fail_kind
            job.update(state="rejected", reason_code=code, reason=reason)
            return
        kind = JobKind(job["kind"])
        try:
            if kind is JobKind.AGGREGATE:
                output, blobs, loss = self._aggregate(job)
            elif kind is JobKind.ENCRYPTED_MODEL_EVAL:
                output, blobs, loss = self._model_eval(job)
            else:
                output, blobs, loss = self._inference(job)
        except (AggregateError, HEError) as exc:
            job.update(state="rejected", reason_code="invalid_input", reason=str(exc))
            return
        receipt = Receipt(
            job_id=uuid.UUID(job["id"]),
            node_id=self.node_id,
            dataset_id=self.dataset_id,
            dataset_version_hash=self.content_hash,
            policy_hash=self.policy.policy_hash(),
            kind=kind,
            params_hash=params_hash(job["params"]),
            inputs_hash=inputs_hash(job["inputs"], job["context_id"]),
            privacy_loss=loss,
            replayed=False,
            output_hash=output_hash(output, blobs),
            issued_at=iso_utc(utc_now()),
        )
        signer = NodeKey.generate() if self.tamper == "foreign_key" else self.node_key
        signed = SignedReceipt.sign(receipt, signer).model_dump(mode="json")
        if self.tamper == "signature":
            sig = signed["signature"]
            signed["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
        if self.tamper == "output":
            output = {**output, "tampered": True}
        if self.tamper == "params":
            job["params"] = {**job["params"], "extra": 1}
        self.spent.setdefault(self.buyer_id, []).append(loss.epsilon)
        job.update(
            state="succeeded",
            output=output,
            output_blobs=blobs,
            privacy_loss=loss.model_dump(),
            receipt=signed,
        )

    def _context(self, job: dict[str, Any]) -> PublicContext:
        return PublicContext.from_bytes(self.contexts[job["context_id"]], n_threads=1)

    def _put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def _aggregate(
        self, job: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str], Loss]:
        request = AggregateParams.model_validate(job["params"])
        result = run_aggregate(request, self.table, self.policy)
        output = result.as_dict()
        loss = Loss(**result.privacy_loss.as_dict())
        if not request.encrypt_result:
            return output, {}, loss
        skeleton, values = flatten_aggregate(output)
        ctx = self._context(job)
        vec = wrap_vector(ctx, ctx._native.encrypt(np.asarray(values)))
        std = flooding_std(ctx.params, operand_norm=1.0, rotations=False)
        out = rerandomize(vec, keep=None, flood_std=std)
        return (
            {**skeleton, "encrypted": True},
            {"values": self._put(out.to_bytes())},
            loss,
        )

    def _model_eval(
        self, job: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str], Loss]:
        from mpc_engine.he import evaluate_model

        params = job["params"]
        features, label = params["features"], params["label"]
        types = {n: t for n, t, _ in COLUMNS}
        bounds = model_eval_bounds(self.policy, types, features, label)
        x = np.column_stack([self.data[f].astype(np.float64) for f in features])
        y = self.data[label].astype(np.float64)
        gram = gram_matrix(x, y, bounds)
        ctx = self._context(job)
        model = EncryptedModel.from_bytes(
            ctx,
            kind=params["model_kind"],
            n_features=len(features),
            outer=self.blobs[job["inputs"]["outer"]],
            linear=self.blobs[job["inputs"]["linear"]],
        )
        metrics = evaluate_model(ctx, gram, model)
        output = {
            "model_kind": params["model_kind"],
            "n_features": len(features),
            "label_bounds": list(metrics.label_bounds),
            "noise_std": list(metrics.noise_std),
            "gram_privacy_loss": {"epsilon": 0.0, "delta": 0.0},
        }
        blobs = {
            "loss": self._put(metrics.loss.to_bytes()),
            "mean_score": self._put(metrics.mean_score.to_bytes()),
        }
        return output, blobs, Loss(epsilon=0.0, delta=0.0)

    def _inference(
        self, job: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str], Loss]:
        params = job["params"]
        ctx = self._context(job)
        columns = EncryptedColumns.from_bytes(
            ctx, unpack_bundle(self.blobs[job["inputs"]["columns"]])
        )
        if columns.n_rows != params["n_rows"]:
            raise AggregateError("n_rows does not match the uploaded rows")
        scores = score_linear(ctx, columns, MODEL_WEIGHTS, MODEL_BIAS)
        bundle = pack_bundle([[vec.to_bytes() for vec in scores.batches]])
        output = {
            "model": params["model"],
            "n_rows": scores.n_rows,
            "noise_std": scores.noise_std,
        }
        return output, {"scores": self._put(bundle)}, Loss(epsilon=0.0, delta=0.0)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An RFC 9457 problem response like the exchange's."""
    body: dict[str, Any] = {
        "type": "https://veilx.dev/problems/" + code.replace("_", "-"),
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )
