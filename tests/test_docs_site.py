"""The documentation site: `mkdocs build --strict` passes, the CLI reference is generated from the
code (every command and every registered pass is on the page), and the built site loads nothing
from the web. Skipped when mkdocs is not installed (it comes with the `docs` extra)."""
from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                                reason="mkdocs not installed (pip install -e '.[docs]')")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _commands() -> list[str]:
    import typer.main

    from edgesparse.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("edgesparse", [], resilient_parsing=True)
    names = []
    for name in root.list_commands(ctx):
        sub = root.get_command(ctx, name)
        names.append(f"edgesparse {name}")
        if hasattr(sub, "list_commands"):
            sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
            names += [f"edgesparse {name} {n}" for n in sub.list_commands(sub_ctx)]
    return names


def test_cli_reference_documents_every_command_and_pass(site):
    from edgesparse.passes import load_builtin_passes

    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    headings = [html.unescape(re.sub(r"<[^>]+>", "", h)).replace("¶", "").strip()
                for h in re.findall(r"<h[234][^>]*>(.*?)</h[234]>", page)]
    commands = _commands()
    assert len(commands) >= 5
    for command in commands:
        assert command in headings, command
    for name, cls in load_builtin_passes().items():
        assert name in headings, name
        for key in cls.Config.model_fields:
            assert f"<code>{key}</code>" in page, (name, key)
    # help text is literal text, not HTML: "<model>" in a help string must not become a tag
    assert "<model>" not in page


def test_every_page_is_built_and_the_site_needs_no_network(site):
    import yaml

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    for md in pages(config["nav"]):
        built = site / (md[:-3] + "/index.html" if md != "index.md" else "index.html")
        assert built.is_file(), md
    for path in site.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        # resources a browser would fetch: scripts, style sheets, images, fonts
        external = re.findall(r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=\"(https?:)?//", text)
        assert not external, path
