"""Where simrec finds its checkout's folders; each can be moved with an environment variable (images do)."""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]


def _folder(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or CHECKOUT / default)


def conf_dir() -> Path:
    return _folder("SIMREC_CONF_DIR", "conf")


def components_dir() -> Path:
    return _folder("SIMREC_COMPONENTS_DIR", "components")


def envs_dir() -> Path:
    """The local environments standing for the images in embedded runs."""
    return _folder("SIMREC_ENVS_DIR", ".envs")


def images_dir() -> Path:
    """The images' folders (Dockerfile, requirements.in, the requirements.txt lock)."""
    return _folder("SIMREC_IMAGES_DIR", "images")


def serve_lock() -> Path:
    """The serve image's lock file: the environment a validated model states it runs in. An image that
    installs simrec (not from a checkout) sets SIMREC_SERVE_LOCK to its copy of the lock."""
    return Path(os.environ.get("SIMREC_SERVE_LOCK") or CHECKOUT / "images" / "serve" / "requirements.txt")
