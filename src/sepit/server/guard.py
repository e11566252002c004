"""Where requests may come from: the ``Host`` allow-list, the same-origin rule for POSTs, and the security headers.

A server on 127.0.0.1 is still reachable from the browser of the user who runs it: a page elsewhere can POST to it
(a form or a "simple" fetch needs no CORS preflight), and DNS rebinding can make it read the answers. So:

- ``Host`` must name this server: the bound address, ``localhost``, ``127.0.0.1`` or ``::1`` (any port), or a name
  on the ``--allowed-hosts`` list (``*`` allows any). When the server binds every interface (``0.0.0.0`` / ``::``)
  any IP address is allowed as well: DNS rebinding needs a name. Else 400.
- A request that is not GET / HEAD / OPTIONS and carries an ``Origin`` must come from this very origin (the
  ``Origin``'s host and port equal ``Host``). Else 403.
- Every response gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` and ``Cross-Origin-Resource-Policy: same-origin``; the web page gets :data:`PAGE_CSP`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"), (b"cross-origin-resource-policy", b"same-origin")]
# The page loads its script, style sheet and 3Dmol.js from /static; its one <style> block is inline; 3Dmol draws with
# WebGL and may start surface workers from blob: URLs; it talks to this server only.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def host_name(host: str) -> str:
    """The name or address in a ``Host`` value, without its port and brackets, lower-cased (``[::1]:80`` → ``::1``)."""
    h = host.strip().lower()
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    if h.count(":") == 1:
        return h.rsplit(":", 1)[0]
    return h  # a bare name, or an unbracketed IPv6 address


class HostGuard:
    """ASGI middleware enforcing the rules of this module in front of ``app``.

    ``bound_host``: the address the server listens on; ``allowed_hosts``: more names (or ``*``) that ``Host`` may
    carry, e.g. the server's DNS name behind a reverse proxy.
    """

    def __init__(self, app: Any, bound_host: str = "127.0.0.1", allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        extra = [host_name(h) for h in allowed_hosts if h.strip()]
        self.any_host = "*" in extra
        bound = host_name(bound_host)
        self.any_ip = bound in WILDCARD_BINDS
        self.allowed = frozenset([*LOCAL_HOSTS, *extra, *([] if self.any_ip else [bound])])

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if not name:
            return False
        if self.any_host or name in self.allowed:
            return True
        if self.any_ip:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg = {**msg, "headers": [*msg.get("headers", []), *(h for h in SECURITY_HEADERS if h[0] not in have)]}
            await send(msg)

        headers: dict[bytes, str] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), v.decode("latin-1"))  # the first of repeated headers
        host = headers.get(b"host")
        if host is None or not self.host_allowed(host):
            shown = "missing" if host is None else repr(host[:100])
            return await _refuse(with_headers, 400, f"Host header {shown} is not this server (sepit serve "
                                                    "--allowed-hosts adds names)")
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method", "GET") not in SAFE_METHODS \
                and urlsplit(origin.strip()).netloc.lower() != host.strip().lower():
            return await _refuse(with_headers, 403, f"cross-origin request from {origin[:100]!r} refused")
        await self.app(scope, receive, with_headers)


async def _refuse(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
