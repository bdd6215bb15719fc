"""Build (or find) kube-apiserver, kube-controller-manager, etcd and helm from their Go modules.

The wrapper modules ``tools/kubebin``, ``tools/etcdbin`` and ``tools/helmbin`` pin the versions
(``go.mod``) and the checksums (``go.sum``). helm is used only by the tests of the Helm chart
(``charts/modelrollout``), so it is located on its own (:func:`locate_helm`).

Binaries are cached by version under ``<cache>/modelrollout/bin/<component>-<version>/`` with a
stamp holding a fingerprint of the wrapper module, and the Go module and build caches live beside
them in ``<cache>/modelrollout/go``, so a second run, or a second checkout, is warm.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from modelrollout.devstack.controlplane.errors import BuildError, MissingPrerequisiteError
from modelrollout.devstack.controlplane.paths import cache_root, source_root

Progress = Callable[[str], None]

BIN_DIR_ENV = "MODELROLLOUT_LOCALENV_BIN_DIR"
GO_FALLBACKS: tuple[str, ...] = ("/usr/local/go/bin/go",)
GO_HOW_TO = (
    "install Go >= {need} from https://go.dev/dl/ and put its bin/ on PATH (or set $GO to its go binary)"
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Component:
    """A wrapper Go module and the binaries built from it."""

    name: str                       # cache directory prefix: "kubernetes", "etcd" or "helm"
    tool_dir: str                   # folder under tools/
    module: str                     # the module whose version names the build
    binaries: tuple[tuple[str, str], ...]  # (binary name, Go package)
    optional: tuple[str, ...] = ()  # binaries that may be skipped (built unless asked not to)

    def module_dir(self) -> Path:
        root = source_root()
        if root is None:
            raise MissingPrerequisiteError(
                f"building {self.name} needs the project's source checkout (tools/{self.tool_dir}/go.mod); "
                f"clone it and run `modelrollout localenv build` there, or set ${BIN_DIR_ENV} to a folder "
                "holding prebuilt etcd and kube-apiserver binaries"
            )
        return root / "tools" / self.tool_dir

    def version(self) -> str:
        return required_version(self.module_dir() / "go.mod", self.module)

    def ldflags(self, version: str, build_date: str) -> str:
        flags = ["-s", "-w"]
        if self.name == "kubernetes":
            match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", version)
            major, minor = (match.group(1), match.group(2)) if match else ("", "")
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                flags += [
                    f"-X {pkg}.gitVersion={version}",
                    f"-X {pkg}.gitMajor={major}",
                    f"-X {pkg}.gitMinor={minor}",
                    # Built from the release's module zip, not a git clone: "archive", as
                    # Kubernetes' own hack/lib/version.sh says for a tarball build.
                    f"-X {pkg}.gitTreeState=archive",
                    f"-X {pkg}.buildDate={build_date}",
                ]
        elif self.name == "etcd":
            flags.append(f"-X go.etcd.io/etcd/api/v3/version.GitSHA=module-{version}")
        elif self.name == "helm":
            flags += helm_ldflags(version, required_version(self.module_dir() / "go.mod", "k8s.io/client-go"))
        return " ".join(flags)


KUBERNETES = Component(
    name="kubernetes",
    tool_dir="kubebin",
    module="k8s.io/kubernetes",
    binaries=(
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    ),
    optional=("kube-controller-manager",),
)
ETCD = Component(
    name="etcd",
    tool_dir="etcdbin",
    module="go.etcd.io/etcd/server/v3",
    binaries=(("etcd", "go.etcd.io/etcd/server/v3"),),
)
HELM = Component(
    name="helm",
    tool_dir="helmbin",
    module="helm.sh/helm/v3",
    binaries=(("helm", "helm.sh/helm/v3/cmd/helm"),),
)
COMPONENTS = (ETCD, KUBERNETES)  # the control plane: what locate() needs
TOOLS = (HELM,)                   # built beside it, located on their own


def helm_ldflags(version: str, client_go_version: str) -> list[str]:
    """The ``-X`` flags of helm's own Makefile: its version, and the Kubernetes version that
    ``helm template`` and ``helm lint`` assume (client-go v0.X.Y is Kubernetes 1.X)."""
    parts = re.findall(r"\d+", client_go_version)
    major, minor = (str(int(parts[0]) + 1), parts[1]) if len(parts) >= 2 else ("", "")
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}",
             "-X helm.sh/helm/v3/internal/version.gitTreeState=archive"]
    if major:
        for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
            flags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    return flags


def required_version(go_mod: Path, module: str) -> str:
    """The version of ``module`` that ``go_mod`` requires."""
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise BuildError(f"{go_mod} does not require {module}")
    return match.group(1)


def go_directive(go_mod: Path) -> str:
    match = re.search(r"^go\s+(\S+)\s*$", go_mod.read_text(), re.MULTILINE)
    return match.group(1) if match else "1.0"


def fingerprint(module_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((module_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def go_dirs() -> tuple[Path, Path]:
    """(GOMODCACHE, GOCACHE) beside the binaries."""
    base = cache_root() / "go"
    return base / "mod", base / "cache"


def bin_dir(component: Component, version: str) -> Path:
    return cache_root() / "bin" / f"{component.name}-{version}"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def find_go(need: str = "1.26.0") -> Path:
    """The ``go`` binary (``$GO``, PATH, or /usr/local/go/bin/go), checked to be >= ``need``."""
    explicit = os.environ.get("GO")
    candidates = [explicit] if explicit else [shutil.which("go"), *GO_FALLBACKS]
    go = next((Path(c) for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)
    if go is None:
        where = f"$GO={explicit} is not an executable" if explicit else "Go toolchain not found"
        raise MissingPrerequisiteError(f"{where}: " + GO_HOW_TO.format(need=need))
    proc = subprocess.run([str(go), "env", "GOVERSION"], capture_output=True, text=True, check=False,
                          env=dict(os.environ, GOTOOLCHAIN="local"))
    have = proc.stdout.strip().removeprefix("go")
    if proc.returncode != 0 or _version_tuple(have) < _version_tuple(need):
        raise MissingPrerequisiteError(
            f"Go at {go} is {have or 'unusable'}, too old to build the local environment: "
            + GO_HOW_TO.format(need=need)
        )
    return go


@dataclass(frozen=True)
class Binaries:
    """Paths of the local environment's executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None
    versions: dict[str, str]


def _stamp_ok(directory: Path, names: list[str], expected: str | None) -> bool:
    stamp = directory / "stamp.json"
    if not stamp.is_file() or not all(os.access(directory / n, os.X_OK) for n in names):
        return False
    if expected is None:
        return True
    try:
        return bool(json.loads(stamp.read_text()).get("fingerprint") == expected)
    except (OSError, ValueError):
        return False


def _locate_one(component: Component, required: list[str]) -> tuple[Path, str] | None:
    """(bin dir, version) of a usable cached build of ``component``, or None."""
    if source_root() is not None:
        version = component.version()
        directory = bin_dir(component, version)
        if _stamp_ok(directory, required, fingerprint(component.module_dir())):
            return directory, version
        return None
    # Installed without the checkout: use the newest cached build of this component.
    builds = sorted((cache_root() / "bin").glob(f"{component.name}-v*"), key=lambda p: p.stat().st_mtime)
    for directory in reversed(builds):
        if _stamp_ok(directory, required, None):
            return directory, directory.name.removeprefix(f"{component.name}-")
    return None


def locate() -> Binaries | None:
    """The cached (or ``$MODELROLLOUT_LOCALENV_BIN_DIR``) binaries, or None if any is missing."""
    explicit = os.environ.get(BIN_DIR_ENV)
    if explicit:
        folder = Path(explicit)
        etcd, apiserver, kcm = folder / "etcd", folder / "kube-apiserver", folder / "kube-controller-manager"
        if not (os.access(etcd, os.X_OK) and os.access(apiserver, os.X_OK)):
            return None
        return Binaries(etcd, apiserver, kcm if os.access(kcm, os.X_OK) else None, {"source": str(folder)})
    etcd_hit = _locate_one(ETCD, ["etcd"])
    kube_hit = _locate_one(KUBERNETES, ["kube-apiserver"])
    if etcd_hit is None or kube_hit is None:
        return None
    kcm = kube_hit[0] / "kube-controller-manager"
    return Binaries(
        etcd=etcd_hit[0] / "etcd",
        kube_apiserver=kube_hit[0] / "kube-apiserver",
        kube_controller_manager=kcm if os.access(kcm, os.X_OK) else None,
        versions={"etcd": etcd_hit[1], "kubernetes": kube_hit[1]},
    )


def locate_helm() -> Path | None:
    """``$MODELROLLOUT_LOCALENV_BIN_DIR/helm`` if it is there, else the cached build, or None."""
    explicit = os.environ.get(BIN_DIR_ENV)
    if explicit and os.access(Path(explicit) / "helm", os.X_OK):
        return Path(explicit) / "helm"
    hit = _locate_one(HELM, ["helm"])
    return hit[0] / "helm" if hit is not None else None


def helm_missing_message() -> str:
    """One line saying that helm is missing and how to get it."""
    return (
        f"helm is not built yet (cache: {cache_root() / 'bin'}): run `modelrollout localenv build` "
        "(needs Go >= 1.26; a cold build of helm takes a few minutes), or put a helm binary in "
        f"${BIN_DIR_ENV}"
    )


def missing_message() -> str:
    """One line saying what is missing and how to get it."""
    if os.environ.get(BIN_DIR_ENV):
        return f"${BIN_DIR_ENV}={os.environ[BIN_DIR_ENV]} lacks an executable etcd or kube-apiserver"
    return (
        f"kube-apiserver/etcd are not built yet (cache: {cache_root() / 'bin'}): run "
        "`bash tools/install-prereqs.sh && modelrollout localenv build` (needs Go >= 1.26; a cold build "
        "takes a few minutes per binary)"
    )


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go_env(go: Path) -> dict[str, str]:
    mod, cache = go_dirs()
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOMODCACHE=str(mod),
        GOCACHE=str(cache),
        GOWORK="off",
        GOFLAGS="-mod=readonly -buildvcs=false",
        PATH=f"{go.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _run_go(args: list[str], cwd: Path, env: dict[str, str], label: str, progress: Progress,
            total: int | None = None, log: Path | None = None) -> None:
    """Run a go command, streaming its ``-v`` output into periodic progress lines."""
    started = time.monotonic()
    last_report = started
    count = 0
    lines: list[str] = []
    # Its own process group, so an interruption of this process (Ctrl-C, or a SIGTERM the caller
    # turns into an exception, as the demo does) can stop go and the compilers it runs.
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    assert proc.stdout is not None
    try:
        with contextlib.ExitStack() as stack:
            log_handle = stack.enter_context(log.open("a")) if log is not None else None
            for line in proc.stdout:
                if log_handle is not None:
                    log_handle.write(line)
                lines.append(line.rstrip())
                del lines[:-60]
                if not line.startswith(("go: ", "#")) and " " not in line.strip():
                    count += 1
                now = time.monotonic()
                if now - last_report >= 15:
                    last_report = now
                    share = f"{count}/{total} packages" if total else f"{count} packages"
                    progress(f"[{label}] compiling: {share}, {now - started:.0f} s")
        code = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if code != 0:
        tail = "\n".join(lines[-40:])
        raise BuildError(f"[{label}] `{' '.join(args[:3])} ...` failed with exit code {code}:\n{tail}")


def build_component(component: Component, progress: Progress = _stderr,
                    with_optional: bool = True, force: bool = False) -> Path:
    """Build ``component`` into its cache folder (skipped when the cache is already good)."""
    module_dir = component.module_dir()
    version = component.version()
    wanted = [name for name, _ in component.binaries if with_optional or name not in component.optional]
    target = bin_dir(component, version)
    expected = fingerprint(module_dir)
    need = go_directive(module_dir / "go.mod")
    with _build_lock():
        if not force and _stamp_ok(target, wanted, expected):
            progress(f"[{component.name}] {version}: cached in {target}")
            return target
        go = find_go(need)
        env = _go_env(go)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{component.name}-{version}-", dir=target.parent))
        log = staging / "build.log"
        try:
            t0 = time.monotonic()
            progress(f"[{component.name}] {version}: downloading Go modules into {go_dirs()[0]}")
            _run_go([str(go), "mod", "download"], module_dir, env, component.name, progress, log=log)
            t_download = time.monotonic() - t0
            build_date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            timings: dict[str, float] = {}
            for name, pkg in component.binaries:
                if name not in wanted:
                    continue
                t1 = time.monotonic()
                listing = subprocess.run([str(go), "list", "-deps", pkg], cwd=module_dir, env=env,
                                         capture_output=True, text=True, check=False)
                total = len(listing.stdout.split()) if listing.returncode == 0 else None
                progress(f"[{component.name}] building {name} ({pkg}@{version}, {total or '?'} packages; "
                         "a cold build takes minutes, cached packages are skipped)")
                _run_go(
                    [str(go), "build", "-v", "-trimpath", "-ldflags", component.ldflags(version, build_date),
                     "-o", str(staging / name), pkg],
                    module_dir, env, name, progress, total=total, log=log,
                )
                timings[name] = round(time.monotonic() - t1, 1)
                progress(f"[{component.name}] built {name} in {timings[name]:.0f} s")
            stamp = {
                "component": component.name,
                "version": version,
                "fingerprint": expected,
                "go": subprocess.run([str(go), "env", "GOVERSION"], env=env, capture_output=True,
                                     text=True, check=False).stdout.strip(),
                "built_at": build_date,
                "download_seconds": round(t_download, 1),
                "build_seconds": timings,
                "binaries": wanted,
            }
            (staging / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
            staging.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def build_all(progress: Progress = _stderr, with_controller_manager: bool = True,
              force: bool = False, with_helm: bool = True) -> Binaries:
    """Build etcd, Kubernetes and (unless asked not to) helm if they are not cached; return the
    control plane's paths (helm's is :func:`locate_helm`)."""
    for component in (*COMPONENTS, *(TOOLS if with_helm else ())):
        build_component(component, progress, with_optional=with_controller_manager, force=force)
    found = locate()
    if found is None:  # pragma: no cover - the builds above just made them
        raise BuildError(missing_message())
    return found
