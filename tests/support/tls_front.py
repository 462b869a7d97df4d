"""A broker that requires TLS, for the tests: a TLS front before Tansu, and its certificates.

Tansu 0.6.0 cannot serve TLS itself: its ``--cert`` and ``--key`` exclude each other (one
clap group) and its listener never wraps a connection. So librdkafka talks TLS to this front,
which forwards the bytes to Tansu in the clear; Tansu advertises the front's port
(``KafkaBroker(advertised_port=...)``), so every connection a client opens after the first
(the partition leaders, the group coordinator) goes through TLS too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from pathlib import Path

from tests.support.devstack.services import free_port


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key = (directory / name for name in ("ca.pem", "ca.key", "broker.pem", "broker.key"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=aggregator test CA",
            "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
            "-out", str(directory / "broker.csr"))
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(directory / "broker.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "1", "-extfile", str(directory / "san.cnf"), "-out", str(cert))
    return ca, cert, key


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class TlsFront:
    """TLS on ``port`` (127.0.0.1), plaintext to ``target_port``; in a thread of the test process."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.port, self.target_port = free_port(), target_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer), return_exceptions=True)

    def start(self) -> TlsFront:
        self._thread.start()
        server = asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self._context)
        asyncio.run_coroutine_threadsafe(server, self._loop).result(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        with contextlib.suppress(RuntimeError):
            self._loop.close()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"
