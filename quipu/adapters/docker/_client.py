"""One way to reach the Docker daemon, and one wording for when it cannot be reached.

The ``docker`` SDK is imported here lazily: a project that never uses Docker never pays for it,
and a daemon that is down is a clear, typed answer naming how to start it, never a traceback
from deep inside ``requests``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from quipu.core.errors import Unavailable

if TYPE_CHECKING:
    import docker

__all__ = ["DAEMON_HINT", "DockerUnavailable", "connect", "daemon_address"]

DAEMON_HINT = ("start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &`), "
               "or point DOCKER_HOST at one that runs")


class DockerUnavailable(Unavailable):
    """The Docker daemon does not answer."""

    default_code = "docker_unavailable"


def daemon_address() -> str:
    """Where the SDK looks for the daemon: ``$DOCKER_HOST`` or the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(*, timeout: float = 60.0, what: str = "") -> docker.DockerClient:
    """A client on the daemon at ``daemon_address()``, checked with a ping.

    Raises ``DockerUnavailable`` (``what`` says who needed it, e.g. "profile 'cpu-small'").
    """
    import docker

    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        who = f"{what} needs the Docker daemon, but it " if what else "the Docker daemon "
        raise DockerUnavailable(f"{who}does not answer at {daemon_address()}: "
                                f"{_short(exc)}", hint=DAEMON_HINT) from exc
    except OSError as exc:  # requests' own connection errors subclass OSError
        who = f"{what} needs the Docker daemon, but it " if what else "the Docker daemon "
        raise DockerUnavailable(f"{who}does not answer at {daemon_address()}: "
                                f"{_short(exc)}", hint=DAEMON_HINT) from exc
    return client


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:299] + "…"
