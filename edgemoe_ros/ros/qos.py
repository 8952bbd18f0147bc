# SPDX-License-Identifier: Apache-2.0
"""QoS of the node's subscriptions and publishers, from their parameter words.

Why ``auto`` is the input default: a 720p frame (2.7 MB) travels as ~45 UDP fragments, and a
best-effort reader loses the whole frame when one fragment is lost. Measured on this machine
(docs/qos.md): a reliable 30 Hz publisher, 60 frames of 1280x720 bgr8, reached the node 4 times of
60 through a ``sensor_data`` (best-effort) subscription and 60 of 60 through a reliable one. A
reliable subscription, though, never matches a best-effort camera driver. ``auto`` therefore asks
for DDS's *best available* reliability (reliable when every publisher offers it, best effort
otherwise) and the node re-creates the subscription should a best-effort publisher appear later
(:func:`is_reliability_mismatch`), so both kinds of driver work out of the box.
"""

from __future__ import annotations

from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

AUTO = "auto"
#: Words of ``input_qos``: ``auto`` plus the explicit ones.
INPUT_QOS_CHOICES = (AUTO, "reliable", "best_effort", "sensor_data", "system_default")
#: Words of ``output_qos``.
OUTPUT_QOS_CHOICES = ("reliable", "best_effort", "sensor_data", "system_default")
#: History depth of the input subscriptions. Only a buffer between DDS and the executor (the
#: worker's own queue decides what is processed): deep enough for a 30 Hz camera while a
#: 2-core host is busy for ~0.5 s, small next to the frames' memory (30 x 2.7 MB at 720p).
INPUT_DEPTH = 30
#: Default history depth of the output publishers (``output_depth`` parameter).
DEFAULT_OUTPUT_DEPTH = 10
OUTPUT_DEPTH_RANGE = (1, 1000)


def profile(word: str, depth: int) -> QoSProfile:
    """QoS from its parameter word (validated already), keeping the last ``depth`` messages.

    ``sensor_data`` / ``system_default`` keep their reliability and durability; ``depth`` replaces
    their history depth so the parameter means the same for every word.
    """
    if word == "sensor_data":
        base = qos_profile_sensor_data
    elif word == "system_default":
        base = qos_profile_system_default
    else:
        reliability = {AUTO: QoSReliabilityPolicy.BEST_AVAILABLE,
                       "reliable": QoSReliabilityPolicy.RELIABLE,
                       "best_effort": QoSReliabilityPolicy.BEST_EFFORT}[word]
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=base.reliability,
                      durability=base.durability)


def is_reliability_mismatch(last_policy_kind: int) -> bool:
    """Whether an incompatible-QoS event names reliability (a best-effort publisher, reliable
    reader)."""

    from rclpy.qos import QoSPolicyKind

    return last_policy_kind == QoSPolicyKind.RELIABILITY
