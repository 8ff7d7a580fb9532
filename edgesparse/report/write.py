"""Write report.json, report.md and report.html into the (staging) output folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgesparse.report.markdown import render_markdown
from edgesparse.report.schema import json_safe


def write_reports(report: dict[str, Any], folder: Path) -> None:
    from edgesparse.report.html import render_html

    # report.html first: if drawing it fails (a bug, or a broken matplotlib), the verified artifacts
    # still ship and report.json/report.md say what went wrong instead of the build failing at the end.
    try:
        page = render_html(report)
    except Exception as exc:  # noqa: BLE001 - any failure here must not cost the user the build
        message = (f"report.html could not be rendered ({type(exc).__name__}: {exc}); "
                   "report.json and report.md are complete; please report this")
        report["warnings"] = list(report.get("warnings", [])) + [message]
        page = None
    if page is not None:
        (folder / "report.html").write_text(page, encoding="utf-8")
    # allow_nan=False: a non-finite number that got past json_safe fails here, never as a bare NaN on disk.
    text = json.dumps(json_safe(report), indent=2, default=str, allow_nan=False)
    (folder / "report.json").write_text(text + "\n")
    (folder / "report.md").write_text(render_markdown(report))
