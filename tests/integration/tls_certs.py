#!/usr/bin/python3
"""Test certificates for the TLS tests, made at test time with the `openssl` CLI (nothing secret is committed).

In DIR it writes:
  ca.crt / ca.key                   a test CA (CN "tokengate test CA")
  server.crt / server.key           signed by that CA: CN localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
  other_ca.crt / other_ca.key       an unrelated CA
  other_server.crt / other_server.key  the same names, signed by the unrelated CA (verify-full must refuse it)

Keys are P-256, unencrypted, mode 0600 (PostgreSQL refuses a server key readable by others; when the cluster runs
as another OS user, chown the files for it). Certificates are valid from one hour ago for two days.

As a module:   from tls_certs import make_test_pki;  pki = make_test_pki(tmp_path)  # -> TestPki of paths
               pki.issue_server("second", cn="localhost-second")  # another server cert from the same CA (reload)
As a script:   /usr/bin/python3 tests/integration/tls_certs.py DIR   # prints the file paths as JSON, never keys
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SERVER_SAN = "DNS:localhost,IP:127.0.0.1,IP:::1"
DAYS = 2


class CertError(RuntimeError):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise CertError("the openssl command is not installed")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        # openssl's diagnostics name files and reasons; they never contain key material.
        raise CertError(f"openssl {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _new_key_and_csr(d: Path, name: str, cn: str) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


@dataclasses.dataclass
class TestPki:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path
    other_ca_key: Path
    other_server_cert: Path
    other_server_key: Path

    __test__ = False  # not a pytest test class

    def issue_server(self, name: str, cn: str = "localhost", san: str = SERVER_SAN,
                     ca: str = "ca") -> tuple[Path, Path]:
        """Another server certificate signed by `ca` ("ca" or "other_ca"); returns (cert, key) paths."""
        return _issue_server(self.dir, name, cn, san, ca)

    def paths(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}


_serial = [1000]


def _make_ca(d: Path, name: str, cn: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", str(DAYS), "-sha256", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


def _issue_server(d: Path, name: str, cn: str, san: str, ca: str) -> tuple[Path, Path]:
    _new_key_and_csr(d, name, cn)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    _serial[0] += 1
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-set_serial", str(_serial[0]), "-days", str(DAYS), "-sha256", "-extfile", ext.name,
             "-out", f"{name}.crt", cwd=d)
    (d / f"{name}.csr").unlink()
    ext.unlink()
    return d / f"{name}.crt", d / f"{name}.key"


def make_test_pki(directory: str | os.PathLike) -> TestPki:
    """Creates the CA, server and wrong-CA certificates in `directory` (created if missing)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _make_ca(d, "ca", "tokengate test CA")
    _make_ca(d, "other_ca", "tokengate unrelated CA")
    _issue_server(d, "server", "localhost", SERVER_SAN, "ca")
    _issue_server(d, "other_server", "localhost", SERVER_SAN, "other_ca")
    return TestPki(dir=d, ca_cert=d / "ca.crt", ca_key=d / "ca.key",
                   server_cert=d / "server.crt", server_key=d / "server.key",
                   other_ca_cert=d / "other_ca.crt", other_ca_key=d / "other_ca.key",
                   other_server_cert=d / "other_server.crt", other_server_key=d / "other_server.key")


def _self_check(pki: TestPki) -> None:
    """The chain verifies against its own CA and not against the other one."""
    _openssl("verify", "-CAfile", str(pki.ca_cert), "-verify_hostname", "localhost", "-verify_ip", "127.0.0.1",
             str(pki.server_cert), cwd=pki.dir)
    try:
        _openssl("verify", "-CAfile", str(pki.ca_cert), str(pki.other_server_cert), cwd=pki.dir)
    except CertError:
        return
    raise CertError("other_server.crt unexpectedly verifies against ca.crt")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1].startswith("-"):
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    try:
        pki = make_test_pki(argv[1])
        _self_check(pki)
    except CertError as e:
        print(f"tls_certs: {e}", file=sys.stderr)
        return 1
    print(json.dumps(pki.paths(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
