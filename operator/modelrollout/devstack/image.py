"""The operator's image, built and run without a Docker engine: mmdebstrap, buildah, umoci and runc.

Three steps, each cached under ``<cache>/modelrollout/image/`` (beside the control plane's binaries)
so that a warm run only checks its keys:

1. **The base**: Debian bookworm with Python (:data:`BASE_PACKAGES`), made by ``mmdebstrap`` from
   Debian's packages and imported into buildah's storage as ``localhost/modelrollout-base:<key>``,
   the key being a hash of the suite, the sources, the package list and the options. The official
   Python image would do as well (the Dockerfile's default ``BASE``), but no registry of images is
   reached here.
2. **The image**: ``buildah bud`` of the checkout's ``Dockerfile`` on that base (chroot isolation,
   vfs storage, no pull), tagged ``localhost/modelrollout:<key>``, the key being a hash of the base's
   id and of every file the Dockerfile copies (:func:`context_files`: the Dockerfile, pyproject.toml,
   README.md, ``constraints/`` and ``operator/``).
3. **The bundle**: the image pushed to an OCI layout and unpacked by ``umoci unpack`` into
   ``bundles/<key>/`` (``rootfs/``, umoci's ``config.json``, and ``image.json``: the image's config
   and its sizes), which :class:`Container` runs with ``runc`` as the image's user, with a
   read-only root.

Buildah's storage lives in ``image/storage`` (vfs), so nothing here touches a system-wide store.
Older bases and images are removed when a new one is made, and bundles after an hour unused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelrollout.devstack.controlplane.errors import BuildError, LocalEnvError, MissingPrerequisiteError
from modelrollout.devstack.controlplane.paths import cache_root

Progress = Callable[[str], None]

SUITE = "bookworm"
SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: What the base holds beyond Debian's essential set: Python with its venv module (the Dockerfile
#: makes a venv), libstdc++ (numpy's and scipy's wheels link it), useradd, and the CA certificates.
BASE_PACKAGES = ("python3", "python3-venv", "libstdc++6", "passwd", "ca-certificates")
MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    # merged /usr by symlinks, as debootstrap does, rather than the usrmerge package (and its perl)
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
)
BASE_REPO = "localhost/modelrollout-base"
IMAGE_REPO = "localhost/modelrollout"
#: The machine's CA bundle, mounted read-only into the build's RUN steps (pip behind a
#: TLS-inspecting proxy); never part of the image.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("mmdebstrap", "buildah", "umoci", "runc")
#: Debian's packages that bring :data:`TOOLS` (tools/install-prereqs.sh installs them).
APT_PACKAGES = ("mmdebstrap", "buildah", "umoci", "runc")
MMDEBSTRAP_TIMEOUT_S = 1200
BUILD_TIMEOUT_S = 1800


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def image_dir() -> Path:
    """``<cache>/modelrollout/image``: the base tarballs, buildah's storage and the bundles."""
    return cache_root() / "image"


def missing_tools() -> list[str]:
    """The tools of :data:`TOOLS` that are not on ``PATH``."""
    return [t for t in TOOLS if shutil.which(t) is None]


def missing_message(missing: Sequence[str]) -> str:
    return (f"building and running the image needs {', '.join(missing)}: "
            f"apt-get install {' '.join(APT_PACKAGES)} (or bash tools/install-prereqs.sh), as root")


def _digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def base_key() -> str:
    """The base's cache key: a hash of what mmdebstrap is asked for."""
    recipe = {"suite": SUITE, "sources": SOURCES, "packages": BASE_PACKAGES, "options": MMDEBSTRAP_OPTIONS}
    return _digest([json.dumps(recipe, sort_keys=True).encode()])


def context_files(root: Path) -> list[Path]:
    """Every file the Dockerfile's COPY steps read (relative to ``root``), sorted; bytecode and
    egg-info, which .dockerignore leaves out, are skipped."""
    files = [Path("Dockerfile"), Path("pyproject.toml"), Path("README.md")]
    for folder in ("constraints", "operator"):
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(p == "__pycache__" or p.endswith(".egg-info") for p in rel.parts):
                files.append(rel)
    return sorted(files)


def image_key(root: Path, base_id: str) -> str:
    """The image's cache key: a hash of its base's id and of the files the build reads."""
    parts = [base_id.encode()]
    for rel in context_files(root):
        parts += [str(rel).encode(), (root / rel).read_bytes()]
    return _digest(parts)


@dataclass(frozen=True)
class Bundle:
    """An unpacked image: its root filesystem, umoci's runtime config and the image's own config."""

    path: Path
    tag: str

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def runtime_config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((self.path / "config.json").read_text())
        return config

    def info(self) -> dict[str, Any]:
        """``image.json``: the image's config (``Entrypoint``, ``Cmd``, ``User``...), its layers'
        compressed bytes and its root filesystem's bytes."""
        info: dict[str, Any] = json.loads((self.path / "image.json").read_text())
        return info


@dataclass
class Timings:
    """Seconds each step took in this process, and whether it was cached."""

    seconds: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)

    def record(self, step: str, started: float, cached: bool) -> None:
        self.seconds[step] = round(time.monotonic() - started, 1)
        self.cached[step] = cached


def tree_bytes(root: Path) -> int:
    """The bytes of the regular files under ``root`` (symlinks not followed, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


class ImageBuilder:
    """Builds (or finds) the base, the image and its bundle for the checkout at ``root``."""

    def __init__(self, root: Path, *, cache: Path | None = None, progress: Progress = _stderr) -> None:
        self.root = root.resolve()
        self.dir = cache if cache is not None else image_dir()
        self.progress = progress
        self.timings = Timings()
        self.logs = self.dir / "logs"

    # ---- tools ----------------------------------------------------------------------------------
    def buildah(self) -> list[str]:
        return ["buildah", "--root", str(self.dir / "storage"), "--runroot", str(self.dir / "run"),
                "--storage-driver", "vfs"]

    def _run(self, argv: Sequence[str], label: str, *, timeout: float = 600, log: Path | None = None) -> str:
        """Run ``argv``; its output goes to ``log`` (when given) and is returned. Raises
        :class:`BuildError` with the output's tail if it fails."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = log or self.logs / f"{label}.log"
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(argv)}\n")
            handle.flush()
            try:
                done = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      timeout=timeout, check=False, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as exc:
                raise BuildError(f"[{label}] `{' '.join(argv[:4])} ...` took more than {timeout:.0f} s "
                                 f"(log: {log})") from exc
            handle.write(done.stdout)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-40:])
            raise BuildError(f"[{label}] `{' '.join(argv[:4])} ...` failed with exit code "
                             f"{done.returncode} (log: {log}):\n{tail}")
        return done.stdout

    def _image_id(self, ref: str) -> str | None:
        done = subprocess.run([*self.buildah(), "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                               ref], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None
        return done.stdout.strip() or None

    def _remove_other_tags(self, repo: str, keep: str) -> None:
        done = subprocess.run([*self.buildah(), "images", "--json"], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0 or not done.stdout.strip():
            return
        for image in json.loads(done.stdout):
            names = [n for n in image.get("names") or [] if n.startswith(repo + ":") and n != keep]
            for name in names:
                subprocess.run([*self.buildah(), "rmi", "--force", name], capture_output=True, check=False)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def require_tools(self) -> None:
        missing = missing_tools()
        if missing:
            raise MissingPrerequisiteError(missing_message(missing))

    # ---- 1. the base ----------------------------------------------------------------------------
    def base(self) -> str:
        """``localhost/modelrollout-base:<key>``, made and imported unless it is there."""
        started = time.monotonic()
        key = base_key()
        tag = f"{BASE_REPO}:{key}"
        if self._image_id(tag) is not None:
            self.timings.record("base", started, cached=True)
            return tag
        tarball = self.dir / f"base-{key}.tar"
        if not tarball.is_file():
            packages = ", ".join(BASE_PACKAGES)
            self.progress(f"[image] base: mmdebstrap {SUITE} with {packages} (about a minute)")
            for old in self.dir.glob("base-*.tar*"):
                old.unlink()
            partial = tarball.with_name(tarball.name + ".partial")
            self._run(["mmdebstrap", "--quiet", "--format=tar", *MMDEBSTRAP_OPTIONS,
                       f"--include={','.join(BASE_PACKAGES)}", SUITE, str(partial), *SOURCES],
                      "mmdebstrap", timeout=MMDEBSTRAP_TIMEOUT_S)
            partial.rename(tarball)
        self.progress(f"[image] base: importing {tarball.name} into buildah's storage")
        container = self._run([*self.buildah(), "from", "--quiet", "scratch"], "base").strip()
        try:
            self._run([*self.buildah(), "add", "--quiet", container, str(tarball), "/"], "base")
            self._run([*self.buildah(), "config",
                       "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "--cmd", '["/bin/sh"]', "--label", f"io.modelrollout.base-key={key}", container],
                      "base")
            self._run([*self.buildah(), "commit", "--quiet", "--rm", container, tag], "base")
        except BaseException:
            subprocess.run([*self.buildah(), "rm", container], capture_output=True, check=False)
            raise
        self._remove_other_tags(BASE_REPO, tag)
        self.timings.record("base", started, cached=False)
        return tag

    # ---- 2. the image ---------------------------------------------------------------------------
    def image(self) -> str:
        """``localhost/modelrollout:<key>``, built from the checkout's Dockerfile unless it is there."""
        base = self.base()
        started = time.monotonic()
        base_id = self._image_id(base)
        assert base_id is not None, base
        tag = f"{IMAGE_REPO}:{image_key(self.root, base_id)}"
        if self._image_id(tag) is not None:
            self.timings.record("image", started, cached=True)
            return tag
        self.progress(f"[image] buildah bud of {self.root / 'Dockerfile'} on {base} (a minute or two)")
        argv = [*self.buildah(), "bud", "--isolation", "chroot", "--pull=never", "--layers=false",
                "--build-arg", f"BASE={base}", "--file", str(self.root / "Dockerfile"), "--tag", tag]
        if CA_BUNDLE.is_file():
            argv += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        self._run([*argv, str(self.root)], "build", timeout=BUILD_TIMEOUT_S)
        self._remove_other_tags(IMAGE_REPO, tag)
        self.timings.record("image", started, cached=False)
        return tag

    # ---- 3. the bundle --------------------------------------------------------------------------
    def bundle(self) -> Bundle:
        """The image unpacked into ``bundles/<key>/`` (made unless it is there)."""
        self.require_tools()
        with self._lock():
            tag = self.image()
            started = time.monotonic()
            key = tag.rsplit(":", 1)[1]
            bundles = self.dir / "bundles"
            target = bundles / key
            bundles.mkdir(parents=True, exist_ok=True)
            _prune_bundles(bundles, keep=target)
            if (target / "image.json").is_file():
                os.utime(target)  # in use: see _prune_bundles
                self.timings.record("unpack", started, cached=True)
                return Bundle(target, tag)
            self.progress(f"[image] unpacking {tag} with umoci")
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.dir))
            try:
                layout = staging / "oci"
                self._run([*self.buildah(), "push", "--quiet", tag, f"oci:{layout}:{key}"], "unpack")
                self._run(["umoci", "unpack", "--image", f"{layout}:{key}", str(staging / "bundle")],
                          "unpack")
                info = _image_info(layout, key)
                info["tag"] = tag
                info["rootfs_bytes"] = tree_bytes(staging / "bundle" / "rootfs")
                (staging / "bundle" / "image.json").write_text(json.dumps(info, indent=2) + "\n")
                if target.exists():
                    shutil.rmtree(target)
                (staging / "bundle").rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self.timings.record("unpack", started, cached=False)
            return Bundle(target, tag)


#: A bundle unused for this long is deleted when another one is made or used (a container of
#: another test session may still run from a recent one: its root filesystem must stay).
BUNDLE_IDLE_S = 3600


def _prune_bundles(bundles: Path, keep: Path) -> None:
    now = time.time()
    for old in bundles.iterdir():
        if old != keep and now - old.stat().st_mtime > BUNDLE_IDLE_S:
            shutil.rmtree(old, ignore_errors=True)


def _image_info(layout: Path, tag: str) -> dict[str, Any]:
    """The image's config and its layers' (compressed) bytes, read from an OCI layout."""
    def blob(digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return layout / "blobs" / algorithm / hexdigest

    index = json.loads((layout / "index.json").read_text())
    manifests = index["manifests"]
    found = next((m for m in manifests
                  if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag), manifests[0])
    manifest = json.loads(blob(found["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return {"config": config.get("config", {}),
            "layers_bytes": [layer["size"] for layer in manifest["layers"]],
            "compressed_bytes": sum(layer["size"] for layer in manifest["layers"])}


# ---- running it -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    """A read-only bind mount of a host file or folder into the container."""

    source: Path
    destination: str


def _user(config: Mapping[str, Any]) -> tuple[int, int]:
    user, _, group = str(config.get("User") or "0").partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        raise LocalEnvError(f"the image's USER {config.get('User')!r} is not numeric")
    return int(user), int(group or user)


def runtime_config(bundle: Bundle, args: Sequence[str], env: Mapping[str, str], *,
                   mounts: Sequence[Mount] = (), nofile: int = 4096, nproc: int = 4096) -> dict[str, Any]:
    """A runc config that runs the image's entrypoint with ``args`` as the image's USER.

    As the Helm chart's pod runs it: a read-only root, a tmpfs on /tmp, no capabilities, no new
    privileges; the host's network namespace (so loopback reaches the local apiserver and
    Prometheus), the given read-only mounts, and ``nofile``/``nproc`` rlimits.
    """
    image = bundle.info()["config"]
    config = bundle.runtime_config()
    uid, gid = _user(image)
    process = config["process"]
    process["terminal"] = False
    process["args"] = [*(image.get("Entrypoint") or []), *args]
    merged = dict(e.split("=", 1) for e in image.get("Env") or [])
    merged.update(env)
    process["env"] = [f"{k}={v}" for k, v in merged.items()]
    process["user"] = {"uid": uid, "gid": gid}
    process["cwd"] = image.get("WorkingDir") or "/"
    sets = ("bounding", "effective", "inheritable", "permitted", "ambient")
    process["capabilities"] = {k: [] for k in sets}
    process["noNewPrivileges"] = True
    process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile},
                          {"type": "RLIMIT_NPROC", "hard": nproc, "soft": nproc}]
    config["root"] = {"path": str(bundle.rootfs), "readonly": True}
    config["hostname"] = "modelrollout"
    linux = config.setdefault("linux", {})
    linux["namespaces"] = [n for n in linux.get("namespaces", []) if n["type"] != "network"]
    # Without a network namespace of its own, the container cannot mount a sysfs: bind the host's.
    kept = [m for m in config.get("mounts", []) if not m["destination"].startswith("/sys")]
    config["mounts"] = [
        *kept,
        {"destination": "/sys", "type": "bind", "source": "/sys",
         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
        *({"destination": m.destination, "type": "bind", "source": str(m.source),
           "options": ["bind", "ro", "nosuid", "nodev"]} for m in mounts),
    ]
    return config


class Container:
    """One run of a :class:`Bundle` with ``runc``, its state under ``workdir``.

    :meth:`command` gives the argv of ``runc run`` (in the foreground: the caller owns the process
    and stops it with SIGTERM, which runc passes on); :meth:`pid` is the container's first process
    as the host sees it; :meth:`delete` removes the container, running or not.
    """

    KUBECONFIG = "/etc/modelrollout/kubeconfig"

    def __init__(self, bundle: Bundle, workdir: Path, name: str) -> None:
        self.bundle = bundle
        self.workdir = workdir
        self.name = name
        self.state_root = workdir / "runc"
        self.run_dir = workdir / "bundle"

    def runc(self) -> list[str]:
        return ["runc", "--root", str(self.state_root)]

    def command(
        self, args: Sequence[str], env: Mapping[str, str], *, mounts: Sequence[Mount] = ()
    ) -> list[str]:
        """Write the run's config and return its ``runc run`` argv. ``env["KUBECONFIG"]``, when set,
        is copied for the image's user (as a Secret volume would be) and mounted read-only."""
        env = dict(env)
        extra = list(mounts)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = env.get("KUBECONFIG")
        if kubeconfig:
            uid, gid = _user(self.bundle.info()["config"])
            copy = self.workdir / "kubeconfig"
            shutil.copyfile(kubeconfig, copy)
            os.chown(copy, uid, gid)
            copy.chmod(0o400)
            extra.append(Mount(copy, self.KUBECONFIG))
            env["KUBECONFIG"] = self.KUBECONFIG
        config = runtime_config(self.bundle, args, env, mounts=extra)
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return [*self.runc(), "run", "--bundle", str(self.run_dir), self.name]

    def state(self) -> dict[str, Any] | None:
        done = subprocess.run([*self.runc(), "state", self.name], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(done.stdout)
        return state

    def pid(self, timeout: float = 60) -> int:
        """The container's first process (the entrypoint), once it runs."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state is not None and state.get("status") == "running" and state.get("pid"):
                return int(state["pid"])
            if time.monotonic() > deadline:
                raise LocalEnvError(f"container {self.name} not running after {timeout:.0f} s: {state}")
            time.sleep(0.2)

    def delete(self) -> None:
        subprocess.run([*self.runc(), "delete", "--force", self.name], capture_output=True, check=False)


def process_ids(pid: int) -> dict[str, tuple[int, ...]]:
    """The real, effective, saved and filesystem uids and gids of ``pid`` (from /proc)."""
    out: dict[str, tuple[int, ...]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            out[key.lower()] = tuple(int(v) for v in value.split())
    return out
