"""The host string and the arguments of connect(), checked before any network use."""

import pytest

import pyssh
from pyssh import parse_host


@pytest.mark.parametrize(
    "text,expected",
    [
        ("host", (None, "host", None)),
        ("user@host", ("user", "host", None)),
        ("user@host:2222", ("user", "host", 2222)),
        ("host:22", (None, "host", 22)),
        ("me@corp.com@host:10", ("me@corp.com", "host", 10)),
        ("[::1]:2222", (None, "::1", 2222)),
        ("u@[::1]", ("u", "::1", None)),
        ("::1", (None, "::1", None)),
        ("fe80::1%eth0", (None, "fe80::1%eth0", None)),
        ("127.0.0.1:65535", (None, "127.0.0.1", 65535)),
    ],
)
def test_parse(text, expected):
    assert parse_host(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@host",
        "user@",
        "host:",
        "host:abc",
        "host:0",
        "host:70000",
        "[::1",
        "[::1]x",
        "a b",
        "host/x",
        "a:b:c",
        ":22",
    ],
)
def test_malformed(text):
    with pytest.raises(ValueError) as e:
        parse_host(text)
    assert repr(text) in str(e.value) or text == ""


def test_not_a_string():
    with pytest.raises(TypeError):
        parse_host(b"host")


@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        (dict(host="u@h", user="v"), ValueError, "user given twice"),
        (dict(host="h:22", port=23), ValueError, "port given twice"),
        (dict(host="h", port=0), ValueError, "ports are 1 to 65535"),
        (dict(host="h", port="22"), TypeError, "port must be an int"),
        (dict(host="h", timeout=0), ValueError, "timeout"),
        (dict(host="h", timeout=-1), ValueError, "timeout"),
        (dict(host="h", verbose=5), ValueError, "verbose"),
        (dict(host="h", host_key_policy="yes"), ValueError, "host_key_policy"),
        (dict(host="h", password=123), TypeError, "password"),
        (dict(host="h", passphrase=1.5), TypeError, "passphrase"),
        (dict(host="h", keyfile=42), TypeError, "keyfile"),
        (dict(host="h", keyfile="/nonexistent/key"), FileNotFoundError, "keyfile not found"),
        (dict(host="h", config="/nonexistent/config"), FileNotFoundError, "config file not found"),
    ],
)
def test_bad_arguments_fail_before_connecting(kwargs, exc, words):
    host = kwargs.pop("host")
    with pytest.raises(exc) as e:
        pyssh.connect(host, **kwargs)
    assert words in str(e.value)


def test_same_value_twice_is_fine():
    # given both ways with the same value is not an error: the connection fails later
    with pytest.raises(pyssh.ConnectError):
        pyssh.connect("u@127.0.0.1:1", user="u", port=1, config=False, timeout=5)
