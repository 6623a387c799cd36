"""The bytes of a message compose() built, as smtplib's send_message writes them
(email.generator.BytesGenerator, CRLF line ends), written here directly.

BytesGenerator is general: for every part it clones itself and its policy, buffers the part,
looks its handler up by content type and writes the body a line at a time. For the
notifications.send profile that was 12 % of a pool process's time (bench/README.md, twelfth
session), five times what writing the few shapes compose builds takes: headers as the
message's policy folds them, bodies already encoded to ASCII (quoted-printable, base64),
multiparts with their boundary in the Content-Type. Anything else (a body that is not ASCII,
a preamble or epilogue, a message inside a message, another policy) is BytesGenerator's, and
tests/test_wire.py holds the two to the same bytes for every shape compose builds.
"""

from __future__ import annotations

import io
import re
from email.generator import BytesGenerator
from email.message import Message

from services.mail.compose import POLICY

CRLF = b"\r\n"
_WIRE_POLICY = POLICY.clone(linesep="\r\n")
# What Generator takes for a line end in a body, and writes as the policy's line separator.
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
# compat32 writes a body line starting "From " as ">From " (mangle_from_: an mbox reader
# would take it for the start of the next message); BytesGenerator does, so this does.
_FROM_LINE = re.compile(r"^From ", re.MULTILINE)
# The boundary as compose writes it: quoted, nothing to unescape.
_BOUNDARY = re.compile(r';\s*boundary="([^"\\]+)"')


class _NotSimple(Exception):
    """A part this module does not write: the whole message goes to BytesGenerator."""


def message_bytes(message: Message) -> bytes:
    """The message with CRLF line ends, byte for byte what BytesGenerator writes."""
    out: list[bytes] = []
    try:
        if message.policy is not POLICY:
            raise _NotSimple
        _write(message, out)
    except _NotSimple:
        with io.BytesIO() as buffer:
            BytesGenerator(buffer).flatten(message, linesep="\r\n")
            return buffer.getvalue()
    return b"".join(out)


def _write(part: Message, out: list[bytes]) -> None:
    if part.preamble is not None or part.epilogue is not None:
        raise _NotSimple
    fold = _WIRE_POLICY.fold_binary
    for name, value in part.raw_items():
        out.append(fold(name, value))
    out.append(CRLF)
    payload = part.get_payload()
    if isinstance(payload, list):
        content_type = part.get("Content-Type", "")
        boundary = _BOUNDARY.search(content_type)
        if not payload or not content_type.startswith("multipart/") or boundary is None:
            raise _NotSimple
        delimiter = boundary.group(1).encode("ascii")
        for number, subpart in enumerate(payload):
            out.append((b"\r\n--" if number else b"--") + delimiter + CRLF)
            _write(subpart, out)
        out.append(b"\r\n--" + delimiter + b"--" + CRLF)
    elif isinstance(payload, str) and payload.isascii():
        if "From " in payload:
            payload = _FROM_LINE.sub(">From ", payload)
        # Generator's line ends, and str.replace (C) where the body has only LF ones.
        payload = (
            _LINE_ENDS.sub("\r\n", payload) if "\r" in payload else payload.replace("\n", "\r\n")
        )
        out.append(payload.encode("ascii"))
    elif payload is not None:
        raise _NotSimple
