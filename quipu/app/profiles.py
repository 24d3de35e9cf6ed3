"""Compute profiles: the built-in ones and ``profiles:`` of quipu.yaml, resolved to resources.

A stage picks one with ``compute: {profile: NAME}`` in its config; a stage that names none
gets ``executor.profile`` (default ``local`` with the local backend, ``cpu-small`` otherwise).
Built-in profiles (a project profile of the same name replaces one):

| name | backend | cpus | memory | gpus |
|---|---|---|---|---|
| ``local`` | local | - | - | 0 |
| ``cpu-small`` | ``executor.backend`` | 2 | 4 GiB | 0 |
| ``cpu-large`` | ``executor.backend`` | 8 | 32 GiB | 0 |
| ``gpu`` | ``executor.backend`` | 8 | 32 GiB | 1 |

The backends configured here are ``local`` (always) and ``executor.backend``; a profile on any
other backend is refused (``profile_backend_not_configured``), an unknown name with
``unknown_profile``, both listing the profiles there are.
"""

from __future__ import annotations

from quipu.app.config import Config, ProfileConfig
from quipu.core.errors import InvalidInput
from quipu.core.ports import Resources
from quipu.core.validation import did_you_mean

__all__ = ["BUILTIN_PROFILES", "ProjectProfiles"]

BUILTIN_PROFILES: dict[str, ProfileConfig] = {
    "local": ProfileConfig(backend="local"),
    "cpu-small": ProfileConfig(cpus=2, memory="4g"),
    "cpu-large": ProfileConfig(cpus=8, memory="32g"),
    "gpu": ProfileConfig(cpus=8, memory="32g", gpus=1),
}
"""The profiles every project has; all but ``local`` run on ``executor.backend``."""
_ON_DEFAULT_BACKEND = frozenset({"cpu-small", "cpu-large", "gpu"})


class ProjectProfiles:
    """``core.ports.ComputeProfiles`` for one project's configuration."""

    def __init__(self, config: Config) -> None:
        self.backend = config.executor.backend
        self.backends = frozenset({"local", self.backend})
        self.default = config.executor.profile or (
            "local" if self.backend == "local" else "cpu-small")
        self.profiles: dict[str, ProfileConfig] = {
            name: profile.model_copy(update={"backend": self.backend})
            if name in _ON_DEFAULT_BACKEND else profile
            for name, profile in BUILTIN_PROFILES.items()}
        self.profiles.update(config.profiles)

    def names(self) -> list[str]:
        """Every profile's name, sorted."""
        return sorted(self.profiles)

    def resolve(self, name: str | None) -> Resources:
        """The resources of profile ``name`` (None: the default profile)."""
        chosen = self.default if name is None else name
        profile = self.profiles.get(chosen)
        known = ", ".join(self.names())
        if profile is None:
            raise InvalidInput(f"no compute profile {chosen!r}", code="unknown_profile",
                           hint=f"{did_you_mean(chosen, self.profiles)}known profiles: {known}; "
                           "add one under profiles: in quipu.yaml")
        if profile.backend not in self.backends:
            raise InvalidInput(
                f"compute profile {chosen!r} runs on the {profile.backend!r} backend, which is "
                f"not configured (executor.backend is {self.backend!r})",
                code="profile_backend_not_configured",
                hint=f"set executor.backend: {profile.backend} in quipu.yaml (or "
                f"$QUIPU_EXECUTOR_BACKEND), or pick another profile: {known}")
        return Resources(
            profile=chosen, backend=profile.backend, image=profile.image, cpus=profile.cpus,
            memory_mb=profile.memory_mb(), gpus=profile.gpus,
            timeout=profile.timeout_seconds(),
            network=profile.network if profile.network is not None
            else profile.backend == "local")
