"""Outbound requests at connect time: resolved once, checked, connected to the checked address.

Real sockets and a real redis-server; DNS is a stand-in (:class:`StandIn`, the HTTP
client's resolver hook, no patched httpx) so a name can resolve to whatever a test needs,
and change its answer between submit and delivery (DNS rebinding). Where a refusal must
mean "never contacted", a loopback listener counts the connections it accepted; the same
test with the policy lifted shows the listener does count them.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio
import trustme

from jobvisor import App
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.destinations import DestinationPolicy, DestinationRefused
from jobvisor.adapters.http import HttpClient
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store
from jobvisor.adapters.store_actor import StoreActor
from jobvisor.supervisor.cli import main
from jobvisor.supervisor.client import build_spec
from jobvisor.supervisor.config import load_config
from jobvisor.supervisor.deps import Deps, TrioWallClock
from jobvisor.supervisor.hub import Hub
from jobvisor.supervisor.metrics import Metrics
from jobvisor.supervisor.webhooks import Deliverer
from tests.harness import Watcher, running_daemon
from tests.http_servers import ScriptedServer, Step, refused_url

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NAME = "hooks.rebind.example"
PUBLIC = "93.184.215.14"


class StandIn:
    """A DNS stand-in: the k-th query of a name gets ``answers[name][k]`` (the last one after)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        script = self.answers.get(host)
        if script is None:
            raise OSError(f"stand-in: no answer for {host!r}")
        k = sum(1 for q in self.queries if q == host)
        self.queries.append(host)
        return list(script[min(k, len(script) - 1)])


class Listener:
    """A loopback TCP listener that counts the connections it accepts; answers each with a 200."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Any:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


@asynccontextmanager
async def deliverer(redis_url: str, resolver: StandIn,
                    **settings: Any) -> AsyncIterator[tuple[Store, Watcher, Metrics]]:
    """The webhook actor over the real redis-server, its HTTP client on the DNS stand-in."""
    config = load_config({"redis": redis_url, "webhook_secret": SECRET, "queues": ["default"],
                          "webhook_backoff": 0.05, "idle_poll": 0.2, **settings}, environ={})
    clock = TrioWallClock()
    hub, watcher, metrics = Hub(), Watcher(), Metrics()
    actor = StoreActor(open_backend(redis_url), clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor, observers=[hub.observe, watcher])
        deps = Deps(store=store, app=App(), config=config, hub=hub, metrics=metrics, clock=clock)
        http = HttpClient(clock=clock, destinations=config.destinations, resolver=resolver)
        stop = trio.Event()
        await nursery.start(Deliverer(deps, http).run, stop)
        try:
            yield store, watcher, metrics
        finally:
            stop.set()
            await http.aclose()
            actor.close()


async def cancelled_job(store: Store, url: str) -> str:
    """A job whose ``job.cancelled`` delivery to ``url`` waits in the outbox; checked as at submit."""
    spec = build_spec({"report": {}}, "report", {"n": 1}, webhook_url=url, destinations=DestinationPolicy())
    job = (await store.submit(spec)).id
    assert (await store.cancel(job)).to == "cancelled"
    return f"{job}~job.cancelled~0"


async def settled(store: Store, watcher: Watcher, delivery: str) -> Any:
    await watcher.until(lambda: any(r.id == delivery and r.to in ("delivered", "dead") for r in watcher.moves),
                        timeout=20)
    job = delivery.split("~", 1)[0]
    [view] = await store.job_deliveries(job, 0)
    return view


def refused(metrics: Metrics, client: str, check: str) -> float:
    return metrics.registry.get_sample_value("jobvisor_outbound_refused_total", {"client": client, "check": check}) or 0


# -- DNS rebinding ----------------------------------------------------------------------------------


async def test_a_name_that_rebinds_to_loopback_after_submit_is_dead_and_never_contacted(
    redis_url: str, listener: Listener,
) -> None:
    dns = StandIn({NAME: [[PUBLIC], ["127.0.0.1"]]})
    url = f"http://{NAME}:{listener.port}/in"
    assert DestinationPolicy().check_address(__import__("ipaddress").ip_address((await dns(NAME, 80))[0]), NAME) is None
    async with deliverer(redis_url, dns) as (store, watcher, metrics):
        delivery = await cancelled_job(store, url)  # accepted at submit: the name looked public
        view = await settled(store, watcher, delivery)
    assert (view.state, view.attempts, listener.accepted) == ("dead", 1, 0)
    assert view.last_error == (f"refused destination: host '{NAME}' resolves to a loopback address; "
                               "allow it with allow_destinations (or allow_private_destinations)")
    assert dns.queries == [NAME, NAME]  # one at submit, one at delivery: resolved once
    assert refused(metrics, "webhook", "address") == 1
    assert refused(metrics, "webhook", "name") == 0


async def test_the_same_delivery_with_private_destinations_allowed_reaches_the_listener(
    redis_url: str, listener: Listener,
) -> None:
    dns = StandIn({NAME: [["127.0.0.1"]]})
    async with deliverer(redis_url, dns, allow_private_destinations=True) as (store, watcher, metrics):
        delivery = await cancelled_job(store, f"http://{NAME}:{listener.port}/in")
        view = await settled(store, watcher, delivery)
    assert (view.state, listener.accepted, dns.queries) == ("delivered", 1, [NAME])
    assert refused(metrics, "webhook", "address") == 0


async def test_a_name_with_one_internal_answer_among_allowed_ones_is_refused(
    redis_url: str, listener: Listener,
) -> None:
    dns = StandIn({NAME: [["127.0.0.1", "10.0.0.1"]]})
    async with deliverer(redis_url, dns, allow_destinations=["127.0.0.0/8"]) as (store, watcher, metrics):
        delivery = await cancelled_job(store, f"http://{NAME}:{listener.port}/in")
        view = await settled(store, watcher, delivery)
    assert (view.state, listener.accepted) == ("dead", 0)
    assert "resolves to a private address" in (view.last_error or "")
    assert refused(metrics, "webhook", "address") == 1


async def test_an_allow_listed_cidr_is_delivered_to_the_checked_address(redis_url: str, listener: Listener) -> None:
    # The stand-in answers loopback once, then an address outside the allowed range: the
    # connection goes to the address that was checked, never to a second resolution.
    dns = StandIn({NAME: [["127.0.0.1"], ["10.9.9.9"]]})
    async with deliverer(redis_url, dns, allow_destinations=["127.0.0.0/8"]) as (store, watcher, metrics):
        delivery = await cancelled_job(store, f"http://{NAME}:{listener.port}/in")
        view = await settled(store, watcher, delivery)
    assert (view.state, listener.accepted, dns.queries) == ("delivered", 1, [NAME])
    assert refused(metrics, "webhook", "address") == 0


@pytest.mark.parametrize(("answer", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("10.1.2.3", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"), ("fd00::5", "private"),
    ("100.64.1.1", "cgnat"), ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:a00:1::1", "private"),
    ("0.0.0.0", "unspecified"), ("224.0.0.251", "multicast"),
])
async def test_every_internal_answer_is_refused_at_connect_time(answer: str, kind: str, listener: Listener) -> None:
    dns = StandIn({NAME: [[answer]]})
    http = HttpClient(resolver=dns)
    try:
        with pytest.raises(DestinationRefused, match=f"resolves to an? {kind} address") as caught:
            await http.post(f"http://{NAME}:{listener.port}/in", b"{}", {}, 5.0)
    finally:
        await http.aclose()
    assert (caught.value.check, dns.queries, listener.accepted) == ("address", [NAME], 0)


# -- TLS: the name stays the name -----------------------------------------------------------------


class _TLSHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hosts: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.hosts.append(self.headers.get("host", ""))
        payload = json.dumps({"status": "completed"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


async def test_tls_to_the_checked_address_keeps_the_names_sni_certificate_and_host() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("secure.example").configure_cert(server_ctx)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)
    hosts: list[str] = []
    handler = type("Handler", (_TLSHandler,), {"hosts": hosts})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    dns = StandIn({"secure.example": [["127.0.0.1"]], "elsewhere.example": [["127.0.0.1"]]})
    http = HttpClient(destinations=DestinationPolicy(allow=("127.0.0.0/8",)), resolver=dns, verify=client_ctx)
    try:
        answer = await http.get(f"https://secure.example:{port}/jobs/1", 5.0)
        # the certificate names secure.example only: a handshake with the address as the
        # name, or with another name, fails verification
        from jobvisor.adapters.errors import HttpUnreachable

        with pytest.raises(HttpUnreachable):
            await http.get(f"https://elsewhere.example:{port}/jobs/1", 5.0)
        strict = HttpClient(destinations=DestinationPolicy(), resolver=dns, verify=client_ctx)
        with pytest.raises(DestinationRefused, match="resolves to a loopback address"):
            await strict.get(f"https://secure.example:{port}/jobs/1", 5.0)
        await strict.aclose()
    finally:
        await http.aclose()
        httpd.shutdown()
        httpd.server_close()
    assert (answer.status, json.loads(answer.body)) == (200, {"status": "completed"})
    assert sni[:2] == ["secure.example", "elsewhere.example"]
    assert hosts == [f"secure.example:{port}"]
    assert dns.queries == ["secure.example", "elsewhere.example", "secure.example"]


# -- the validator ------------------------------------------------------------------------------------


def _validated_app() -> App:
    app = App()

    @app.handler("plain", max_retries=0)
    async def plain(ctx: Any) -> str:
        return "done"

    return app


async def test_a_validator_url_to_loopback_is_refused_uncontacted_and_reported_as_a_category(
    redis_url: str, listener: Listener,
) -> None:
    async with running_daemon(_validated_app(), redis=redis_url, validation_attempts=2, validation_interval=0.05,
                              idle_poll=0.2) as (daemon, watcher):
        spec = JobSpec(type="plain", max_retries=0, validator_url=f"http://127.0.0.1:{listener.port}/{{job_id}}")
        job = (await daemon.store.submit(spec)).id  # straight into the store: the daemon checks again
        await watcher.until(lambda: any(r.id == job and r.to == "validation_failed" for r in watcher.moves),
                            timeout=20)
        view = await daemon.store.get_job(job)
        metrics = daemon.deps.metrics
    assert listener.accepted == 0
    assert [c.reason for c in view.validation_checks] == ["refused_destination"] * 2
    assert refused(metrics, "validator", "name") == 2


async def test_the_validator_keeps_only_the_compared_fields_value_truncated(redis_url: str) -> None:
    internal = {"status": "x" * 5000, "db_password": "hunter2", "rows": ["internal-row"] * 100}
    with ScriptedServer(then=Step(json=internal)) as truth, ScriptedServer(then=Step(status=404)) as missing:
        async with running_daemon(_validated_app(), redis=redis_url, validation_attempts=1, idle_poll=0.2,
                                  allow_private_destinations=True) as (daemon, watcher):
            jobs = []
            for url in (truth.url_for("/{job_id}"), missing.url_for("/{job_id}"), refused_url() + "{job_id}"):
                jobs.append((await daemon.store.submit(JobSpec(type="plain", max_retries=0, validator_url=url))).id)
            await watcher.until(lambda: all(any(r.id == j and r.to == "validation_failed" for r in watcher.moves)
                                            for j in jobs), timeout=20)
            views = [await daemon.store.get_job(j) for j in jobs]
    [check] = views[0].validation_checks
    assert check.status == "x" * 64
    assert views[0].validation_status == "x" * 64
    assert check.reason == f"mismatch: status is {'x' * 64!r}, expected 'completed'"
    stored = json.dumps([__import__("msgspec").to_builtins(v) for v in views])
    assert "hunter2" not in stored
    assert "internal-row" not in stored
    assert "x" * 65 not in stored
    assert [v.validation_checks[0].reason for v in views[1:]] == ["http_error", "unreachable"]


# -- credentials never shown ---------------------------------------------------------------------------


async def test_credentials_in_urls_never_appear_in_status_events_logs_or_errors(
    redis_url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ("hunter2pass", "s3cr3t-t0ken", "K3Yvalue", "S1Gvalue")
    with ScriptedServer() as receiver, ScriptedServer(then=Step(status=404)) as truth:
        hook = f"http://hookuser:hunter2pass@127.0.0.1:{receiver.port}/in?token=s3cr3t-t0ken&x=1"
        closed = refused_url().replace("http://", "http://u:hunter2pass@") + "?api_key=K3Yvalue"
        check = truth.url_for("/{job_id}?sig=S1Gvalue")
        async with running_daemon(_validated_app(), redis=redis_url, webhook_secret=SECRET, webhook_attempts=1,
                                  validation_attempts=1, idle_poll=0.2, webhook_backoff=0.05,
                                  allow_private_destinations=True) as (daemon, watcher):
            jobs = [(await daemon.store.submit(JobSpec(type="plain", max_retries=0, **spec))).id for spec in (
                {"webhook_url": hook}, {"webhook_url": closed}, {"validator_url": check, "webhook_url": hook})]
            ids = [f"{jobs[0]}~job.completed~0", f"{jobs[1]}~job.completed~0",
                   f"{jobs[2]}~job.validation_failed~0"]
            await watcher.until(lambda: all(any(r.id == d and r.to in ("delivered", "dead") for r in watcher.moves)
                                            for d in ids), timeout=30)
        delivered = receiver.requests
    assert len(delivered) == 2
    assert all("token=s3cr3t-t0ken" in r.path for r in delivered)
    assert all(r.headers["authorization"].startswith("Basic ") for r in delivered)
    capsys.readouterr()
    for job in jobs:
        for args in (["status", job], ["status", job, "--json"], ["events", "--job", job],
                     ["events", "--job", job, "--json"]):
            assert main([*args, "--redis", redis_url]) == 0
    out = capsys.readouterr().out
    assert "token=***" in out
    assert "api_key=***" in out
    assert "***@127.0.0.1" in out
    assert "HTTP Request: POST" in caplog.text
    assert "token=***" in caplog.text
    assert "sig=***" in caplog.text
    for secret in secrets:
        assert secret not in out, secret
        assert secret not in caplog.text, secret


async def test_a_host_the_http_client_refuses_only_at_send_time_is_unreachable_not_a_crash() -> None:
    """IDNA rules httpx applies when it sends (not when it parses): one failed attempt, mapped
    at the boundary, never a ValueError out of the deliverer or the validator."""
    from jobvisor.adapters.errors import HttpUnreachable

    http = HttpClient(resolver=StandIn({}))
    try:
        with pytest.raises(HttpUnreachable, match="invalid URL"):
            await http.post("http://xn--localhost-.com/hook", b"{}", {}, 5.0)
    finally:
        await http.aclose()
