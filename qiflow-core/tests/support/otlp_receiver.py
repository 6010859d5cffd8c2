#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver on the official protobuf schema, for qiflow's export tests.

It decodes each `POST /v1/traces` body (`application/x-protobuf`, plain or
`Content-Encoding: gzip`) with the generated classes of the `opentelemetry-proto` package
from PyPI (`ExportTraceServiceRequest`), and appends one JSON object per span, one per
line, to SPANS_FILE:

    trace_id, span_id, parent_span_id    lowercase hex ("" for a root span's parent)
    trace_state, flags, name
    kind                                 the enum's name, e.g. "SPAN_KIND_SERVER"
    start_time_unix_nano, end_time_unix_nano
    attributes                           flattened: {key: value}
    events                               [{name, time_unix_nano, attributes}]
    links                                [{trace_id, span_id, trace_state, attributes}]
    dropped_attributes_count, dropped_events_count, dropped_links_count
    status                               {code: e.g. "STATUS_CODE_ERROR", message}
    resource                             the resource's attributes, flattened
    scope, scope_version                 the instrumentation scope's name and version

Values: strings, booleans, integers and doubles as JSON (a non-finite double as null),
arrays as lists, key-value lists as objects, bytes as lowercase hex, an empty value as null.
An unknown enum number is written as its decimal string. `qiflow-core/tests/support/otlp.rs`
has an in-process receiver that writes the same JSON.

Every span the receiver decodes is written, whatever it answers. Its answer (--mode):

    ok           200 with an empty ExportTraceServiceResponse (application/x-protobuf)
    hang         reads the request and never answers (the connection stays open)
    refuse       400 with a google.rpc.Status body: a permanent refusal, which the OTLP/HTTP
                 specification says an exporter must not retry (it drops the batch)
    unavailable  503 with a google.rpc.Status body: retryable by the specification, so a
                 conforming exporter retries with backoff, within its own limits

A request it cannot take (another path, another content type, a body that does not decode)
is answered 404, 415 or 400 and reported as an `error` line.

Standard output, one line per event, flushed at once:

    <port>                                the first line: the port it listens on
    request <n> spans=<k> encoding=<e> answer=<200|400|503|hang>
    error <n> <reason>

Usage: otlp_receiver.py [--mode MODE] [--port PORT] SPANS_FILE
(port 0, the default, takes a free port on 127.0.0.1.)

Needs `python3 -m pip install -r qiflow-core/tests/support/otlp-requirements.txt`
(opentelemetry-proto and protobuf, pinned). Without them it exits with status 3 and says so on
standard error.
"""

import argparse
import gzip
import json
import math
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from google.protobuf import descriptor_pb2, message_factory
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
except ImportError as error:
    print(
        f"otlp_receiver: missing Python module ({error}); install it: "
        "python3 -m pip install -r qiflow-core/tests/support/otlp-requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


def rpc_status_class():
    """google.rpc.Status (code, message), the body OTLP/HTTP puts on an error answer.

    It is not part of the opentelemetry-proto package, so its three-field schema is declared
    here and built by protobuf's own message factory.
    """
    file = descriptor_pb2.FileDescriptorProto(
        name="qiflow_test/google_rpc_status.proto", package="google.rpc", syntax="proto3"
    )
    message = file.message_type.add(name="Status")
    message.field.add(
        name="code",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    message.field.add(
        name="message",
        number=2,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    classes = message_factory.GetMessages([file])
    return classes["google.rpc.Status"]


RpcStatus = rpc_status_class()
# The answer of each mode: (status, google.rpc code, message); None: never answer.
ANSWERS = {
    "ok": (200, None, None),
    "hang": None,
    "refuse": (400, 3, "refused by the qiflow test receiver (permanent: do not retry)"),
    "unavailable": (503, 14, "unavailable (the qiflow test receiver's unavailable mode)"),
}


def enum_name(enum, number):
    try:
        return enum.Name(number)
    except ValueError:
        return str(number)


def value(any_value):
    which = any_value.WhichOneof("value")
    if which == "string_value":
        return any_value.string_value
    if which == "bool_value":
        return any_value.bool_value
    if which == "int_value":
        return any_value.int_value
    if which == "double_value":
        v = any_value.double_value
        return v if math.isfinite(v) else None
    if which == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    if which == "bytes_value":
        return any_value.bytes_value.hex()
    # Not set, or string_value_strindex (profiles only).
    return None


def attributes(key_values):
    return {kv.key: value(kv.value) for kv in key_values}


def span_json(span, resource, scope):
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "trace_state": span.trace_state,
        "flags": span.flags,
        "name": span.name,
        "kind": enum_name(Span.SpanKind, span.kind),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "attributes": attributes(span.attributes),
        "events": [
            {
                "name": e.name,
                "time_unix_nano": e.time_unix_nano,
                "attributes": attributes(e.attributes),
            }
            for e in span.events
        ],
        "links": [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": link.trace_state,
                "attributes": attributes(link.attributes),
            }
            for link in span.links
        ],
        "dropped_attributes_count": span.dropped_attributes_count,
        "dropped_events_count": span.dropped_events_count,
        "dropped_links_count": span.dropped_links_count,
        "status": {
            "code": enum_name(Status.StatusCode, span.status.code),
            "message": span.status.message,
        },
        "resource": resource,
        "scope": scope.name,
        "scope_version": scope.version,
    }


def spans_json(request):
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield span_json(span, resource, scope_spans.scope)


class Receiver:
    """What the handler threads share: the mode, the spans file, the request counter."""

    def __init__(self, mode, spans_file):
        self.answer = ANSWERS[mode]
        self.spans_file = spans_file
        self.lock = threading.Lock()
        self.requests = 0

    def next_request(self):
        with self.lock:
            self.requests += 1
            return self.requests

    def record(self, lines):
        with self.lock:
            with open(self.spans_file, "a", encoding="utf-8") as out:
                out.writelines(lines)

    def say(self, line):
        with self.lock:
            print(line, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    receiver = None  # set in main()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # one line per request on stdout instead

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def send(self, status, body, content_type=PROTOBUF):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, n, status, reason):
        self.receiver.say(f"error {n} {reason}")
        body = RpcStatus(code=3, message=reason).SerializeToString()
        self.send(status, body)

    def do_POST(self):  # noqa: N802 (http.server's name)
        n = self.receiver.next_request()
        body = self.read_body()
        if self.path.split("?")[0] != PATH:
            return self.refuse(n, 404, f"POST {self.path}: only POST {PATH}")
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != PROTOBUF:
            return self.refuse(n, 415, f"content-type {json.dumps(content_type)}: not {PROTOBUF}")
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding != "identity":
                return self.refuse(n, 415, f"content-encoding {json.dumps(encoding)}: not gzip")
            request = ExportTraceServiceRequest.FromString(body)
        except (OSError, EOFError, zlib.error, DecodeError) as error:
            return self.refuse(n, 400, f"body does not decode ({encoding}): {error}")
        lines = [json.dumps(s, sort_keys=True) + "\n" for s in spans_json(request)]
        self.receiver.record(lines)
        answer = self.receiver.answer
        self.receiver.say(
            f"request {n} spans={len(lines)} encoding={encoding} "
            f"answer={'hang' if answer is None else answer[0]}"
        )
        if answer is None:
            threading.Event().wait()  # never answers; the process is killed at the end
            return None
        status, code, message = answer
        if status == 200:
            self.send(200, ExportTraceServiceResponse().SerializeToString())
        else:
            self.send(status, RpcStatus(code=code, message=message).SerializeToString())
        return None

    def do_GET(self):  # noqa: N802
        n = self.receiver.next_request()
        self.refuse(n, 404, f"GET {self.path}: only POST {PATH}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spans_file", metavar="SPANS_FILE")
    parser.add_argument("--mode", choices=sorted(ANSWERS), default="ok")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Handler.receiver = Receiver(args.mode, args.spans_file)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
