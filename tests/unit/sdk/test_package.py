"""The package surface: what ``sdk`` exports, and what it never imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import sdk
import sdk.errors


def test_the_sdk_never_imports_the_exchange() -> None:
    code = (
        "import sys, sdk, sdk.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'marketplace'); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_export_exists_and_is_documented() -> None:
    assert sorted(sdk.__all__) == sorted(set(sdk.__all__))
    for name in sdk.__all__:
        value = getattr(sdk, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_the_error_tree_is_drawn_and_flat() -> None:
    doc = sdk.errors.__doc__ or ""
    for name in sdk.errors.__all__:
        cls = getattr(sdk.errors, name)
        if name == "FieldError":
            continue
        assert name in doc, name
        assert issubclass(cls, sdk.VeilxError)
    assert issubclass(sdk.APITimeoutError, sdk.APIConnectionError)
    for cls in (
        sdk.AuthenticationError,
        sdk.PermissionDeniedError,
        sdk.NotFoundError,
        sdk.ConflictError,
        sdk.InvalidRequestError,
        sdk.RateLimitError,
        sdk.ServerError,
    ):
        assert cls.__bases__ == (sdk.APIError,)
