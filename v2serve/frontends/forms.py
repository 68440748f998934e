"""multipart/form-data bodies (``curl -F``, ``requests.post(files=...)``) as a list of fields.

The standard library's email parser reads them: the body is already whole and bounded by the server's body
limit, and the number of parts is checked before parsing.
"""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage

from v2serve.errors import InvalidRequest

MAX_PARTS = 1024


def is_form(content_type: str | None) -> bool:
    return content_type is not None and content_type.lower().startswith("multipart/form-data")


def form_fields(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """Each part's field name and content, in order."""
    header = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + content_type.encode("latin-1") + b"\r\n\r\n", headersonly=True
    )
    boundary = header.get_boundary()
    if not boundary:
        raise InvalidRequest("a multipart/form-data body needs a boundary in its Content-Type")
    if body.count(b"--" + boundary.encode("latin-1")) > MAX_PARTS + 1:
        raise InvalidRequest(f"a form may have at most {MAX_PARTS} parts")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not isinstance(message, EmailMessage) or not message.is_multipart() or message.defects:
        raise InvalidRequest(f"the multipart/form-data body is malformed: {message.defects or 'no parts'}")
    fields = []
    for index, part in enumerate(message.iter_parts()):
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise InvalidRequest(f"part {index} of the form has no content")
        fields.append((str(name) if name else "data", payload))
    return fields
