"""Whether the Hugging Face hub answers, asked once and quickly, and reading its cache without asking it.

``datasets.load_dataset`` on a hub id makes HEAD requests that ``huggingface_hub`` retries with back-off (1, 2, 4,
8, 8 s): offline, a run spent about 30 s and 11 warning lines before its error. One HEAD request with a short
timeout tells the same in at most :data:`PROBE_TIMEOUT_S`; when it fails, the data set is read from the local cache
alone (:func:`offline`), which either has it or says so at once.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator

#: Seconds the hub has to answer one HEAD request (connect and first byte).
PROBE_TIMEOUT_S = 3.0


def endpoint() -> str:
    """The hub's address as ``huggingface_hub`` uses it (``HF_ENDPOINT``, default ``https://huggingface.co``)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE=1``)."""
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def answer_problem(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why nothing at ``url`` answers HTTP within ``timeout`` seconds, or ``None`` if something does (any status,
    404 and 401 included: the hub is there). Proxies from the environment are honoured, as ``huggingface_hub``
    honours them."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:g} s"
        return f"{getattr(reason, 'strerror', None) or reason}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, ValueError) as e:  # a reset connection, a malformed HF_ENDPOINT
        return f"{type(e).__name__}: {e}"


def unreachable() -> str | None:
    """Why the hub cannot be reached (:func:`answer_problem` on :func:`endpoint`), or ``None`` if it answers or the
    user asked for offline mode (then nothing is asked of the network)."""
    return None if is_offline() else answer_problem(endpoint())


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` in offline mode for the duration (as with ``HF_HUB_OFFLINE=1``): files
    come from the local cache only, and a missing one is reported without a network request."""
    import datasets
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE = saved
