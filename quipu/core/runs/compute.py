"""``compute:`` in a stage's config: which compute profile the stage runs with.

A stage config (``configs/<stage>.yaml``, the pipeline's defaults or a run's override) may hold
``compute: {profile: NAME}``. The key is reserved: it is not a parameter of the stage (the
config schema never sees it) and it travels with the run's config, so the request records
the profile that was asked for and the launch records what it resolved to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quipu.core.errors import InvalidInput
from quipu.core.pipelines import Problem
from quipu.core.ports import ComputeProfiles

__all__ = ["COMPUTE_KEY", "profile_problems", "requested_profile"]

COMPUTE_KEY = "compute"
_KEYS = ("profile",)


def requested_profile(config: Mapping[str, Any]) -> str | None:
    """The profile ``config`` names, None when it names none.

    ``InvalidInput(invalid_compute)`` when ``compute`` is not ``{profile: NAME}``.
    """
    compute = config.get(COMPUTE_KEY)
    if compute is None:
        return None
    if not isinstance(compute, Mapping):
        raise InvalidInput("compute must be a mapping such as {profile: cpu-small}",
                           code="invalid_compute", hint="write `compute: {profile: NAME}`")
    unknown = sorted(str(k) for k in compute if k not in _KEYS)
    if unknown:
        raise InvalidInput(f"compute has unknown keys: {', '.join(unknown)}",
                           code="invalid_compute",
                           hint="compute takes only `profile: NAME`; resources are set in the "
                           "profile (quipu.yaml profiles:)")
    profile = compute.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise InvalidInput("compute.profile must be a profile's name",
                           code="invalid_compute", hint="write `compute: {profile: NAME}`")
    return profile


def profile_problems(stage: str, config: Mapping[str, Any],
                     profiles: ComputeProfiles) -> list[Problem]:
    """What is wrong with the profile the stage's resolved ``config`` asks for."""
    try:
        profiles.resolve(requested_profile(config))
    except InvalidInput as exc:
        return [Problem(code=exc.code, where=f"{COMPUTE_KEY}.profile", message=exc.message,
                        hint=exc.hint or "", file=f"configs/{stage}.yaml")]
    return []
