"""multipart/form-data bodies (``curl -F``, ``requests.post(files=...)``) as a list of fields.

python-multipart (the parser under starlette's forms) reads them in one flat pass with ``bytes.find``: a
part's content is never parsed again (a part that says it is multipart itself is refused, as RFC 7578
retired them), so a nested body is not 150,000 parts to walk. Parts are counted as they begin and header
bytes as they arrive, and either bound stops the parse at once; the body itself is already whole and
bounded by the server's body limit.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from v2serve.errors import InvalidRequest

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# The parser logs a warning for each malformed form before it raises; the client is told (a 400), and a
# client must not be able to write to the server's log at will.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

MAX_PARTS = 1024
MAX_HEADER_BYTES = 64 * 1024
"""All parts' header lines together."""
_MAX_HEADERS_PER_PART = 16


def is_form(content_type: str | None) -> bool:
    return content_type is not None and content_type.lower().startswith("multipart/form-data")


@dataclass(frozen=True, slots=True)
class FormPart:
    name: str
    """The field name; ``data`` when the part has none."""
    content: bytes
    content_type: str
    """The part's own Content-Type; empty when it has none (a plain field)."""


def form_fields(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """Each part's field name (``data`` when it has none) and content, in order."""
    return [(part.name, part.content) for part in form_parts(body, content_type)]


def form_parts(body: bytes, content_type: str) -> list[FormPart]:
    """Each part of the form, in order."""
    _, parameters = parse_options_header(content_type)
    boundary = parameters.get(b"boundary")
    if not boundary:
        raise InvalidRequest("a multipart/form-data body needs a boundary in its Content-Type")
    form = _Form()
    parser = MultipartParser(
        boundary,
        form.callbacks(),
        max_header_count=_MAX_HEADERS_PER_PART,
        max_header_size=MAX_HEADER_BYTES,
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(f"the multipart/form-data body is malformed: {exc}") from None
    if not form.ended or not form.parts:
        raise InvalidRequest("the multipart/form-data body is malformed: it has no parts or no closing boundary")
    return form.parts


def urlencoded_fields(body: bytes) -> list[tuple[str, bytes]]:
    """An application/x-www-form-urlencoded body's fields (what ``curl -d`` sends), at most MAX_PARTS."""
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, encoding="latin-1", max_num_fields=MAX_PARTS
        )
    except ValueError as exc:
        raise InvalidRequest(f"the form body is malformed: {exc}") from None
    return [(name.encode("latin-1").decode("utf-8", "replace"), value.encode("latin-1")) for name, value in pairs]


class _Form:
    """What the parser's callbacks collect: the fields, and the bounds checked as the parse goes."""

    def __init__(self) -> None:
        self.parts: list[FormPart] = []
        self.ended = False
        self._header_bytes = 0
        self._field = bytearray()
        self._value = bytearray()
        self._name: str | None = None
        self._type = ""
        self._data: list[bytes] = []

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise InvalidRequest(f"a form may have at most {MAX_PARTS} parts")
        self._name, self._type, self._data = None, "", []

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise InvalidRequest(f"the form's part headers exceed {MAX_HEADER_BYTES} bytes in all")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _header_end(self) -> None:
        field = self._field.strip().lower()
        if field == b"content-disposition":
            _, parameters = parse_options_header(bytes(self._value))
            name = parameters.get(b"name")
            self._name = name.decode("utf-8", "replace") if name else None
        elif field == b"content-type":
            if self._value.strip().lower().startswith(b"multipart/"):
                # RFC 7578 retired multipart/mixed inside a form: each file is a part of its own.
                raise InvalidRequest(
                    f"part {len(self.parts)} of the form is itself a multipart body; send each file as a part of "
                    "its own"
                )
            self._type = self._value.strip().decode("latin-1")
        self._field.clear()
        self._value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data.append(data[start:end])

    def _part_end(self) -> None:
        self.parts.append(FormPart(self._name or "data", b"".join(self._data), self._type))

    def _end(self) -> None:
        self.ended = True
