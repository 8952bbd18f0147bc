# SPDX-License-Identifier: Apache-2.0
"""Read and write rosbag2 bags (sqlite3 and mcap) with the ``rosbags`` library — no ROS install needed.

Every failure a user can cause (a path that is not a bag, a truncated or corrupt file, a topic that
is not there, an encoding we cannot decode) becomes a ``BagError`` whose message names the file and
the topic, so the CLI can print one line and exit non-zero instead of a traceback from a storage
plugin.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from . import messages as m
from .messages import CameraInfoParams

log = logging.getLogger(__name__)

#: Storage plugins by the names ``ros2 bag record -s`` uses.
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: rosbag2 metadata version written by Jazzy and Kilted.
BAG_VERSION = 9
#: First look-back window of ``BagReader.last_before`` (grows ten-fold until it finds a message).
LOOKBACK_START_NS = 1_000_000_000


class BagError(RuntimeError):
    """A bag that cannot be used for the request; the message names the file and, if any, the topic."""

    def __init__(self, path: str | os.PathLike, message: str, topic: str | None = None):
        self.path = str(path)
        self.topic = topic
        where = self.path + (f" [topic {topic}]" if topic else "")
        super().__init__(f"{where}: {message}")


@dataclass
class BagImage:
    """One camera frame read from a bag, decoded to RGB."""

    stamp_ns: int
    rgb: np.ndarray
    frame_id: str
    encoding: str
    topic: str
    #: When the recorder received it (bag timestamp); the replay rate follows these.
    log_time_ns: int = 0


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagInfo:
    path: str
    storage: str
    duration_ns: int
    start_ns: int
    message_count: int
    topics: tuple[TopicInfo, ...]

    def image_topics(self) -> list[str]:
        return [t.topic for t in self.topics if t.msgtype in m.IMAGE_TYPES]


# Exceptions a storage plugin or the CDR deserialiser raises on a damaged file. rosbags has no single
# base class for "corrupt data" (mcap raises its own, sqlite3 raises DatabaseError, CDR raises
# struct/index errors), so the reader catches these broadly and re-raises them as BagError.
_CORRUPT = (Exception,)


class BagReader:
    """A read-only bag with ``BagError`` on every failure. Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(self.path, "no such file or directory")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except _CORRUPT as exc:
            raise BagError(self.path, f"not a readable rosbag2 bag ({type(exc).__name__}: {exc})") from None
        self._connections = {c.topic: c for c in self._reader.connections}

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._reader.close()
        except _CORRUPT:  # closing a damaged bag must not hide the error that made us stop
            log.debug("closing %s failed", self.path, exc_info=True)

    def info(self) -> BagInfo:
        r = self._reader
        files = [self.path] if self.path.is_file() else list(self.path.iterdir())
        storage = "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"
        topics = tuple(TopicInfo(c.topic, c.msgtype, int(c.msgcount)) for c in r.connections)
        # rosbags' end_time is "just after the last message" (last + 1 ns); report first-to-last.
        start, end = (int(r.start_time), int(r.end_time) - 1) if r.message_count else (0, 0)
        return BagInfo(str(self.path), storage, end - start, start, int(r.message_count), topics)

    def msgtype(self, topic: str) -> str:
        self.require(topic)
        return self._connections[topic].msgtype

    def msgdef(self, topic: str) -> tuple[str, str] | None:
        """(message definition text, RIHS01 digest) as recorded, for copying a topic verbatim.

        None when the bag does not record the digest (a bare .mcap file keeps it only in the
        metadata.yaml it lacks): the writer then takes both from the type store.
        """
        conn = self._connections[topic]
        return (conn.msgdef.data, conn.digest) if conn.digest else None

    def require(self, topic: str, msgtypes: Sequence[str] | None = None) -> None:
        """Raise ``BagError`` unless ``topic`` is in the bag (and of one of ``msgtypes``)."""
        if topic not in self._connections:
            have = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(self._connections.items())) or "none"
            raise BagError(self.path, f"topic not in bag; topics: {have}", topic)
        if msgtypes and self._connections[topic].msgtype not in msgtypes:
            raise BagError(self.path, f"type {self._connections[topic].msgtype} is not one of "
                                      f"{', '.join(msgtypes)}", topic)

    def pick_image_topic(self, topic: str | None) -> str:
        """``topic`` checked to be an image topic, or the bag's only image topic when ``None``."""
        if topic is not None:
            self.require(topic, m.IMAGE_TYPES)
            return topic
        images = sorted(t for t, c in self._connections.items() if c.msgtype in m.IMAGE_TYPES)
        if len(images) != 1:
            found = ", ".join(images) or "none"
            raise BagError(self.path, f"cannot choose the image topic: {len(images)} image topics ({found}); "
                                      "name one with --topic")
        return images[0]

    def has(self, topic: str) -> bool:
        return topic in self._connections

    def raw_messages(self, topics: Sequence[str], start_ns: int | None = None,
                     stop_ns: int | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log_time_ns, CDR bytes) in log-time order; damaged data raises ``BagError``.

        ``start_ns``/``stop_ns`` keep only log times in [start, stop) (None: unbounded), read
        through the storage's index, so a time slice of a long bag costs only that slice.
        """
        conns = []
        for t in topics:
            self.require(t)
            conns.append(self._connections[t])
        it = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        topic = ",".join(topics)
        while True:
            try:
                conn, log_time, raw = next(it)
            except StopIteration:
                return
            except _CORRUPT as exc:
                raise BagError(self.path, f"corrupt bag data ({type(exc).__name__}: {exc})", topic) from None
            yield conn.topic, int(log_time), bytes(raw)

    def last_before(self, topic: str, time_ns: int) -> bytes | None:
        """CDR bytes of ``topic``'s last message logged before ``time_ns``, or None.

        Looks back over windows that grow ten-fold from one second, so a topic published at any
        steady rate is found after reading a short stretch of the bag, not all of it.
        """
        start = int(self._reader.start_time) if self._reader.message_count else time_ns
        window = LOOKBACK_START_NS
        while True:
            lo = max(start, time_ns - window)
            last = None
            for _, _, raw in self.raw_messages([topic], lo, time_ns):
                last = raw
            if last is not None or lo <= start:
                return last
            window *= 10

    def deserialize(self, topic: str, raw: bytes) -> Any:
        try:
            return m.deserialize(raw, self._connections[topic].msgtype)
        except _CORRUPT as exc:
            raise BagError(self.path, f"corrupt message ({type(exc).__name__}: {exc})", topic) from None

    def decode_image(self, topic: str, log_time: int, raw: bytes) -> BagImage:
        return self.image_from_message(topic, log_time, self.deserialize(topic, raw))

    def image_from_message(self, topic: str, log_time: int, msg: Any,
                           max_pixels: int = m.DEFAULT_MAX_IMAGE_PIXELS) -> BagImage:
        """A deserialised image message of ``topic`` as RGB (``BagError`` if it cannot be decoded:
        a raw frame the node would refuse, e.g. over ``max_pixels``, or corrupt compressed data)."""
        msgtype = self._connections[topic].msgtype
        try:
            rgb, encoding = m.message_to_rgb(msg, msgtype, max_pixels)
        except ValueError as exc:
            raise BagError(self.path, f"frame at {m.stamp_ns(msg)} ns: {exc}", topic) from None
        return BagImage(m.stamp_ns(msg), rgb, msg.header.frame_id, encoding, topic, log_time)


class BagWriter:
    """A new bag (refuses to overwrite) with topics declared on first write.

    On an exception inside the ``with`` block the partial bag is removed, so a failed run never
    leaves something that looks like a finished bag.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap"):
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(self.path, f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
        if self.path.exists():
            raise BagError(self.path, "output already exists; choose a new path or remove it")
        self.storage = storage
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Any] = {}
        self.count = 0

    def open(self) -> BagWriter:
        try:
            self._writer.open()
        except _CORRUPT as exc:
            raise BagError(self.path, f"cannot create bag ({type(exc).__name__}: {exc})") from None
        return self

    def close(self) -> None:
        """Write the index and metadata: the bag is complete."""
        self._writer.close()

    def abort(self) -> None:
        """Stop and delete the partial bag."""
        try:
            self._writer.abort()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _connection(self, topic: str, msgtype: str, msgdef: tuple[str, str] | None) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            if msgdef is not None:
                conn = self._writer.add_connection(topic, msgtype, msgdef=msgdef[0], rihs01=msgdef[1])
            else:
                conn = self._writer.add_connection(topic, msgtype, typestore=m.TYPESTORE)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(self.path, f"topic already written as {conn.msgtype}, not {msgtype}", topic)
        return conn

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        """Serialise a ``rosbags`` message and append it."""
        self.write_raw(topic, msg.__msgtype__, log_time_ns, m.serialize(msg))

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes,
                  msgdef: tuple[str, str] | None = None) -> None:
        """Append CDR bytes as they are (copying a topic from another bag keeps its bytes exact)."""
        self._writer.write(self._connection(topic, msgtype, msgdef), int(log_time_ns), raw)
        self.count += 1


def bag_info(path: str | os.PathLike) -> BagInfo:
    """Topics, types, counts and duration of a bag."""
    with BagReader(path) as reader:
        return reader.info()


def read_image_frames(path: str | os.PathLike, topic: str | None = None) -> Iterator[BagImage]:
    """Decode every frame of an Image or CompressedImage topic to RGB, in recording order.

    ``topic=None`` uses the bag's only image topic. Raw frames are converted as the node converts
    them (``m.RAW_ENCODINGS``: rgb/bgr/rgba/bgra/mono 8 and 16 bit, YUV 4:2:2, Bayer 8/16). Errors
    (missing topic, corrupt data, a frame the node would refuse or an undecodable compressed
    frame) raise ``BagError``.
    """
    with BagReader(path) as reader:
        topic = reader.pick_image_topic(topic)
        for t, log_time, raw in reader.raw_messages([topic]):
            yield reader.decode_image(t, log_time, raw)


def write_image_bag(path: str | os.PathLike, frames: Iterable[tuple[int, np.ndarray]], topic: str,
                    frame_id: str, storage: str = "mcap", camera_info: CameraInfoParams | None = None,
                    encoding: str = "rgb8") -> int:
    """Write (stamp_ns, RGB uint8 HxWx3) frames as a camera topic; returns the number of frames.

    ``encoding``: one of ``m.RAW_ENCODINGS`` (any the node reads, e.g. rgb8, yuv422, bayer_rggb16)
    writes sensor_msgs/Image as such a camera would (``messages.rgb_to_image``); "jpeg" or "png"
    writes sensor_msgs/CompressedImage. With ``camera_info`` a CameraInfo with the same stamp
    goes to the sibling ``camera_info`` topic (``/cam/image`` -> ``/cam/camera_info``). The bag
    timestamp of each message is its header stamp, so replay follows the stamps.
    """
    if encoding not in m.RAW_ENCODINGS and encoding not in m.COMPRESSED_FORMATS:
        raise BagError(path, f"unsupported encoding {encoding!r}; choose one of "
                             f"{', '.join((*m.RAW_ENCODINGS, *m.COMPRESSED_FORMATS))}", topic)
    info_topic = m.camera_info_topic(topic)
    n = 0
    with BagWriter(path, storage) as writer:
        for stamp, rgb in frames:
            try:
                if encoding in m.RAW_ENCODINGS:
                    msg = m.rgb_to_image(rgb, stamp, frame_id, encoding)
                else:
                    msg = m.rgb_to_compressed(rgb, stamp, frame_id, encoding)
            except ValueError as exc:
                raise BagError(path, f"frame {n} (stamp {stamp}): {exc}", topic) from None
            if camera_info is not None:
                if (camera_info.height, camera_info.width) != rgb.shape[:2]:
                    raise BagError(path, f"frame {n} is {rgb.shape[1]}x{rgb.shape[0]} but camera_info is "
                                         f"{camera_info.width}x{camera_info.height}", info_topic)
                # Before its image, as drivers publish it: a consumer pairing "latest camera_info"
                # with each image then never sees an image without its calibration.
                writer.write(info_topic, stamp, camera_info.to_msg(stamp, frame_id))
            writer.write(topic, stamp, msg)
            n += 1
    return n
