"""CLI verbs made from the command specs: ``pynndb replicate --path P --uuid U --target T`` calls
``Plugin.replicate(path=P, uuid=U, target=T)``; options come from the spec's params, help from its docstring.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pynndb.mesh.command_specs import SPECS, Param, Spec


def cli_name(spec: Spec) -> str:
    """The CLI verb of a spec: its library verb with dashes (``verify_replicas`` -> ``verify-replicas``)."""
    assert spec.verb is not None
    return spec.verb.replace("_", "-")


def _click_type(param: Param) -> Any:
    if param.choices is not None:
        return click.Choice(param.choices)
    return click.FLOAT if float in param.kinds else click.STRING


def _decorate(function: Any, param: Param) -> Any:
    if list in param.kinds:
        # A list param is a repeatable option (``--tables a --tables b``, or ``--table``); none given: absent.
        singular = param.name[:-1] if param.name.endswith("s") else param.name
        names = [f"--{param.name.replace('_', '-')}", f"--{singular.replace('_', '-')}"]
        return click.option(*dict.fromkeys(names), param.name, multiple=True, help=param.help + " (repeatable)")(
            function
        )
    if param.positional:
        return click.argument(param.name, required=param.required, type=_click_type(param))(function)
    default = None if param.required else param.default
    text = param.help + ("" if default is None else f" (default: {default})")
    return click.option(
        f"--{param.name.replace('_', '-')}", param.name, required=param.required, type=_click_type(param), help=text
    )(function)


def make_command(spec: Spec) -> click.Command:
    """A click command that connects to --node, runs the spec's Plugin verb, and prints its result."""
    from pynndb.cli import render
    from pynndb.cli.main import _client_options, _session, console

    verb = spec.verb
    assert verb is not None

    def run(
        target: str | None, node: str, keys: str | None, server_key: str | None, as_json: bool, **params: Any
    ) -> None:
        params = {name: (list(value) or None) if isinstance(value, tuple) else value for name, value in params.items()}
        with _session(node, keys, server_key) as plugin:
            result = getattr(plugin, verb)(**params, target=target)
        if as_json:
            click.echo(json.dumps(result, indent=2, default=str))
        else:
            render.mapping(console, spec.name, result)

    run.__doc__ = spec.help
    function: Any = _client_options(run)
    function = click.option("--target", help="Node id or label (default: the node connected to).")(function)
    for param in reversed(spec.params):  # the command's own params first in --help
        function = _decorate(function, param)
    return click.command(cli_name(spec), help=f"{spec.help}\n\nCommand {spec.name}; result {spec.result}.")(function)


def commands(existing: set[str]) -> list[click.Command]:
    """A CLI verb for every spec that has one, except verbs the CLI already has (``status``: richer output)."""
    return [make_command(spec) for spec in SPECS.values() if spec.verb is not None and cli_name(spec) not in existing]
