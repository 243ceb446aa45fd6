"""The caption page: its history shows what the owner's feedback left standing."""

from __future__ import annotations

import html

from tests.utils.images import fixture_photo
from tests.utils.users import browser_register, csrf_meta


def test_history_shows_the_models_caption_again_after_an_edit_is_undone(client) -> None:  # type: ignore[no-untyped-def]
    browser_register(client)
    headers = {"X-CSRF-Token": csrf_meta(client.get("/caption").text)}
    files = [("image", ("cat.jpg", fixture_photo("cat", 0), "image/jpeg"))]
    made = client.post("/api/captions", headers=headers, files=files).json()
    url = f"/api/captions/{made['id']}"
    edit = {"feedback": "edited", "edited_caption": "An edit taken back."}
    assert client.patch(url, headers=headers, json=edit).status_code == 200
    assert client.patch(url, headers=headers, json={"feedback": "none"}).status_code == 200
    page = html.unescape(client.get("/caption").text)
    assert "An edit taken back." not in page
    assert made["caption"] in page
