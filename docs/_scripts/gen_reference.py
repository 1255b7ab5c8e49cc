"""Generate the reference pages from the code, so they cannot drift (run by mkdocs-gen-files).

- reference/api.md: every name in ``roadie.__all__`` (and ``roadie.testing``), from docstrings;
- reference/hooks.md: every hook spec of ``roadie.hookspecs``, in the order a task meets them;
- reference/cli.md: every command of the ``roadie`` click group;
- reference/settings.md: every field of ``roadie.Settings`` with its ``ROADIE_*`` variable.

New public names, hooks, commands and settings appear without any change here. Whatever the
code has that the hand-written docs lack (a hook with no section in the plugin guide, a setting
with no row in the configuration table) is logged as a warning, which fails ``--strict``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
from pathlib import Path
from typing import Any

import click
import mkdocs_gen_files
import roadie
from markdown.extensions.toc import slugify
from roadie import hookspecs
from roadie.cli import cli
from roadie.deprecation import deprecation_of
from roadie.plugins import BUILTIN_PLUGINS, TASK_SCOPED_HOOKS

log = logging.getLogger("mkdocs.plugins.roadie_reference")
DOCS = Path(__file__).resolve().parent.parent


def write(path: str, text: str, source: str) -> None:
    with mkdocs_gen_files.open(path, "w") as out:
        out.write(text)
    mkdocs_gen_files.set_edit_path(path, source)


# -- the Python API ----------------------------------------------------------------------------


def api_page() -> str:
    groups: dict[str, list[str]] = {"Classes": [], "Functions and markers": [], "Errors": []}
    for name in sorted(roadie.__all__, key=str.lower):
        obj = getattr(roadie, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            groups["Errors"].append(name)
        elif isinstance(obj, type):
            groups["Classes"].append(name)
        else:
            groups["Functions and markers"].append(name)
    lines = [
        "# Python API",
        "",
        "Every public name of `roadie` (its `__all__`), generated from the docstrings. Anything",
        "not listed here is internal and may change without notice (see",
        "[stability and deprecation](../deprecation-policy.md)).",
        "",
    ]
    for title, names in groups.items():
        lines += [f"## {title}", ""]
        lines += [", ".join(f"[`{n}`](#roadie.{n})" for n in names), ""]
        for name in names:
            lines += [f"::: roadie.{name}", "    options:", "      heading_level: 3", ""]
    lines += [
        "## Testing helpers: `roadie.testing`",
        "",
        "A pytest plugin (registered through `pytest11`, so installing roadie enables it) with",
        "the fixtures `roadie_app` and `roadie_recorder` and the helpers below.",
        "",
        "::: roadie.testing",
        "    options:",
        "      heading_level: 3",
        "      show_root_heading: false",
        "",
    ]
    return "\n".join(lines)


# -- the hooks ----------------------------------------------------------------------------------


def guide_sections() -> dict[str, str]:
    """Hook name -> anchor of its section in the plugin guide."""
    anchors = {}
    for line in (DOCS / "plugin-guide.md").read_text().splitlines():
        match = re.match(r"^###\s+`(roadie_\w+)\((.*)\)`\s*$", line)
        if match:
            text = line.lstrip("#").strip().replace("`", "")
            anchors[match.group(1)] = slugify(text, "-")
    return anchors


def hooks_page() -> str:
    specs = [
        (name, fn) for name, fn in vars(hookspecs).items()
        if name.startswith("roadie_") and callable(fn) and hasattr(fn, "roadie_spec")
    ]
    examples = guide_sections()
    builtin = _builtin_implementations()
    lines = [
        "# Hooks",
        "",
        "Every hook a plugin can implement, generated from `roadie/hookspecs.py` in the order a",
        "task meets them. Implement one with `@roadie.hookimpl` in the module your",
        "`roadie.plugins` entry point names; the",
        "[plugin guide](../plugin-guide.md#implement-hooks) shows a complete example of each.",
        "",
        "| # | hook | calls | scope |",
        "| --- | --- | --- | --- |",
    ]
    for index, (name, fn) in enumerate(specs, 1):
        scope = "task-scoped" if name in TASK_SCOPED_HOOKS else "every plugin"
        lines.append(f"| {index} | [`{name}`](#{name}) | {_calls(fn)} | {scope} |")
    lines.append("")
    for name, fn in specs:
        signature = _signature(fn)
        lines += [f"## `{name}` {{ #{name} }}", ""]
        lines += ["```python", f"def {name}{signature}", "```", ""]
        deprecation = deprecation_of(fn)
        if deprecation is not None:
            removal = f", to be removed in {deprecation.removal}" if deprecation.removal else ""
            lines += [
                "!!! warning \"Deprecated\"",
                f"    Deprecated since roadie {deprecation.since}{removal}: use "
                f"{deprecation.replacement} instead.",
                "",
            ]
        lines += [inspect.getdoc(fn) or "", ""]
        facts = [f"**Calls:** {_calls(fn)}.", f"**Scope:** {_scope(name)}."]
        if builtin.get(name):
            facts.append("**Built-in implementations:** " + ", ".join(
                f"`{m}`" for m in builtin[name]) + ".")
        lines += [" ".join(facts), ""]
        if name in examples:
            lines += [f"Example: [plugin guide](../plugin-guide.md#{examples[name]}).", ""]
        else:
            log.warning(
                "hook %s has no section '### `%s(...)`' in docs/plugin-guide.md: add one with "
                "an example", name, name)
    return "\n".join(lines)


def _signature(fn: Any) -> str:
    """The spec's signature with its annotations as written (they are strings here)."""
    signature = inspect.signature(fn)

    def text(annotation: Any) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    params = [
        p.name if p.annotation is inspect.Parameter.empty else f"{p.name}: {text(p.annotation)}"
        for p in signature.parameters.values()
    ]
    returns = signature.return_annotation
    tail = "" if returns is inspect.Signature.empty else f" -> {text(returns)}"
    return f"({', '.join(params)}){tail}"


def _calls(fn: Any) -> str:
    spec = fn.roadie_spec
    if spec.get("firstresult"):
        return "first non-None result wins"
    if spec.get("historic"):
        return "historic: every implementation, also those registered later"
    return "every implementation"


def _scope(name: str) -> str:
    if name in TASK_SCOPED_HOOKS:
        return "task-scoped (built-ins, global plugins and the plugins the task names)"
    return "every plugin"


def _builtin_implementations() -> dict[str, list[str]]:
    import importlib

    found: dict[str, list[str]] = {}
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        for attribute in dir(module):
            if attribute.startswith("roadie_") and hasattr(
                getattr(module, attribute), "roadie_impl"
            ):
                found.setdefault(attribute, []).append(module_name)
    return found


# -- the command line ---------------------------------------------------------------------------


def cli_page() -> str:
    lines = [
        "# Command line",
        "",
        "Every command of `roadie`, generated from its click definitions (the same text as",
        "`roadie COMMAND --help`). Plugins add their own commands through",
        "[`roadie_register_commands`](hooks.md#roadie_register_commands); those are described",
        "on the plugins' pages. The [command line guide](../cli.md) explains the commands with",
        "examples.",
        "",
    ]
    lines += _command(cli, ["roadie"], level=2, ctx=None)
    return "\n".join(lines)


def _command(command: click.Command, path: list[str], level: int, ctx: Any) -> list[str]:
    ctx = click.Context(command, info_name=path[-1], parent=ctx)
    title = " ".join(path)
    usage = " ".join([title, *command.collect_usage_pieces(ctx)])
    lines = [f"{'#' * level} `{title}`", "", "```text", f"Usage: {usage}", "```", ""]
    help_text = inspect.cleandoc(command.help or command.short_help or "")
    if help_text:
        lines += [help_text.replace("\b\n", ""), ""]
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or record[0] == "--help":
            continue
        names, text = record
        rows.append(f"| `{names}` | {_cell(text)} |")
    if rows:
        lines += ["| option | what it does |", "| --- | --- |", *rows, ""]
    if isinstance(command, click.Group):
        # ``commands`` holds the built-in commands; plugins' commands are on their own pages.
        for name in sorted(command.commands):
            sub = command.commands[name]
            if not sub.hidden:
                lines += _command(sub, [*path, name], min(level + 1, 4), ctx)
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- the settings -------------------------------------------------------------------------------


def configuration_rows() -> dict[str, str]:
    """Setting -> description, from the table in docs/index.md's Configuration section."""
    rows = {}
    for line in (DOCS / "index.md").read_text().splitlines():
        match = re.match(r"^\|\s*`(\w+)`\s*\|\s*`ROADIE_\w+`\s*\|[^|]*\|\s*(.*?)\s*\|\s*$", line)
        if match:
            rows[match.group(1)] = _relink(match.group(2))
    return rows


def _relink(markdown: str) -> str:
    """Links of a docs/ page, made relative to docs/reference/."""
    return re.sub(r"\]\((?!https?:|#|/)", "](../", markdown)


def settings_page() -> str:
    described = configuration_rows()
    lines = [
        "# Settings",
        "",
        "Every field of `roadie.Settings`, generated from the dataclass. Each value comes, in",
        "order of precedence, from a keyword argument (to `Roadie(...)` or `Settings(...)`),",
        "from the environment variable shown, or from the default; see",
        "[configuration](../index.md#configuration).",
        "",
        "| setting | environment variable | type | default | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    fields = dataclasses.fields(roadie.Settings)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            default = f"`{f.default!r}`"
        else:
            default = "computed (see description)"
        description = described.get(f.name)
        if description is None:
            log.warning(
                "setting %s has no row in the configuration table of docs/index.md: add one",
                f.name)
            description = ""
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(
            f"| `{f.name}` | `ROADIE_{f.name.upper()}` | `{kind}` | {default} | {description} |"
        )
    names = {f.name for f in fields}
    for stale in sorted(set(described) - names):
        log.warning("docs/index.md describes setting %s, which Settings no longer has", stale)
    lines.append("")
    return "\n".join(lines)


write("reference/api.md", api_page(), "core/roadie/__init__.py")
write("reference/hooks.md", hooks_page(), "core/roadie/hookspecs.py")
write("reference/cli.md", cli_page(), "core/roadie/cli/__init__.py")
write("reference/settings.md", settings_page(), "core/roadie/config.py")
