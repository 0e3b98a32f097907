"""Fail fast, and helpfully, when the Hugging Face hub cannot be reached.

The TinyStories datasets and GPT-Neo checkpoints are addressed by hub name
(`roneneldan/TinyStoriesInstruct`, `roneneldan/TinyStories-33M`). Without a network,
`huggingface_hub` retries each request five times with back-off (about 25 s per file here) before
giving up, and the error it finally raises says nothing about the alternative. This module checks
first, in at most a few seconds:

- offline mode set (`HF_HUB_OFFLINE=1` or `HF_DATASETS_OFFLINE=1`): the hub code path runs anyway,
  because a populated local HF cache can still serve the request; if it cannot, the library fails
  immediately and the caller converts the error with `hub_unavailable`;
- online mode: one TCP connection to the hub endpoint with a short timeout. If it fails, the caller
  gets `HubUnavailableError` at once instead of minutes of retries.

Every `HubUnavailableError` message says what to do instead (local files, a local model directory).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

__all__ = ["HubUnavailableError", "hub_offline_mode", "check_hub_reachable", "hub_unavailable"]

_TRUE = {"1", "on", "yes", "true"}


class HubUnavailableError(ConnectionError):
    """A hub name was requested but the hub (or the local cache for it) cannot serve it."""


def hub_offline_mode() -> bool:
    """Whether the user asked for offline mode through the standard HF environment variables."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _endpoint_host_port() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname or "huggingface.co", port


def _can_connect(host: str, port: int, timeout_s: float) -> bool:
    # getaddrinfo has no timeout of its own, so the whole attempt runs in a daemon thread that we
    # stop waiting for after `timeout_s`.
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def hub_unavailable(
    name: str, what: str, alternative: str, cause: BaseException | None = None
) -> HubUnavailableError:
    """Build the `HubUnavailableError` for hub name `name` (`what`: "dataset" or "model")."""
    reason = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    mode = "offline mode is set" if hub_offline_mode() else "the hub is unreachable"
    return HubUnavailableError(
        f"Cannot load the {what} {name!r} from the Hugging Face hub: {mode}{reason}. "
        f"{alternative} (With a populated local HF cache, set HF_HUB_OFFLINE=1 to read from it.)"
    )


def check_hub_reachable(name: str, what: str, alternative: str, timeout_s: float = 3.0) -> None:
    """Raise `HubUnavailableError` within about `timeout_s` if the hub cannot be reached.

    In offline mode this returns without touching the network: the caller then tries the local
    cache and converts its failure with `hub_unavailable`.
    """
    if hub_offline_mode():
        return
    host, port = _endpoint_host_port()
    if not _can_connect(host, port, timeout_s):
        raise hub_unavailable(
            name, what, alternative, ConnectionError(f"no connection to {host}:{port}")
        )
