"""The floor under any aiohttp API server: TLS, HTTP parsing, a JSON body decoded and an answer encoded, and
nothing else (no auth, no storage). `apiserver_bench.py` runs it as a subprocess, on uvloop as the real
server runs, and drives it with the same client and concurrency as the API server's creates.

Run: python benchmarks/bare_http_server.py PORT CERT KEY
"""

from __future__ import annotations

import ssl
import sys

import orjson
import uvloop
from aiohttp import web


async def create(request: web.Request) -> web.Response:
    obj = orjson.loads(await request.read())
    return web.Response(status=201, body=orjson.dumps(obj), content_type="application/json")


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/{tail:.*}", create)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    main()
