"""Cloud metadata services: the one list, refused for every outbound URL
(``image_url`` downloads and webhooks), even with ``allow_private_urls``.

No image or webhook legitimately lives at these addresses, and they hand out
credentials. Some are not private at all (Azure's 168.63.129.16 is a public
address), so the private-address check alone does not catch them.
"""

from __future__ import annotations

import ipaddress
from typing import Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: Address -> who serves metadata there.
METADATA_SERVICES: dict[str, str] = {
    "169.254.169.254": "AWS, GCP, Azure IMDS, OpenStack, DigitalOcean, Oracle, Hetzner...",
    "fd00:ec2::254": "AWS IMDS over IPv6",
    "169.254.170.2": "AWS ECS task metadata",
    "169.254.170.23": "AWS EKS Pod Identity agent",
    "fd00:ec2::23": "AWS EKS Pod Identity agent over IPv6",
    "169.254.169.253": "AWS VPC DNS resolver",
    "fd00:ec2::253": "AWS VPC DNS resolver over IPv6",
    "fd20:ce::254": "GCP metadata over IPv6",
    "168.63.129.16": "Azure WireServer / host agent",
    "169.254.0.23": "Tencent Cloud",
    "100.100.100.200": "Alibaba Cloud",
    "192.0.0.192": "Oracle Cloud (legacy)",
    "fe80::a9fe:a9fe": "OpenStack metadata over IPv6 link-local",
}

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in METADATA_SERVICES)

#: Host names of metadata services (compared lower-case, without a trailing dot).
METADATA_HOSTS: frozenset[str] = frozenset({
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.azure.com",
    "metadata.platformequinix.com",
})


def is_metadata_address(ip: IPAddress) -> bool:
    """True for a metadata address (IPv4-mapped IPv6 forms included)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    return ip in METADATA_ADDRESSES


def is_metadata_host(host: str) -> bool:
    """True for a metadata host name, however it is spelled (case, trailing dots)."""
    return host.strip().rstrip(".").lower() in METADATA_HOSTS
