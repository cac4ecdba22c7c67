"""Lineage that never lies: a step runs only with the settings its code version was computed from.

An asset's code version is fixed from the settings when the definitions load, but the step reads the
`tledit` resource, which a launch can change (the UI's launchpad, a run config, another process's
resources). Recording the load-time version for bytes made with other settings would let the stale plan
and the UI disagree with the lake, so such a step is refused with one line naming the settings.
"""

from __future__ import annotations

from collections.abc import Callable

from tledit_pipeline.errors import TleditError
from tledit_pipeline.settings import BY_NAME, Settings

VersionOf = Callable[[Settings], str]


class LineageError(TleditError):
    """The run's settings would change an asset's code version; the message names them."""


def run_settings(tledit, asset: str, defined: Settings, version_of: VersionOf) -> Settings:
    """The resource's settings, when they give `asset` the code version the definitions recorded for it."""
    run: Settings = tledit.settings()
    here, there = defined.flat(), run.flat()
    if here == there or version_of(run) == version_of(defined):
        return run
    base = version_of(defined)

    def moves(name: str) -> bool:
        try:
            return version_of(Settings.from_env(env={}, **(here | {name: there[name]}))) != base
        except TleditError:  # valid only together with another change: it is part of what moved
            return True

    differ = [k for k in here if here[k] != there[k]]
    names = [k for k in differ if moves(k)] or differ
    what = ", ".join(f"{k}={there[k]!r} (definitions: {here[k]!r})" for k in names)
    fix = " ".join(f"{BY_NAME[k].env}={there[k]}" for k in names)
    raise LineageError(
        f"{asset}: the run's {what} would change its code version, which was computed when the definitions loaded; "
        f"refused so the recorded lineage matches the lake: set {fix} where the code location loads "
        "(settings.json, the environment, or `tledit run` flags) and reload it"
    )
