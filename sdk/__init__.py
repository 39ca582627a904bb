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

Computations are charged to an entitlement bought with a quote::

    quote = client.quotes.create(dataset_id, queries=10, epsilon=2.0)
    order = client.orders.create(quote.id)  # credits; 402 insufficient_funds
    client.entitlements.get(order.entitlement_id).quota_queries  # 10

Secret HE keys are generated and kept on this machine (``client.keys``); only
public contexts and ciphertexts are uploaded. Every compute call verifies the
node's signed receipt before it returns. Errors are :class:`VeilxError`
subclasses (see :mod:`sdk.errors`). The SDK never imports ``marketplace``.
"""

from sdk._client import DEFAULT_BASE_URL, Client
from sdk._compute import AGGREGATE_KEY, MODEL_EVAL_KEY, Compute, Result
from sdk._keys import PRESETS, Keys, Preset, default_key_dir
from sdk._resources import Blobs, Datasets, Jobs, Nodes, ProgressCallback, Receipts
from sdk._trading import (
    WALLET_PROOF,
    Balances,
    Credits,
    Entitlements,
    Journal,
    Orders,
    Quotes,
    Settlements,
    Wallets,
    wallet_proof,
)
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
    PaymentRequiredError,
    PaymentUnavailableError,
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
    Balance,
    BlobRef,
    Budget,
    BudgetUsage,
    Charge,
    Column,
    ContextInfo,
    Dataset,
    DatasetVersion,
    Entitlement,
    FacetCount,
    InferenceResult,
    Job,
    JobProgress,
    JournalCheck,
    KeyInfo,
    MenuOption,
    ModelEvalResult,
    Node,
    Order,
    Page,
    Payout,
    PrivacyBudget,
    ProviderRef,
    Quote,
    QuoteMenu,
    ReceiptInfo,
    SearchHit,
    SettlementRun,
    Statement,
    StatementLine,
    VerifiedReceipt,
    VersionAttestation,
    Wallet,
)

__all__ = [
    "AGGREGATE_KEY",
    "DEFAULT_BASE_URL",
    "MODEL_EVAL_KEY",
    "PRESETS",
    "WALLET_PROOF",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AggregateGroup",
    "AggregateResult",
    "AuthenticationError",
    "Balance",
    "Balances",
    "BlobRef",
    "Blobs",
    "Budget",
    "BudgetUsage",
    "Charge",
    "Client",
    "Column",
    "Compute",
    "ConflictError",
    "ContextInfo",
    "Credits",
    "Dataset",
    "DatasetVersion",
    "Datasets",
    "Entitlement",
    "Entitlements",
    "FacetCount",
    "FieldError",
    "InferenceResult",
    "InputError",
    "InvalidRequestError",
    "Job",
    "JobFailedError",
    "JobProgress",
    "Jobs",
    "Journal",
    "JournalCheck",
    "KeyInfo",
    "KeyStoreError",
    "Keys",
    "MenuOption",
    "ModelEvalResult",
    "Node",
    "Nodes",
    "NotFoundError",
    "Order",
    "Orders",
    "Page",
    "PaymentRequiredError",
    "PaymentUnavailableError",
    "Payout",
    "PermissionDeniedError",
    "Preset",
    "PrivacyBudget",
    "ProgressCallback",
    "ProviderRef",
    "Quote",
    "QuoteMenu",
    "Quotes",
    "RateLimitError",
    "ReceiptInfo",
    "ReceiptVerificationError",
    "Receipts",
    "Result",
    "ResultError",
    "SearchHit",
    "ServerError",
    "SettlementRun",
    "Settlements",
    "Statement",
    "StatementLine",
    "VeilxError",
    "VerifiedReceipt",
    "VersionAttestation",
    "WaitTimeoutError",
    "Wallet",
    "Wallets",
    "default_key_dir",
    "wallet_proof",
]
