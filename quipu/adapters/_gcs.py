"""How a google-cloud-storage failure reads as a Quipu error, for every adapter that talks to
GCS (the blob store, ``gs://`` sources). Shared here, beside ``_storage.py``, because adapters
never import each other. The google libraries are imported when an error is translated, not
with this module, so a project that never uses GCS never loads them.

Codes: ``gcs_credentials_missing``, ``gcs_access_denied``, ``gcs_unreachable`` (5xx, 429,
timeouts and connection failures, after the client's retries) and ``gcs_error`` (any other
answer). A 404 is the caller's to interpret (a missing blob, object or bucket).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from quipu.core.errors import QuipuError, Unavailable

if TYPE_CHECKING:
    from google.cloud import storage

__all__ = ["gcs_client", "gcs_errors", "unreachable"]


def gcs_client(endpoint: str | None, project: str | None) -> storage.Client:
    """A google-cloud-storage client: at ``endpoint`` (an emulator or a private endpoint) with
    anonymous credentials, else with the application default credentials (which honour
    ``STORAGE_EMULATOR_HOST``). Raises the client's errors; wrap the call in ``gcs_errors``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if endpoint:
        return storage.Client(project=project or "quipu",
                              credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                              client_options={"api_endpoint": endpoint})
    return storage.Client(project=project)


def unreachable(doing: str, where: str, retry_seconds: float, exc: BaseException) -> Unavailable:
    """The error for a store that could not be reached within ``retry_seconds``."""
    return Unavailable(
        f"{doing} {where} failed after retrying for {retry_seconds:g} s: "
        f"{type(exc).__name__}: {str(exc)[:200]}", code="gcs_unreachable",
        hint="check the network and https://status.cloud.google.com (or that the "
        "emulator is running), then retry; nothing was recorded")


@contextlib.contextmanager
def gcs_errors(doing: str, where: str, *, retry_seconds: float, access_hint: str,
               credentials_hint: str, pass_not_found: bool = False) -> Iterator[None]:
    """Translate the client's errors raised inside into Quipu's (``doing`` reads "uploading
    to", ``where`` is the gs:// URL). A local file error (an ``OSError`` that is not a
    connection failure) passes through, for the caller's ``storage_errors``; so does a 404
    when ``pass_not_found``."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        yield
    except QuipuError:
        raise
    except auth_exceptions.DefaultCredentialsError as exc:
        raise Unavailable(f"no Google Cloud credentials for {where}: {exc}",
                          code="gcs_credentials_missing", hint=credentials_hint) from exc
    except auth_exceptions.GoogleAuthError as exc:
        raise Unavailable(
            f"the Google Cloud credentials for {where} were refused: {exc}",
            code="gcs_credentials_missing",
            hint="refresh them with `gcloud auth application-default login`") from exc
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:
        raise Unavailable(f"access denied {doing} {where}: {exc.message}",
                          code="gcs_access_denied", hint=access_hint) from exc
    except api_exceptions.RetryError as exc:
        raise unreachable(doing, where, retry_seconds, exc.cause or exc) from exc
    except (api_exceptions.ServiceUnavailable, api_exceptions.InternalServerError,
            api_exceptions.TooManyRequests, api_exceptions.GatewayTimeout) as exc:
        raise unreachable(doing, where, retry_seconds, exc) from exc
    except api_exceptions.NotFound as exc:
        if pass_not_found:
            raise
        raise Unavailable(f"{doing} {where} failed: {exc.message}", code="gcs_error",
                          hint="see the message; retry once the cause is fixed") from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise Unavailable(f"{doing} {where} failed: {exc.message}", code="gcs_error",
                          hint="see the message; retry once the cause is fixed") from exc
    except (ConnectionError, TimeoutError) as exc:
        raise unreachable(doing, where, retry_seconds, exc) from exc
    except OSError:
        raise  # a local file error: typed by the caller's storage_errors
    except Exception as exc:
        # requests' and urllib3's connection errors are not OSErrors; anything else from the
        # transport is treated the same way: the store could not be reached.
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "google"):
            raise unreachable(doing, where, retry_seconds, exc) from exc
        raise
