"""Saved reports: the header at the top of the HTML, and a lookup that returns only report files."""

from __future__ import annotations

import os

import pytest

from nfl_mlops.monitoring.report_files import (
    ReportNotFound,
    add_header,
    find_report,
    list_reports,
    report_url,
)


def test_the_header_says_what_the_check_found(tmp_path) -> None:
    page = tmp_path / "r.html"
    page.write_text(
        "<html><head><title>Evidently</title></head><body class='x'><div>report</div></body></html>"
    )
    add_header(page, "m v2 <stable>", {"model": "m", "window": "a .. b"}, ["topic", "oov_share"])
    text = page.read_text()
    assert text.index("m v2 &lt;stable&gt;") < text.index("<div>report</div>")  # first thing, escaped
    assert "<title>m v2 &lt;stable&gt;</title>" in text and "topic, oov_share" in text
    add_header(page, "again", {}, [])
    assert page.read_text() == text  # once


def test_only_report_files_under_the_root_are_found(tmp_path) -> None:
    root = tmp_path / "reports"
    root.mkdir()
    (root / "drift-a.html").write_text("<html></html>")
    (root / "drift-a.json").write_text("{}")
    (tmp_path / "secret.html").write_text("no")
    os.symlink(tmp_path / "secret.html", root / "link.html")
    assert find_report(root, "drift-a.html") == root / "drift-a.html"
    for name in (
        "../secret.html",
        "link.html",
        "missing.html",
        "drift-a.txt",
        ".hidden.html",
        "a/b.html",
        "",
    ):
        with pytest.raises(ReportNotFound):
            find_report(root, name)
    assert {f.name for f in list_reports(root)} == {"drift-a.html", "drift-a.json"}
    assert list_reports(tmp_path / "none") == []
    assert report_url("http://h:1/", "drift-a.html") == "http://h:1/mlops/reports/drift-a.html"
