"""TLS material for a TLS memcached: a CA, a server certificate it signed, and an unrelated CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple


@dataclass
class TLSFiles:
    """PEM files for a TLS memcached: a CA, a server cert/key it signed, and an unrelated CA."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    wrong_ca_file: Path

    def client_context(self, ca_file: Optional[Path] = None) -> ssl.SSLContext:
        """A client SSLContext trusting ``ca_file`` (default: the CA that signed the server cert)."""
        return ssl.create_default_context(cafile=str(ca_file or self.ca_file))

    def server_args(self) -> Tuple[str, ...]:
        """memcached's arguments to serve only TLS with this server certificate."""
        return ("-Z", "-o", f"ssl_chain_cert={self.cert_file},ssl_key={self.key_file}")


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the `openssl` command is needed to make test certificates: apt-get install openssl")
    subprocess.run([openssl, *args], check=True, capture_output=True)


def _self_signed_ca(directory: Path, name: str) -> Tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN=sqla_memcache test {name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_tls_files(directory: Path) -> TLSFiles:
    """Create a CA, a server certificate for 127.0.0.1/localhost signed by it, and a second CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _self_signed_ca(directory, "ca")
    wrong_ca, _ = _self_signed_ca(directory, "wrong-ca")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return TLSFiles(ca_file=ca_cert, cert_file=cert, key_file=key, wrong_ca_file=wrong_ca)
