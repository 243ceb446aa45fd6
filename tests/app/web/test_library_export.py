"""The library page's export form: it exports what the page shows, through the API route."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from app.models import User
from app.services.library_export import MANIFEST, LibraryExportService
from tests.utils.library import import_folder, photo_folder
from tests.utils.users import browser_register


def _export_form(html: str) -> tuple[str, list[tuple[str, str]]]:
    match = re.search(r'<form method="get" action="(/api/library/export)".*?</form>', html, re.S)
    assert match, "no export form on the page"
    form = match.group(0)
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)
    return form, hidden


def _imported(client: TestClient, container: Any, folder: Path) -> None:
    browser_register(client, "anya")
    with container.session_factory() as session:
        owner = session.scalar(select(User).where(User.username == "anya"))
        assert owner is not None
        session.expunge(owner)
    import_folder(container, owner, photo_folder(folder))


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_the_form_exports_the_search_shown(
    client: TestClient, container: Any, tmp_path: Path
) -> None:
    _imported(client, container, tmp_path / "pictures")
    page = client.get("/library", params={"album": "Trips", "from": "2024-07-12"})
    assert page.status_code == 200
    form, hidden = _export_form(page.text)
    assert "Export these 1 photo" in form
    assert ("album", "Trips") in hidden and ("from", "2024-07-12") in hidden
    assert not any(name in ("q", "to") for name, _ in hidden)  # empty filters are left out
    r = client.get("/api/library/export?" + urlencode([*hidden, ("format", "zip")]))
    assert r.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert sorted(names) == ["Trips/2024 Summer/photo 2.jpg", MANIFEST]  # not captioned yet


def test_without_exiftool_the_page_offers_json_and_csv_only(
    container: Any, tmp_path: Path
) -> None:
    without = dataclasses.replace(
        container, library_exports=LibraryExportService(container.store, "no-such-exiftool")
    )
    with TestClient(create_app(container=without)) as client:
        _imported(client, without, tmp_path / "pictures")
        html = client.get("/library").text
    form, _ = _export_form(html)
    assert '<option value="zip" disabled>' in form
    assert '<option value="json" selected>' in form
    assert "zip exports need exiftool on the server: apt install libimage-exiftool-perl" in html
