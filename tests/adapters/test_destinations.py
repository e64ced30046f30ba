"""The destination policy by name: hostile URLs refused at submit, whatever the spelling.

Every row of :data:`HOSTILE` is a URL a hostile submitter might try, with the class it
must be refused as. Each is refused three ways: by the pure policy
(:class:`DestinationPolicy`), by ``jobvisor submit`` (exit 2, one line, the real
redis-server's keyspace unchanged) and by the Python client (:class:`BadInput`, nothing
written). The allow settings lift exactly what they name, for the submitter as for the
daemon (``tests/test_outbound.py`` covers connect time).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from jobvisor.adapters.destinations import DestinationPolicy, address_class, literal_address, normal_host
from jobvisor.adapters.errors import BadInput
from jobvisor.supervisor.cli import main
from jobvisor.supervisor.client import Client
from tests.cli_support import assert_nothing_written, dump, jv

APP = ["--app", "examples.app:app"]

HOSTILE: list[tuple[str, str]] = [
    # IPv4 loopback in every spelling the C resolver accepts
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.0.0.1:6379/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0X7F000001/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://127.255.255.254/", "loopback"),
    ("http://127。0。0。1/", "loopback"),  # ideographic full stops (IDNA folds them)
    # the other IPv4 classes
    ("http://10.0.0.1/", "private"),
    ("http://012.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://3232235777/", "private"),  # 192.168.1.1
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0xa9fea9fe/", "link-local"),  # 169.254.169.254
    ("http://2852039166/", "link-local"),  # 169.254.169.254
    ("http://100.64.0.1/", "cgnat"),
    ("http://100.127.255.254/", "cgnat"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://255.255.255.255/", "reserved"),
    ("http://240.0.0.1/", "reserved"),
    ("http://198.18.0.1/", "benchmark"),
    ("http://192.0.2.1/", "documentation"),
    # IPv6, and IPv4 inside IPv6
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible
    ("http://[::ffff:0:a00:1]/", "private"),  # IPv4-translated 10.0.0.1
    ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of the metadata address
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4
    ("http://[2002:c0a8:101::1]/", "private"),  # 6to4 of 192.168.1.1
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456:789a::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),  # a zone id
    ("http://[ff02::1]/", "multicast"),
    ("http://[2001:db8::1]/", "documentation"),
    # names refused by name
    ("http://localhost/", "name"),
    ("http://LOCALHOST./", "name"),
    ("http://ｌｏｃａｌｈｏｓｔ/", "name"),  # fullwidth letters (IDNA folds them)
    ("http://api.localhost/", "name"),
    ("http://metadata.google.internal/computeMetadata/v1/", "name"),
    ("http://metadata/", "name"),
    ("http://printer.local/", "name"),
    ("http://db.corp.internal:5432/", "name"),
    ("http://intranet/", "name"),  # no dot: completed by the search domains
    ("http://router.home.arpa/", "name"),
    # userinfo tricks: the host is what follows the last @
    ("http://allowed.example@10.0.0.1/", "private"),
    ("http://allowed.example:443@127.0.0.1/", "loopback"),
    ("http://a@b@169.254.169.254/", "link-local"),
    ("http://admin:hunter2@[::1]:8080/?token=s3cr3t", "loopback"),
    ("https://user@localhost:8443/", "name"),
]

SECRETS = ("hunter2", "s3cr3t")


def kind_of(refusal: Any) -> str:
    return refusal.kind if refusal is not None else "allowed"


def test_the_table_has_every_class_and_at_least_forty_rows() -> None:
    assert len(HOSTILE) >= 40
    assert {k for _, k in HOSTILE} == {"loopback", "private", "link-local", "cgnat", "unspecified", "multicast",
                                      "reserved", "benchmark", "documentation", "name"}


@pytest.mark.parametrize(("url", "kind"), HOSTILE)
def test_the_default_policy_refuses_each_hostile_url_as_its_class(url: str, kind: str) -> None:
    from urllib.parse import urlsplit

    assert kind_of(DestinationPolicy().check_host(urlsplit(url).hostname or "")) == kind
    with pytest.raises(ValueError, match=r"^webhook_url: refused destination: "):
        DestinationPolicy().check_url(url, "webhook_url")
    assert DestinationPolicy(allow_private=True).check_host(urlsplit(url).hostname or "") is None


@pytest.mark.parametrize(("url", "says"), [
    ("http://10.{job_id}/check", "private"),
    ("http://127.0.0.{service_job_id}/", "loopback"),
    ("http://169.254.169.{service_job_id}/latest", "link-local"),
])
def test_a_placeholder_in_the_host_is_judged_as_the_address_it_can_become(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"refused destination: .*{says}"):
        DestinationPolicy().check_url(url, "validator url")


@pytest.mark.parametrize(("url", "says"), [
    ("http://xn--localhost-.com/hook", "invalid URL"),
    ("http://u:p@xn--ls8h.la/hook", "invalid URL"),
    ("http://user:pa\"ss@example.com/h", "quote"),
    ("https://hooks.example.com/x?token=ab'cd", "quote"),
    ("https://hooks.example.com/<script>", "angle bracket"),
])
def test_urls_the_http_client_or_the_logs_would_misread_are_refused_at_submit(url: str, says: str) -> None:
    from jobvisor.adapters.urls import check_url

    with pytest.raises(ValueError, match=says) as caught:
        check_url(url, "webhook_url")
    assert "pa\"ss" not in str(caught.value)
    assert "ab'cd" not in str(caught.value)


@pytest.mark.parametrize("host", ["example.com", "hooks.example.org.", "8.8.8.8", "1.1.1.1", "[2606:4700::1111]",
                                  "xn--bcher-kva.example", "bücher.example", "100.128.0.1", "172.32.0.1",
                                  "localhost.example.com", "internal.example.com"])
def test_public_names_and_addresses_pass(host: str) -> None:
    assert DestinationPolicy().check_host(host) is None


@pytest.mark.parametrize(("spelling", "address"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"),
    ("0", "0.0.0.0"), ("::ffff:7f00:1", "::ffff:7f00:1"),
])
def test_loose_ipv4_spellings_read_as_the_resolver_reads_them(spelling: str, address: str) -> None:
    assert literal_address(normal_host(spelling)) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "0x1g.1", "1..1", "example.com", "08.1.1.1",
                                  "4294967296"])
def test_what_is_not_an_ipv4_literal_is_a_name(host: str) -> None:
    assert literal_address(host) is None


def test_allow_entries_lift_exactly_what_they_name() -> None:
    policy = DestinationPolicy(allow=("10.20.0.0/16", "hooks.corp.internal", "*.svc.internal", "::1"))
    assert policy.check_host("10.20.3.4") is None
    assert policy.check_host("[::ffff:10.20.3.4]") is None  # the mapped form of an allowed address
    assert kind_of(policy.check_host("10.21.0.1")) == "private"
    assert policy.check_host("hooks.corp.internal") is None
    assert policy.check_host("a.b.svc.internal") is None
    assert kind_of(policy.check_host("other.corp.internal")) == "name"
    assert policy.check_host("[::1]") is None
    assert kind_of(policy.check_host("127.0.0.1")) == "loopback"
    assert policy.check_address(ipaddress.ip_address("10.0.0.9"), "hooks.corp.internal") is None
    assert kind_of(policy.check_address(ipaddress.ip_address("10.0.0.9"), "hooks.example.com")) == "private"
    with pytest.raises(ValueError, match="allow_destinations: 'not a host' is not"):
        DestinationPolicy(allow=("not a host",))


def test_address_classes_of_embedded_ipv4() -> None:
    teredo = ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe")  # client 127.0.0.1
    assert address_class(teredo) == "loopback"
    assert address_class(ipaddress.ip_address("2002:808:808::1")) is None  # 6to4 of 8.8.8.8
    assert address_class(ipaddress.ip_address("64:ff9b::808:808")) is None  # NAT64 of 8.8.8.8


# -- at submit: the CLI and the Python client --------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JOBVISOR_ALLOW_DESTINATIONS", "JOBVISOR_ALLOW_PRIVATE_DESTINATIONS", "JOBVISOR_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)


def test_jobvisor_submit_refuses_every_hostile_url_with_exit_2_and_writes_nothing(
    redis_url: str, clean_env: None, capsys: pytest.CaptureFixture[str],
) -> None:
    before = dump(redis_url)
    refused: dict[str, int] = {}
    for i, (url, kind) in enumerate(HOSTILE):
        field = ("--webhook-url", "--validator-url")[i % 2]
        code = main(["submit", "echo", *APP, "--redis", redis_url, field, url])
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert (code, captured.out, len(lines)) == (2, "", 1), (url, captured)
        assert lines[0].startswith(f"jobvisor: {field[2:].replace('-', '_')}: "), (url, lines)
        assert "refused destination" in lines[0] or "invalid" in lines[0], (url, lines)
        assert not any(secret in captured.err for secret in SECRETS), lines
        refused[kind] = refused.get(kind, 0) + 1
    for url, _ in HOSTILE[::7]:  # a batch's webhook URL too
        code = main(["batch", "create", "--redis", redis_url, "--webhook-url", url])
        assert code == 2
        assert len(capsys.readouterr().err.splitlines()) == 1
    assert_nothing_written(before, dump(redis_url))
    assert sum(refused.values()) == len(HOSTILE)


def test_the_installed_command_refuses_too(redis_url: str) -> None:
    before = dump(redis_url)
    result = jv("submit", "echo", *APP, "--redis", redis_url,
                "--webhook-url", "http://admin:hunter2@0x7f000001:9/?token=s3cr3t")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "jobvisor: webhook_url: refused destination: 127.0.0.1 is a loopback address; "
        "allow it with allow_destinations (or allow_private_destinations)"]
    assert_nothing_written(before, dump(redis_url))


def test_the_submitters_allow_settings_come_from_the_same_variables(
    redis_url: str, clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["submit", "echo", *APP, "--redis", redis_url]
    monkeypatch.setenv("JOBVISOR_ALLOW_DESTINATIONS", "10.20.0.0/16,hooks.corp.internal")
    assert main([*args, "--webhook-url", "http://10.20.0.7:8080/in"]) == 0
    assert main([*args, "--webhook-url", "http://hooks.corp.internal/in"]) == 0
    assert main([*args, "--webhook-url", "http://10.21.0.7/in"]) == 2
    monkeypatch.setenv("JOBVISOR_ALLOW_PRIVATE_DESTINATIONS", "true")
    assert main([*args, "--validator-url", "http://127.0.0.1:1/{job_id}"]) == 0
    monkeypatch.setenv("JOBVISOR_ALLOW_PRIVATE_DESTINATIONS", "maybe")
    assert main([*args, "--validator-url", "http://127.0.0.1:1/{job_id}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "jobvisor: allow_private_destinations: 'maybe' is not true or false"
    assert len(err) == 2


def test_the_python_client_raises_bad_input_and_writes_nothing(redis_url: str, clean_env: None) -> None:
    from examples.app import app

    before = dump(redis_url)
    with Client(redis_url, app=app) as client:
        for url, _ in HOSTILE:
            with pytest.raises(BadInput, match=r"^(webhook_url|validator_url): (refused destination|.*invalid)"):
                client.submit("echo", webhook_url=url)
            with pytest.raises(BadInput, match=r"^validator_url: "):
                client.submit("echo", validator_url=url)
        with pytest.raises(BadInput, match=r"^webhook_url: refused destination"):
            client.create_batch(webhook_url="http://[::1]/")
    assert_nothing_written(before, dump(redis_url))
    allowed = DestinationPolicy(allow=("127.0.0.0/8",))
    with Client(redis_url, app=app, destinations=allowed) as client:
        assert client.submit("echo", webhook_url="http://127.0.0.1:9/in")
        with pytest.raises(BadInput):
            client.submit("echo", webhook_url="http://10.0.0.1/in")


@pytest.mark.parametrize("url", ["http://ok.example\\@10.0.0.1/", "http://%31%32%37.0.0.1/",
                                 "http://10.0.0.1\\.ok.example/"])
def test_urls_parsers_disagree_on_are_refused(url: str, redis_url: str, clean_env: None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = dump(redis_url)
    assert main(["submit", "echo", *APP, "--redis", redis_url, "--webhook-url", url]) == 2
    assert "backslash or a percent-encoded host" in capsys.readouterr().err
    assert_nothing_written(before, dump(redis_url))
