"""Redis URLs: one server, a Cluster, a Sentinel set; credentials and TLS with each; every
refusal one line that never shows a secret."""

from __future__ import annotations

import pytest

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.redis_urls import parse_redis_url


def test_one_server_with_credentials_database_and_tls() -> None:
    target = parse_redis_url("rediss://app:s3cret@redis.example:6380/4?ssl_ca_certs=/ca.pem&ssl_cert_reqs=optional")
    assert (target.kind, target.nodes, target.db) == ("single", (("redis.example", 6380),), 4)
    assert (target.username, target.password, target.tls) == ("app", "s3cret", True)
    assert target.tls_options() == {"ssl_ca_certs": "/ca.pem", "ssl_certfile": None, "ssl_keyfile": None,
                                    "ssl_cert_reqs": "optional"}
    assert "s3cret" not in target.shown


def test_a_password_alone_and_a_unix_socket() -> None:
    assert parse_redis_url("redis://:pw@h:1/0").password == "pw"
    assert parse_redis_url("redis://pw@h:1/0").password == "pw"
    sock = parse_redis_url("unix:///run/redis.sock?db=3")
    assert (sock.unix_path, sock.db) == ("/run/redis.sock", 3)


def test_a_cluster_names_its_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert target.kind == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (target.username, target.password) == ("u", "p")
    assert parse_redis_url("rediss+cluster://h:1?ssl_cert_reqs=none").tls


def test_a_sentinel_set_names_its_service_and_database() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2?sentinel_password=sp")
    assert target.kind == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26380))
    assert (target.service, target.db, target.password, target.sentinel_password) == ("mymaster", 2, "pw", "sp")
    assert parse_redis_url("redis+sentinel://s1:26379/mymaster").db == 0


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://x", "is not a Redis URL"),
    ("redis+sentinel://s1:26379", "must name the service"),
    ("redis+sentinel://s1:26379/a/b/c", "must name the service"),
    ("redis+cluster://h:1/0", "one database"),
    ("redis://h:1,h:2/0", "several hosts"),
    ("redis://h:1/0?colour=blue", "unknown options (colour)"),
    ("redis://h:1/0?ssl_ca_certs=/ca.pem", "no TLS scheme"),
    ("rediss://h:1/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("redis://h:1/0?sentinel_password=x", "only redis+sentinel"),
    ("redis://h:99999/0", "port out of range"),
    ("redis+cluster://h:1,:2", "not host:port"),
    ("redis://h:1/x", "database"),
    ("redis://h:1/0?db=-1", "database"),
    ("redis://h:1/0\n", "whitespace"),
    ("unix://", "socket path"),
])
def test_a_bad_url_is_one_line_naming_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BadInput) as caught:
        open_backend(url)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    assert message.startswith("redis: ")


@pytest.mark.parametrize("url", [
    "redis+sentinel://admin:hunter2@s1:26379",
    "redis+cluster://admin:hunter2@h:1/0",
    "rediss://admin:hunter2@h:1/0?ssl_cert_reqs=maybe",
    "redis://admin:hunter2@h:1/0?colour=blue",
])
def test_a_refused_url_never_shows_its_credentials(url: str) -> None:
    with pytest.raises(BadInput) as caught:
        open_backend(url)
    assert "hunter2" not in str(caught.value)
    assert "admin" not in str(caught.value)
