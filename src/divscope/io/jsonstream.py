"""Streaming reader for JSON arrays, JSON Lines and concatenated JSON values.

Why not ``json.load``: a 1 GB file must not become 1 GB of Python objects, a truncated file (the packaged
ShareGPT dump ends mid-record) must still yield every complete record, and one malformed record must not take
its neighbours down. The reader keeps a bounded text buffer, decodes one value at a time with
``json.JSONDecoder.raw_decode`` and, after a malformed value, resynchronises at the next line that starts a
record at the indentation of the first one.

Invalid UTF-8 is decoded with ``surrogateescape`` so a bad byte poisons only the record that contains it.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_CHARS = 1 << 20
MAX_RECORD_CHARS = 64 << 20
_RAW_KEEP = 1 << 16  # how much of an oversized record's text the rejects file keeps


@dataclass
class RawItem:
    """One value read from a file, or one failure to read one, with where it was."""

    file: str
    index: int
    line: int | None
    raw: str
    value: Any = None
    problem: tuple[str, str] | None = None  # (reason code, human detail)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file}[{self.index}]"

    def reject_line(self, reason: str, detail: str, **extra: Any) -> str:
        """This item as one line of a rejects file: where it was, why, what else the caller adds, and its raw
        text."""
        return json.dumps({"file": self.file, "line": self.line, "index": self.index, "reason": reason,
                           "detail": detail, **extra, "raw": self.raw}, ensure_ascii=False) + "\n"


@dataclass
class StreamNotes:
    """Things fixed silently-but-counted while reading (they lose nothing, yet a user may want to know)."""

    bom: bool = False
    crlf: bool = False
    unclosed_array: bool = False
    extra: dict[str, int] = field(default_factory=dict)


def has_invalid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # C speed; only surrogateescape'd bytes (lone surrogates) fail
    except UnicodeEncodeError:
        return True
    return False


def printable_raw(text: str) -> str:
    """Raw text as it can be stored in JSON: undecodable bytes become ``\\xNN`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _sniff_encoding(fh: BinaryIO) -> str:
    """UTF-8 unless the file starts with a UTF-16/32 byte-order mark (Windows tools write those): such a file
    is decoded as what it says it is instead of every record being rejected as malformed."""
    head = fh.read(4)
    fh.seek(0)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")


class _Buffer:
    """A sliding window of decoded text over a binary file, with line counting that only moves forward."""

    def __init__(self, fh: BinaryIO, chunk_chars: int):
        self.fh = fh
        self.chunk = chunk_chars
        self.encoding = _sniff_encoding(fh)
        self.dec = codecs.getincrementaldecoder(self.encoding)(
            "surrogateescape" if self.encoding == "utf-8" else "replace")
        self.buf = ""
        self.eof = False
        self.line_no = 1
        self.line_pos = 0
        self.first = True

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.fh.read(self.chunk)
        text = self.dec.decode(data, final=not data)
        if not data:
            self.eof = True
        self.buf += text
        return bool(data) or bool(text)

    def line_at(self, pos: int) -> int:
        self.line_no += self.buf.count("\n", self.line_pos, pos)
        self.line_pos = pos
        return self.line_no

    def compact(self, pos: int) -> int:
        """Drop text before ``pos`` once it is large; returns the new position of ``pos``."""
        if pos < self.chunk:
            return pos
        self.line_at(pos)
        self.buf = self.buf[pos:]
        self.line_pos = 0
        return 0


def _skip_ws(b: _Buffer, pos: int) -> int:
    while True:
        n = len(b.buf)
        while pos < n and b.buf[pos] in " \t\r\n":
            pos += 1
        if pos < n or not b.fill():
            return pos


def iter_json_values(
    path: str | Path,
    *,
    chunk_chars: int = CHUNK_CHARS,
    max_record_chars: int = MAX_RECORD_CHARS,
    notes: StreamNotes | None = None,
    display_name: str | None = None,
) -> Iterator[RawItem]:
    """Yield every top-level record of a JSON array / JSONL / concatenated-JSON file as a ``RawItem``."""
    notes = notes if notes is not None else StreamNotes()
    name = display_name or str(path)
    decoder = json.JSONDecoder()
    with open(path, "rb") as fh:
        b = _Buffer(fh, chunk_chars)
        b.fill()
        if b.buf.startswith("\ufeff"):
            notes.bom = True
            b.buf = b.buf[1:]
        if b.encoding != "utf-8":
            notes.extra["decoded_" + b.encoding.replace("-", "")] = 1
        if "\r\n" in b.buf[:chunk_chars]:
            notes.crlf = True
        pos = _skip_ws(b, 0)
        if pos >= len(b.buf):
            return
        array = b.buf[pos] == "["
        if array:
            pos += 1
        resync: re.Pattern[str] | None = None
        index = 0
        while True:
            pos = _skip_ws(b, pos)
            if array and pos < len(b.buf) and b.buf[pos] == ",":
                pos = _skip_ws(b, pos + 1)
            if pos >= len(b.buf):
                if array:
                    notes.unclosed_array = True
                return
            if array and b.buf[pos] == "]":
                end = _skip_ws(b, pos + 1)
                if end < len(b.buf):
                    yield RawItem(name, index, b.line_at(end), b.buf[end : end + _RAW_KEEP],
                                  problem=("trailing_data", "text after the closing ']' of the JSON array"))
                return
            if resync is None:
                resync = _resync_pattern(b.buf, pos)
            pos = b.compact(pos)
            start = pos
            line = b.line_at(start)
            try:
                value, end = decoder.raw_decode(b.buf, start)
                if end >= len(b.buf) and not b.eof and not isinstance(value, (dict, list)):
                    b.fill()  # a scalar at the buffer's edge may continue in the next chunk
                    continue
            except json.JSONDecodeError as e:
                incomplete = e.pos >= len(b.buf) - 6 or e.msg.startswith("Unterminated string")
                if incomplete and not b.eof:
                    if len(b.buf) - start > max_record_chars:
                        pos, raw = _resync(b, start, resync, max_record_chars)
                        yield RawItem(name, index, line, raw, problem=(
                            "record_too_large",
                            f"record longer than {max_record_chars:,} characters (raise max_record_chars)"))
                        index += 1
                        continue
                    b.fill()
                    continue
                if incomplete:
                    yield RawItem(name, index, line, printable_raw(b.buf[start : start + _RAW_KEEP]), problem=(
                        "truncated", "file ends inside this record (truncated file)"))
                    return
                err_line = line + b.buf.count("\n", start, e.pos)
                pos, raw = _resync(b, start, resync, max_record_chars)
                yield RawItem(name, index, line, raw.rstrip(" \t\r\n,"),
                              problem=("malformed_json", f"{e.msg} (at line {err_line})"))
                index += 1
                continue
            raw = b.buf[start:end]
            pos = end
            if has_invalid_utf8(raw):
                yield RawItem(name, index, line, printable_raw(raw), problem=(
                    "invalid_utf8", "record contains bytes that are not valid UTF-8 (convert the file to UTF-8, "
                    "e.g. iconv -f latin1 -t utf-8)"))
            else:
                yield RawItem(name, index, line, raw, value=value)
            index += 1


def _resync_pattern(buf: str, start: int) -> re.Pattern[str]:
    """Where records start, learnt from the first one: a line at its indentation, or ``,{`` when compact."""
    nl = buf.rfind("\n", 0, start)
    if buf[nl + 1 : start].strip():
        return re.compile(r",\s*(?=[\{\[])")
    indent = buf[nl + 1 : start]
    return re.compile("\n" + re.escape(indent) + r"(?=[\{\[])")


def _resync(b: _Buffer, start: int, pattern: re.Pattern[str], max_chars: int) -> tuple[int, str]:
    """Find the next record start after ``start``, reading on until one is found or EOF.

    Returns that position and the skipped text (cut to a bounded length). Memory stays bounded: while
    searching past ``2 * max_chars`` the skipped text is dropped from the buffer, lines still counted.
    """
    raw = None
    frm = start + 1
    while True:
        m = pattern.search(b.buf, frm)
        if m:
            if raw is None:
                raw = b.buf[start : min(m.start(), start + _RAW_KEEP)]
            return m.end(), printable_raw(raw)
        if raw is None and len(b.buf) - start > 2 * max_chars:
            raw = b.buf[start : start + _RAW_KEEP]
        if raw is not None:
            cut = max(b.line_pos, len(b.buf) - 1024)
            b.line_at(cut)
            b.buf = b.buf[cut:]
            b.line_pos = 0
            frm = 0
        if not b.fill():
            if raw is None:
                raw = b.buf[start : start + _RAW_KEEP]
            return len(b.buf), printable_raw(raw)
