"""The computation drivers: encrypt, upload, submit, wait, verify, decrypt.

Every result is returned only after the job's receipt has been verified
(:meth:`sdk._resources.Receipts.verify`): a result whose receipt does not check
out raises :class:`~sdk.errors.ReceiptVerificationError` and is never returned.
The job as the exchange recorded it is compared with what was submitted
(:meth:`sdk._resources.Jobs.create`), and outputs are checked against the job's
(signed) parameters, so a receipt always proves the computation that was asked.

Result layouts follow ``docs/protocol.md``:

* ``aggregate``: ``output`` is ``AggregateResult.as_dict()``; with
  ``encrypt_result`` it is the skeleton of ``flatten_aggregate`` plus
  ``"encrypted": true`` and blob ``values`` holds the numbers, encrypted under
  the buyer's key (decrypted here, then ``unflatten_aggregate``);
* ``encrypted_model_eval``: inputs ``outer`` and ``linear`` (``encrypt_model``),
  output ``{model_kind, n_features, label_bounds, noise_std, gram_privacy_loss}``
  and blobs ``loss``, ``mean_score`` (rebuilt into ``EncryptedMetrics``);
* ``encrypted_inference``: input ``columns`` (a bundle of batches of column
  ciphertexts), output ``{model, n_rows, noise_std}`` and blob ``scores`` (a
  bundle of one row: one ciphertext per batch).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from mpc_engine.he import (
    EncryptedMetrics,
    EncryptedScores,
    EncryptedVector,
    ModelKind,
    SecretContext,
    decrypt_metrics,
    decrypt_scores,
    encrypt_columns,
    encrypt_model,
)
from mpc_engine.he.errors import HEError
from mpc_engine.protocol import (
    AggregateParams,
    InferenceParams,
    InvalidMessage,
    JobKind,
    Loss,
    ModelEvalParams,
    model_eval_bounds,
    pack_bundle,
    unflatten_aggregate,
    unpack_bundle,
)
from sdk._keys import Keys
from sdk._resources import (
    Blobs,
    Datasets,
    Jobs,
    ProgressCallback,
    Receipts,
    as_uuid,
    input_error,
)
from sdk.errors import (
    InputError,
    InvalidRequestError,
    JobFailedError,
    ResultError,
)
from sdk.types import (
    AggregateGroup,
    AggregateResult,
    InferenceResult,
    Job,
    ModelEvalResult,
    VerifiedReceipt,
)

__all__ = ["AGGREGATE_KEY", "MODEL_EVAL_KEY", "Compute", "Result"]

AGGREGATE_KEY = "default"
"""Key name for encrypted aggregates and inference (``inference`` preset)."""
MODEL_EVAL_KEY = "model-eval"
"""Key name for ``encrypted_model_eval`` (``model_eval`` preset, Galois keys)."""

Result = AggregateResult | ModelEvalResult | InferenceResult
"""Any computation's verified, decrypted result."""


class Compute:
    """Run computations on datasets and get verified, decrypted results.

    Each method submits a job and, with ``wait=True`` (the default), waits for
    it, verifies its receipt and returns the decrypted result. With
    ``wait=False`` it returns the submitted :class:`~sdk.types.Job`; pass it to
    :meth:`result` later (from the same key directory) to get the result.
    """

    def __init__(
        self,
        *,
        jobs: Jobs,
        receipts: Receipts,
        blobs: Blobs,
        datasets: Datasets,
        keys: Keys,
    ) -> None:
        self._jobs = jobs
        self._receipts = receipts
        self._blobs = blobs
        self._datasets = datasets
        self._keys = keys

    # -- aggregate ------------------------------------------------------------------

    @overload
    def aggregate(
        self,
        dataset_id: uuid.UUID | str,
        *,
        statistics: Sequence[str],
        purpose: str,
        columns: Sequence[str] = ...,
        group_by: Sequence[str] = ...,
        filter: str | None = ...,
        mode: Literal["exact", "dp"] = ...,
        epsilon: float | None = ...,
        delta: float = ...,
        mechanism: Literal["laplace", "gaussian"] = ...,
        histogram_bins: int | None = ...,
        quantiles: Sequence[float] | None = ...,
        encrypt_result: bool = ...,
        key: str = ...,
        timeout_seconds: int = ...,
        entitlement_id: uuid.UUID | str | None = ...,
        wait: Literal[True] = ...,
        wait_timeout: float | None = ...,
        poll_interval: float = ...,
        progress: ProgressCallback | None = ...,
    ) -> AggregateResult: ...

    @overload
    def aggregate(
        self,
        dataset_id: uuid.UUID | str,
        *,
        statistics: Sequence[str],
        purpose: str,
        columns: Sequence[str] = ...,
        group_by: Sequence[str] = ...,
        filter: str | None = ...,
        mode: Literal["exact", "dp"] = ...,
        epsilon: float | None = ...,
        delta: float = ...,
        mechanism: Literal["laplace", "gaussian"] = ...,
        histogram_bins: int | None = ...,
        quantiles: Sequence[float] | None = ...,
        encrypt_result: bool = ...,
        key: str = ...,
        timeout_seconds: int = ...,
        entitlement_id: uuid.UUID | str | None = ...,
        wait: Literal[False],
        wait_timeout: float | None = ...,
        poll_interval: float = ...,
        progress: ProgressCallback | None = ...,
    ) -> Job: ...

    def aggregate(
        self,
        dataset_id: uuid.UUID | str,
        *,
        statistics: Sequence[str],
        purpose: str,
        columns: Sequence[str] = (),
        group_by: Sequence[str] = (),
        filter: str | None = None,
        mode: Literal["exact", "dp"] = "exact",
        epsilon: float | None = None,
        delta: float = 0.0,
        mechanism: Literal["laplace", "gaussian"] = "laplace",
        histogram_bins: int | None = None,
        quantiles: Sequence[float] | None = None,
        encrypt_result: bool = False,
        key: str = AGGREGATE_KEY,
        timeout_seconds: int = 900,
        entitlement_id: uuid.UUID | str | None = None,
        wait: bool = True,
        wait_timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> AggregateResult | Job:
        """Count, sum, mean, variance, histogram or quantiles per group.

        Parameters
        ----------
        dataset_id
            The dataset.
        statistics
            Any of ``count``, ``sum``, ``mean``, ``variance``, ``histogram``,
            ``quantiles``.
        purpose
            A purpose token the dataset's policy permits.
        columns
            Numeric columns the statistics (other than ``count``) apply to.
        group_by
            Categorical columns to group by (order = key order).
        filter
            A row filter in the safe grammar, e.g. ``"age >= 30 and region = 'DE'"``.
        mode
            ``exact`` (groups below the policy's k withheld) or ``dp``.
        epsilon, delta, mechanism
            The DP parameters (``mode="dp"`` only; ``epsilon`` then required).
        histogram_bins, quantiles
            Bins (with ``histogram``) and levels in (0, 1) (with ``quantiles``).
        encrypt_result
            Have the node return the values encrypted under your key, so the
            exchange sees only the layout (uses key ``key``, created if absent).
        key
            The local key name for ``encrypt_result``.
        timeout_seconds
            The job's deadline at the exchange.
        entitlement_id
            The entitlement to charge; by default the exchange picks your active
            one on the dataset (the one that expires first).
        wait
            Wait for the result (default); ``False`` returns the submitted job.
        wait_timeout, poll_interval, progress
            As :meth:`sdk._resources.Jobs.wait`.

        Returns
        -------
        AggregateResult or Job
            The released groups, with the job and its verified receipt; the
            submitted job when ``wait`` is false.

        Raises
        ------
        InputError
            The request is invalid (before anything is sent).
        JobFailedError
            The node refused or failed the job (policy, budget, …).
        ReceiptVerificationError
            The result is not what the node signed.
        """
        entitlement = _entitlement(entitlement_id)
        raw: dict[str, Any] = {
            "statistics": list(statistics),
            "columns": list(columns),
            "group_by": list(group_by),
            "filter": filter,
            "mode": mode,
            "histogram_bins": histogram_bins,
            "quantiles": None if quantiles is None else list(quantiles),
            "encrypt_result": encrypt_result,
        }
        if mode == "dp":
            if epsilon is None:
                raise InputError("epsilon", "is required when mode is 'dp'")
            raw["dp"] = {"epsilon": epsilon, "delta": delta, "mechanism": mechanism}
        elif epsilon is not None or delta:
            raise InputError("epsilon", "applies only when mode is 'dp'")
        try:
            params = AggregateParams.model_validate(raw)
        except ValidationError as exc:
            raise input_error(exc) from None
        secret = None
        context_id = None
        if encrypt_result:
            secret = self._keys.ensure(key, preset="inference")
            context_id = self._keys.upload_context(key)
        job = self._submit(
            dataset_id,
            JobKind.AGGREGATE,
            purpose,
            params.model_dump(mode="json"),
            {},
            context_id,
            key if encrypt_result else None,
            timeout_seconds,
            entitlement,
        )
        if not wait:
            return job
        job, receipt = self._finish(job, wait_timeout, poll_interval, progress)
        return self._aggregate_result(job, receipt, secret)

    def _aggregate_result(
        self, job: Job, receipt: VerifiedReceipt, secret: SecretContext | None
    ) -> AggregateResult:
        output = _object(job.output)
        encrypted = bool(output.get("encrypted"))
        asked = bool(job.params.get("encrypt_result"))
        if encrypted != asked:
            raise ResultError(
                "output.encrypted",
                f"the result is {'encrypted' if encrypted else 'in the clear'}; "
                f"{'encrypted' if asked else 'clear'} was asked for",
            )
        if encrypted:
            secret = secret or self._key_of(job)
            values = secret.decrypt(self._vector(secret, job, "values"))
            skeleton = {k: v for k, v in output.items() if k != "encrypted"}
            try:
                output = unflatten_aggregate(skeleton, [float(v) for v in values])
            except InvalidMessage as exc:
                raise ResultError(exc.field, exc.reason) from None
        try:
            return AggregateResult(
                group_by=list(output.get("group_by", [])),
                groups=[
                    AggregateGroup.model_validate(g) for g in output.get("groups", [])
                ],
                dp_applied=bool(output.get("dp_applied")),
                privacy_loss=Loss.model_validate(
                    output.get("privacy_loss") or {"epsilon": 0.0, "delta": 0.0}
                ),
                mechanism=output.get("mechanism"),
                suppressed=bool(output.get("suppressed")),
                histogram_edges=output.get("histogram_edges") or {},
                quantile_levels=output.get("quantile_levels") or [],
                encrypted=encrypted,
                job=job,
                receipt=receipt,
            )
        except ValidationError as exc:
            err = input_error(exc, "output")
            raise ResultError(err.field, err.reason) from None

    # -- encrypted model evaluation ---------------------------------------------------

    @overload
    def model_eval(
        self,
        dataset_id: uuid.UUID | str,
        *,
        weights: npt.ArrayLike,
        bias: float,
        features: Sequence[str],
        label: str,
        purpose: str,
        kind: Literal["linear", "logistic"] = ...,
        key: str = ...,
        timeout_seconds: int = ...,
        entitlement_id: uuid.UUID | str | None = ...,
        wait: Literal[True] = ...,
        wait_timeout: float | None = ...,
        poll_interval: float = ...,
        progress: ProgressCallback | None = ...,
    ) -> ModelEvalResult: ...

    @overload
    def model_eval(
        self,
        dataset_id: uuid.UUID | str,
        *,
        weights: npt.ArrayLike,
        bias: float,
        features: Sequence[str],
        label: str,
        purpose: str,
        kind: Literal["linear", "logistic"] = ...,
        key: str = ...,
        timeout_seconds: int = ...,
        entitlement_id: uuid.UUID | str | None = ...,
        wait: Literal[False],
        wait_timeout: float | None = ...,
        poll_interval: float = ...,
        progress: ProgressCallback | None = ...,
    ) -> Job: ...

    def model_eval(
        self,
        dataset_id: uuid.UUID | str,
        *,
        weights: npt.ArrayLike,
        bias: float,
        features: Sequence[str],
        label: str,
        purpose: str,
        kind: Literal["linear", "logistic"] = "linear",
        key: str = MODEL_EVAL_KEY,
        timeout_seconds: int = 900,
        entitlement_id: uuid.UUID | str | None = None,
        wait: bool = True,
        wait_timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> ModelEvalResult | Job:
        """Evaluate your model on the provider's data without revealing it.

        The model (``score = bias + weights · x``) is encrypted under your key
        (``model_eval`` preset with Galois keys; created if absent) in the node's
        normalised coordinates, which come from the listing's public clamping
        bounds (``model_eval_bounds``). The node scores it on its plaintext
        sufficient statistics and returns encrypted metrics only you can read.

        Parameters
        ----------
        dataset_id
            The dataset.
        weights
            One weight per feature, in ``features`` order.
        bias
            The intercept.
        features, label
            The dataset's columns the model reads and predicts (numeric or
            boolean, permitted, with bounds in the policy).
        purpose
            A purpose token the dataset's policy permits.
        kind
            ``linear`` (MSE) or ``logistic`` (degree-2 log-loss; labels in [0, 1]).
        key
            The local key name.
        timeout_seconds, entitlement_id, wait, wait_timeout, poll_interval, progress
            As for :meth:`aggregate`.

        Returns
        -------
        ModelEvalResult or Job
            The decrypted metrics, with the job and its verified receipt; the
            submitted job when ``wait`` is false.
        """
        entitlement = _entitlement(entitlement_id)
        try:
            model_kind = ModelKind(kind)
        except ValueError:
            raise InputError("kind", "must be 'linear' or 'logistic'") from None
        try:
            params = ModelEvalParams(
                model_kind=model_kind, features=list(features), label=label
            )
        except ValidationError as exc:
            raise input_error(exc) from None
        try:
            w = np.asarray(weights, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError("weights", "must be numbers") from None
        if w.size != len(params.features):
            raise InputError(
                "weights",
                f"has {w.size} values for {len(params.features)} features",
            )
        dataset = self._datasets.get(dataset_id)
        try:
            bounds = model_eval_bounds(
                dataset.policy, dataset.column_types(), params.features, params.label
            )
        except InvalidMessage as exc:
            raise InputError(exc.field.removeprefix("params."), exc.reason) from None
        secret = self._keys.ensure(key, preset="model_eval", galois=True)
        try:
            encrypted = encrypt_model(secret, w, float(bias), model_kind, bounds)
        except HEError as exc:
            field = str(getattr(exc, "field", "weights"))
            raise InputError(field, str(exc).removeprefix(f"{field}: ")) from None
        outer = self._blobs.upload(encrypted.outer.to_bytes())
        linear = self._blobs.upload(encrypted.linear.to_bytes())
        context_id = self._keys.upload_context(key)
        job = self._submit(
            dataset.id,
            JobKind.ENCRYPTED_MODEL_EVAL,
            purpose,
            params.model_dump(mode="json"),
            {"outer": outer.sha256, "linear": linear.sha256},
            context_id,
            key,
            timeout_seconds,
            entitlement,
        )
        if not wait:
            return job
        job, receipt = self._finish(job, wait_timeout, poll_interval, progress)
        return self._model_eval_result(job, receipt, secret, bounds.label)

    def _model_eval_result(
        self,
        job: Job,
        receipt: VerifiedReceipt,
        secret: SecretContext | None,
        encrypted_for: tuple[float, float] | None,
    ) -> ModelEvalResult:
        """Decrypt the metrics; ``encrypted_for``: the label bounds used, if known."""
        output = _object(job.output)
        try:
            params = ModelEvalParams.model_validate(job.params)
        except ValidationError as exc:
            err = input_error(exc, "params")
            raise ResultError(err.field, err.reason) from None
        label_bounds = _pair(output.get("label_bounds"), "output.label_bounds")
        noise_std = _pair(output.get("noise_std"), "output.noise_std")
        if output.get("model_kind") != params.model_kind.value:
            raise ResultError(
                "output.model_kind",
                f"is {output.get('model_kind')!r}; the job asked for "
                f"{params.model_kind.value!r}",
            )
        if output.get("n_features") != len(params.features):
            raise ResultError(
                "output.n_features",
                f"is {output.get('n_features')!r}; the model has "
                f"{len(params.features)} features",
            )
        if encrypted_for is not None and not np.allclose(
            label_bounds, encrypted_for, rtol=1e-12, atol=0.0
        ):
            raise ResultError(
                "output.label_bounds",
                f"the node normalised with {label_bounds}, the model was encrypted "
                f"for {encrypted_for}: the listing's bounds changed meanwhile; run "
                "it again",
            )
        secret = secret or self._key_of(job)
        try:
            metrics = decrypt_metrics(
                secret,
                EncryptedMetrics(
                    params.model_kind,
                    self._vector(secret, job, "loss"),
                    self._vector(secret, job, "mean_score"),
                    label_bounds,
                    noise_std,
                ),
            )
        except HEError as exc:
            raise ResultError("output_blobs", str(exc)) from None
        gram_loss = output.get("gram_privacy_loss")
        try:
            loss = None if gram_loss is None else Loss.model_validate(gram_loss)
        except ValidationError as exc:
            err = input_error(exc, "output.gram_privacy_loss")
            raise ResultError(err.field, err.reason) from None
        return ModelEvalResult(
            kind=metrics.kind,
            mse=metrics.mse,
            log_loss=metrics.log_loss,
            mean_score=metrics.mean_score,
            loss_noise_std=metrics.loss_noise_std,
            mean_score_noise_std=metrics.mean_score_noise_std,
            n_features=len(params.features),
            label_bounds=label_bounds,
            gram_privacy_loss=loss,
            job=job,
            receipt=receipt,
        )

    # -- encrypted inference -------------------------------------------------------

    @overload
    def inference(
        self,
        dataset_id: uuid.UUID | str,
        *,
        model: str,
        rows: npt.ArrayLike,
        purpose: str,
        key: str = ...,
        timeout_seconds: int = ...,
        entitlement_id: uuid.UUID | str | None = ...,
        wait: Literal[True] = ...,
        wait_timeout: float | None = ...,
        poll_interval: float = ...,
        progress: ProgressCallback | None = ...,
    ) -> InferenceResult: ...

    @overload
    def inference(
        self,
        dataset_id: uuid.UUID | str,
        *,
        model: str,
        rows: npt.ArrayLike,
        purpose: str,
        key: str = ...,
        timeout_seconds: int = ...,
        entitlement_id: uuid.UUID | str | None = ...,
        wait: Literal[False],
        wait_timeout: float | None = ...,
        poll_interval: float = ...,
        progress: ProgressCallback | None = ...,
    ) -> Job: ...

    def inference(
        self,
        dataset_id: uuid.UUID | str,
        *,
        model: str,
        rows: npt.ArrayLike,
        purpose: str,
        key: str = AGGREGATE_KEY,
        timeout_seconds: int = 900,
        entitlement_id: uuid.UUID | str | None = None,
        wait: bool = True,
        wait_timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> InferenceResult | Job:
        """Score your rows with a provider's model without revealing them.

        The rows are encrypted column-packed under your key (``inference`` preset;
        the node's scoring needs no Galois keys) and only ever decrypted here.

        Parameters
        ----------
        dataset_id
            The dataset whose node holds the model.
        model
            The model's name, as the node attested it (``Dataset.models``).
        rows
            An ``(n, d)`` array, columns in the model's feature order.
        purpose
            A purpose token the dataset's policy permits.
        key
            The local key name.
        timeout_seconds, entitlement_id, wait, wait_timeout, poll_interval, progress
            As for :meth:`aggregate`.

        Returns
        -------
        InferenceResult or Job
            One score per row, with the job and its verified receipt; the
            submitted job when ``wait`` is false.
        """
        entitlement = _entitlement(entitlement_id)
        try:
            x = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("rows", "must be an (n, d) array of numbers") from None
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise InputError("rows", f"must be a non-empty (n, d) array, not {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InputError("rows", "contains NaN or infinite values")
        try:
            params = InferenceParams(model=model, n_rows=int(x.shape[0]))
        except ValidationError as exc:
            raise input_error(exc) from None
        dataset = self._datasets.get(dataset_id)
        attested = {m.name: m for m in dataset.models}
        if attested:
            info = attested.get(model)
            if info is None:
                raise InputError(
                    "model",
                    f"{model!r} is not a model of this dataset; the node attested "
                    f"{', '.join(sorted(attested))}",
                )
            if len(info.features) != x.shape[1]:
                raise InputError(
                    "rows",
                    f"have {x.shape[1]} columns; model {model!r} reads "
                    f"{len(info.features)} ({', '.join(info.features)})",
                )
        secret = self._keys.ensure(key, preset="inference")
        columns = encrypt_columns(secret, x)
        bundle = pack_bundle(
            [[vec.to_bytes() for vec in batch] for batch in columns.batches]
        )
        blob = self._blobs.upload(bundle)
        context_id = self._keys.upload_context(key)
        job = self._submit(
            dataset.id,
            JobKind.ENCRYPTED_INFERENCE,
            purpose,
            params.model_dump(mode="json"),
            {"columns": blob.sha256},
            context_id,
            key,
            timeout_seconds,
            entitlement,
        )
        if not wait:
            return job
        job, receipt = self._finish(job, wait_timeout, poll_interval, progress)
        return self._inference_result(job, receipt, secret)

    def _inference_result(
        self, job: Job, receipt: VerifiedReceipt, secret: SecretContext | None
    ) -> InferenceResult:
        output = _object(job.output)
        try:
            params = InferenceParams.model_validate(job.params)
        except ValidationError as exc:
            err = input_error(exc, "params")
            raise ResultError(err.field, err.reason) from None
        if output.get("model") != params.model or output.get("n_rows") != params.n_rows:
            raise ResultError(
                "output",
                f"scores model {output.get('model')!r} on {output.get('n_rows')!r} "
                f"rows; the job asked for {params.model!r} on {params.n_rows}",
            )
        noise = output.get("noise_std")
        if (
            isinstance(noise, bool)
            or not isinstance(noise, int | float)
            or not math.isfinite(noise)
        ):
            raise ResultError("output.noise_std", "must be a finite number")
        secret = secret or self._key_of(job)
        try:
            parts = unpack_bundle(self._download(job, "scores"), "output_blobs.scores")
        except InvalidMessage as exc:
            raise ResultError(exc.field, exc.reason) from None
        if len(parts) != 1:
            raise ResultError(
                "output_blobs.scores", f"has {len(parts)} rows; one was expected"
            )
        vectors = tuple(
            self._load_vector(secret, b, f"output_blobs.scores[{i}]")
            for i, b in enumerate(parts[0])
        )
        try:
            scores = decrypt_scores(
                secret, EncryptedScores(params.n_rows, vectors, float(noise))
            )
        except HEError as exc:
            raise ResultError("output_blobs.scores", str(exc)) from None
        return InferenceResult(
            model=params.model,
            scores=scores,
            noise_std=float(noise),
            n_rows=params.n_rows,
            job=job,
            receipt=receipt,
        )

    # -- results of submitted jobs ---------------------------------------------------

    def result(
        self,
        job: Job | uuid.UUID | str,
        *,
        wait_timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> Result:
        """The verified, decrypted result of a job submitted earlier.

        Waits for the job if it is still running. Encrypted results are
        decrypted with the local key whose context the job names
        (:meth:`sdk._keys.Keys.find`).

        Parameters
        ----------
        job
            The job (e.g. from ``wait=False``), or its id.
        wait_timeout, poll_interval, progress
            As :meth:`sdk._resources.Jobs.wait`.

        Returns
        -------
        AggregateResult or ModelEvalResult or InferenceResult
            By the job's kind.

        Raises
        ------
        JobFailedError
            The job ended without a result.
        ReceiptVerificationError
            The result is not what the node signed.
        KeyStoreError
            No local key can decrypt it.
        """
        if not isinstance(job, Job):
            job = self._jobs.get(as_uuid(job, "job_id"))
        final, receipt = self._finish(job, wait_timeout, poll_interval, progress)
        if final.kind is JobKind.AGGREGATE:
            return self._aggregate_result(final, receipt, None)
        if final.kind is JobKind.ENCRYPTED_MODEL_EVAL:
            return self._model_eval_result(final, receipt, None, None)
        return self._inference_result(final, receipt, None)

    # -- shared steps ---------------------------------------------------------------

    def _submit(
        self,
        dataset_id: uuid.UUID | str,
        kind: JobKind,
        purpose: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        context_id: str | None,
        key: str | None,
        timeout_seconds: int,
        entitlement_id: uuid.UUID | None = None,
    ) -> Job:
        """Create the job; re-upload the context once if the exchange lacks it.

        The key's metadata remembers which exchanges have its public context; if
        the exchange has lost it (a reset database), it refuses ``context_id``
        and the context is uploaded again.
        """
        did = as_uuid(dataset_id, "dataset_id")
        try:
            return self._jobs.create(
                did,
                kind=kind,
                purpose=purpose,
                params=params,
                inputs=inputs,
                context_id=context_id,
                timeout_seconds=timeout_seconds,
                entitlement_id=entitlement_id,
            )
        except InvalidRequestError as exc:
            if key is None or "context_id" not in exc.fields:
                raise
        self._keys.upload_context(key, force=True)
        return self._jobs.create(
            did,
            kind=kind,
            purpose=purpose,
            params=params,
            inputs=inputs,
            context_id=context_id,
            timeout_seconds=timeout_seconds,
            entitlement_id=entitlement_id,
        )

    def _finish(
        self,
        job: Job,
        wait_timeout: float | None,
        poll_interval: float,
        progress: ProgressCallback | None,
    ) -> tuple[Job, VerifiedReceipt]:
        """Wait for the job, refuse anything but success, verify the receipt."""
        final = (
            job
            if job.terminal
            else self._jobs.wait(
                job.id,
                timeout=wait_timeout,
                poll_interval=poll_interval,
                progress=progress,
            )
        )
        if not final.succeeded:
            raise JobFailedError(final)
        return final, self._receipts.verify(final)

    def _key_of(self, job: Job) -> SecretContext:
        if job.context_id is None:
            raise ResultError("context_id", "the job names no HE context to decrypt")
        return self._keys.find(job.context_id)

    def _download(self, job: Job, name: str) -> bytes:
        sha = job.output_blobs.get(name)
        if sha is None:
            raise ResultError(
                f"output_blobs.{name}",
                f"missing; the job returned {sorted(job.output_blobs) or 'no blobs'}",
            )
        return self._blobs.download(sha)

    def _vector(self, secret: SecretContext, job: Job, name: str) -> EncryptedVector:
        return self._load_vector(
            secret, self._download(job, name), f"output_blobs.{name}"
        )

    @staticmethod
    def _load_vector(secret: SecretContext, data: bytes, field: str) -> EncryptedVector:
        try:
            return EncryptedVector.from_bytes(secret, data, fresh=False)
        except HEError as exc:
            raise ResultError(field, str(exc)) from None


def _entitlement(value: uuid.UUID | str | None) -> uuid.UUID | None:
    """The entitlement to charge, checked before anything is encrypted or sent."""
    return None if value is None else as_uuid(value, "entitlement_id")


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ResultError("output", "must be a JSON object")
    return value


def _pair(value: Any, field: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    ):
        raise ResultError(field, "must be two finite numbers")
    return float(value[0]), float(value[1])
