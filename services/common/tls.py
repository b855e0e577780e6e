"""TLS for the gRPC servers and the gateway's channel to the ranker.

Plaintext only when no certificate is configured: each service's settings say which
files (PEM) to use, and check at start-up that they come in pairs and can be read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


def read_pem(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key; with ``client_ca``, callers must present a certificate
    signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(read_pem(self.key), read_pem(self.cert))],
            root_certificates=read_pem(self.client_ca),
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ChannelTls:
    """How a client verifies a server (``ca``) and, for mutual TLS, the certificate it presents."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""  # the name the server's certificate must carry, if not the target's host

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=read_pem(self.ca), private_key=read_pem(self.key),
                                            certificate_chain=read_pem(self.cert))

    def options(self) -> tuple[tuple[str, str], ...]:
        return (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()


def bind(server: grpc.aio.Server, addr: str, tls: ServerTls | None) -> int:
    """Add ``addr`` to ``server`` (TLS when ``tls`` is given); the port bound, or RuntimeError."""
    port = server.add_secure_port(addr, tls.credentials()) if tls is not None else server.add_insecure_port(addr)
    if port == 0:
        raise RuntimeError(f"could not bind {addr}")
    return port


def channel(target: str, tls: ChannelTls | None, options=()) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: TLS (mutual when ``tls`` has a certificate) or plaintext."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=tuple(options))
    return grpc.aio.secure_channel(target, tls.credentials(), options=(*options, *tls.options()))


def check_pair(cert: Path | None, key: Path | None, cert_var: str, key_var: str) -> None:
    """A certificate without its key (or the reverse) is a configuration error."""
    if (cert is None) != (key is None):
        raise ValueError(f"{cert_var} and {key_var} go together: set both or neither")


def check_readable(path: Path | None) -> Path | None:
    """A settings validator: the file exists and can be read."""
    if path is not None:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path
