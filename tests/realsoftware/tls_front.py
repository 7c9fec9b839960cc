"""A TLS front for tier 4's real GPUStack server: argv CERT KEY PORT API_PORT.

It stands in for GPUStack's embedded gateway, which cannot run here (Higress
and Envoy are binaries of GPUStack's container image; conftest.py starts the
server with `--gateway-mode disabled`). That gateway is where GPUStack 2.3.0
serves the HTTPS of `--ssl-certfile`/`--ssl-keyfile` on `--tls-port`
(gpustack/cmd/prerun.py `prepare_gateway_config`: GATEWAY_HTTPS_PORT;
gpustack/gateway/__init__.py `ensure_tls_secret`, `ensure_ingress_resources`);
its API server (uvicorn, gpustack/server/server.py) serves plain HTTP behind
it. Like the gateway, this front holds the server's certificate and key and
passes each connection's bytes to the API port. It listens on 127.0.0.1 in
the test's own network namespace and runs until the test stops it by PID.
"""
from __future__ import annotations

import asyncio
import ssl
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main(cert: str, key: str, port: int, api_port: int) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            api_reader, api_writer = await asyncio.open_connection("127.0.0.1", api_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, api_writer), pipe(api_reader, client_writer),
                             return_exceptions=True)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(connection, "127.0.0.1", port, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
