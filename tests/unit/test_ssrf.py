"""The SSRF guard's pure decisions: which addresses and URLs a scrape-sync may reach."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from app.domain import ssrf
from app.domain.errors import FetchRefused


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, nothing binds to it
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "private"),  # documentation range: never a real site
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::127.0.0.1", "IPv6 form of 127.0.0.1, a loopback"),
        ("::10.0.0.1", "IPv6 form of 10.0.0.1, a private"),
        ("64:ff9b::7f00:1", "IPv6 form of 127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "IPv6 form of 169.254.169.254, a cloud metadata"),
        ("2002:7f00:1::1", "IPv6 form of 127.0.0.1"),
        ("2002:a00:1::1", "IPv6 form of 10.0.0.1"),
    ],
)
def test_internal_addresses_are_refused_with_their_kind_named(address: str, named: str) -> None:
    reason = ssrf.address_refusal(ip_address(address))
    assert reason is not None
    assert named in reason
    assert reason.startswith(str(ip_address(address)))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_globally_routable_addresses_are_admitted(address: str) -> None:
    assert ssrf.address_refusal(ip_address(address)) is None


def test_the_allow_list_admits_its_networks_and_nothing_beside() -> None:
    allow = ssrf.parse_networks(["127.0.0.1/32", "10.1.0.0/16"])
    assert ssrf.address_refusal(ip_address("127.0.0.1"), allow) is None
    assert ssrf.address_refusal(ip_address("10.1.200.3"), allow) is None
    assert ssrf.address_refusal(ip_address("127.0.0.2"), allow) is not None
    assert ssrf.address_refusal(ip_address("10.2.0.1"), allow) is not None
    assert ssrf.address_refusal(ip_address("::1"), allow) is not None


def test_an_allow_listed_ipv4_address_is_admitted_in_its_mapped_form_too() -> None:
    allow = ssrf.parse_networks(["127.0.0.1"])
    assert ssrf.address_refusal(ip_address("::ffff:127.0.0.1"), allow) is None


def test_allowing_the_metadata_address_takes_an_explicit_entry() -> None:
    assert ssrf.address_refusal(ip_address("169.254.169.254"), ssrf.parse_networks([])) is not None
    allow = ssrf.parse_networks(["169.254.169.254/32"])
    assert ssrf.address_refusal(ip_address("169.254.169.254"), allow) is None


def test_a_host_is_refused_if_any_of_its_addresses_is() -> None:
    public, private = ip_address("93.184.215.14"), ip_address("10.0.0.7")
    ssrf.vet([public], host="example.com")
    with pytest.raises(FetchRefused, match=r"example\.com resolves to 10\.0\.0\.7 is a private"):
        ssrf.vet([public, private], host="example.com")


def test_a_literal_address_is_named_once_in_the_refusal() -> None:
    with pytest.raises(FetchRefused, match=r"^refused by the SSRF guard: 127\.0\.0\.1 is a loop"):
        ssrf.vet([ip_address("127.0.0.1")], host="127.0.0.1")


def test_a_host_with_no_address_is_refused() -> None:
    with pytest.raises(FetchRefused, match="no address"):
        ssrf.vet([], host="nowhere.example")


@pytest.mark.parametrize(
    ("scheme", "userinfo", "host", "named"),
    [
        ("ftp", False, "example.com", "scheme 'ftp'"),
        ("file", False, "", "scheme 'file'"),
        ("gopher", False, "example.com", "scheme 'gopher'"),
        ("http", True, "example.com", "credentials"),
        ("https", False, "", "no host"),
    ],
)
def test_urls_no_address_can_make_safe_are_refused(
    scheme: str, userinfo: bool, host: str, named: str
) -> None:
    reason = ssrf.url_refusal(scheme, has_userinfo=userinfo, host=host)
    assert reason is not None
    assert named in reason


def test_http_and_https_urls_without_credentials_pass_the_url_check() -> None:
    assert ssrf.url_refusal("http", has_userinfo=False, host="example.com") is None
    assert ssrf.url_refusal("HTTPS", has_userinfo=False, host="example.com") is None


def test_allow_list_entries_are_parsed_leniently_but_typos_fail() -> None:
    assert [str(n) for n in ssrf.parse_networks(["10.1.2.3/16", "::1", " 127.0.0.1 "])] == [
        "10.1.0.0/16",
        "::1/128",
        "127.0.0.1/32",
    ]
    with pytest.raises(ValueError, match="does not appear"):
        ssrf.parse_networks(["10.0.0.0/33"])
