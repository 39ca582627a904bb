"""Jobs end to end across real processes: exchange, worker and data node.

``veilx serve --workers 2``, ``veilx worker`` and ``veilx node serve`` run as
separate OS processes on PostgreSQL and Redis; this test process drives them
with the Python SDK and plays both parties: the buyer (SDK calls, local HE keys)
and the provider (approvals, and the plaintext CSVs it uses to check every
answer against numpy).

One test walks through, in order:

1. the node registers and attests; the listing shows a verified attestation;
2. a DP group-by aggregate (smart meter, no approval) with a verified receipt;
   the identical question replays (``replayed``, ε = 0) with an equal answer;
3. an encrypted model evaluation and an encrypted inference (credit card,
   human approval given through the SDK) matching plaintext numpy;
4. restart safety: the node is SIGKILLed, a job is submitted while it is
   down, the node restarts from the same config and state with the same node
   id, runs that job and a new one, and never runs a job twice;
5. with no node serving, the worker expires a job whose deadline passed
   (``expired``, ``not_picked_up``);
6. the buyer's budget (``GET /v1/datasets/{id}/budget``) accounts every job.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import redis

from marketplace.db import Database
from marketplace.demo_compute import (
    CREDIT_FEATURES,
    fit_logistic,
    read_columns,
    write_node_config,
)
from marketplace.models import Role
from marketplace.samples import SampleDataset, load_catalog, write_csv
from mpc_engine.he import Gram, GramBounds, ModelKind, augmented_weights, sensitivity
from mpc_engine.protocol import JobState, SignedAttestation, model_eval_bounds
from sdk import AggregateResult, Client, InferenceResult, Job, ModelEvalResult
from tests.conftest import TEST_SECRET
from tests.factories import Party, buy_entitlement, create_random_org
from tests.ledger._hardhat import HARDHAT_KEY, deploy_fresh

pytestmark = pytest.mark.integration

VEILX = Path(sys.executable).parent / "veilx"
START_TIMEOUT = 60.0
JOB_TIMEOUT = 90.0
NODE_LINE = re.compile(r"veilx node ([0-9a-f-]{36}) serving (\d+) dataset")
PROVIDER = "northwind"  # the smart-meter and credit-card samples are both its
METER_TITLE = "Household smart-meter"
CREDIT_TITLE = "Co-branded credit card"
METER_PURPOSE = "energy-efficiency-research"
CREDIT_PURPOSE = "credit-risk-model-validation"
EVAL_FEATURES = ["utilisation_ratio", "late_payments_12m", "cash_advance_share"]
EVAL_LABEL = "defaulted_next_6m"
INFERENCE_ROWS = 64


# -- processes ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One ``veilx`` command as a process group of its own, logging to a file.

    Every (re)start appends to the same log file, with a marker line, so a
    failure report shows the whole history of the service.
    """

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> int:
        """Start the process; return the log offset its output begins at."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        with self.log.open("ab") as fh:
            fh.write(f"---- {self.name} start #{self.starts} ----\n".encode())
            offset = fh.tell()
            self.proc = subprocess.Popen(  # noqa: S603 - our own console script
                [str(VEILX), *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return offset

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def output(self, offset: int = 0) -> str:
        """The log from ``offset`` on."""
        with self.log.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        """The end of the log."""
        text = self.output() if self.log.exists() else ""
        return text[-chars:]

    def wait_for(self, pattern: re.Pattern[str], offset: int) -> re.Match[str]:
        """Wait until the log (from ``offset``) matches ``pattern``."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = pattern.search(self.output(offset))
            if found is not None:
                return found
            if not self.running:
                pytest.fail(f"{self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {pattern.pattern!r}:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the process group, SIGKILL it after ``timeout``; the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # Children of a group leader that exited first (uvicorn's workers).
        _signal_group(self.proc.pid, signal.SIGKILL)
        return int(self.proc.returncode)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


# -- the stack ---------------------------------------------------------------------


@dataclasses.dataclass
class Stack:
    """The running exchange and worker, the parties, the listed datasets."""

    base: str
    root: Path
    provider: Party
    buyer: Party
    samples: dict[str, SampleDataset]
    dataset_ids: dict[str, uuid.UUID]
    csv_paths: dict[str, Path]
    content_hashes: dict[str, str]
    model: dict[str, Any]
    node_config: Path
    node: Service
    chain_url: str
    env: dict[str, str]

    def client(self, party: Party) -> Client:
        """An SDK client for ``party`` (local keys in the temp dir)."""
        return Client(party.key, base_url=self.base, key_dir=self.root / "keys")

    def start_node(self) -> uuid.UUID:
        """Start ``veilx node serve``; wait until it serves; return its node id."""
        offset = self.node.start()
        found = self.node.wait_for(NODE_LINE, offset)
        assert int(found.group(2)) == len(self.dataset_ids)
        return uuid.UUID(found.group(1))


def _sample(title: str) -> SampleDataset:
    catalog = load_catalog()
    matches = [s for s in catalog.datasets if s.title.startswith(title)]
    assert len(matches) == 1, f"the sample catalog has no single {title!r}"
    assert matches[0].provider == PROVIDER
    return matches[0]


def _check(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        pytest.fail(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r.json()


def _list_dataset(
    base: str, provider: Party, sample: SampleDataset, path: Path
) -> tuple[uuid.UUID, str]:
    """Write the sample's CSV, list it with that version; (id, content hash)."""
    content_hash = write_csv(sample, path)
    with httpx.Client(base_url=base, headers=provider.headers, timeout=30) as c:
        ds = _check(c.post("/v1/datasets", json=sample.body.model_dump(mode="json")))
        _check(
            c.post(
                f"/v1/datasets/{ds['id']}/versions",
                json={
                    "content_hash": content_hash,
                    "row_count": sample.rows,
                    "byte_size": path.stat().st_size,
                    "note": "initial load",
                },
            )
        )
        listed = _check(
            c.post(f"/v1/datasets/{ds['id']}/transitions", json={"to": "listed"})
        )
    assert listed["status"] == "listed"
    return uuid.UUID(ds["id"]), content_hash


def _wait_healthy(service: Service, base: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            r = httpx.get(base + "/health", timeout=2)
            if r.status_code == 200 and r.json().get("kv") == "redis":
                return
        except httpx.TransportError:
            pass
        if not service.running or time.monotonic() > deadline:
            pytest.fail(f"veilx serve did not start:\n{service.tail()}")
        time.sleep(0.2)


@pytest.fixture
def stack(pg_schema_url: str, redis_url: str, hardhat_url: str) -> Iterator[Stack]:
    """Exchange (2 workers) and worker running; datasets listed; node configured.

    The node is configured, not started: the test starts it. Whatever happens,
    every process group is stopped, the Redis namespace and the temp dir removed;
    the logs are printed (pytest shows them when the test failed).
    """
    root = Path(tempfile.mkdtemp(prefix="veilx-jobs-it-"))
    namespace = f"veilx-it-{uuid.uuid4().hex[:10]}"
    db = Database.from_url(pg_schema_url)
    services: list[Service] = []
    try:
        db.upgrade()  # before any process starts: no concurrent migrations
        # The ledger: fresh contracts on the Hardhat node, relayed by the worker.
        deploy_fresh(hardhat_url, "it", root / "deployments")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "VEILX_ENVIRONMENT": "production",
            "VEILX_SECRET_KEY": TEST_SECRET,
            "VEILX_DATA_DIR": str(root / "exchange"),
            "VEILX_DATABASE_URL": pg_schema_url,
            "VEILX_REDIS_URL": redis_url,
            "VEILX_REDIS_NAMESPACE": namespace,
            "VEILX_RATE_LIMIT_PER_MINUTE": "100000",
            "VEILX_RATE_LIMIT_BURST": "10000",
            "VEILX_LOG_LEVEL": "warning",
            "VEILX_CHAIN_URL": hardhat_url,
            "VEILX_CHAIN_NETWORK": "it",
            "VEILX_CHAIN_KEY": HARDHAT_KEY,
            "VEILX_DEPLOYMENTS_DIR": str(root / "deployments"),
            "VEILX_LEDGER_BATCH_MAX_AGE_SECONDS": "0.5",
            "VEILX_LEDGER_RELAY_INTERVAL_SECONDS": "0.5",
        }
        logs = root / "logs"
        logs.mkdir()
        serve = Service(
            "veilx serve",
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env,
            logs / "serve.log",
        )
        worker = Service(
            "veilx worker", ["worker", "--interval", "1"], env, logs / "worker.log"
        )
        services += [serve, worker]
        serve.start()
        offset = worker.start()
        _wait_healthy(serve, base)
        worker.wait_for(re.compile(r"veilx worker: sweeping every 1 s"), offset)

        provider = create_random_org(db, Role.PROVIDER, name=f"Northwind {namespace}")
        buyer = create_random_org(db, Role.BUYER, name=f"Aurora {namespace}")
        samples = {"meter": _sample(METER_TITLE), "credit": _sample(CREDIT_TITLE)}
        data = root / "provider-data"
        data.mkdir()
        ids: dict[str, uuid.UUID] = {}
        paths: dict[str, Path] = {}
        hashes: dict[str, str] = {}
        for name, sample in samples.items():
            paths[name] = data / f"{name}.csv"
            ids[name], hashes[name] = _list_dataset(base, provider, sample, paths[name])
        # The buyer pays for what it will run: an entitlement on each, with credits.
        with httpx.Client(base_url=base, timeout=30) as c:
            for name in samples:
                buy_entitlement(c, db, buyer, str(ids[name]), queries=20, epsilon=20)

        # The provider's model: fitted on its card book, served by the node.
        xy = read_columns(paths["credit"], [*CREDIT_FEATURES, EVAL_LABEL])
        weights, bias = fit_logistic(xy[:, :-1], xy[:, -1])
        model = {
            "name": "default-risk-v1",
            "dataset_id": ids["credit"],
            "kind": "logistic",
            "features": CREDIT_FEATURES,
            "weights": weights,
            "bias": bias,
            "description": "6-month default logit",
        }
        # Node env: no exchange settings; the config names the API key file.
        node_env = {k: v for k, v in env.items() if not k.startswith("VEILX_")}
        config = write_node_config(
            root / "node",
            exchange_url=base,
            api_key=provider.key,
            provider=PROVIDER,
            datasets=[
                (ids[name], paths[name], samples[name].categories) for name in samples
            ],
            models=[model],
        )
        node = Service(
            "veilx node serve",
            ["node", "serve", "--config", str(config)],
            node_env,
            logs / "node.log",
        )
        services.append(node)
        yield Stack(
            base=base,
            root=root,
            provider=provider,
            buyer=buyer,
            samples=samples,
            dataset_ids=ids,
            csv_paths=paths,
            content_hashes=hashes,
            model=model,
            node_config=config,
            node=node,
            chain_url=hardhat_url,
            env=env,
        )
    finally:
        try:
            _stop_all(services)
        finally:
            db.dispose()
            _drop_namespace(redis_url, namespace)
            shutil.rmtree(root, ignore_errors=True)


def _stop_all(services: list[Service]) -> None:
    """Stop every service (the last started first), each even if one fails."""
    failure: BaseException | None = None
    for service in reversed(services):
        try:
            service.stop()
        except Exception as exc:  # noqa: BLE001 - stop the others, then raise
            failure = failure or exc
        # Shown by pytest only when the test failed.
        print(f"\n===== {service.name} (log tail) =====\n{service.tail()}")
    if failure is not None:
        raise failure


def _drop_namespace(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- plaintext references (the test also plays the provider) --------------------------


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _dp_groups_close(result: AggregateResult, path: Path, column: str) -> None:
    """The DP counts and means are near the plaintext ones (loose: DP noise)."""
    rows = _csv_rows(path)
    by_group: dict[str, list[float]] = {}
    counts = Counter(r["dwelling_type"] for r in rows)
    for r in rows:
        if r[column] != "":
            by_group.setdefault(r["dwelling_type"], []).append(float(r[column]))
    released = {g.key[0]: g for g in result.groups}
    assert set(released) <= set(counts)
    assert released, "no group was released"
    for key, group in released.items():
        assert group.count is not None
        assert abs(group.count - counts[key]) <= 0.05 * counts[key] + 50, key
        mean = group.mean[column]
        assert mean is not None
        true_mean = float(np.mean(by_group[key]))
        assert abs(mean - true_mean) <= 0.05 * abs(true_mean) + 1.0, key


def _plain_model_eval(
    path: Path,
    bounds: GramBounds,
    weights: npt.NDArray[np.float64],
    bias: float,
) -> tuple[float, float, int]:
    """Degree-2 log-loss and mean logit of the model on the clamped rows, and n."""
    data = read_columns(path, [*EVAL_FEATURES, EVAL_LABEL])  # complete rows only
    lo = np.array([b[0] for b in bounds.features])
    hi = np.array([b[1] for b in bounds.features])
    x = np.clip(data[:, :-1], lo, hi)
    y = np.clip(data[:, -1], *bounds.label)
    t = bias + x @ weights
    loss = float(np.mean(math.log(2.0) + (0.5 - y) * t + t * t / 8.0))
    return loss, float(np.mean(t)), len(data)


def _dp_noise_std(
    bounds: GramBounds,
    weights: npt.NDArray[np.float64],
    bias: float,
    n: int,
    epsilon: float,
) -> tuple[float, float]:
    """Std of the (loss, mean logit) error from the node's Laplace Gram release.

    The node adds Laplace noise of scale Δ₁/ε (Δ₁ the moments' sensitivity at
    n − 1 rows) to each unique entry of the normalised moments M (the upper
    triangle without M₀₀). Both metrics are linear in M — loss = log 2 +
    a·((½ − c_y)M₀ − h_y M_{m−1}) + aᵀMa/8, mean logit = a·M₀ — so each error's
    std is √2·scale·‖its coefficients over those entries‖.
    """
    a = augmented_weights(weights, bias, ModelKind.LOGISTIC, bounds)
    c_y, h_y = float(bounds.centres[-1]), float(bounds.half_widths[-1])
    m = a.size
    rows, cols = Gram.noise_indices(m)
    scale = sensitivity(bounds, n - 1).moments.l1 / epsilon
    # d(loss)/dM as a full matrix G; a unique entry (i < j) takes G_ij + G_ji.
    first, last = np.eye(m)[0], np.eye(m)[m - 1]
    g = np.outer(a, a) / 8 + np.outer(first, (0.5 - c_y) * a) - h_y * np.outer(last, a)
    loss_coef = np.where(rows == cols, g[rows, cols], g[rows, cols] + g[cols, rows])
    score_coef = np.where(rows == 0, a[cols], 0.0)
    sd = math.sqrt(2.0) * scale
    return sd * float(np.linalg.norm(loss_coef)), sd * float(np.linalg.norm(score_coef))


# -- helpers -------------------------------------------------------------------------


def _approve_and_collect(
    buyer: Client, provider: Client, job: Job
) -> AggregateResult | ModelEvalResult | InferenceResult:
    """The provider approves ``job`` (which waits for it); the buyer's result."""
    assert job.state is JobState.AWAITING_APPROVAL, job.state
    approved = provider.jobs.approve(job.id, note="approved by the risk team")
    assert approved.approved_by is not None
    final = buyer.jobs.wait(job.id, timeout=JOB_TIMEOUT, poll_interval=0.2)
    assert final.state is JobState.SUCCEEDED, (final.reason_code, final.reason)
    return buyer.compute.result(final)


def _ask_meter(
    buyer: Client, dataset_id: uuid.UUID, epsilon: float, **options: Any
) -> Any:
    """The buyer's DP mean consumption by dwelling type (waits unless told)."""
    options.setdefault("poll_interval", 0.2)
    options.setdefault("wait_timeout", JOB_TIMEOUT)
    return buyer.compute.aggregate(
        dataset_id,
        statistics=["count", "mean"],
        columns=["consumption_kwh"],
        group_by=["dwelling_type"],
        mode="dp",
        epsilon=epsilon,
        purpose=METER_PURPOSE,
        **options,
    )


def _nodes_of(client: Client, org_id: uuid.UUID) -> list[uuid.UUID]:
    return [n.id for n in client.nodes.list() if n.organisation_id == org_id]


def _journal(state_db: Path) -> list[tuple[str, str]]:
    """(job id, journal state) of every job in the node's journal (read-only)."""
    conn = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT job_id, state FROM jobs").fetchall()
    finally:
        conn.close()
    return [(str(job_id), str(state)) for job_id, state in rows]


def _applicants(n: int) -> npt.NDArray[np.float64]:
    """The buyer's private applicants, columns in CREDIT_FEATURES order."""
    rng = np.random.default_rng(7)
    return np.column_stack(
        [
            rng.integers(18, 80, n),
            rng.lognormal(10.6, 0.5, n),
            rng.choice([1000.0, 2500.0, 5000.0, 10000.0], n),
            rng.integers(0, 200, n),
            rng.beta(2, 4, n) * 1.2,
            rng.lognormal(6.5, 0.6, n),
            rng.beta(1, 9, n),
            rng.poisson(0.6, n),
        ]
    ).astype(np.float64)


# -- the scenarios -------------------------------------------------------------------


def _registered_and_attested(
    stack: Stack, buyer: Client, provider: Client
) -> uuid.UUID:
    """1. The node registered once; both listings show its verified attestation."""
    node_id = stack.start_node()
    assert _nodes_of(provider, stack.provider.org_id) == [node_id]
    registered = buyer.nodes.get(node_id)
    assert sorted(registered.datasets) == sorted(stack.dataset_ids.values())
    for name, dataset_id in stack.dataset_ids.items():
        live = buyer.datasets.get(dataset_id).live_version
        assert live is not None and live.attestation is not None, name
        att = live.attestation
        assert att.verified and att.node_id == node_id
        assert live.content_hash == stack.content_hashes[name]
        assert att.attestation.content_hash == stack.content_hashes[name]
        assert att.attestation.dataset_id == dataset_id
        assert att.attestation.row_count == stack.samples[name].rows
        # Checked here as well, under the registry's key.
        SignedAttestation(attestation=att.attestation, signature=att.signature).verify(
            registered.public_key
        )
    credit = buyer.datasets.get(stack.dataset_ids["credit"])
    assert [m.name for m in credit.models] == [stack.model["name"]]
    return node_id


def _aggregate_and_replay(
    stack: Stack, buyer: Client, node_id: uuid.UUID
) -> tuple[AggregateResult, AggregateResult]:
    """2. A DP group-by with a verified receipt; the same question replays."""
    meter_id = stack.dataset_ids["meter"]
    first = _ask_meter(buyer, meter_id, 0.5)
    receipt = first.receipt.receipt
    assert first.dp_applied and first.job.node_id == node_id == first.receipt.node_id
    assert not receipt.replayed
    assert receipt.privacy_loss.epsilon == pytest.approx(0.5)
    assert receipt.dataset_version_hash == stack.content_hashes["meter"]
    assert buyer.receipts.get(first.job.id).verified
    _dp_groups_close(first, stack.csv_paths["meter"], "consumption_kwh")

    again = _ask_meter(buyer, meter_id, 0.5)
    assert again.job.id != first.job.id
    assert again.receipt.receipt.replayed is True
    assert again.receipt.receipt.privacy_loss.epsilon == 0.0
    assert [g.model_dump() for g in again.groups] == [
        g.model_dump() for g in first.groups
    ]
    return first, again


def _model_eval(stack: Stack, buyer: Client, provider: Client) -> ModelEvalResult:
    """3a. The buyer's encrypted model on the provider's rows, vs numpy."""
    credit_id = stack.dataset_ids["credit"]
    listing = buyer.datasets.get(credit_id)
    bounds = model_eval_bounds(
        listing.policy, listing.column_types(), EVAL_FEATURES, EVAL_LABEL
    )
    weights, bias = np.array([1.5, 0.4, 2.0]), -4.0
    job = buyer.compute.model_eval(
        credit_id,
        weights=weights,
        bias=bias,
        kind="logistic",
        features=EVAL_FEATURES,
        label=EVAL_LABEL,
        purpose=CREDIT_PURPOSE,
        wait=False,
    )
    result = _approve_and_collect(buyer, provider, job)
    assert isinstance(result, ModelEvalResult)
    assert result.gram_privacy_loss is not None
    loss, mean_logit, n = _plain_model_eval(
        stack.csv_paths["credit"], bounds, weights, bias
    )
    loss_sd, logit_sd = _dp_noise_std(
        bounds, weights, bias, n, result.gram_privacy_loss.epsilon
    )
    assert result.log_loss == pytest.approx(
        loss, abs=8 * (loss_sd + result.loss_noise_std) + 1e-4
    )
    assert result.mean_score == pytest.approx(
        mean_logit, abs=8 * (logit_sd + result.mean_score_noise_std) + 1e-4
    )
    return result


def _inference(stack: Stack, buyer: Client, provider: Client) -> InferenceResult:
    """3b. The provider's model on the buyer's encrypted rows, vs numpy."""
    applicants = _applicants(INFERENCE_ROWS)
    job = buyer.compute.inference(
        stack.dataset_ids["credit"],
        model=stack.model["name"],
        rows=applicants,
        purpose=CREDIT_PURPOSE,
        wait=False,
    )
    result = _approve_and_collect(buyer, provider, job)
    assert isinstance(result, InferenceResult)
    expected = stack.model["bias"] + applicants @ stack.model["weights"]
    assert result.scores.shape == (INFERENCE_ROWS,)
    np.testing.assert_allclose(
        result.scores, expected, rtol=1e-4, atol=8 * result.noise_std + 1e-4
    )
    return result


def _restart(
    stack: Stack, buyer: Client, provider: Client, node_id: uuid.UUID
) -> tuple[AggregateResult, AggregateResult]:
    """4. SIGKILL the node; a job submitted meanwhile runs after the restart."""
    meter_id = stack.dataset_ids["meter"]
    stack.node.kill()
    assert not stack.node.running
    down = _ask_meter(buyer, meter_id, 0.3, wait=False)
    assert down.state is JobState.QUEUED
    # A long poll the dead node left at the exchange may still claim the job
    # (dispatched); either way nobody can run it until the node is back.
    assert buyer.jobs.get(down.id).state in {JobState.QUEUED, JobState.DISPATCHED}

    assert stack.start_node() == node_id  # same state dir: same identity
    assert _nodes_of(provider, stack.provider.org_id) == [node_id]
    final = buyer.jobs.wait(down.id, timeout=JOB_TIMEOUT, poll_interval=0.2)
    after = buyer.compute.result(final)
    assert isinstance(after, AggregateResult)
    assert after.job.node_id == node_id and not after.receipt.receipt.replayed
    new = _ask_meter(buyer, meter_id, 0.2)
    assert new.job.node_id == node_id and not new.receipt.receipt.replayed
    return after, new


def _expires_unserved(stack: Stack, buyer: Client) -> Job:
    """5. No node serving: the worker expires the job at its deadline."""
    # Stopped gracefully, the node has no long poll left at the exchange.
    assert stack.node.stop() == 0
    job = _ask_meter(
        buyer, stack.dataset_ids["meter"], 0.1, timeout_seconds=10, wait=False
    )
    assert job.state is JobState.QUEUED
    ended = buyer.jobs.wait(job.id, timeout=45, poll_interval=0.5)
    assert ended.state is JobState.EXPIRED, (ended.reason_code, ended.reason)
    assert ended.reason_code == "not_picked_up"
    assert ended.receipt is None and ended.output is None
    return ended


# -- the test ------------------------------------------------------------------------


def test_jobs_across_exchange_worker_and_node_processes(stack: Stack) -> None:
    meter_id, credit_id = stack.dataset_ids["meter"], stack.dataset_ids["credit"]
    with stack.client(stack.buyer) as buyer, stack.client(stack.provider) as provider:
        node_id = _registered_and_attested(stack, buyer, provider)
        first, again = _aggregate_and_replay(stack, buyer, node_id)
        evaluated = _model_eval(stack, buyer, provider)
        scored = _inference(stack, buyer, provider)
        after, new = _restart(stack, buyer, provider, node_id)
        expired = _expires_unserved(stack, buyer)

        # No job ran twice: the journal holds every job that ran exactly once,
        # reported, and nothing else (not the expired job); the exchange has one
        # succeeded job with its own receipt for each.
        ran = {r.job.id: r for r in (first, again, evaluated, scored, after, new)}
        journal = _journal(stack.node_config.parent / "node-state" / "state.db")
        assert Counter(job_id for job_id, _ in journal) == Counter(map(str, ran))
        assert {state for _, state in journal} == {"reported"}
        assert str(expired.id) not in dict(journal)
        for job_id in ran:
            job = buyer.jobs.get(job_id)
            assert job.state is JobState.SUCCEEDED
            assert job.receipt is not None and job.receipt.receipt.job_id == job_id

        # 6. The budget as the buyer sees it (GET /v1/datasets/{id}/budget): one
        # query per job, ε as the receipts charged it (a replay charges nothing).
        spent = {
            meter_id: sum(
                r.receipt.receipt.privacy_loss.epsilon
                for r in (first, again, after, new)
            ),
            credit_id: evaluated.receipt.receipt.privacy_loss.epsilon
            + scored.receipt.receipt.privacy_loss.epsilon,
        }
        assert spent[meter_id] == pytest.approx(0.5 + 0.3 + 0.2)
        assert spent[credit_id] == pytest.approx(0.5)  # the Gram release
        queries = Counter(r.job.dataset_id for r in ran.values())
        with httpx.Client(
            base_url=stack.base, headers=stack.buyer.headers, timeout=30
        ) as http:
            for name, dataset_id in stack.dataset_ids.items():
                raw = _check(http.get(f"/v1/datasets/{dataset_id}/budget"))
                assert raw["total"] is None  # a buyer sees only its own row
                assert [b["buyer_id"] for b in raw["buyers"]] == [
                    str(stack.buyer.org_id)
                ]
                usage = buyer.datasets.budget(dataset_id).buyers[0]
                assert usage.queries == queries[dataset_id]
                assert usage.epsilon_spent == pytest.approx(spent[dataset_id])
                policy = stack.samples[name].body.policy
                assert usage.epsilon_budget == policy.budget_per_buyer.epsilon
                assert usage.inference_rows == (
                    INFERENCE_ROWS if dataset_id == credit_id else 0
                )
        # The provider sees the dataset's total: this buyer's use.
        total = provider.datasets.budget(meter_id).total
        assert total is not None and total.queries == queries[meter_id]
        assert total.epsilon_spent == pytest.approx(spent[meter_id])

        # 7. The ledger: the worker relayed every listing, trade and receipt to
        # the Hardhat node; the buyer proves a receipt against the node itself.
        _ledger_settled(stack, buyer, list(ran))


def _ledger_settled(stack: Stack, buyer: Client, jobs: list[uuid.UUID]) -> None:
    db = Database.from_url(stack.env["VEILX_DATABASE_URL"])
    try:
        regulator = create_random_org(db, Role.REGULATOR)
    finally:
        db.dispose()
    with httpx.Client(
        base_url=stack.base, headers=regulator.headers, timeout=60
    ) as http:
        deadline = time.monotonic() + 120
        while True:
            status = _check(http.get("/v1/ledger"))
            if not status["pending"]:
                break
            assert time.monotonic() < deadline, f"the relay is stuck: {status}"
            time.sleep(0.5)
        assert status["confirmed"]["asset.register"] == 2
        report = _check(http.get("/v1/ledger/verify"))
    assert report["ok"], report["mismatches"]
    assert (report["assets"], report["trades"], report["receipts"]) == (
        2,
        len(jobs),
        len(jobs),
    )
    proved = buyer.receipts.verify_inclusion(jobs[0], rpc_url=stack.chain_url)
    assert proved.chain_root == proved.proof.root
    cli = subprocess.run(  # noqa: S603 - our own console script
        [str(VEILX), "verify"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"{len(jobs)} trades, {len(jobs)} receipts match the chain" in cli.stdout
