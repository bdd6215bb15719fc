"""The image, built and run without a Docker engine, promotes a better challenger (issue 14).

The Dockerfile is built by buildah on a Debian bookworm base made by mmdebstrap, unpacked by umoci
and run by runc (:mod:`modelrollout.devstack.image`; all three cached by content under
``~/.cache/modelrollout/image``, so a warm run only unpacks nothing and starts the container). The
operator process of the Istio promotion (tests/e2e/test_promotion.py) is then the image's
entrypoint, as uid 10001, with a read-only root, no capabilities, the kubeconfig mounted read-only
and the host's network (the local apiserver and Prometheus are on loopback).
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from modelrollout.devstack import image
from modelrollout.devstack.controlplane.pytest_plugin import unavailable
from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
UID = 10001


@pytest.fixture(scope="module")
def bundle() -> image.Bundle:
    """The checkout's image, unpacked. tools/setup.sh builds it (set-up may reach Debian's mirrors
    and PyPI; a test never does); this builds it only when the set-up was skipped."""
    missing = image.missing_tools()
    if missing:
        unavailable(image.missing_message(missing))
    if os.geteuid() != 0:
        pytest.skip("runc runs the image as root here (no rootless setup)")
    builder = image.ImageBuilder(ROOT, progress=lambda m: print(m, file=sys.stderr, flush=True))
    found = builder.bundle()
    info = found.info()
    print(f"\nimage {found.tag}: root filesystem {info['rootfs_bytes'] / 1e6:.0f} MB, "
          f"layers {info['compressed_bytes'] / 1e6:.0f} MB compressed; seconds {builder.timings.seconds}, "
          f"cached {builder.timings.cached}", file=sys.stderr, flush=True)
    return found


@pytest.fixture
def container(bundle: image.Bundle, namespace: str, tmp_path: Path) -> Iterator[image.Container]:
    """One runc container of the image; deleted after the test (after the world has stopped it)."""
    run = image.Container(bundle, tmp_path / "container", f"modelrollout-{namespace}")
    yield run
    run.delete()


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints" / "operator.txt").read_text().splitlines()
    pairs = (line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {canonicalize_name(name): version.strip() for name, version in pairs}


def installed(rootfs: Path) -> dict[str, str]:
    """The distributions in the image's venv, by name, from their dist-info folders."""
    sites = list((rootfs / "opt" / "modelrollout" / "lib").glob("python3*/site-packages"))
    assert len(sites) == 1, sites
    found = {}
    for info in sites[0].glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        found[canonicalize_name(name)] = version
    return found


def test_the_image_holds_the_pinned_versions_and_no_build_or_dev_tools(bundle: image.Bundle) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert installed(bundle.rootfs) == {**pins(), "modelrollout": version}
    site = next((bundle.rootfs / "opt" / "modelrollout" / "lib").glob("python3*/site-packages"))
    assert not (site / "modelrollout" / "devstack").exists()
    assert not (site / "matplotlib").exists()
    for tool in ("gcc", "cc", "pip", "pip3"):
        assert not (bundle.rootfs / "usr" / "bin" / tool).exists(), tool
        assert not (bundle.rootfs / "opt" / "modelrollout" / "bin" / tool).exists(), tool
    config = bundle.info()["config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["modelrollout"]


def test_the_image_promotes_a_better_challenger_as_uid_10001(
    container: image.Container, world: World, bundle: image.Bundle
) -> None:
    # Given the promotion scenario of test_promotion.py, with the operator run from the image
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=300, duration_s=400)
    operator = world.given_operator(command=container.command)
    pid = container.pid(timeout=60)
    recorder = world.record_weights()
    # When the experiment is applied
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, prometheus_url=world.prometheus.url)
    )
    # Then it is promoted, and the VirtualService showed every step on the way
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=240)
    assert world.phase() == "Promoted", world.describe()
    recorder.stop()
    world.then_routes({"v6": 0, "v7": 100})
    world.then_every_step_seen()
    world.then_condition("Succeeded", "True")
    # And the process that did it was the image's entrypoint, in the image's root, as uid 10001,
    # still running: not the checkout's operator
    assert operator.returncode() is None, operator.log_tail()
    ids = image.process_ids(pid)
    assert ids["uid"] == (UID, UID, UID, UID), ids
    assert ids["gid"] == (UID, UID, UID, UID), ids
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
    assert argv[1:5] == ["/opt/modelrollout/bin/modelrollout", "run", "--namespace", world.namespace], argv
    # (and its own metrics, on the port the World gave it: Prometheus scrapes the image's operator)
    assert f"--metrics-port={world.operator_metrics_port}" in argv[5:], argv
    root, rootfs = os.stat(f"/proc/{pid}/root"), os.stat(bundle.rootfs)
    assert (root.st_dev, root.st_ino) == (rootfs.st_dev, rootfs.st_ino)
