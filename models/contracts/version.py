"""The version of the event contract this code speaks, and the refusal of a newer one.

Publishers may declare the version they wrote an event against (`contract_version`, optional).
Raise CONTRACT_VERSION when an event gains something an older worker would refuse or misread
(a new field, a new value); docs/publishing.md says what publishers should do with it. An event
of an older or equal version is taken as it is: the contract only ever grows compatibly.
"""

from __future__ import annotations

CONTRACT_VERSION = 1


def newer_version_problem(declared: object) -> str | None:
    """Why an event declaring `declared` cannot be taken by this worker, or None.

    Only whole numbers above CONTRACT_VERSION are a problem here; anything else that is not a
    valid version (a string, a bool, 0) is left to the contract's own validation.
    """
    if isinstance(declared, bool) or not isinstance(declared, int):
        return None
    if declared <= CONTRACT_VERSION:
        return None
    return (
        f"contract version {declared} is newer than this worker's {CONTRACT_VERSION}: "
        f"upgrade the workers before publishing version {declared} events, then publish "
        "this one again"
    )
