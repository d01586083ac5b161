"""Getting request images: data URIs, our own uploads, and remote URLs fetched
without letting a request reach the server's private network (SSRF).

Remote fetches resolve the host name once, refuse the request if *any*
address is not public, then connect to the checked address itself (the URL's
host stays in the Host header and TLS SNI/certificate check), so a DNS answer
that changes between check and connect (rebinding) cannot redirect the
connection. Redirects are followed by hand and every hop is checked the same
way. Size, time and redirect limits come from :class:`ccsr.settings.Settings`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from PIL import Image

from ccsr.service.cloud_metadata import is_metadata_address, is_metadata_host
from ccsr.service.images import InputError, decode_image
from ccsr.storage.files import FileStore
from ccsr.settings import Settings

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class BlockedAddress(InputError):
    """The URL points at an address requests may not reach (a permanent refusal)."""

__all__ = [
    "BlockedAddress",
    "InputError",
    "OutboundTarget",
    "address_block_reason",
    "check_outbound_url",
    "check_url_syntax",
    "decode_data_uri",
    "download",
    "load_input_image",
    "open_pinned",
    "resolve_host",
]

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class OutboundTarget:
    """A checked URL and the address to connect to for it."""

    url: str
    scheme: str
    host: str  # IDNA-encoded host name or IP literal, as in the URL
    port: int
    ip: str  # the checked address the connection must go to

    @property
    def pinned_url(self) -> httpx.URL:
        return httpx.URL(self.url).copy_with(host=self.ip)

    @property
    def host_header(self) -> str:
        return httpx.URL(self.url).netloc.decode("ascii")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """An IPv4 address carried inside an IPv6 one (mapped, 6to4, Teredo, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    for net in _NAT64:
        if ip in net:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_block_reason(ip: IPAddress, allow_private: bool = False) -> Optional[str]:
    """Why connecting to ``ip`` is refused, or None when it is allowed."""
    if is_metadata_address(ip):
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_block_reason(inner, allow_private)
    if allow_private:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved, non-public address"
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (tests replace this function)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_url_syntax(url: object, *, field: str = "url") -> httpx.URL:
    """Parse an http(s) URL with a host, or raise :class:`InputError`.

    Cheap and offline: usable at submit time for webhook URLs; the address
    check happens when the URL is actually used.
    """
    if not isinstance(url, str) or not url.strip():
        raise InputError(field, "must be a non-empty http(s) URL.")
    if len(url) > 8192:
        raise InputError(field, "URL is longer than 8192 characters.")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise InputError(field, f"is not a valid URL ({exc}).") from None
    if parsed.scheme not in ("http", "https"):
        raise InputError(field, f"URL scheme must be http or https (got {parsed.scheme or 'none'!r}).")
    if not parsed.host:
        raise InputError(field, "URL has no host.")
    return parsed


async def check_outbound_url(url: str, settings: Settings, *, field: str = "url") -> OutboundTarget:
    """Resolve and vet a URL before connecting; returns the address to pin.

    Refuses loopback, private, link-local, multicast, reserved, unspecified
    and cloud-metadata addresses (unless ``allow_private_urls``; metadata
    always), checking every address the name resolves to.
    """
    parsed = check_url_syntax(url, field=field)
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded, as DNS and SNI need it
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if is_metadata_host(host):
        raise BlockedAddress(field, f"URL host {host!r} is a cloud metadata service; such URLs are refused.")
    try:
        literal: Optional[IPAddress] = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await resolve_host(host, port)
        except (OSError, UnicodeError) as exc:
            raise InputError(field, f"URL host {host!r} could not be resolved ({exc}).") from None
        if not addresses:
            raise InputError(field, f"URL host {host!r} did not resolve to any address.")
    allowed: list[str] = []
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        reason = address_block_reason(ip, settings.allow_private_urls)
        if reason is not None:
            hint = "" if reason == "a cloud metadata address" else (
                " (setting allow_private_urls permits private addresses)"
            )
            raise BlockedAddress(
                field, f"URL host {host!r} resolves to {reason}; URLs must point to the public internet{hint}."
            )
        allowed.append(str(ip))
    return OutboundTarget(url=str(parsed), scheme=parsed.scheme, host=host, port=port, ip=allowed[0])


def make_client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client for outbound requests: no redirects, no env proxies.

    trust_env=False matters: a proxy from the environment would connect by
    name and undo the address pinning.
    """
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout))


async def open_pinned(
    client: httpx.AsyncClient,
    method: str,
    target: OutboundTarget,
    *,
    headers: Optional[dict[str, str]] = None,
    content: Optional[bytes] = None,
) -> httpx.Response:
    """Send a request to ``target.ip`` for ``target.url``; response is streamed."""
    all_headers = {"Host": target.host_header, "User-Agent": "ccsr-server", **(headers or {})}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request = client.build_request(
        method, target.pinned_url, headers=all_headers, content=content, extensions=extensions
    )
    return await client.send(request, stream=True)


async def download(
    url: str, settings: Settings, *, field: str = "image_url", max_bytes: Optional[int] = None
) -> tuple[bytes, Optional[str]]:
    """GET a remote URL within the limits; returns (bytes, content type)."""
    limit = settings.max_download_bytes if max_bytes is None else max_bytes
    try:
        async with asyncio.timeout(settings.download_timeout):
            async with make_client(settings.download_timeout) as client:
                return await _download(client, url, settings, field, limit)
    except TimeoutError:
        raise InputError(
            field,
            f"download took longer than {settings.download_timeout:g} s (setting download_timeout).",
        ) from None


async def _download(
    client: httpx.AsyncClient, url: str, settings: Settings, field: str, limit: int
) -> tuple[bytes, Optional[str]]:
    current = url
    for _hop in range(settings.max_redirects + 1):
        target = await check_outbound_url(current, settings, field=field)
        try:
            response = await open_pinned(
                client, "GET", target, headers={"Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"}
            )
        except httpx.HTTPError as exc:
            raise InputError(field, f"could not download from {target.host!r} ({type(exc).__name__}: {exc}).") from None
        try:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise InputError(field, f"redirect ({response.status_code}) without a Location header.")
                try:
                    current = str(httpx.URL(current).join(location))
                except (httpx.InvalidURL, ValueError):
                    raise InputError(field, f"redirect to an invalid URL {location[:200]!r}.") from None
                continue
            if response.status_code != 200:
                raise InputError(field, f"download failed: {target.host!r} answered HTTP {response.status_code}.")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise _too_big(field, limit)
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_big(field, limit)
                    chunks.append(chunk)
            except httpx.HTTPError as exc:
                raise InputError(field, f"download from {target.host!r} failed ({type(exc).__name__}).") from None
            return b"".join(chunks), response.headers.get("content-type")
        finally:
            await response.aclose()
    raise InputError(field, f"more than {settings.max_redirects} redirects (setting max_redirects).")


def _too_big(field: str, limit: int) -> InputError:
    return InputError(field, f"the download is larger than {limit} bytes (setting max_download_bytes).")


def decode_data_uri(uri: str, *, max_bytes: int, field: str = "image_url") -> tuple[bytes, str]:
    """``data:[<type>][;base64],<data>`` -> (bytes, media type)."""
    if len(uri) > max_bytes:
        raise InputError(
            field,
            f"data URI is {len(uri)} bytes; the limit is {max_bytes} bytes (setting max_data_uri_bytes). "
            "Upload the file and pass its URL instead.",
        )
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise InputError(field, "malformed data URI: no ',' separates the header from the data.")
    params = [p.strip().lower() for p in header.split(";")]
    media_type = params[0] or "text/plain"
    if "base64" in params[1:]:
        text = "".join(payload.split())
        text = unquote_to_bytes(text).decode("ascii", "replace") if "%" in text else text
        try:
            if "-" in text or "_" in text:
                data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            else:
                data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(field, "data URI is not valid base64.") from None
    else:
        data = unquote_to_bytes(payload)
    return data, media_type


def _is_our_host(url: str, settings: Settings) -> bool:
    """True when a URL names this server (public_url's host, or a loopback name)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    if settings.public_url:
        ours = (urlsplit(settings.public_url).hostname or "").lower()
        if host == ours:
            return True
    if host in ("localhost", ""):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip.is_global


async def load_input_bytes(url: str, *, settings: Settings, files: FileStore, field: str = "image_url") -> bytes:
    """The raw bytes behind an input URL (data URI, our upload, or remote)."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(field, "must be an http(s) URL or a data: URI.")
    url = url.strip()
    if url[:5].lower() == "data:":
        data, _media = decode_data_uri(url, max_bytes=settings.max_data_uri_bytes, field=field)
        return data
    check_url_syntax(url, field=field)
    key = FileStore.key_from_url(url)
    if key is not None:
        try:
            return await files.pool.run(files.read, key)
        except FileNotFoundError:
            pass
        if _is_our_host(url, settings):
            raise InputError(field, "refers to an uploaded file that does not exist or has expired.")
    data, _ctype = await download(url, settings, field=field)
    return data


async def load_input_image(
    url: str, *, settings: Settings, files: FileStore, field: str = "image_url"
) -> Image.Image:
    """Fetch and decode a request image to RGB, or raise :class:`InputError`."""
    data = await load_input_bytes(url, settings=settings, files=files, field=field)
    return await asyncio.to_thread(decode_image, data, max_pixels=settings.max_input_pixels, field=field)
