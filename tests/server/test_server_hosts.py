"""DNS rebinding: the server answers only requests whose Host names it (localhost, 127.0.0.1, [::1], the bound
address, with or without a port) or that --allowed-host lists; others get 421 in the OpenAI error shape. When
listening on every interface, the machine's real addresses (any IP literal) and its host name still pass."""

from __future__ import annotations

import socket

import httpx
import pytest
from srvutil import LiveServer, assert_error

from parley.errors import InvalidRequest
from parley.server import ServerSettings
from parley.server.hosts import HostPolicy, host_name


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LocalHost.", "127.0.0.1", "127.0.0.1:1234",
                                  "[::1]", "[::1]:80"])
def test_names_of_this_server_pass(server, host):
    assert httpx.get(server.url + "/v1/models", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example",
                                  "127.0.0.1.nip.io", "192.168.1.20", "[fe80::1]:8000"])
def test_other_hosts_are_refused(server, host):
    for path in ("/v1/conversations", "/v1/models", "/health"):
        r = httpx.get(server.url + path, headers={"host": host})
        err = assert_error(r, 421, "does not name this server", "--allowed-host")
        assert err["code"] == "invalid_host" and err["param"] == "host"
    r = httpx.post(server.url + "/v1/chat/completions", headers={"host": host},
                   json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert_error(r, 421)


def test_allowed_hosts_and_star(parley):
    s = LiveServer(parley, ServerSettings(allowed_hosts=("my-box.lan", "10.0.0.7")))
    try:
        for host, status in [("my-box.lan", 200), ("MY-BOX.LAN:8000", 200), ("10.0.0.7", 200),
                             ("localhost", 200), ("other.lan", 421)]:
            assert httpx.get(s.url + "/v1/models", headers={"host": host}).status_code == status, host
    finally:
        s.stop()
    s = LiveServer(parley, ServerSettings(allowed_hosts=("*",)))
    try:
        assert httpx.get(s.url + "/v1/models", headers={"host": "anything.example"}).status_code == 200
    finally:
        s.stop()


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_listening_everywhere_lets_the_machine_addresses_in(bind):
    policy = HostPolicy.from_settings(ServerSettings(host=bind))
    for ok in (b"192.168.1.20:8000", b"10.1.2.3", b"[fe80::1]", b"localhost:8000", socket.gethostname().encode()):
        assert policy.allows(ok), ok
    for bad in (b"attacker.example", b"192.168.1.20.attacker.example", b"rebind.localtest.me"):
        assert not policy.allows(bad), bad


def test_a_specific_bind_address_is_a_name_of_the_server():
    policy = HostPolicy.from_settings(ServerSettings(host="192.168.1.20"))
    assert policy.allows(b"192.168.1.20:8000") and policy.allows(b"localhost")
    assert not policy.allows(b"192.168.1.21") and not policy.allows(b"attacker.example")


def test_host_header_parsing():
    assert host_name(b"Example.COM.:8080") == "example.com"
    assert host_name(b"[::1]:8000") == "::1"
    assert host_name(b"::1") == "::1"


def test_allowed_hosts_are_checked():
    for bad in ("http://my-box.lan", "my-box.lan/path", "my box"):
        with pytest.raises(InvalidRequest, match="allowed_hosts"):
            ServerSettings(allowed_hosts=(bad,))
