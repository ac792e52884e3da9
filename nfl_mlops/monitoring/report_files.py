"""Saved Evidently reports as users reach them: a readable header at the top of each HTML report, the
stable HTTP address the API serves it under (`GET /mlops/reports/{name}`), and a safe lookup by name.

Monitoring writes `<reports_path>/<name>.html` and `.json`; artifacts link to the API's URL for them,
never to `file://` (which a browser does not open from the Prefect UI, and which exists only on the
worker's host).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPORTS_ROUTE = "/mlops/reports"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.(html|json|png)$")
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".png": "image/png"}
HEADER_MARK = "<!-- nfl-mlops report header -->"


class ReportNotFound(LookupError):
    """No report of that name (or a name that cannot be a report)."""


@dataclass(frozen=True)
class ReportFile:
    name: str
    size: int
    modified: datetime


def report_url(base_url: str, name: str) -> str:
    """Where the API serves report `name` (a file name such as `drift-...html`)."""
    return f"{base_url.rstrip('/')}{REPORTS_ROUTE}/{name}"


def find_report(root: Path, name: str) -> Path:
    """The report file `name` directly under `root`; no other path is ever returned.

    Raises:
        ReportNotFound: the name is not a report file name (e.g. has a slash or `..`), or no such file.
    """
    if not NAME.match(name):
        raise ReportNotFound(f"{name!r} is not a report name (<name>.html, .json or .png)")
    path = Path(root) / name
    if path.is_symlink() or not path.is_file() or path.resolve().parent != Path(root).resolve():
        raise ReportNotFound(f"no report named {name!r}")
    return path


def list_reports(root: Path, limit: int = 100) -> list[ReportFile]:
    """The newest reports under `root` (HTML and JSON), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    files = [p for p in root.iterdir() if NAME.match(p.name) and p.is_file() and not p.is_symlink()]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [
        ReportFile(p.name, p.stat().st_size, datetime.fromtimestamp(p.stat().st_mtime, UTC))
        for p in files[:limit]
    ]


def add_header(path: Path, title: str, facts: Mapping[str, str], drifted: Sequence[str]) -> None:
    """Put a header (title, model, version, window, verdict, drifted signals) at the top of an Evidently
    HTML report and use the title as the page title. Idempotent."""
    text = path.read_text(encoding="utf-8")
    if HEADER_MARK in text:
        return
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in facts.items()
    )
    signals = ", ".join(html.escape(s) for s in drifted) or "none"
    block = (
        f"{HEADER_MARK}<div style='font-family:sans-serif;padding:12px 16px;border-bottom:1px solid #ccc'>"
        f"<h1 style='font-size:20px;margin:0 0 8px'>{html.escape(title)}</h1>"
        f"<table style='font-size:14px'>{rows}"
        f"<tr><th style='text-align:left;padding-right:1em'>drifted signals</th><td>{signals}</td></tr>"
        "</table></div>"
    )
    text, n = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + block, text, count=1)
    if n == 0:
        text = block + text
    if re.search(r"<title>.*?</title>", text, flags=re.S):
        text = re.sub(
            r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", text, count=1, flags=re.S
        )
    else:
        text = re.sub(
            r"(<head[^>]*>)", lambda m: m.group(1) + f"<title>{html.escape(title)}</title>", text, count=1
        )
    path.write_text(text, encoding="utf-8")
