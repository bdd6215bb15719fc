"""A real Prometheus (Debian's package) on loopback, scraping targets that tests choose.

The generated configuration has one scrape job whose targets come from a file
(``file_sd_configs``), so a test can change what is scraped without a restart: it writes the
file and waits until Prometheus lists the new targets. Target labels may override ``job``.
``--web.enable-lifecycle`` also allows a full ``/-/reload`` after editing the config.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelrollout.devstack.controlplane.errors import LocalEnvError, MissingPrerequisiteError
from modelrollout.devstack.controlplane.kube import http_get
from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port

ENV_BINARY = "MODELROLLOUT_PROMETHEUS"


def find_prometheus() -> Path:
    """The prometheus binary: ``$MODELROLLOUT_PROMETHEUS``, PATH, or /usr/bin/prometheus."""
    for candidate in (os.environ.get(ENV_BINARY), shutil.which("prometheus"), "/usr/bin/prometheus"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise MissingPrerequisiteError(
        "prometheus is missing: install Debian's package with `bash tools/install-prereqs.sh` "
        f"(or `apt-get install prometheus`), or point ${ENV_BINARY} at a prometheus >= 2.40 binary"
    )


@dataclass
class TargetGroup:
    """Targets (``host:port``) scraped with the same labels."""

    targets: list[str]
    labels: dict[str, str] = field(default_factory=dict)


def render_config(targets_file: Path, scrape_interval: str = "1s") -> dict[str, Any]:
    """The Prometheus configuration: one file-discovered job, scraped every ``scrape_interval``."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [{
            "job_name": "localenv",
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }],
    }


class Prometheus:
    """One Prometheus server; :meth:`start` it, :meth:`set_targets`, :meth:`query`, :meth:`stop`."""

    def __init__(self, workdir: Path, *, binary: Path | None = None, port: int | None = None,
                 scrape_interval: str = "1s", detached: bool = False) -> None:
        self.workdir = workdir
        self.binary = binary or find_prometheus()
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.targets_path = workdir / "targets.json"
        self._groups: dict[str, list[TargetGroup]] = {}
        self._lock = threading.Lock()
        self.process = ManagedProcess(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
            detached=detached,
            ports=[self.port],
        )

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        self.config_path.write_text(yaml.safe_dump(render_config(self.targets_path, self.scrape_interval)))
        self.process.start()
        self.process.wait_until(lambda: http_get(f"{self.url}/-/ready")[0] == 200, timeout,
                                "ready (/-/ready)")

    def stop(self) -> None:
        self.process.stop()

    # ---- targets ---------------------------------------------------------------------------
    def _write_targets(self) -> None:
        groups = [
            {"targets": group.targets, "labels": dict(group.labels, job=job)}
            for job, job_groups in sorted(self._groups.items())
            for group in job_groups
        ]
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=1))
        tmp.replace(self.targets_path)

    def set_targets(self, job: str, targets: Sequence[str], labels: Mapping[str, str] | None = None,
                    *, wait: bool = True, timeout: float = 30.0) -> None:
        """Scrape ``targets`` (``host:port``) under ``job``, replacing that job's previous targets."""
        with self._lock:
            if targets:
                self._groups[job] = [TargetGroup(list(targets), dict(labels or {}))]
            else:
                self._groups.pop(job, None)
            self._write_targets()
        if wait:
            self.wait_for_targets(job, len(targets), timeout=timeout)

    def clear_targets(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Scrape nothing; with ``wait``, until Prometheus has dropped every target."""
        with self._lock:
            self._groups.clear()
            self._write_targets()
        if wait:
            self.process.wait_until(lambda: not self.active_targets(), timeout, "dropping its targets")

    def active_targets(self) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.url}/api/v1/targets?state=active")
        if status != 200:
            raise LocalEnvError(f"prometheus /api/v1/targets answered {status}: {body[:300]}")
        return list(json.loads(body)["data"]["activeTargets"])

    def wait_for_targets(self, job: str, count: int, *, up: bool = False, timeout: float = 30.0) -> None:
        """Wait until ``job`` has ``count`` active targets (and, if ``up``, all scraped healthily)."""
        def ready() -> bool:
            targets = [t for t in self.active_targets() if t["labels"].get("job") == job]
            if len(targets) != count:
                return False
            return not up or all(t.get("health") == "up" for t in targets)

        self.process.wait_until(ready, timeout, f"scraping {count} target(s) of job {job!r}")

    def reload(self) -> None:
        """Re-read the configuration file (``POST /-/reload``)."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise LocalEnvError(f"prometheus reload answered {response.status}")

    # ---- queries ---------------------------------------------------------------------------
    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the ``result`` list of the answer (raises on a PromQL error)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            error = answer.get("error", body[:300])
            raise LocalEnvError(f"prometheus query {promql!r} failed ({status}): {error}")
        return list(answer["data"]["result"])

    def wait_for_value(self, promql: str, timeout: float = 30.0) -> float:
        """Poll ``promql`` until it returns one sample; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return float(result[0]["value"][1])
            if time.monotonic() > deadline:
                raise LocalEnvError(f"prometheus: no sample for {promql!r} after {timeout:.0f} s")
            self.process.check_running("while answering queries")
            time.sleep(0.2)
