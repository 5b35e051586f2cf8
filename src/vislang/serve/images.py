"""Turning an `image_url` (or `video_url`) of a request into bytes, safely.

`data:image/...;base64,` URLs are always accepted (real image types only). Remote http(s) URLs
are off unless domains are allowed; then every address a name resolves to must be public (never
loopback, private, link-local, metadata or otherwise reserved), the connection goes to the
address that was checked (so a second DNS answer cannot swap it), every redirect is checked the
same way, and size and time are limited. `file://` URLs only reach files under an allowed folder.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from ..errors import VislangError

IMAGE_MIME_TYPES = (
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
)


VIDEO_MIME_TYPES = (
    "video/mp4",
    "video/webm",
    "video/quicktime",
    "video/x-matroska",
    "video/avi",
    "video/x-msvideo",
)


class ImageInputError(VislangError, ValueError):
    """An image reference the server refuses (the reason goes back to the client as a 400)."""


@dataclass
class FetchPolicy:
    allowed_domains: list[str] = field(default_factory=list)  # empty: remote URLs are off
    file_root: Path | None = None  # None: file:// URLs are off
    max_bytes: int = 20 << 20
    timeout_s: float = 10.0
    max_redirects: int = 3


def read_video_url(url: str, policy: FetchPolicy) -> bytes:
    """A video_url's bytes: a data:video/...;base64 URL, or a file:// URL under the file root."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return read_data_url(url, policy.max_bytes, VIDEO_MIME_TYPES, "video")
    if scheme == "file":
        return read_file_url(url, policy)
    raise ImageInputError("video_url must be a data:video/...;base64, URL (or an allowed file URL)")


def read_image_url(url: str, policy: FetchPolicy) -> bytes:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return read_data_url(url, policy.max_bytes)
    if scheme in ("http", "https"):
        return fetch_remote(url, policy)
    if scheme == "file":
        return read_file_url(url, policy)
    raise ImageInputError(
        "image_url must be a data:image/...;base64, URL (or an allowed http(s) or file URL)"
    )


def read_data_url(url: str, max_bytes: int, mime_types=IMAGE_MIME_TYPES, what: str = "image") -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise ImageInputError("malformed data URL: no ',' before the data")
    meta = head[len("data:") :].split(";")
    mime = meta[0].strip().lower()
    if mime not in mime_types:
        raise ImageInputError(
            f"data URL of type {mime or 'none'!r} is not {'an' if what == 'image' else 'a'} {what}; "
            f"send one of {', '.join(mime_types)}"
        )
    if "base64" not in [m.strip().lower() for m in meta[1:]]:
        raise ImageInputError(f"{what} data URLs must be base64-encoded (data:{mime_types[0]};base64,...)")
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageInputError(
            f"{what} data of about {len(payload) * 3 // 4} bytes is over the {max_bytes}-byte limit"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageInputError(f"the data URL's base64 does not decode: {e}") from e


def read_file_url(url: str, policy: FetchPolicy) -> bytes:
    if policy.file_root is None:
        raise ImageInputError("file:// image URLs are disabled on this server")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ImageInputError("file:// URLs must name a local path")
    root = Path(policy.file_root).resolve()
    path = Path(unquote(parts.path)).resolve()  # resolves '..' and symlinks before the check
    if not path.is_relative_to(root):
        raise ImageInputError("file:// URL outside the folder this server may read")
    if not path.is_file():
        raise ImageInputError("file:// URL names no readable file")
    if path.stat().st_size > policy.max_bytes:
        raise ImageInputError(f"file over the {policy.max_bytes}-byte limit")
    return path.read_bytes()


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def domain_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (a.lower().lstrip(".") for a in allowed))


def resolve_public(host: str, port: int) -> str:
    """The first address of host, after checking that every address it resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ImageInputError(f"cannot resolve image host {host!r}") from e
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise ImageInputError(f"image host {host!r} resolves to a non-public address; refused")
    return addresses[0]


def fetch_remote(url: str, policy: FetchPolicy) -> bytes:
    if not policy.allowed_domains:
        raise ImageInputError("remote image URLs are disabled on this server; send a data: URL")
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise ImageInputError("image URL redirected to something other than http(s)")
        try:
            ipaddress.ip_address(host)
            literal = True
        except ValueError:
            literal = False
        if literal or not domain_allowed(host, policy.allowed_domains):
            raise ImageInputError(f"image host {host!r} is not in this server's allowed domains")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve_public(host, port)
        status, location, body = _get(parts, host, address, port, policy, deadline)
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise ImageInputError(f"image URL answered HTTP {status}")
        return body
    raise ImageInputError(f"image URL redirected more than {policy.max_redirects} times")


def _get(parts, host, address, port, policy, deadline):
    timeout = max(0.1, deadline - time.monotonic())
    if parts.scheme == "https":
        conn = _PinnedHTTPS(host, address, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        path = parts.path or "/"
        conn.request("GET", path + (f"?{parts.query}" if parts.query else ""), headers={"Host": host})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, resp.getheader("Location"), b""
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > policy.max_bytes:
            raise ImageInputError(f"remote image of {length} bytes is over the {policy.max_bytes}-byte limit")
        body = resp.read(policy.max_bytes + 1)
        if len(body) > policy.max_bytes:
            raise ImageInputError(f"remote image over the {policy.max_bytes}-byte limit")
        if time.monotonic() > deadline:
            raise ImageInputError("remote image took too long")
        return 200, None, body
    except (OSError, http.client.HTTPException) as e:
        raise ImageInputError(f"cannot fetch the image URL: {e}") from e
    finally:
        conn.close()


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to a checked address, with the certificate verified for the host name."""

    def __init__(self, host, address, port, **kw):
        super().__init__(host, port, **kw)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
