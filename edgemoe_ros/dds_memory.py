# SPDX-License-Identifier: Apache-2.0
"""Make Fast DDS give back the sample memory of large messages (our executables only).

Why: rmw_fastrtps creates every publisher and subscription with the history memory policy
``PREALLOCATED_WITH_REALLOC``: a topic's payload pool keeps each payload it ever needed at once,
grown to the largest sample, for as long as the endpoint lives. The node's output publishers live
from configure to cleanup and carry 720p images (0.9-3.7 MB each); whenever the asynchronous
sender fell behind (a busy 2-core host), their pools grew by a few payloads and kept them. In the
soak (bench/soak.py, 720p, 1,500 frames) the heap in use rose 320 -> 352 MB in two steps while
numpy's memory stayed flat (tracemalloc), and heaptrack put 44 MB of what was live in
``DataWriterImpl`` payloads. With the ``DYNAMIC`` policy the same run stayed at 303-306 MB.

``configure_dds_memory`` points the process at ``data/fastdds_endpoints.xml`` (default publisher
and subscriber profiles: ``DYNAMIC`` history memory, ``ASYNCHRONOUS`` publication as rmw_fastrtps
sets it; nothing else) and sets ``RMW_FASTRTPS_USE_QOS_FROM_XML=1``, which is how rmw_fastrtps
lets an XML file choose those two policies. It must run before ``rclpy.init``. It changes nothing
when the user configured Fast DDS themselves (a profiles file, ``DEFAULT_FASTDDS_PROFILES.xml``
in the working directory, or ``RMW_FASTRTPS_USE_QOS_FROM_XML``), when another RMW is selected, or
when ``EDGEMOE_DDS_TUNING=0``. Users with their own profile file add the two elements to it
(docs/HARDENING.md). It is process-wide, like ``allocator.tune_allocator``; library code never
calls it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

from .allocator import tuning_enabled

log = logging.getLogger(__name__)

#: The endpoint profile shipped with the package.
PROFILE_PATH = Path(__file__).resolve().parent / "data" / "fastdds_endpoints.xml"
#: Environment switch: "0" / "false" / "off" / "no" keeps rmw_fastrtps's defaults.
ENV_SWITCH = "EDGEMOE_DDS_TUNING"
#: Variables through which a user configures Fast DDS from XML (either means: theirs, not ours).
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
USE_QOS_FROM_XML = "RMW_FASTRTPS_USE_QOS_FROM_XML"
#: Files Fast DDS loads from the working directory when no variable names one.
CWD_PROFILE_FILES = ("DEFAULT_FASTDDS_PROFILES.xml", "DEFAULT_FASTRTPS_PROFILES.xml")
#: RMW implementations built on Fast DDS (the default one when ``RMW_IMPLEMENTATION`` is unset).
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")

#: What ``configure_dds_memory`` did, in words (for the start-up log and tests).
APPLIED = "applied"
OFF = "disabled by " + ENV_SWITCH
OTHER_RMW = "another RMW implementation"
USER_PROFILE = "the user's Fast DDS configuration"


def configure_dds_memory(
    environ: MutableMapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Select the ``DYNAMIC`` history memory policy for this process's DDS endpoints, unless the
    user configured Fast DDS; returns what was done (one of the module's words)."""
    env = os.environ if environ is None else environ
    if not tuning_enabled(env, ENV_SWITCH):
        return OFF
    if env.get("RMW_IMPLEMENTATION", FASTDDS_RMWS[0]) not in FASTDDS_RMWS:
        return OTHER_RMW
    here = Path.cwd() if cwd is None else cwd
    if any(env.get(var) for var in (*PROFILE_VARS, USE_QOS_FROM_XML)) or any(
        (here / name).is_file() for name in CWD_PROFILE_FILES
    ):
        log.info(
            "Fast DDS configured by the user: sample pools keep rmw_fastrtps's memory policy "
            "unless the profile sets historyMemoryPolicy DYNAMIC (see %s)",
            PROFILE_PATH.name,
        )
        return USER_PROFILE
    env[PROFILE_VARS[0]] = str(PROFILE_PATH)
    env[USE_QOS_FROM_XML] = "1"
    return APPLIED
