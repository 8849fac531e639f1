"""The one shape of every provider's SDK boundary: errors an SDK raises become drbot's exception tree.

Modelled on httpx's `map_exceptions`: the try/except lives here once; each cloud keeps only what differs — its
table (`translate`: an SDK exception → the `ProviderError` that says what to do) and which exceptions are its SDK's
(`sdk`), so drbot's own errors pass unchanged and a bug in drbot is never disguised as a cloud error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runbooks.errors import ProviderError

__all__ = ["map_sdk_errors", "raised_by"]


def raised_by(*packages: str) -> Callable[[Exception], bool]:
    """True for an exception whose class (or a base) is defined in one of the top-level `packages`."""
    return lambda exc: any(cls.__module__.split(".")[0] in packages for cls in type(exc).__mro__)


@contextmanager
def map_sdk_errors(translate: Callable[[Exception], ProviderError], *,
                   sdk: Callable[[Exception], bool] = lambda exc: True) -> Iterator[None]:
    """Inside the block, an exception `sdk` accepts leaves as `translate(exc)`, raised from it."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        if not sdk(exc):
            raise
        raise translate(exc) from exc
