"""wsgate.http_request / http_get, run over wsgate_testing's stand-ins for
the wasi:http bindings: the SDK's own code path, with answers from
FakeHost.http instead of a network."""

import re
from pathlib import Path

import pytest

import wsgate_testing
from wsgate_testing import FakeHost, HttpFailure, HttpReply, HttpRequest

import wsgate  # noqa: E402
from listeners import Recorder
from wsgate import HttpError, HttpResponse, OpenDecision, http_get, http_request

HTTP_WIT = Path(__file__).resolve().parents[3] / "wit" / "deps" / "http.wit"


def test_get_returns_status_headers_and_body():
    host = FakeHost(http={"https://auth.example/check?token=t1": HttpReply(
        200, {"Content-Type": "application/json", "X-Id": "7"}, '{"user": "ann"}')})
    status, headers, body = http_get("https://auth.example/check?token=t1", {"Accept": "application/json"})
    assert status == 200 and body == b'{"user": "ann"}'
    assert headers == [("content-type", "application/json"), ("x-id", "7")]
    [seen] = host.http_requests
    assert seen == HttpRequest("GET", "https://auth.example/check?token=t1",
                               [("accept", "application/json")], b"")


def test_the_response_helpers():
    FakeHost(http={"http://a.example/": {"ok": True}, "http://a.example/t": "héllo"})
    response = http_get("http://a.example/")
    assert isinstance(response, HttpResponse) and response.json() == {"ok": True}
    assert response.header("Content-Type") == "application/json"
    assert response.header("x-missing") is None
    assert http_get("http://a.example/t").text() == "héllo"


def test_a_post_sends_its_body_with_a_content_length():
    host = FakeHost(http={"POST https://api.example/items": HttpReply(201, body=b"made"),
                          "https://api.example/items": HttpReply(405)})
    big = bytes(range(256)) * 40  # over one 4096-byte blocking write
    assert http_request("post", "https://api.example/items", [("x-a", "1")], big).status == 201
    assert http_request("PUT", "https://api.example/items", None, "é").status == 405
    post, put = host.http_requests
    assert (post.method, post.body, post.header("content-length")) == ("POST", big, str(len(big)))
    assert (put.method, put.body, put.header("content-length")) == ("PUT", "é".encode(), "2")
    assert http_request("PATCH", "https://api.example/items", body=b"").status == 405


def test_a_handler_answers_what_the_dict_does_not():
    def handler(request):
        if request.url.startswith("https://auth.example/"):
            token = request.header("authorization")
            return HttpReply(200 if token == "Bearer good" else 401)
        return None  # not ours: denied

    host = FakeHost(http={"https://auth.example/fixed": "fixed"}, http_handler=handler)
    assert http_get("https://auth.example/fixed").body == b"fixed"
    assert http_get("https://auth.example/me", {"Authorization": "Bearer good"}).status == 200
    assert http_get("https://auth.example/me", {"Authorization": "Bearer bad"}).status == 401
    with pytest.raises(HttpError) as e:
        http_get("https://other.example/")
    assert e.value.code == "http-request-denied"
    assert len(host.http_requests) == 4


def test_no_answer_is_a_denial_with_a_clear_message():
    host = FakeHost()
    with pytest.raises(HttpError) as e:
        http_get("https://unknown.example/x")
    assert e.value.code == "http-request-denied"
    assert str(e.value) == "GET https://unknown.example/x: http-request-denied"
    assert host.http_requests[0].url == "https://unknown.example/x"


def test_failures_surface_as_http_errors():
    FakeHost(http={
        "http://down.example/": HttpFailure("connection-refused"),
        "http://dns.example/": HttpFailure("DNS-error", "NXDOMAIN"),
        "http://slow.example/": lambda request: HttpFailure("HTTP-response-timeout"),
        "http://bug.example/": HttpFailure("internal-error", "boom"),
    })
    expected = {"down": ("connection-refused", None), "dns": ("dns-error", "rcode=NXDOMAIN"),
                "slow": ("http-response-timeout", None), "bug": ("internal-error", "boom")}
    for name, (code, detail) in expected.items():
        with pytest.raises(HttpError) as e:
            http_get(f"http://{name}.example/")
        assert (e.value.code, e.value.detail) == (code, detail), name
        assert e.value.method == "GET" and e.value.url == f"http://{name}.example/"
    with pytest.raises(ValueError):
        HttpFailure("no-such-code")


def test_the_sidecar_grant_denies_other_hosts():
    FakeHost(allowed_hosts={"auth.example"},
             http={"https://auth.example/": "ok", "https://evil.example/": "ok"})
    assert http_get("https://auth.example/").status == 200
    with pytest.raises(HttpError, match="http-request-denied"):
        http_get("https://evil.example/")


def test_a_body_over_max_body_fails():
    FakeHost(http={"http://big.example/": bytes(2000)})
    assert len(http_get("http://big.example/", max_body=2000).body) == 2000
    with pytest.raises(HttpError) as e:
        http_get("http://big.example/", max_body=1999)
    assert e.value.code == "response-too-large"
    assert wsgate.DEFAULT_MAX_BODY == 1 << 20


def test_bad_urls_and_headers_fail_before_sending():
    host = FakeHost(http_handler=lambda request: "never")
    for url in ("ftp://x.example/", "x.example/path", "https://", "http://user:pw@x.example/"):
        with pytest.raises(HttpError) as e:
            http_get(url)
        assert e.value.code == "invalid-url", url
    for headers in ({"bad name": "x"}, {"x": "a\nb"}, {"Host": "other"}, {"Connection": "close"}):
        with pytest.raises(HttpError) as e:
            http_get("https://x.example/", headers)
        assert e.value.code == "invalid-header", headers
    assert host.http_requests == []


def test_timeout_ms_is_passed_on():
    seen = []
    original = wsgate_testing.RequestOptions.set_connect_timeout

    def spy(self, duration):
        seen.append(duration)
        return original(self, duration)

    FakeHost(http={"http://a.example/": "ok"})
    wsgate_testing.RequestOptions.set_connect_timeout = spy
    try:
        http_get("http://a.example/", timeout_ms=250)
    finally:
        wsgate_testing.RequestOptions.set_connect_timeout = original
    assert seen == [250_000_000]


def test_a_hook_checks_a_token_over_http():
    """What auth-chat does in on_open, end to end in the fake."""

    def on_open(conn, req):
        token = req.query_param("token") or ""
        try:
            who = http_get(f"https://auth.example/check?token={token}", timeout_ms=2000)
        except HttpError as e:
            wsgate.log(wsgate.LogLevel.WARN, str(e))
            return OpenDecision.reject(503, "auth unavailable")
        if who.status != 200:
            return OpenDecision.reject(401, "bad token")
        return OpenDecision.greet(f"hello {who.json()['user']}")

    host = FakeHost(http={"https://auth.example/check?token=good": {"user": "ann"},
                          "https://auth.example/check?token=bad": HttpReply(403)})
    listener = Recorder(on_open=on_open)
    assert host.open(listener, "/ws/chat?token=good").texts == ["hello ann"]
    assert host.open(listener, "/ws/chat?token=bad").status == 401
    host.http["https://auth.example/check?token=good"] = HttpFailure("connection-refused")
    assert host.open(listener, "/ws/chat?token=good").status == 503
    assert host.logs[-1].msg == "GET https://auth.example/check?token=good: connection-refused"


# --- The stand-ins keep to wasi:http's shapes and rules ----------------------

def wit_methods(resource):
    text = HTTP_WIT.read_text()
    start = text.index(f"resource {resource} {{")
    block = text[start:text.index("\n  }", start)]
    return {name.replace("-", "_") for name in re.findall(r"^\s*%?([a-z-]+): (?:static )?func", block, re.M)}


@pytest.mark.skipif(not HTTP_WIT.exists(), reason="wit/deps/http.wit not found")
def test_the_stand_ins_offer_only_what_wasi_http_has():
    for resource, cls in (("fields", wsgate_testing.Fields), ("outgoing-request", wsgate_testing.OutgoingRequest),
                          ("outgoing-body", wsgate_testing.OutgoingBody),
                          ("request-options", wsgate_testing.RequestOptions),
                          ("incoming-response", wsgate_testing.IncomingResponse),
                          ("incoming-body", wsgate_testing.IncomingBody),
                          ("future-incoming-response", wsgate_testing.FutureIncomingResponse),
                          ("future-trailers", wsgate_testing.FutureTrailers)):
        public = {n for n in vars(cls) if not n.startswith("_")}
        assert public <= wit_methods(resource), (resource, public - wit_methods(resource))


def test_the_stand_ins_trap_where_a_component_would():
    host = FakeHost(http={"http://a.example/": "body"})
    http = wsgate_testing
    fields = http.Fields.from_list([("x", b"1")])
    request = http.OutgoingRequest(fields)
    with pytest.raises(RuntimeError, match="used after"):
        fields.entries()  # moved into the request
    request.set_scheme(http.Scheme_Http())
    request.set_authority("a.example")
    body = request.body()
    stream = body.write()
    with pytest.raises(RuntimeError, match="more than 4096"):
        stream.blocking_write_and_flush(bytes(4097))
    with pytest.raises(RuntimeError, match="child"):
        http.OutgoingBody.finish(body, None)
    stream.__exit__(None, None, None)
    future = http._outgoing_handle(request, None)
    http.OutgoingBody.finish(body, None)
    response = future.get().value.value
    headers = response.headers()
    with pytest.raises(RuntimeError, match="child"):
        response.__exit__(None, None, None)
    headers.__exit__(None, None, None)
    incoming = response.consume()
    reader = incoming.stream()
    assert reader.blocking_read(100) == b"body"
    with pytest.raises(RuntimeError, match="child"):
        http.IncomingBody.finish(incoming)
    reader.__exit__(None, None, None)
    http.IncomingBody.finish(incoming)
    assert future.get() == wsgate_testing.Err(None)  # a response is taken once
    assert host.http_requests == [HttpRequest("GET", "http://a.example/", [("x", "1")], b"")]
