"""Where things live: the user's cache, the source checkout, the upstream CRDs."""

from __future__ import annotations

import os
from pathlib import Path

#: The tree that holds ``tools/kubebin`` when running from a source checkout (editable install).
_PACKAGE_DIR = Path(__file__).resolve().parent


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/modelrollout`` or ``~/.cache/modelrollout``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelrollout"


def source_root() -> Path | None:
    """The project checkout that holds ``tools/kubebin/go.mod``, or None when installed from a wheel.

    ``$MODELROLLOUT_SOURCE_ROOT`` overrides the guess (the checkout that contains this package).
    """
    explicit = os.environ.get("MODELROLLOUT_SOURCE_ROOT")
    candidates = [Path(explicit)] if explicit else [_PACKAGE_DIR.parents[3], Path.cwd()]
    for root in candidates:
        if (root / "tools" / "kubebin" / "go.mod").is_file():
            return root.resolve()
    return None


def default_state_dir() -> Path:
    """Where ``modelrollout localenv up`` keeps its state, logs and data.

    ``$MODELROLLOUT_LOCALENV_DIR`` if set; else ``.localenv/`` in the source checkout; else
    ``$XDG_STATE_HOME/modelrollout/devstack/controlplane`` (``~/.local/state/...``).
    """
    explicit = os.environ.get("MODELROLLOUT_LOCALENV_DIR")
    if explicit:
        return Path(explicit).resolve()
    root = source_root()
    if root is not None:
        return root / ".localenv"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "modelrollout" / "localenv"


def project_crd_dir() -> Path | None:
    """The project's own CRDs (``crds/`` of the checkout, or ``$MODELROLLOUT_PROJECT_CRDS``)."""
    explicit = os.environ.get("MODELROLLOUT_PROJECT_CRDS")
    if explicit:
        return Path(explicit)
    root = source_root()
    if root is not None and (root / "crds").is_dir():
        return root / "crds"
    return None
