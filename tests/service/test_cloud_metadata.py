"""Cloud metadata addresses are refused for every outbound URL, with and
without allow_private_urls (issue 11, point 7). In-process only: the checks
run before any connection, and no test ever connects to these addresses."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from ccsr.service import fetch
from ccsr.service.cloud_metadata import METADATA_ADDRESSES, METADATA_SERVICES, is_metadata_address
from ccsr.service.fetch import BlockedAddress, check_outbound_url
from ccsr.settings import Settings

REQUIRED = ["169.254.169.254", "fd00:ec2::254", "fd20:ce::254", "168.63.129.16", "169.254.0.23",
            "100.100.100.200", "192.0.0.192", "169.254.170.2"]


def _url(address: str) -> str:
    return f"http://[{address}]/x.png" if ":" in address else f"http://{address}/x.png"


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """Name resolution is replaced: a test must never reach the network."""

    async def refuse(host, port):
        raise AssertionError(f"unexpected DNS lookup of {host}")

    monkeypatch.setattr(fetch, "resolve_host", refuse)


def test_the_list_holds_every_known_service():
    for address in REQUIRED:
        assert ipaddress.ip_address(address) in METADATA_ADDRESSES, address
    assert len(METADATA_SERVICES) == len(METADATA_ADDRESSES)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("address", REQUIRED + ["::ffff:169.254.169.254", "::ffff:168.63.129.16",
                                                "64:ff9b::a9fe:a9fe"])
def test_metadata_addresses_are_refused_even_with_private_urls_allowed(address, allow_private):
    settings = Settings(allow_private_urls=allow_private)
    with pytest.raises(BlockedAddress) as info:
        asyncio.run(check_outbound_url(_url(address), settings, field="image_url"))
    assert "metadata" in info.value.message
    assert "allow_private_urls" not in info.value.message  # no hint that a setting would help


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata.goog",
                                  "metadata.tencentyun.com", "instance-data.ec2.internal"])
def test_metadata_host_names_are_refused_before_resolving(host):
    with pytest.raises(BlockedAddress):
        asyncio.run(check_outbound_url(f"http://{host}/x.png", Settings(allow_private_urls=True)))


def test_a_name_resolving_to_a_metadata_address_is_refused(monkeypatch):
    async def resolve(host, port):
        return ["93.184.216.34", "168.63.129.16"]

    monkeypatch.setattr(fetch, "resolve_host", resolve)
    with pytest.raises(BlockedAddress) as info:
        asyncio.run(check_outbound_url("http://images.example.com/a.png", Settings(allow_private_urls=True)))
    assert "metadata" in info.value.message


def test_scoped_ipv6_forms_are_recognised():
    assert is_metadata_address(ipaddress.ip_address("fe80::a9fe:a9fe%eth0"))
    assert is_metadata_address(ipaddress.ip_address("::ffff:100.100.100.200"))
    assert not is_metadata_address(ipaddress.ip_address("93.184.216.34"))
