"""Waiting for a condition instead of sleeping for a guessed time: ``wait_until`` polls it (in a thread or a test's
own code), ``wait_until_async`` on an event loop the condition shares (a TestClient's portal, an app's loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "the condition") -> T:
    """Call ``condition()`` every ``interval`` seconds until it returns something truthy, and return that. After
    ``timeout`` seconds without it: AssertionError naming ``what``. The timeout only bounds a hang (a condition
    that never comes): make it generous; what the test states is the condition, not how soon it came."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(condition: Callable[[], T], timeout: float, interval: float = 0.01,
                           what: str = "the condition") -> T:
    """``wait_until`` on a running event loop: sleeps with ``asyncio.sleep``, so the loop's other tasks (the app
    under test) run meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
