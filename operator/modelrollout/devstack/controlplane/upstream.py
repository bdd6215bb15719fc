"""The upstream Istio and Gateway API CRDs that the local API server serves.

They are looked up, in order: an explicit folder, ``$MODELROLLOUT_UPSTREAM_CRDS``,
``../shared/upstream-crds/`` beside the source checkout, and a copy in the user cache. When none
exists, the same files are fetched at the same tags from the upstream repositories and checked
against the sha256 sums below (computed from the files the project was developed against).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelrollout.devstack.controlplane.errors import MissingPrerequisiteError
from modelrollout.devstack.controlplane.paths import cache_root, source_root

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ISTIO_API_VERSION = "v1.30.3"
GATEWAY_API_VERSION = "v1.6.1"
ENV_VAR = "MODELROLLOUT_UPSTREAM_CRDS"

_ISTIO_RAW = f"https://raw.githubusercontent.com/istio/api/{ISTIO_API_VERSION}"
_GW_RAW = f"https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/{GATEWAY_API_VERSION}"


@dataclass(frozen=True)
class UpstreamFile:
    """One file of the upstream CRD folder: where it goes, where it comes from, its sha256."""

    relpath: str
    url: str
    sha256: str


def _gw(kind: str, sha: str) -> UpstreamFile:
    name = f"gateway.networking.k8s.io_{kind}.yaml"
    return UpstreamFile(f"gateway-api/{name}", f"{_GW_RAW}/config/crd/standard/{name}", sha)


FILES: tuple[UpstreamFile, ...] = (
    UpstreamFile(
        "istio/LICENSE", f"{_ISTIO_RAW}/LICENSE",
        "9fa6e54dafda853bb3cdc01486b677a55102f0d488282a85ba6e426d9125f8c5",
    ),
    UpstreamFile(
        "istio/customresourcedefinitions.gen.yaml",
        f"{_ISTIO_RAW}/kubernetes/customresourcedefinitions.gen.yaml",
        "dcb43ff6b9af2f629b80b6a82597f5a91db259c757e66cc5353ac007da28351a",
    ),
    UpstreamFile(
        "gateway-api/LICENSE", f"{_GW_RAW}/LICENSE",
        "20b6dde626f521dbb384f75e6d96c3d16789df3bf878b58bc2810614fb4db07c",
    ),
    _gw("backendtlspolicies", "0d48c9e4b53dd9510cf615b9b1192d9d7afb07a1cc0498c9515627cb1c075419"),
    _gw("gatewayclasses", "53710048ba26f8620eed59d5e51b157ecf040daf5c6eef31a4b991e0808c4be5"),
    _gw("gateways", "25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a"),
    _gw("grpcroutes", "53a8d029da8f07e55d3fa58a5cf6de5950dab19fbb8d6a8082fb5e51ca5ef6fc"),
    _gw("httproutes", "a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852"),
    _gw("listenersets", "bf4d4b02564999b2558b96e31465129895db9b3a8adfb90adb9c80eac52a3a70"),
    _gw("referencegrants", "8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3"),
)

_HOW_TO_GET = (
    f"Put the Istio CRDs (istio/api {ISTIO_API_VERSION}, kubernetes/customresourcedefinitions.gen.yaml) "
    f"in <folder>/istio/ and the Gateway API standard CRDs ({GATEWAY_API_VERSION}, "
    "config/crd/standard/*.yaml) in <folder>/gateway-api/, then set "
    f"{ENV_VAR}=<folder>; or allow access to raw.githubusercontent.com so they can be fetched."
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path) -> list[str]:
    """The files of ``folder`` that are missing or differ from the pinned upstream ones."""
    problems = []
    for item in FILES:
        path = folder / item.relpath
        if not path.is_file():
            problems.append(f"{item.relpath}: missing")
        elif _sha256(path) != item.sha256:
            problems.append(f"{item.relpath}: sha256 differs from the {item.url} pinned by modelrollout")
    return problems


def _has_crds(folder: Path) -> bool:
    return (folder / "istio").is_dir() and (folder / "gateway-api").is_dir()


def _fetch(dest: Path, timeout: float = 30.0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    try:
        for item in FILES:
            target = staging / item.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(item.url, timeout=timeout) as response:
                target.write_bytes(response.read())
            if _sha256(target) != item.sha256:
                raise MissingPrerequisiteError(
                    f"upstream CRDs: {item.url} does not match its pinned sha256; refusing to use it. "
                    + _HOW_TO_GET
                )
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def locate(explicit: Path | None = None, fetch: bool = True) -> Path:
    """The folder holding ``istio/`` and ``gateway-api/``; fetched into the cache if need be."""
    if explicit is not None or os.environ.get(ENV_VAR):
        folder = Path(explicit if explicit is not None else os.environ[ENV_VAR]).expanduser()
        if not _has_crds(folder):
            raise MissingPrerequisiteError(
                f"upstream CRDs: {folder} (from {'the caller' if explicit else ENV_VAR}) has no istio/ and "
                f"gateway-api/ folders. {_HOW_TO_GET}"
            )
        return folder.resolve()
    candidates = []
    root = source_root()
    if root is not None:
        candidates.append(root.parent / "shared" / "upstream-crds")
    cached = cache_root() / f"upstream-crds-istio-{ISTIO_API_VERSION}-gwapi-{GATEWAY_API_VERSION}"
    candidates.append(cached)
    for folder in candidates:
        if _has_crds(folder):
            return folder.resolve()
    if not fetch:
        raise MissingPrerequisiteError(
            f"upstream CRDs: none found (looked in {', '.join(str(c) for c in candidates)}). {_HOW_TO_GET}"
        )
    try:
        _fetch(cached)
    except (OSError, urllib.error.URLError) as exc:
        raise MissingPrerequisiteError(
            f"upstream CRDs: none found (looked in {', '.join(str(c) for c in candidates)}) and fetching "
            f"them failed ({exc}). {_HOW_TO_GET}"
        ) from exc
    return cached


def crd_documents(folder: Path) -> Iterator[dict[str, Any]]:
    """Every CustomResourceDefinition in the YAML files under ``folder`` (recursively, sorted)."""
    for path in sorted(folder.rglob("*.yaml")) + sorted(folder.rglob("*.yml")):
        with path.open() as handle:
            for doc in yaml.load_all(handle, Loader=_LOADER):  # C or pure-Python SafeLoader
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    yield doc
