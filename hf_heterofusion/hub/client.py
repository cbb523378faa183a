# SPDX-License-Identifier: Apache-2.0
"""The Hub client as every Hub helper uses it: an explicit `HfApi`, settings read at call time, one-line errors.

huggingface_hub's module-level functions bind `HF_ENDPOINT` when it is imported, which would send a test run to
the real Hub; so every helper builds its own `HfApi(endpoint=..., token=...)` here (or takes one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hf_heterofusion import __version__
from hf_heterofusion.errors import HubError
from hf_heterofusion.hub.refs import HubRef


if TYPE_CHECKING:
    from huggingface_hub import HfApi

T = TypeVar("T")
_TRUE = {"1", "on", "yes", "true"}


def endpoint() -> str:
    # Read at call time: huggingface_hub's own constant is frozen when it is first imported.
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def default_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser() / "hub"


def make_api(token: str | None = None) -> HfApi:
    """An `HfApi` for the current `HF_ENDPOINT`; `token=None` lets huggingface_hub use `HF_TOKEN` or the login."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token, library_name="hf_heterofusion", library_version=__version__)


def has_token(api: HfApi, token: str | None) -> bool:
    from huggingface_hub import get_token

    return bool(token or api.token or get_token())


def hub_call(ref: HubRef | str, api: HfApi | None, token: str | None, fn: Callable[[], T]) -> T:
    """Run one Hub call and turn its failures into one-line `HubError`s that say how to fix them."""
    from huggingface_hub import errors
    from huggingface_hub.utils import httpx

    repo = ref.repo_id if isinstance(ref, HubRef) else ref
    try:
        return fn()
    except errors.GatedRepoError as err:
        raise HubError(f"Hub repo `{repo}` is gated; accept its terms on the Hub, then use a token") from err
    except errors.RepositoryNotFoundError as err:
        if api is not None and has_token(api, token):
            raise HubError(f"Hub repo `{repo}` does not exist or the token in use cannot read it") from err
        raise HubError(
            f"Hub repo `{repo}` is private or does not exist; pass a token with `hf auth login` or HF_TOKEN"
        ) from err
    except errors.RevisionNotFoundError as err:
        revision = ref.revision if isinstance(ref, HubRef) else None
        raise HubError(
            f"revision `{revision}` not found in Hub repo `{repo}`; use a branch, tag or commit sha"
        ) from err
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubError("the Hub rejected the token (401); run `hf auth login` again or fix HF_TOKEN") from err
        if status == 403:
            raise HubError(f"the token in use may not write to `{repo}` (403); use a token with write access") from err
        raise HubError(f"Hub request for `{ref}` failed: {str(err).splitlines()[0]}") from err
    except errors.OfflineModeIsEnabled as err:
        raise HubError(f"`{ref}` needs the Hub but HF_HUB_OFFLINE=1 is set") from err
    except (httpx.TransportError, errors.LocalEntryNotFoundError) as err:
        raise HubError(f"cannot reach the Hub at {endpoint()} for `{ref}` ({type(err).__name__})") from err

