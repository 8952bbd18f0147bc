# SPDX-License-Identifier: Apache-2.0
"""Helper process of test_dds_memory.py: how much heap a subscription keeps once it gave up the
large messages its reader history held.

    python dds_pool_probe.py sub TUNED OUT   # TUNED 1: configure_dds_memory() before rclpy.init
                                             # (or the environment names a profile file)
    python dds_pool_probe.py pub             # sends MESSAGES of MESSAGE_BYTES, reliable

The subscriber does not spin while the messages arrive, so DDS holds them all; then it takes them
(and drops them) and writes its heap in use (glibc ``mallinfo2``: heap plus mmapped chunks) at the
start, while held and after, in MB, to OUT as JSON.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
import time

MESSAGES = 24
MESSAGE_BYTES = 4 * 1024 * 1024
TOPIC = "dds_pool_probe"
TIMEOUT_S = 30.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]


def heap_in_use_mb() -> float:
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def main(argv: list[str]) -> int:
    role = argv[0]
    if role == "sub" and argv[1] == "1":
        from edgemoe_ros.dds_memory import configure_dds_memory

        configure_dds_memory()
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import UInt8MultiArray

    rclpy.init()
    node = rclpy.create_node(f"dds_pool_probe_{role}")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=MESSAGES,
                     reliability=ReliabilityPolicy.RELIABLE)
    deadline = time.monotonic() + TIMEOUT_S
    if role == "pub":
        pub = node.create_publisher(UInt8MultiArray, TOPIC, qos)
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        msg = UInt8MultiArray()
        msg.data = bytes(MESSAGE_BYTES)
        for _ in range(MESSAGES):
            pub.publish(msg)
        while pub.get_subscription_count() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # stay until the subscriber is done (reliable delivery)
    else:
        taken: list[int] = []
        node.create_subscription(UInt8MultiArray, TOPIC, lambda m: taken.append(len(m)), qos,
                                 raw=True)
        start = heap_in_use_mb()
        held = start
        want = start + 0.8 * MESSAGES * MESSAGE_BYTES / 2**20
        while held < want and time.monotonic() < deadline:
            time.sleep(0.2)  # the reader history fills; nothing takes from it
            held = heap_in_use_mb()
        while len(taken) < MESSAGES and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.2)
        count = len(taken)
        taken.clear()
        after = heap_in_use_mb()
        with open(argv[2], "w") as fh:
            json.dump({"start_mb": start, "held_mb": held, "after_mb": after, "taken": count}, fh)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
