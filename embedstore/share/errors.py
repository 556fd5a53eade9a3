"""One-line errors of remote stores: what went wrong (not found, denied, unreachable, truncated), never a token."""

from __future__ import annotations

import os

from embedstore.errors import EmbedstoreError


SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "HF_TOKEN",
                    "HUGGING_FACE_HUB_TOKEN")
CREDENTIAL_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for a private bucket",
    "hf": "log in with `hf auth login` or set HF_TOKEN, and accept the dataset's terms on its page",
}
EXTRAS_HINT = "reinstall embedstore (`pip install embedstore`), which brings aiohttp, requests and s3fs"


def url_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with any known credential value replaced by ``***``."""
    for secret in (*secrets, *(os.environ.get(name, "") for name in SECRET_VARIABLES)):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _kind(err: BaseException, scheme: str) -> str:
    """A short human reason for a remote failure (matched by class name: aiohttp/botocore are optional)."""
    cause = err.__cause__
    if isinstance(err, FileNotFoundError) and cause is not None and not isinstance(cause, FileNotFoundError):
        return _kind(cause, scheme)  # fsspec's HTTP info() reports any failure as FileNotFoundError
    names = {cls.__name__ for cls in type(err).__mro__}
    status = getattr(err, "status", None) or getattr(err, "status_code", None)
    if isinstance(err, FileNotFoundError) or status == 404:
        return "not found (404)"
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return f"no credentials found; {CREDENTIAL_HINT.get(scheme, 'provide credentials')}"
    if isinstance(err, PermissionError) or status in (401, 403):
        return f"access denied (credentials missing or wrong; {CREDENTIAL_HINT.get(scheme, 'check access')})"
    if names & {"ClientPayloadError", "ContentLengthError", "IncompleteRead", "ResponseStreamingError",
                "IncompleteReadError", "TransferEncodingError"}:
        return "download truncated (the connection closed before the whole file arrived); try again"
    if names & {"ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError", "ConnectionError",
                "EndpointConnectionError", "ConnectTimeoutError", "ConnectTimeout", "ConnectError", "gaierror",
                "TimeoutError"}:
        return "cannot connect (host unreachable, connection refused or timed out)"
    if isinstance(err, ImportError):
        return f"a remote-access package is missing ({err.name or err}); {EXTRAS_HINT}"
    if status:
        return f"HTTP {status}"
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def remote_error(url: str, err: BaseException, key: str = "", secrets: tuple[str, ...] = ()) -> EmbedstoreError:
    """The one-line user error for a failed remote read of ``key`` under ``url``."""
    if isinstance(err, EmbedstoreError):
        return err
    where = f"{url.rstrip('/')}/{key}" if key else url
    return EmbedstoreError(redact(f"{where}: {_kind(err, url_scheme(url))}", secrets).replace("\n", " "))
