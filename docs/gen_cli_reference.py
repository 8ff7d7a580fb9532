"""The CLI and recipe reference (cli.md), generated from the code.

Two ways in:

- mkdocs hook (mkdocs.yml: `hooks: [docs/gen_cli_reference.py]`): `on_files` adds cli.md to the
  site as a generated page, so every `mkdocs build` documents the commands as they are now and no
  generated file is kept in git to go stale. Plain mkdocs (>= 1.6), no plugin.
- script: `python docs/gen_cli_reference.py [--out FILE]` prints (or writes) the same Markdown.

The commands come from the typer app (edgesparse.cli.app) through click's public help API
(usage, get_help_record), the recipe passes from the pass registry (their pydantic configs):
the same sources `edgesparse --help` and recipe validation use.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

PAGE = "cli.md"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md(text: str) -> str:
    """Help text as literal Markdown: `<model>` must not become an HTML tag, `*` not emphasis."""
    # Python-Markdown has no backslash escape for "<": an entity keeps `<model>` literal text.
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split())).replace("<", "&lt;")


def _commands(cmd, ctx, path: str) -> list[tuple[str, Any, Any]]:
    """(full name, command, context) for every command, depth first, in the app's order."""
    out = [(path, cmd, ctx)]
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
            out += _commands(sub, sub_ctx, f"{path} {name}")
    return out


def _command_section(path: str, cmd, ctx) -> list[str]:
    level = "#" * min(2 + path.count(" "), 4) if " " in path else "##"
    lines = [f"{level} {md(path)}", ""]
    if cmd.help:
        lines += [md(cmd.help), ""]
    usage = cmd.get_usage(ctx).replace("Usage: ", "", 1).strip()
    lines += ["```", usage, "```", ""]
    arguments, options = [], []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or "--help" in record[0].split(", "):
            continue
        names, text = record
        if param.param_type_name == "argument":
            text = getattr(param, "help", None) or text
            arguments.append(f"- `{names}`: {md(text)}" if text else f"- `{names}`")
        else:
            options.append(f"- `{names}`" + (f": {md(text)}" if text else ""))
    if arguments:
        lines += ["Arguments:", ""] + arguments + [""]
    if options:
        lines += ["Options:", ""] + options + [""]
    if hasattr(cmd, "list_commands"):
        subs = [n for n in cmd.list_commands(ctx) if not getattr(cmd.get_command(ctx, n), "hidden", False)]
        if subs:
            lines += ["Commands: " + ", ".join(f"`{path} {n}`" for n in subs), ""]
    return lines


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    return re.sub(r"Optional\[(.*)\]$", r"\1 | None", text)


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return repr(value)


def _fields_table(fields) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, f in fields.items():
        lines.append(f"| `{key}` | `{_type_name(f.annotation)}` | `{_default(f)}` | {md(f.description or '')} |")
    return lines + [""]


def passes_section() -> list[str]:
    from edgesparse.passes import load_builtin_passes
    from edgesparse.recipe import WHEN, RecipeFile

    lines = ["## Recipe files", "",
             "The top level of a recipe YAML (see [Recipes](recipes.md) for the rules):", ""]
    lines += _fields_table({k: f for k, f in RecipeFile.model_fields.items() if k != "passes"})
    lines += ["`passes:` is a list of entries `- pass: NAME` followed by that pass's keys below, and "
              "optionally `when:` (" + ", ".join(f"`{w}`" for w in WHEN) + "; default `always`): run the "
              "entry only with real data, or only with labelled data.", "",
              "## Recipe passes", "",
              "What a recipe's `passes:` list may hold (`edgesparse passes` prints the same). "
              "Passes run in stage order; an unknown key is an error naming it.", ""]
    for name, cls in sorted(load_builtin_passes().items(), key=lambda kv: (kv[1].stage, kv[0])):
        summary = cls.summary or (cls.__doc__ or "").strip().splitlines()[0]
        needs = ", ".join(sorted(cls.needs)) if cls.needs else "nothing"
        lines += [f"### {md(name)}", "", md(summary) + ".", "", f"Stage {cls.stage}; needs: {md(needs)}.", ""]
        if cls.Config.model_fields:
            lines += _fields_table(cls.Config.model_fields)
    return lines


def render() -> str:
    import typer.main

    from edgesparse.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("edgesparse", [], resilient_parsing=True)
    lines = ["# CLI reference", "",
             "Generated from the code (`docs/gen_cli_reference.py` reads the typer app and the pass "
             "registry at every docs build); `edgesparse COMMAND --help` prints the same.", "",
             "Errors in what you pass (a missing model, a bad recipe, data that does not fit) print one "
             "line and exit with code 2; a broken accuracy budget exits with 3. `--debug`, anywhere on "
             "the line, shows the traceback.", ""]
    for path, cmd, cmd_ctx in _commands(root, ctx, "edgesparse"):
        lines += _command_section(path, cmd, cmd_ctx)
    lines += passes_section()
    return "\n".join(lines).rstrip() + "\n"


# ---- mkdocs hook -------------------------------------------------------------------------------

def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    existing = files.get_file_from_path(PAGE)
    if existing is not None:   # a cli.md written by the script: the build documents the code as it is now
        files.remove(existing)
    files.append(File.generated(config, PAGE, content=render()))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
