"""Keys and certificates for the local API server, made with the ``openssl`` command.

One throw-away CA signs the apiserver's serving certificate (SANs 127.0.0.1, ::1 and localhost);
clients trust the CA. A separate RSA key pair signs service-account tokens.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelrollout.devstack.controlplane.errors import LocalEnvError, MissingPrerequisiteError

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default.svc
"""

_CA_CONFIG = """\
[req]
prompt = no
distinguished_name = dn
x509_extensions = v3_ca

[dn]
CN = modelrollout-localenv-ca

[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
"""


@dataclass(frozen=True)
class Certificates:
    """Paths of the generated PEM files."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise MissingPrerequisiteError(
            "openssl is missing: it makes the apiserver's certificate and keys. "
            "Install it with `bash tools/install-prereqs.sh` (or `apt-get install openssl`)."
        )
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LocalEnvError(f"openssl {args[0]} failed: {proc.stderr.strip()[-2000:]}")


def make_certificates(folder: Path, days: int = 30) -> Certificates:
    """Create a CA, a serving certificate for loopback, and service-account keys in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.cnf").write_text(_CA_CONFIG)
    (folder / "server.ext").write_text(_SERVER_EXT)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
             "-config", "ca.cnf", cwd=folder)
    _openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", str(days), "-extfile", "server.ext",
             cwd=folder)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=folder)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)
    for key in ("ca.key", "server.key", "sa.key"):
        (folder / key).chmod(0o600)
    return Certificates(
        ca_cert=folder / "ca.crt",
        serving_cert=folder / "server.crt",
        serving_key=folder / "server.key",
        sa_key=folder / "sa.key",
        sa_pub=folder / "sa.pub",
    )
