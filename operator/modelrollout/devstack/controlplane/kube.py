"""etcd, kube-apiserver and kube-controller-manager on loopback, kubeconfigs, and CRDs."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelrollout.devstack.controlplane.certs import Certificates
from modelrollout.devstack.controlplane.errors import LocalEnvError
from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port

ADMIN_USER = "localenv-admin"
UNPRIVILEGED_USER = "localenv-user"
SERVICE_CIDR = "10.96.0.0/16"


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens of the two users in the apiserver's token file."""

    admin: str
    user: str

    @classmethod
    def generate(cls) -> Tokens:
        return cls(admin=secrets.token_hex(24), user=secrets.token_hex(24))

    def write(self, path: Path) -> None:
        # token,user,uid,"group1,group2"
        path.write_text(
            f'{self.admin},{ADMIN_USER},uid-{ADMIN_USER},"system:masters"\n'
            f"{self.user},{UNPRIVILEGED_USER},uid-{UNPRIVILEGED_USER}\n"
        )
        path.chmod(0o600)


def http_get(url: str, *, ca: Path | None = None, token: str | None = None, timeout: float = 2.0,
             verify: bool = True) -> tuple[int, str]:
    """GET ``url``; (status, body). TLS is checked against ``ca`` unless ``verify`` is False."""
    context: ssl.SSLContext | None = None
    if url.startswith("https:"):
        if verify:
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", errors="replace")


def etcd_process(binary: Path, workdir: Path, *, client_port: int | None = None,
                 peer_port: int | None = None, detached: bool = False) -> tuple[ManagedProcess, str]:
    """An etcd member on loopback (not started); returns it and its client URL."""
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    argv = [
        str(binary),
        "--name=localenv",
        f"--data-dir={workdir / 'etcd-data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=localenv={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",          # a throw-away store: durability is not the point, speed is
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]
    proc = ManagedProcess("etcd", argv, workdir / "logs" / "etcd.log", detached=detached,
                          ports=[client_port, peer_port])
    return proc, client


def wait_etcd(proc: ManagedProcess, client_url: str, timeout: float = 30.0) -> None:
    def healthy() -> bool:
        status, body = http_get(f"{client_url}/health")
        return status == 200 and json.loads(body).get("health") == "true"

    proc.wait_until(healthy, timeout, "healthy")


def apiserver_process(binary: Path, workdir: Path, certs: Certificates, token_file: Path, etcd_url: str,
                      *, port: int | None = None, detached: bool = False) -> tuple[ManagedProcess, str]:
    """A kube-apiserver on loopback with RBAC, a token file and a self-signed certificate."""
    port = port or free_port()
    argv = [
        str(binary),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={certs.serving_cert}",
        f"--tls-private-key-file={certs.serving_key}",
        f"--client-ca-file={certs.ca_cert}",
        f"--token-auth-file={token_file}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=true",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={certs.sa_pub}",
        f"--service-account-signing-key-file={certs.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--logging-format=text",
        "--v=0",
    ]
    proc = ManagedProcess("kube-apiserver", argv, workdir / "logs" / "kube-apiserver.log",
                          detached=detached, ports=[port])
    return proc, f"https://127.0.0.1:{port}"


def wait_apiserver(proc: ManagedProcess, server: str, ca: Path, token: str, timeout: float = 90.0) -> None:
    def ready() -> bool:
        status, _ = http_get(f"{server}/readyz", ca=ca, token=token)
        return status == 200

    proc.wait_until(ready, timeout, "ready (/readyz)")


def controller_manager_process(binary: Path, workdir: Path, kubeconfig: Path, *, port: int | None = None,
                               detached: bool = False) -> tuple[ManagedProcess, str]:
    """kube-controller-manager running only the namespace and garbage-collector controllers."""
    port = port or free_port()
    argv = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",
        "--controllers=namespace-controller,garbage-collector-controller",
        "--leader-elect=false",
        "--use-service-account-credentials=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'kcm-certs'}",
        "--concurrent-namespace-syncs=5",
        "--logging-format=text",
        "--v=0",
    ]
    proc = ManagedProcess("kube-controller-manager", argv, workdir / "logs" / "kube-controller-manager.log",
                          detached=detached, ports=[port])
    return proc, f"https://127.0.0.1:{port}"


def wait_controller_manager(proc: ManagedProcess, url: str, timeout: float = 60.0) -> None:
    def healthy() -> bool:
        status, _ = http_get(f"{url}/healthz", verify=False)
        return status == 200

    proc.wait_until(healthy, timeout, "healthy (/healthz)")


def kubeconfig(server: str, ca_pem: bytes, user: str, token: str,
               namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig for one user with a bearer token."""
    context = f"localenv-{user.removeprefix('localenv-')}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "localenv",
            "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
        }],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{
            "name": context,
            "context": {"cluster": "localenv", "user": user, "namespace": namespace},
        }],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def api_client(kubeconfig_path: Path) -> Any:
    """A ``kubernetes.client.ApiClient`` for the kubeconfig (close it when done)."""
    from kubernetes import config

    new_client: Callable[..., Any] = config.new_client_from_config
    return new_client(config_file=str(kubeconfig_path))


def apply_crds(kubeconfig_path: Path, documents: Iterable[dict[str, Any]],
               timeout: float = 60.0) -> list[str]:
    """Create (or replace) CRDs and wait until each is Established; return their names."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = api_client(kubeconfig_path)
    try:
        ext: Any = client.ApiextensionsV1Api(api)
        names = []
        for doc in documents:
            name = doc["metadata"]["name"]
            names.append(name)
            try:
                ext.create_custom_resource_definition(body=doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise LocalEnvError(
                        f"applying CRD {name} failed: {exc.status} {exc.reason}: {exc.body}"
                    ) from exc
                current = ext.read_custom_resource_definition(name)
                body = dict(doc)
                body["metadata"] = dict(doc["metadata"], resourceVersion=current.metadata.resource_version)
                ext.replace_custom_resource_definition(name, body=body)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for item in ext.list_custom_resource_definition().items:
                conditions = (item.status.conditions or []) if item.status else []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    pending.discard(item.metadata.name)
            if not pending:
                break
            if time.monotonic() > deadline:
                late = ", ".join(sorted(pending))
                raise LocalEnvError(f"CRDs not Established after {timeout:.0f} s: {late}")
            time.sleep(0.2)
        return names
    finally:
        api.close()
