"""The typed command surface: one spec per command (params, result, help text, verb), grouped by module.

Nodes validate every request against its spec before the handler runs; `Plugin` verbs and the CLI verbs are made
from the same specs.
"""

from __future__ import annotations

from pynndb.mesh.command_specs import mesh, replication
from pynndb.mesh.command_specs.base import Param, Spec

SPECS: dict[str, Spec] = {**mesh.SPECS, **replication.SPECS}
VERBS: dict[str, Spec] = {spec.verb: spec for spec in SPECS.values() if spec.verb is not None}

__all__ = ["SPECS", "VERBS", "Param", "Spec"]
