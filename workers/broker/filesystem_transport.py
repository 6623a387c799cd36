"""kombu's filesystem transport (the embedded broker), made safe for a reader and a writer at once.

kombu writes a message straight into its final `<ms>_<uuid>.<queue>.msg` file, so a worker
polling the folder can move that file away while it is still empty or half written. It then
fails to parse it, the JSON error escapes the consumer loop and the worker stops, and the
message is lost (CI saw exactly this: the demo's worker died on "Expecting value: line 1
column 1"). Here a message is written to a hidden temporary file and renamed into place, which
is atomic on one filesystem, so a reader sees either nothing or the whole message. A file that
still cannot be parsed (written by something else) is recorded as a rejected entry and the
worker goes on with the next one.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import suppress
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.utils.json import dumps

from workers.broker.consumer import record_foreign_entry

# kombu picks files whose name after the first dot is "<queue>.msg"; a name starting with a
# dot and ending in ".part" is never taken for a message, nor counted in a queue's size.
PARTIAL_SUFFIX = ".part"


class Channel(kombu_filesystem.Channel):
    # kombu's stubs give _put two signatures (the filesystem channel's and its base's); this
    # one is the filesystem channel's, which is what kombu calls.
    def _put(  # type: ignore[override]
        self, queue: str, payload: dict[str, Any], **kwargs: Any
    ) -> None:
        final = os.path.join(
            self.data_folder_out,
            f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg",
        )
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4()}{PARTIAL_SUFFIX}")
        try:
            with open(partial, "wb") as handle:
                handle.write(dumps(payload).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except OSError as exc:
            with suppress(FileNotFoundError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        # kombu's _get has already removed the file when parsing fails, so asking again
        # moves on to the next file; Empty ends the loop when none is left.
        while True:
            try:
                payload = super()._get(queue)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                _record(getattr(exc, "doc", None) or getattr(exc, "object", None), exc)
                continue
            if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
                _record(payload, ValueError("not a kombu envelope (no 'properties' object)"))
                continue
            return payload


def _record(raw: Any, exc: BaseException) -> None:

    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "backslashreplace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = dumps(raw) if raw is not None else "(not available once parsed)"
    record_foreign_entry(text or "(empty file)", f"{type(exc).__name__}: {exc}")


class Transport(kombu_filesystem.Transport):
    Channel = Channel

