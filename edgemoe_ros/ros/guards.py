# SPDX-License-Identifier: Apache-2.0
"""Guards that keep one executor callback from corrupting the node's state or taking it down.

Why: the node's callbacks run on a MultiThreadedExecutor, several at once. ``~/reload_model``
(a reentrant group) ran concurrently with lifecycle ``change_state``, so a reload could install a
model into a node that had just been cleaned up; publishers were destroyed while a diagnostics
timer could still ask them for their subscriber count; and an exception escaping any callback
was re-raised by the executor in ``main`` and ended the process. Plain rclpy, no model code.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from rclpy.executors import Executor, ExternalShutdownException, ShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.task import Future

#: What rclpy raises when an entity is used after ``destroy_*``.
InvalidHandle = _rclpy.InvalidHandle

F = TypeVar("F", bound=Callable[..., Any])


def serialised(lock_attribute: str) -> Callable[[F], F]:
    """Decorator: run the method holding ``self.<lock_attribute>`` (an ``RLock``: autostart's
    configure is followed by activate from the same thread).

    The node puts it on its lifecycle transitions and on ``~/reload_model`` so a reload runs
    entirely before or entirely after a configure/cleanup/shutdown, never in between.
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
            with getattr(self, lock_attribute):
                return method(self, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap


def subscription_count(publisher: Any) -> int:
    """``publisher.get_subscription_count()``, or 0 once the publisher was destroyed (a cleanup
    racing this callback): for the caller that means the same thing, nobody to publish to."""
    try:
        return publisher.get_subscription_count()
    except InvalidHandle:
        return 0


def log_at(logger: Any, level: str, message: str) -> None:
    """``logger.<level>(message)`` for a level chosen at run time ("debug" ... "error").

    rclpy ties one severity to each call site (file, line, bytecode offset) and raises
    ``ValueError`` when that site logs at another: ``getattr(logger, level)(message)`` on one line
    worked for the first level and then raised, out of whichever callback logged second (a
    backend fault after a bad-input warning lost the fault's accounting and its fallback switch).
    Each level therefore has its own line here.
    """
    if level == "debug":
        logger.debug(message)
    elif level == "info":
        logger.info(message)
    elif level == "warning":
        logger.warning(message)
    elif level == "error":
        logger.error(message)
    else:
        logger.fatal(message)


def spin_until_done(executor: Executor, done: Future, log_error: Callable[[str], None]) -> int:
    """Spin ``executor`` until ``done`` completes or the context shuts down.

    An exception escaping a callback (re-raised here by rclpy's executor) is logged with its
    traceback and spinning resumes: one failed callback must not end a perception node.
    ``KeyboardInterrupt`` and rclpy's shutdown exceptions still propagate. Returns how many
    callback exceptions were survived.
    """
    survived = 0
    while executor.context.ok() and not done.done():
        try:
            executor.spin_until_future_complete(done)
        except (ExternalShutdownException, ShutdownException):
            raise
        except Exception:  # noqa: BLE001 - the point of this loop
            survived += 1
            log_error(
                f"a callback raised; the node keeps running:\n{traceback.format_exc().rstrip()}"
            )
    return survived
