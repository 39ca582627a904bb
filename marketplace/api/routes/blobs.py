"""Content-addressed uploads: ciphertext blobs and buyers' public HE contexts.

Bodies are raw bytes (``Content-Type: application/octet-stream``), read as a
stream and refused with 413 beyond ``VEILX_MAX_UPLOAD_BYTES`` (256 MiB by
default). Storing (and checking a context, which parses ≈35 MB of keys) runs in
a worker thread, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from marketplace.api.deps import BlobsDep, allow
from marketplace.errors import PayloadTooLarge, UnsupportedMediaType
from marketplace.models import BlobPublic, HEContextPublic, Role
from marketplace.services.identity import Caller

router = APIRouter(prefix="/v1", tags=["blobs"])

Member = Annotated[Caller, allow()]
Buyer = Annotated[Caller, allow(Role.BUYER)]
ContextReader = Annotated[Caller, allow(Role.BUYER, Role.PROVIDER)]

OCTET_STREAM = "application/octet-stream"
_BINARY: dict[str, Any] = {
    "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}
}
_UPLOAD = {"requestBody": {"required": True, **_BINARY}}
Sha256 = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes, hex.")
]


async def read_upload(request: Request) -> bytes:
    """The request body, streamed, if it is octet-stream within the upload limit."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if media_type.lower() != OCTET_STREAM:
        raise UnsupportedMediaType(
            f"send the raw bytes as Content-Type: {OCTET_STREAM} "
            f"(got {media_type or 'none'})"
        )
    limit: int = request.app.state.settings.max_upload_bytes
    too_large = PayloadTooLarge(
        f"uploads are limited to {limit} bytes ({limit / 2**20:g} MiB)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _raw(data: bytes, etag: str) -> Response:
    return Response(data, media_type=OCTET_STREAM, headers={"ETag": f'"{etag}"'})


@router.post(
    "/blobs",
    status_code=201,
    operation_id="upload_blob",
    openapi_extra=_UPLOAD,
    responses={200: {"model": BlobPublic, "description": "Uploaded before."}},
)
async def upload_blob(
    request: Request, response: Response, caller: Member, blobs: BlobsDep
) -> BlobPublic:
    """Upload bytes (a ciphertext, a bundle); they are named by their SHA-256.

    201 when new to the caller's organisation, 200 when it uploaded them before.
    """
    data = await read_upload(request)
    blob, created = await run_in_threadpool(blobs.upload_blob, caller, data)
    if not created:
        response.status_code = 200
    return blob


@router.get(
    "/blobs/{sha256}",
    operation_id="get_blob",
    response_class=Response,
    responses={200: _BINARY},
)
def get_blob(sha256: Sha256, caller: Member, blobs: BlobsDep) -> Response:
    """Download a blob (uploaders; a job's node for inputs, buyer for outputs).

    Readable by the organisations that uploaded it, the node of a dispatched or
    running job that takes it as input, and the buyer and node of a succeeded
    job that produced it.
    """
    return _raw(blobs.get_blob(caller, sha256), sha256)


@router.post(
    "/he-contexts",
    status_code=201,
    operation_id="upload_he_context",
    openapi_extra=_UPLOAD,
    responses={200: {"model": HEContextPublic, "description": "Uploaded before."}},
)
async def upload_he_context(
    request: Request, response: Response, caller: Buyer, blobs: BlobsDep
) -> HEContextPublic:
    """Upload a public CKKS context (``SecretContext.public_bytes()``).

    Refused with 422 ``secret_key_present`` if the bytes carry a secret key,
    ``malformed_context`` if they are not a context. 200 on re-upload.
    """
    data = await read_upload(request)
    context, created = await run_in_threadpool(blobs.upload_context, caller, data)
    if not created:
        response.status_code = 200
    return context


@router.get(
    "/he-contexts/{context_id}",
    operation_id="get_he_context",
    response_class=Response,
    responses={200: _BINARY},
)
def get_he_context(
    context_id: Sha256, caller: ContextReader, blobs: BlobsDep
) -> Response:
    """Download a public HE context: its uploader, the node of a job using it."""
    return _raw(blobs.get_context(caller, context_id), context_id)
