"""Resource namespaces: datasets, nodes, blobs, jobs and receipts.

Each namespace is a thin, typed view of one part of the HTTP API
(``docs/protocol.md``); they share the client's :class:`sdk._http.HTTP`.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ledger import keccak256, receipt_leaf, verify_proof
from mpc_engine.protocol import (
    JobCreate,
    JobKind,
    JobState,
    inputs_hash,
    output_hash,
    params_hash,
    verify_signature,
)
from sdk._http import HTTP, Query
from sdk.errors import (
    InputError,
    ReceiptVerificationError,
    ResultError,
    ServerError,
    WaitTimeoutError,
)
from sdk.types import (
    BlobRef,
    Budget,
    Dataset,
    DatasetVersion,
    FacetCount,
    Job,
    JobProgress,
    Node,
    Page,
    ReceiptInfo,
    ReceiptProof,
    SearchHit,
    VerifiedInclusion,
    VerifiedReceipt,
)

__all__ = [
    "Blobs",
    "Datasets",
    "Jobs",
    "Nodes",
    "ProgressCallback",
    "Receipts",
    "as_uuid",
    "input_error",
]

M = TypeVar("M", bound=BaseModel)
ProgressCallback = Callable[[JobProgress], None]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAMED = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.DOTALL)


def as_uuid(value: uuid.UUID | str, field: str) -> uuid.UUID:
    """``value`` as a UUID, or :class:`InputError` naming ``field``."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InputError(field, f"{value!r} is not a UUID") from None


def input_error(exc: ValidationError, prefix: str = "") -> InputError:
    """The first error of a pydantic ``ValidationError`` as an :class:`InputError`."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    named = _NAMED.match(message)
    if named and not loc:
        # A model-level rule that names its field first: "columns: required …".
        loc, message = named.group(1), named.group(2)
    elif named and not message.startswith(f"{loc}: "):
        # The same, nested: a rule of ``params`` naming ``params.columns``.
        loc, message = f"{loc}.{named.group(1)}", named.group(2)
    elif loc and message.startswith(f"{loc}: "):
        message = message.removeprefix(f"{loc}: ")
    field = ".".join(p for p in (prefix, loc) if p) or "request"
    return InputError(field, message)


def _parse(model: type[M], data: Any, what: str) -> M:
    """Validate a response body; a malformed one is the exchange's fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ServerError(
            f"the exchange returned a malformed {what}: {loc}: {first.get('msg')}",
            http_status=200,
            code="invalid_response",
        ) from None


def _parse_list(model: type[M], data: Any, what: str) -> builtins.list[M]:
    if not isinstance(data, list):
        raise ServerError(
            f"the exchange returned a {what} list that is not a JSON array",
            http_status=200,
            code="invalid_response",
        )
    return [_parse(model, item, what) for item in data]


class Datasets:
    """Dataset listings: read, search the catalog, versions, privacy budget."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def get(self, dataset_id: uuid.UUID | str) -> Dataset:
        """Return a dataset listing (``GET /v1/datasets/{id}``).

        Parameters
        ----------
        dataset_id
            The dataset's id.

        Returns
        -------
        Dataset
            Its metadata, schema, rights policy and live version.
        """
        did = as_uuid(dataset_id, "dataset_id")
        return _parse(Dataset, self._http.json("GET", f"/datasets/{did}"), "dataset")

    def versions(self, dataset_id: uuid.UUID | str) -> builtins.list[DatasetVersion]:
        """List a dataset's content versions (``GET /v1/datasets/{id}/versions``)."""
        did = as_uuid(dataset_id, "dataset_id")
        data = self._http.json("GET", f"/datasets/{did}/versions")
        return _parse_list(DatasetVersion, data, "dataset version")

    def budget(self, dataset_id: uuid.UUID | str) -> Budget:
        """Return the dataset's privacy-budget use (``GET /v1/datasets/{id}/budget``).

        A buyer sees its own row; the provider, operator and regulator see all.
        """
        did = as_uuid(dataset_id, "dataset_id")
        return _parse(
            Budget, self._http.json("GET", f"/datasets/{did}/budget"), "budget"
        )

    def search(
        self,
        q: str | None = None,
        *,
        theme: Sequence[str] = (),
        license: Sequence[str] = (),
        kind: Sequence[str] = (),
        provider: Sequence[str] = (),
        price: Sequence[str] = (),
        currency: Sequence[str] = (),
        price_min: int | None = None,
        price_max: int | None = None,
        sort: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        facets: bool = True,
    ) -> Page[SearchHit]:
        """Search the catalog (``GET /v1/catalog/search``).

        Parameters
        ----------
        q
            Words to find.
        theme, license, kind, provider, price, currency
            Facet filters (any of the values).
        price_min, price_max
            Reference price range, in minor units.
        sort
            ``relevance``, ``newest``, ``price_asc``, ``price_desc`` or ``title``.
        limit
            Hits per page, 1 to 100.
        cursor
            A ``next_cursor`` from a previous page.
        facets
            Whether to return facet counts (first page only when auto-paging).

        Returns
        -------
        Page[SearchHit]
            One page; ``auto_paging_iter()`` walks all of them.
        """
        if not 1 <= limit <= 100:
            raise InputError("limit", "must be 1 to 100")
        base: dict[str, Any] = {
            "q": q,
            "theme": list(theme),
            "license": list(license),
            "kind": list(kind),
            "provider": list(provider),
            "price": list(price),
            "currency": list(currency),
            "price_min": price_min,
            "price_max": price_max,
            "sort": sort,
            "limit": limit,
        }

        def fetch(page_cursor: str | None, with_facets: bool) -> Page[SearchHit]:
            params: Query = {**base, "cursor": page_cursor, "facets": with_facets}
            data = self._http.json("GET", "/catalog/search", params=params)
            if not isinstance(data, dict):
                raise ServerError(
                    "the exchange returned a search page that is not an object",
                    http_status=200,
                    code="invalid_response",
                )
            facet_counts = {
                str(name): _parse_list(FacetCount, values, "facet count")
                for name, values in (data.get("facets") or {}).items()
            }
            total = data.get("total")
            return Page(
                _parse_list(SearchHit, data.get("items"), "search hit"),
                data.get("next_cursor"),
                lambda c: fetch(c, False),
                total=int(total) if isinstance(total, int) else None,
                facets=facet_counts,
            )

        return fetch(cursor, facets)


class Nodes:
    """Data nodes: the registry of node signing keys."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def get(self, node_id: uuid.UUID | str) -> Node:
        """Return a node and its public key (``GET /v1/nodes/{id}``)."""
        nid = as_uuid(node_id, "node_id")
        return _parse(Node, self._http.json("GET", f"/nodes/{nid}"), "node")

    def list(self) -> builtins.list[Node]:
        """List nodes (the provider's own; all for the operator and regulator)."""
        return _parse_list(Node, self._http.json("GET", "/nodes"), "node")


class Blobs:
    """Content-addressed blobs: ciphertexts going to and coming from nodes."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def upload(self, data: bytes) -> BlobRef:
        """Upload bytes (``POST /v1/blobs``); a blob already there is not re-stored.

        Returns
        -------
        BlobRef
            Its SHA-256 (checked against the local hash) and size.
        """
        if not isinstance(data, bytes | bytearray | memoryview) or not len(data):
            raise InputError("data", "must be non-empty bytes")
        body = bytes(data)
        ref = _parse(
            BlobRef, self._http.json("POST", "/blobs", content=body), "blob reference"
        )
        local = hashlib.sha256(body).hexdigest()
        if ref.sha256 != local or ref.size != len(body):
            raise ResultError(
                "blob.sha256",
                f"the exchange stored {ref.sha256[:16]}… ({ref.size} bytes) for an "
                f"upload of {local[:16]}… ({len(body)} bytes)",
            )
        return ref

    def download(self, sha256: str) -> bytes:
        """Download a blob (``GET /v1/blobs/{sha256}``) and check its hash."""
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise InputError("sha256", "must be 64 lower-case hex characters")
        data = self._http.request(
            "GET", f"/blobs/{sha256}", headers={"Accept": "application/octet-stream"}
        ).content
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise ResultError(
                f"blob {sha256[:16]}…",
                f"the downloaded bytes hash to {got[:16]}…; refusing to use them",
            )
        return data


class Jobs:
    """Computation jobs: submit, read, list, approve or deny, wait."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def create(
        self,
        dataset_id: uuid.UUID | str,
        *,
        kind: JobKind | str,
        purpose: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str] | None = None,
        context_id: str | None = None,
        timeout_seconds: int = 900,
        entitlement_id: uuid.UUID | str | None = None,
    ) -> Job:
        """Submit a job (``POST /v1/jobs``); validated locally first.

        Parameters
        ----------
        dataset_id
            The dataset to compute on.
        kind
            ``aggregate``, ``encrypted_model_eval`` or ``encrypted_inference``.
        purpose
            The purpose token, one the dataset's policy permits.
        params
            The kind's parameters (``AggregateParams``, ``ModelEvalParams``,
            ``InferenceParams``).
        inputs
            Input name → SHA-256 of an uploaded blob.
        context_id
            The HE context the inputs are encrypted under / the result is for.
        timeout_seconds
            The job's deadline, counted from submission.
        entitlement_id
            The entitlement to charge (default: your active one on the dataset
            that expires first).

        Returns
        -------
        Job
            ``queued``, or ``awaiting_approval`` when the policy asks for it.

        Raises
        ------
        InputError
            The request breaks the protocol's rules (names the field).
        ResultError
            The exchange recorded the job with other parameters than were sent
            (a receipt would then prove the wrong computation).
        """
        try:
            body = JobCreate(
                dataset_id=as_uuid(dataset_id, "dataset_id"),
                kind=JobKind(kind),
                purpose=purpose,
                params=dict(params),
                inputs=dict(inputs or {}),
                context_id=context_id,
                timeout_seconds=timeout_seconds,
            )
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise input_error(exc) from None
            raise InputError("kind", str(exc)) from None
        sent = body.model_dump(mode="json")
        payload = dict(sent)
        if entitlement_id is not None:
            payload["entitlement_id"] = str(as_uuid(entitlement_id, "entitlement_id"))
        job = _parse(Job, self._http.json("POST", "/jobs", json=payload), "job")
        for field, recorded, wanted in (
            ("dataset_id", job.dataset_id, body.dataset_id),
            ("kind", job.kind, body.kind),
            ("purpose", job.purpose, body.purpose),
            ("params", job.params, sent["params"]),
            ("inputs", job.inputs, body.inputs),
            ("context_id", job.context_id, body.context_id),
        ):
            if recorded != wanted:
                raise ResultError(
                    field,
                    f"the exchange recorded job {job.id} with other {field} than "
                    "were submitted; not using it",
                )
        return job

    def get(self, job_id: uuid.UUID | str) -> Job:
        """Return a job (``GET /v1/jobs/{id}``)."""
        jid = as_uuid(job_id, "job_id")
        return _parse(Job, self._http.json("GET", f"/jobs/{jid}"), "job")

    def list(
        self,
        *,
        state: JobState | str | Sequence[JobState | str] | None = None,
        dataset_id: uuid.UUID | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """List jobs the caller may see (``GET /v1/jobs``), newest first.

        Parameters
        ----------
        state
            Only jobs in this state (or any of these states).
        dataset_id
            Only jobs on this dataset.
        limit
            Jobs per page (the exchange's default when omitted).
        cursor
            A ``next_cursor`` from a previous page.
        """
        states: builtins.list[str] = []
        if state is not None:
            raw = [state] if isinstance(state, str) else builtins.list(state)
            for s in raw:
                try:
                    states.append(JobState(s).value)
                except ValueError:
                    allowed = ", ".join(x.value for x in JobState)
                    raise InputError(
                        "state", f"{s!r} is not one of {allowed}"
                    ) from None
        did = None if dataset_id is None else str(as_uuid(dataset_id, "dataset_id"))
        if limit is not None and limit < 1:
            raise InputError("limit", "must be at least 1")

        def fetch(page_cursor: str | None) -> Page[Job]:
            params: Query = {
                "state": states,
                "dataset_id": did,
                "limit": limit,
                "cursor": page_cursor,
            }
            data = self._http.json("GET", "/jobs", params=params)
            if not isinstance(data, dict):
                raise ServerError(
                    "the exchange returned a job page that is not an object",
                    http_status=200,
                    code="invalid_response",
                )
            return Page(
                _parse_list(Job, data.get("items"), "job"),
                data.get("next_cursor"),
                fetch,
            )

        return fetch(cursor)

    def approve(self, job_id: uuid.UUID | str, *, note: str | None = None) -> Job:
        """Approve a job awaiting approval (the dataset's provider only)."""
        jid = as_uuid(job_id, "job_id")
        body = {} if note is None else {"note": note}
        return _parse(
            Job, self._http.json("POST", f"/jobs/{jid}/approve", json=body), "job"
        )

    def deny(self, job_id: uuid.UUID | str, *, reason: str) -> Job:
        """Deny a job awaiting approval (the dataset's provider only)."""
        jid = as_uuid(job_id, "job_id")
        if not isinstance(reason, str) or not reason.strip():
            raise InputError("reason", "is required: say why the job is denied")
        data = self._http.json("POST", f"/jobs/{jid}/deny", json={"reason": reason})
        return _parse(Job, data, "job")

    def wait(
        self,
        job_id: uuid.UUID | str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> Job:
        """Poll a job until it is final (succeeded, failed, rejected or expired).

        Parameters
        ----------
        job_id
            The job.
        timeout
            Seconds to wait at most (``None``: until the job is final; the
            exchange ends every job by its deadline).
        poll_interval
            Seconds between polls.
        progress
            Called after every poll with a :class:`JobProgress` (state, whether
            it changed, elapsed seconds).

        Returns
        -------
        Job
            The job in its final state, whatever that state is.

        Raises
        ------
        WaitTimeoutError
            ``timeout`` passed first.
        """
        jid = as_uuid(job_id, "job_id")
        if poll_interval < 0:
            raise InputError("poll_interval", "must be ≥ 0 seconds")
        if timeout is not None and timeout < 0:
            raise InputError("timeout", "must be ≥ 0 seconds")
        start = time.monotonic()
        previous: JobState | None = None
        while True:
            job = self.get(jid)
            elapsed = time.monotonic() - start
            if progress is not None:
                progress(JobProgress(job, previous, elapsed, job.state != previous))
            previous = job.state
            if job.terminal:
                return job
            if timeout is not None and elapsed >= timeout:
                raise WaitTimeoutError(jid, job.state.value, elapsed)
            pause = poll_interval
            if timeout is not None:
                pause = min(pause, max(0.0, timeout - elapsed))
            time.sleep(pause)


class Receipts:
    """Receipts: the node's signed statement of what it computed."""

    def __init__(
        self, http: HTTP, jobs: Jobs, nodes: Nodes, datasets: Datasets
    ) -> None:
        self._http = http
        self._jobs = jobs
        self._nodes = nodes
        self._datasets = datasets

    def get(self, job_id: uuid.UUID | str) -> ReceiptInfo:
        """Return a succeeded job's receipt (``GET /v1/jobs/{id}/receipt``).

        The exchange's ``verified`` flag is its own claim; use :meth:`verify`.
        """
        jid = as_uuid(job_id, "job_id")
        data = self._http.json("GET", f"/jobs/{jid}/receipt")
        return _parse(ReceiptInfo, data, "receipt")

    def verify(self, job: Job | uuid.UUID | str) -> VerifiedReceipt:
        """Check a job's receipt independently of the exchange's word.

        Checks, in order: the job succeeded and names its node; the receipt's
        ``job_id``, ``node_id``, ``dataset_id`` and ``kind`` are the job's; the
        signature verifies under the node's key **from the node registry**
        (``GET /v1/nodes/{id}``), not the key the receipt endpoint shows; the
        ``params_hash``, ``inputs_hash`` and ``output_hash`` are the hashes of the
        job's params, inputs (with its context) and released output (with its
        result blobs); ``dataset_version_hash`` is the content hash of the job's
        dataset version; the privacy loss is the one the job reports. The
        ``policy_hash`` is the one the job was bound to at submission (the
        listing's current policy may have changed since).

        Parameters
        ----------
        job
            The job (as fetched), or its id.

        Returns
        -------
        VerifiedReceipt
            The receipt, its signature and the node key it verified under.

        Raises
        ------
        ReceiptVerificationError
            Naming the first field that does not check out.
        """
        if not isinstance(job, Job):
            job = self._jobs.get(job)
        jid = job.id

        def bad(field: str, reason: str) -> ReceiptVerificationError:
            return ReceiptVerificationError(field, reason, job_id=jid)

        if job.state is not JobState.SUCCEEDED:
            raise bad("state", f"the job is {job.state.value}; only a result has one")
        if job.node_id is None:
            raise bad("node_id", "the job names no node")
        signed = job.receipt if job.receipt is not None else self.get(jid).receipt
        receipt = signed.receipt
        for field, got, want in (
            ("job_id", receipt.job_id, job.id),
            ("node_id", receipt.node_id, job.node_id),
            ("dataset_id", receipt.dataset_id, job.dataset_id),
            ("kind", receipt.kind, job.kind),
            (
                "policy_hash",
                receipt.policy_hash,
                job.policy_hash or receipt.policy_hash,
            ),
            (
                "dataset_version_hash",
                receipt.dataset_version_hash,
                job.content_hash or receipt.dataset_version_hash,
            ),
        ):
            if got != want:
                raise bad(field, f"is {got}, the job's is {want}")
        node = self._nodes.get(job.node_id)
        if not verify_signature(
            node.public_key, receipt.signed_bytes(), signed.signature
        ):
            raise bad(
                "signature",
                f"does not verify under the registered key of node {node.id}",
            )
        for name, claimed, actual in (
            ("params_hash", receipt.params_hash, params_hash(job.params)),
            (
                "inputs_hash",
                receipt.inputs_hash,
                inputs_hash(job.inputs, job.context_id),
            ),
            (
                "output_hash",
                receipt.output_hash,
                output_hash(job.output, job.output_blobs),
            ),
        ):
            if claimed != actual:
                raise bad(
                    name,
                    f"the receipt says {claimed[:16]}…, the job's {name.split('_')[0]} "
                    f"hash to {actual[:16]}…",
                )
        if job.dataset_version_id is None:
            raise bad("dataset_version_hash", "the job names no dataset version")
        versions = {v.id: v for v in self._datasets.versions(job.dataset_id)}
        version = versions.get(job.dataset_version_id)
        if version is None:
            raise bad(
                "dataset_version_hash",
                f"version {job.dataset_version_id} is not a version of the dataset",
            )
        if version.content_hash != receipt.dataset_version_hash:
            raise bad(
                "dataset_version_hash",
                f"the receipt says {receipt.dataset_version_hash[:16]}…, the "
                f"version's content hash is {version.content_hash[:16]}…",
            )
        if job.privacy_loss is not None and job.privacy_loss != receipt.privacy_loss:
            raise bad(
                "privacy_loss",
                f"the receipt records ε={receipt.privacy_loss.epsilon:g}, "
                f"δ={receipt.privacy_loss.delta:g}; the job reports "
                f"ε={job.privacy_loss.epsilon:g}, δ={job.privacy_loss.delta:g}",
            )
        return VerifiedReceipt(
            receipt=receipt,
            signature=signed.signature,
            node_id=node.id,
            node_public_key=node.public_key,
        )

    def proof(self, job_id: uuid.UUID | str) -> ReceiptProof:
        """Return a receipt's inclusion proof (``GET /v1/receipts/{id}/proof``).

        Raises :class:`sdk.errors.ConflictError` (code ``receipt_not_anchored``)
        until the exchange's relay has anchored the receipt's batch.
        """
        jid = as_uuid(job_id, "job_id")
        data = self._http.json("GET", f"/receipts/{jid}/proof")
        return _parse(ReceiptProof, data, "receipt proof")

    def verify_inclusion(
        self, job: Job | uuid.UUID | str, *, rpc_url: str | None = None
    ) -> VerifiedInclusion:
        """Prove that a job's receipt is anchored on chain, trusting only the chain.

        Checks: the leaf is the hash of the receipt this client holds; the proof
        folds from that leaf to the claimed root; the chain answers with the
        claimed chain id; and the anchor contract's ``rootOf(batch_id)`` **on
        chain** is that root.

        Parameters
        ----------
        job
            The job (as fetched), or its id.
        rpc_url
            A JSON-RPC node of the ledger's chain to ask (your own). Without it,
            the exchange's read-only ``POST /v1/ledger/rpc`` is asked, which is
            the only way to reach the embedded chain.

        Raises
        ------
        ReceiptVerificationError
            Naming the first part (``leaf``, ``proof``, ``chain_id``, ``root``)
            that does not check out.
        """
        if not isinstance(job, Job):
            job = self._jobs.get(job)
        jid = job.id

        def bad(field: str, reason: str) -> ReceiptVerificationError:
            return ReceiptVerificationError(field, reason, job_id=jid)

        signed = job.receipt if job.receipt is not None else self.get(jid).receipt
        proof = self.proof(jid)
        leaf = receipt_leaf(signed)
        if "0x" + leaf.hex() != proof.leaf:
            raise bad("leaf", "the proof's leaf is not the hash of this receipt")
        try:
            path = [bytes.fromhex(p.removeprefix("0x")) for p in proof.proof]
            root = bytes.fromhex(proof.root.removeprefix("0x"))
            folds = verify_proof(leaf, path, root)
        except ValueError as exc:
            raise bad("proof", f"is malformed: {exc}") from None
        if not folds:
            raise bad("proof", "does not fold from the receipt's leaf to the root")
        call = self._rpc_caller(rpc_url, bad)
        chain_id = _as_int(call("eth_chainId", []))
        if chain_id != proof.anchor.chain_id:
            raise bad(
                "chain_id",
                f"the node serves chain {chain_id}, the proof names "
                f"{proof.anchor.chain_id}",
            )
        data = (
            "0x"
            + (
                keccak256(b"rootOf(uint64)")[:4]
                + proof.anchor.batch_id.to_bytes(32, "big")
            ).hex()
        )
        answer = call(
            "eth_call", [{"to": proof.anchor.contract, "data": data}, "latest"]
        )
        chain_root = "0x" + bytes.fromhex(str(answer).removeprefix("0x"))[-32:].hex()
        if chain_root != proof.root:
            raise bad(
                "root",
                f"the anchor contract holds {chain_root} for batch "
                f"{proof.anchor.batch_id}, not the proof's root {proof.root}",
            )
        return VerifiedInclusion(proof=proof, chain_root=chain_root)

    def _rpc_caller(
        self,
        rpc_url: str | None,
        bad: Callable[[str, str], ReceiptVerificationError],
    ) -> Callable[[str, list[Any]], Any]:
        """A function that sends one JSON-RPC call and returns its result."""
        counter = itertools.count(1)

        def call(method: str, params: list[Any]) -> Any:
            body = {"jsonrpc": "2.0", "id": next(counter), "method": method}
            body["params"] = params
            if rpc_url is None:
                answer = self._http.json("POST", "/ledger/rpc", json=body)
            else:
                answer = httpx.post(rpc_url, json=body, timeout=30).json()
            if not isinstance(answer, dict) or "result" not in answer:
                raise bad("chain", f"{method} failed: {answer!r}"[:300])
            return answer["result"]

        return call


def _as_int(value: Any) -> int:
    """A JSON-RPC quantity: a hex string (as nodes send it) or an integer."""
    if isinstance(value, int):
        return value
    return int(str(value), 16)
