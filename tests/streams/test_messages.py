"""Stream messages to Events and replies to records, without a broker."""

import orjson

from v2serve.event import Reply
from v2serve.streams.messages import event_from_message, record_for_reply


def test_a_message_becomes_a_body_routed_event_with_the_key_as_id():
    event = event_from_message(b"{}", b"key-1", [("V2-Model", b"m"), ("Content-Type", b"application/json")], "kafka")
    assert (event.path, event.method, event.id, event.trigger) == ("/", "POST", "key-1", "kafka")
    assert event.headers == {"v2-model": "m", "content-type": "application/json"}
    assert event.content_type == "application/json"


def test_a_tombstone_becomes_an_empty_body():
    assert event_from_message(None, None, [], "kafka").body == b""


def test_success_is_a_result_record_keyed_like_the_request():
    event = event_from_message(b"{}", b"k", [], "kafka")
    record = record_for_reply(event, b"k", Reply.json({"outputs": []}))
    assert not record.is_error
    assert (record.key, record.value) == (b"k", b'{"outputs":[]}')
    assert ("v2-status", b"200") in record.headers


def test_failure_is_an_error_record_naming_what_the_request_named():
    body = orjson.dumps({"id": "r1", "model": "m", "version": "2", "operation": "explain"})
    event = event_from_message(body, None, [], "kafka")
    record = record_for_reply(event, None, Reply.json({"error": "model 'm' has no version '2'"}, 404))
    assert record.is_error and record.key == b"r1"
    assert orjson.loads(record.value) == {
        "id": "r1",
        "model": "m",
        "version": "2",
        "operation": "explain",
        "status": 404,
        "error": "model 'm' has no version '2'",
    }


def test_an_error_record_falls_back_to_headers_and_the_key_when_the_body_is_not_json():
    event = event_from_message(b"\xff not json", b"k9", [("v2-model", b"m"), ("v2-operation", b"op_x")], "kafka")
    record = record_for_reply(event, b"k9", Reply.json({"error": "malformed JSON"}, 400))
    fields = orjson.loads(record.value)
    assert (fields["id"], fields["model"], fields["operation"], fields["status"]) == ("k9", "m", "op_x", 400)
