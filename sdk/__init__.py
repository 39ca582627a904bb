"""The Python client library of the veilx exchange, for buyers and providers.

A :class:`Client` talks to one exchange with one API key; its namespaces map the
HTTP API (``docs/protocol.md``)::

    from sdk import Client

    with Client("vx_…", base_url="https://exchange.example") as client:
        hits = client.datasets.search("household income")
        for hit in hits.auto_paging_iter():
            print(hit.id, hit.title)
        result = client.compute.model_eval(
            dataset_id, weights=[0.4, 1.3], bias=2.0, features=["age", "income"],
            label="spend", purpose="research")
        print(result.mse, result.receipt.privacy_loss)

Secret HE keys are generated and kept on this machine (``client.keys``); only
public contexts and ciphertexts are uploaded. Every compute call verifies the
node's signed receipt before it returns. Errors are :class:`VeilxError`
subclasses (see :mod:`sdk.errors`). The SDK never imports ``marketplace``.
"""

from sdk._client import DEFAULT_BASE_URL, Client
from sdk._compute import AGGREGATE_KEY, MODEL_EVAL_KEY, Compute, Result
from sdk._keys import PRESETS, Keys, Preset, default_key_dir
from sdk._resources import Blobs, Datasets, Jobs, Nodes, ProgressCallback, Receipts
from sdk.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    FieldError,
    InputError,
    InvalidRequestError,
    JobFailedError,
    KeyStoreError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReceiptVerificationError,
    ResultError,
    ServerError,
    VeilxError,
    WaitTimeoutError,
)
from sdk.types import (
    AggregateGroup,
    AggregateResult,
    BlobRef,
    Budget,
    BudgetUsage,
    Column,
    ContextInfo,
    Dataset,
    DatasetVersion,
    FacetCount,
    InferenceResult,
    Job,
    JobProgress,
    KeyInfo,
    ModelEvalResult,
    Node,
    Page,
    PrivacyBudget,
    ProviderRef,
    ReceiptInfo,
    SearchHit,
    VerifiedReceipt,
    VersionAttestation,
)

__all__ = [
    "AGGREGATE_KEY",
    "DEFAULT_BASE_URL",
    "MODEL_EVAL_KEY",
    "PRESETS",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AggregateGroup",
    "AggregateResult",
    "AuthenticationError",
    "BlobRef",
    "Blobs",
    "Budget",
    "BudgetUsage",
    "Client",
    "Column",
    "Compute",
    "ConflictError",
    "ContextInfo",
    "Dataset",
    "DatasetVersion",
    "Datasets",
    "FacetCount",
    "FieldError",
    "InferenceResult",
    "InputError",
    "InvalidRequestError",
    "Job",
    "JobFailedError",
    "JobProgress",
    "Jobs",
    "KeyInfo",
    "KeyStoreError",
    "Keys",
    "ModelEvalResult",
    "Node",
    "Nodes",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "Preset",
    "PrivacyBudget",
    "ProgressCallback",
    "ProviderRef",
    "RateLimitError",
    "ReceiptInfo",
    "ReceiptVerificationError",
    "Receipts",
    "Result",
    "ResultError",
    "SearchHit",
    "ServerError",
    "VeilxError",
    "VerifiedReceipt",
    "VersionAttestation",
    "WaitTimeoutError",
    "default_key_dir",
]
