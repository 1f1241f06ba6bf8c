"""The report of a chaos run as a plain-text table (the JSON form is the result dict itself)."""

from __future__ import annotations

from typing import Any

ROWS = [
    ("seed", "seed"),
    ("nodes", "nodes"),
    ("duration (s)", "duration_seconds"),
    ("faults injected", "faults_total"),
    ("faults by kind", "faults"),
    ("transactions acknowledged", "writes_acknowledged"),
    ("operations acknowledged", "operations_acknowledged"),
    ("writer kills with a transaction in doubt", "kills_in_doubt"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("phantom", "phantom"),
    ("stale", "stale"),
    ("diverged pairs", "diverged_pairs"),
    ("stalled replicas", "stalled_replicas"),
    ("links not restored after the heal", "links_down"),
    ("full resyncs expected / seen", ("full_resyncs_expected", "full_resyncs_seen")),
    ("why the expected full resyncs", "full_resyncs_why"),
    ("unexpected full resyncs", "full_resyncs_unexpected"),
    ("replica marks that went back", "mark_regressions"),
    ("partial resyncs seen", "partial_resyncs_seen"),
    ("max lag during faults (entries)", "max_lag_entries"),
    ("max lag during faults (s)", "max_lag_seconds"),
    ("time to converge after heal (s)", "converge_seconds"),
    ("divergence detector: periodic checks", "periodic_verifications"),
    ("divergence detector: replicas found diverged", "diverged_seen"),
    ("divergence detector: diverged content at the end", "diverged_content"),
    ("divergence detector: corrupted replica", "divergence_detector"),
    ("unexpected deaths", "unexpected_deaths"),
    ("tracebacks in node logs", "tracebacks"),
    ("problems", "problems"),
    ("result", "ok"),
]


def _value(result: dict[str, Any], key: str | tuple[str, ...]) -> str:
    if isinstance(key, tuple):
        return " / ".join(str(result.get(part)) for part in key)
    value = result.get(key)
    if key == "ok":
        return "PASS" if value else "FAIL"
    if isinstance(value, dict):
        return ", ".join(f"{name} {count}" for name, count in sorted(value.items())) or "-"
    if isinstance(value, list):
        return "; ".join(map(str, value)) or "-"
    return str(value)


def table(result: dict[str, Any]) -> str:
    """A two-column table of the run's figures (markdown, so docs can quote it as is)."""
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {label} | {_value(result, key)} |" for label, key in ROWS]
    if result.get("examples"):
        lines.append("")
        lines += [f"- {example}" for example in result["examples"][:20]]
    return "\n".join(lines)
