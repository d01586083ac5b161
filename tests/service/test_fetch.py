"""Input fetching: SSRF refusals (after DNS and on every redirect), address
pinning, limits, data URIs, our own storage, and hostile image bytes.

No internet: positive paths use HTTP servers on 127.0.0.1 (with
allow_private_urls, or with the address policy patched so that 127.0.0.1
plays a public server), and a fake resolver stands in for DNS.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from ccsr.service import fetch
from ccsr.service.fetch import (
    InputError,
    address_block_reason,
    check_outbound_url,
    decode_data_uri,
    load_input_image,
)
from ccsr.service.images import decode_image
from ccsr.storage.files import FileStore
from ccsr.settings import Settings

def png_bytes(size=(8, 6), mode="RGB", color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb)."""
    data = bytearray(png_bytes((1, 1)))
    ihdr = bytearray(data[16:29])  # width, height, depth, color, ...
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


class Server:
    """A local HTTP server answering from a route table, recording requests."""

    def __init__(self):
        self.routes: dict[str, tuple] = {}
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.seen.append((self.path, self.headers.get("Host")))
                status, headers, body = outer.routes.get(self.path, (404, {}, b"missing"))
                if callable(body):
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    body(self.wfile)
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers and not headers.get("_no_length"):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def files(tmp_path):
    return FileStore(tmp_path / "files")


def settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, **kw)


@pytest.fixture
def fake_dns(monkeypatch):
    """Replace DNS with a table; records every lookup."""
    table: dict[str, list[str]] = {}
    calls: list[str] = []

    async def resolve(host, port):
        calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        return list(table[host])

    monkeypatch.setattr(fetch, "resolve_host", resolve)
    return table, calls


@pytest.fixture
def loopback_is_public(monkeypatch):
    """Let 127.0.0.1 stand in for a public server; everything else keeps the real policy."""
    real = fetch.address_block_reason

    def policy(ip, allow_private=False):
        if ip == ipaddress.ip_address("127.0.0.1"):
            return None
        return real(ip, allow_private)

    monkeypatch.setattr(fetch, "address_block_reason", policy)


# --- the address policy -----------------------------------------------------------

BLOCKED = [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.1.1", "fe80::1", "224.0.0.1", "ff02::1", "255.255.255.255", "100.64.0.1", "198.18.0.1",
    "240.0.0.1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::",
    "169.254.169.254", "fd00:ec2::254", "192.0.0.192", "100.100.100.200",
]


@pytest.mark.parametrize("addr", BLOCKED)
@pytest.mark.asyncio
async def test_non_public_addresses_are_refused(addr):
    assert address_block_reason(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
@pytest.mark.asyncio
async def test_public_addresses_are_allowed(addr):
    assert address_block_reason(ipaddress.ip_address(addr)) is None


@pytest.mark.asyncio
async def test_allow_private_still_refuses_metadata():
    assert address_block_reason(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert address_block_reason(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    for addr in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert address_block_reason(ipaddress.ip_address(addr), allow_private=True) == "a cloud metadata address"


# --- check_outbound_url ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/x.png", "http://[::1]:8080/", "http://10.0.0.1/", "https://169.254.169.254/latest/meta-data/",
     "http://[::ffff:7f00:1]/", "http://0.0.0.0:80/"],
)
@pytest.mark.asyncio
async def test_private_literals_refused(tmp_path, url):
    with pytest.raises(InputError) as err:
        await check_outbound_url(url, settings(tmp_path), field="image_url")
    assert err.value.field == "image_url"
    # The setting is named as the way out, except for metadata, which it does not unlock.
    expected = "metadata" if "169.254.169.254" in url else "allow_private_urls"
    assert expected in err.value.message


@pytest.mark.asyncio
async def test_names_resolving_to_private_addresses_are_refused(tmp_path, fake_dns):
    table, _ = fake_dns
    table["evil.example"] = ["127.0.0.1"]
    table["mixed.example"] = ["93.184.216.34", "10.0.0.5"]  # one bad answer is enough
    table["v6.example"] = ["::1"]
    table["good.example"] = ["93.184.216.34"]
    for host in ("evil.example", "mixed.example", "v6.example"):
        with pytest.raises(InputError) as err:
            await check_outbound_url(f"http://{host}/a.png", settings(tmp_path), field="image_url")
        assert "resolves to" in err.value.message
    target = await check_outbound_url("https://good.example/a.png", settings(tmp_path))
    assert target.ip == "93.184.216.34" and target.port == 443 and target.host == "good.example"


@pytest.mark.asyncio
async def test_metadata_hostnames_refused_even_when_private_allowed(tmp_path, fake_dns):
    table, calls = fake_dns
    table["metadata.google.internal"] = ["169.254.169.254"]
    with pytest.raises(InputError):
        await check_outbound_url("http://metadata.google.internal/computeMetadata/v1/", settings(tmp_path, allow_private_urls=True))
    assert calls == []  # refused by name, before any lookup


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a", "gopher://x/", "http://", "not a url", "", "//host/x"]
)
@pytest.mark.asyncio
async def test_bad_schemes_and_shapes(tmp_path, url):
    with pytest.raises(InputError) as err:
        await check_outbound_url(url, settings(tmp_path), field="webhook")
    assert err.value.field == "webhook"


@pytest.mark.asyncio
async def test_unresolvable_host(tmp_path, fake_dns):
    with pytest.raises(InputError) as err:
        await check_outbound_url("http://nowhere.invalid/", settings(tmp_path))
    assert "could not be resolved" in err.value.message


# --- downloads --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_download_from_local_server_when_private_allowed(tmp_path, server, files):
    server.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, png_bytes((8, 6)))
    im = await load_input_image(server.url("/cat.png"), settings=settings(tmp_path, allow_private_urls=True), files=files)
    assert im.size == (8, 6) and im.mode == "RGB"


@pytest.mark.asyncio
async def test_local_server_refused_by_default(tmp_path, server, files):
    server.routes["/cat.png"] = (200, {}, png_bytes())
    with pytest.raises(InputError):
        await load_input_image(server.url("/cat.png"), settings=settings(tmp_path), files=files)
    assert server.seen == []  # never connected


@pytest.mark.asyncio
async def test_connection_goes_to_the_checked_address(tmp_path, server, files, fake_dns, loopback_is_public):
    """The name is resolved once and the checked IP is dialled; the name stays in Host."""
    table, calls = fake_dns
    table["img.test"] = ["127.0.0.1"]  # 'img.test' does not exist in real DNS
    server.routes["/a.png"] = (200, {}, png_bytes((5, 4)))
    im = await load_input_image(server.url("/a.png", host="img.test"), settings=settings(tmp_path), files=files)
    assert im.size == (5, 4)
    assert calls == ["img.test"]
    assert server.seen == [("/a.png", f"img.test:{server.port}")]


@pytest.mark.asyncio
async def test_dns_rebinding_cannot_switch_address(tmp_path, server, files, fake_dns, loopback_is_public, monkeypatch):
    """A resolver answering differently on a second lookup changes nothing:
    there is no second lookup between the check and the connection."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    seen: list[str] = []

    async def rebinding(host, port):
        seen.append(host)
        return next(answers)

    monkeypatch.setattr(fetch, "resolve_host", rebinding)
    server.routes["/a.png"] = (200, {}, png_bytes())
    await load_input_image(server.url("/a.png", host="rebind.test"), settings=settings(tmp_path), files=files)
    assert seen == ["rebind.test"]


@pytest.mark.parametrize(
    "location",
    ["http://10.0.0.7/x.png", "http://[::1]/x.png", "http://169.254.169.254/latest/meta-data/", "http://inside.test/x.png",
     "http://metadata.google.internal/"],
)
@pytest.mark.asyncio
async def test_redirects_to_private_addresses_are_refused(tmp_path, server, files, fake_dns, loopback_is_public, location):
    table, _ = fake_dns
    table["public.test"] = ["127.0.0.1"]
    table["inside.test"] = ["192.168.0.10"]
    server.routes["/r"] = (302, {"Location": location}, b"")
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/r", host="public.test"), settings=settings(tmp_path), files=files)
    assert err.value.field == "image_url"
    assert [p for p, _ in server.seen] == ["/r"]


@pytest.mark.asyncio
async def test_redirects_followed_and_limited(tmp_path, server, files):
    s = settings(tmp_path, allow_private_urls=True, max_redirects=2)
    server.routes["/img.png"] = (200, {}, png_bytes((3, 3)))
    server.routes["/one"] = (301, {"Location": "/img.png"}, b"")
    server.routes["/two"] = (307, {"Location": server.url("/one")}, b"")
    server.routes["/three"] = (302, {"Location": "/two"}, b"")
    assert (await load_input_image(server.url("/two"), settings=s, files=files)).size == (3, 3)
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/three"), settings=s, files=files)
    assert "max_redirects" in err.value.message
    server.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(InputError):
        await load_input_image(server.url("/loop"), settings=s, files=files)
    server.routes["/noloc"] = (302, {}, b"")
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/noloc"), settings=s, files=files)
    assert "Location" in err.value.message


@pytest.mark.asyncio
async def test_download_size_limit(tmp_path, server, files):
    s = settings(tmp_path, allow_private_urls=True, max_download_bytes=1000)
    server.routes["/big"] = (200, {}, b"x" * 5000)
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/big"), settings=s, files=files)
    assert "max_download_bytes" in err.value.message

    def endless(w):  # no Content-Length: the limit must stop the stream
        try:
            for _ in range(10_000):
                w.write(b"y" * 1024)
        except OSError:
            pass

    server.routes["/stream"] = (200, {}, endless)
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/stream"), settings=s, files=files)
    assert "max_download_bytes" in err.value.message


@pytest.mark.asyncio
async def test_download_timeout(tmp_path, server, files):
    def slow(w):
        try:
            for _ in range(50):
                w.write(b"z")
                w.flush()
                time.sleep(0.1)
        except OSError:
            pass

    server.routes["/slow"] = (200, {}, slow)
    s = settings(tmp_path, allow_private_urls=True, download_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/slow"), settings=s, files=files)
    assert time.monotonic() - start < 3
    assert "download_timeout" in err.value.message


@pytest.mark.asyncio
async def test_http_errors_and_wrong_content(tmp_path, server, files):
    s = settings(tmp_path, allow_private_urls=True)
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/nope"), settings=s, files=files)
    assert "404" in err.value.message
    server.routes["/page"] = (200, {"Content-Type": "text/html"}, b"<html><body>hi</body></html>")
    with pytest.raises(InputError) as err:
        await load_input_image(server.url("/page"), settings=s, files=files)
    assert "not an image" in err.value.message
    # Declared type does not matter when the bytes are an image.
    server.routes["/octet"] = (200, {"Content-Type": "application/octet-stream"}, png_bytes((2, 2)))
    assert (await load_input_image(server.url("/octet"), settings=s, files=files)).size == (2, 2)


# --- data URIs -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_data_uris(tmp_path, files):
    s = settings(tmp_path)
    uri = "data:image/png;base64," + base64.b64encode(png_bytes((7, 7))).decode()
    assert (await load_input_image(uri, settings=s, files=files)).size == (7, 7)
    with pytest.raises(InputError) as err:
        await load_input_image(uri, settings=settings(tmp_path, max_data_uri_bytes=50), files=files)
    assert "max_data_uri_bytes" in err.value.message
    for bad in ("data:image/png;base64,@@@notbase64", "data:image/png;base64", "data:text/plain,hello"):
        with pytest.raises(InputError) as err:
            await load_input_image(bad, settings=s, files=files, field="image_url")
        assert err.value.field == "image_url"


@pytest.mark.asyncio
async def test_huge_data_uri_is_refused_before_decoding(tmp_path, files):
    uri = "data:image/png;base64," + "A" * (3 * 1024 * 1024)
    with pytest.raises(InputError) as err:
        await load_input_image(uri, settings=settings(tmp_path, max_data_uri_bytes=1024 * 1024), files=files)
    assert "1048576" in err.value.message


def test_decode_data_uri_variants():
    raw = b"\x00\x01binary\xff"
    assert decode_data_uri("data:;base64," + base64.b64encode(raw).decode(), max_bytes=10**6)[0] == raw
    assert decode_data_uri("data:image/png;base64," + base64.urlsafe_b64encode(raw).decode().rstrip("="), max_bytes=10**6)[0] == raw
    assert decode_data_uri("data:text/plain,a%20b", max_bytes=100) == (b"a b", "text/plain")


# --- our own storage --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_own_upload_urls_are_read_from_the_store(tmp_path, files):
    stored = files.save(png_bytes((4, 9)), "image/png", "in.png")
    url = files.url_for(stored.key, "http://127.0.0.1:9")  # nothing listens there
    im = await load_input_image(url, settings=settings(tmp_path), files=files)
    assert im.size == (4, 9)
    files.delete(stored.key)
    with pytest.raises(InputError) as err:
        await load_input_image(url, settings=settings(tmp_path), files=files)
    assert "expired" in err.value.message


# --- hostile image bytes ------------------------------------------------------------------


def test_decompression_bomb_refused_from_header():
    bomb = png_with_declared_size(100_000, 100_000)
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        decode_image(bomb, max_pixels=40_000_000, field="image_url")
    assert time.monotonic() - start < 1
    assert "max_input_pixels" in err.value.message and "10000000000 pixels" in err.value.message
    # Above Pillow's own guard too (its DecompressionBombError), still a clean InputError.
    with pytest.raises(InputError) as err:
        decode_image(bomb, max_pixels=10**12)
    assert "max_input_pixels" in err.value.message


def test_pixel_limit_is_exact():
    data = png_bytes((10, 10))
    assert decode_image(data, max_pixels=100).size == (10, 10)
    with pytest.raises(InputError):
        decode_image(data, max_pixels=99)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 100,
        b"GIF89a",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # never handed to Ghostscript
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
    ],
)
def test_non_images_and_corrupt_headers(data):
    with pytest.raises(InputError) as err:
        decode_image(data, max_pixels=10**6, field="image_url")
    assert err.value.field == "image_url"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images(fmt):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format=fmt)
    data = buf.getvalue()
    with pytest.raises(InputError) as err:
        decode_image(data[: len(data) // 2], max_pixels=10**6, field="image_url")
    assert "truncated" in err.value.message or "corrupt" in err.value.message


def test_modes_and_orientation():
    assert decode_image(png_bytes((3, 2), "RGBA", (1, 2, 3, 0)), max_pixels=100).mode == "RGB"
    assert decode_image(png_bytes((3, 2), "L", 7), max_pixels=100).mode == "RGB"
    assert decode_image(png_bytes((3, 2), "I;16", 300), max_pixels=100).mode == "RGB"
    buf = io.BytesIO()
    Image.new("P", (3, 2)).save(buf, format="GIF", transparency=0)
    assert decode_image(buf.getvalue(), max_pixels=100).mode == "RGB"
    # EXIF orientation 6 (rotate 90): a 4x2 JPEG is shown as 2x4.
    im = Image.new("RGB", (4, 2), (10, 20, 30))
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue(), max_pixels=100).size == (2, 4)


# --- TLS with a pinned address ----------------------------------------------------------------


def _make_cert(tmp_path, hostname: str):
    """A throwaway CA and a leaf certificate for ``hostname`` (no IP SAN)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path, ca_path = tmp_path / "leaf.pem", tmp_path / "leaf.key", tmp_path / "ca.pem"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, ca_path


@pytest.mark.asyncio
async def test_https_pinning_keeps_hostname_verification(tmp_path, fake_dns, loopback_is_public, monkeypatch, files):
    """Connecting to the pinned IP still sends SNI and checks the certificate
    against the URL's host name: right name passes, wrong name fails."""
    import ssl

    import httpx

    cert, key, ca = _make_cert(tmp_path, "img.test")
    server = Server()
    server.routes["/a.png"] = (200, {}, png_bytes((3, 5)))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server.httpd.socket = server_ctx.wrap_socket(server.httpd.socket, server_side=True)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    monkeypatch.setattr(
        fetch, "make_client",
        lambda timeout: httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout, verify=client_ctx),
    )
    table, _ = fake_dns
    table["img.test"] = ["127.0.0.1"]
    table["other.test"] = ["127.0.0.1"]
    try:
        im = await load_input_image(f"https://img.test:{server.port}/a.png", settings=settings(tmp_path), files=files)
        assert im.size == (3, 5)
        with pytest.raises(InputError) as err:
            await load_input_image(f"https://other.test:{server.port}/a.png", settings=settings(tmp_path), files=files)
        assert "ConnectError" in err.value.message and "certificate" in err.value.message.lower()
    finally:
        server.close()
