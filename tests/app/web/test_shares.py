"""Shared-concept pages: "Shared with" on the owner's concept page, "Shared with you" on the
invitee's concepts page (read-only), revoke and leave."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.utils.images import fixture_photo
from tests.utils.users import browser_register, csrf_field, csrf_meta


@pytest.fixture
def owner(client: TestClient) -> TestClient:
    browser_register(client, "dad")
    return client


@pytest.fixture
def invitee(client: TestClient) -> TestClient:
    # A second browser on the same app, with its own cookies.
    other = TestClient(client.app)
    browser_register(other, "anya")
    return other


def _concept(owner: TestClient, name: str = "bo") -> str:
    token = csrf_field(owner.get("/concepts/new").text)
    r = owner.post("/concepts/new", data={"name": name, "category": "dog", "csrf_token": token},
                   files=[("images", ("0.jpg", fixture_photo("dog", 0), "image/jpeg"))])
    assert r.status_code == 200, r.text
    return str(r.url)


def _share(owner: TestClient, url: str, username: str) -> str:
    page = owner.get(url).text
    r = owner.post(url.removeprefix("http://testserver") + "/shares",
                   data={"username": username, "csrf_token": csrf_field(page)})
    assert r.status_code == 200, r.text
    return r.text


def test_sharing_lists_the_invitee_on_the_owners_page(owner, invitee) -> None:
    url = _concept(owner)
    assert 'id="no-shares"' in owner.get(url).text
    page = _share(owner, url, "anya")
    assert "Shared with anya: read-only for them." in page
    assert 'data-share="anya"' in page


def test_the_invitee_sees_it_under_shared_with_you_read_only(owner, invitee) -> None:
    url = _concept(owner)
    _share(owner, url, "anya")
    gallery = invitee.get("/concepts").text
    assert 'id="shared-with-you"' in gallery and 'data-shared-concept="bo"' in gallery
    assert "from dad" in gallery and "read-only" in gallery
    concept_id = url.rsplit("/", 1)[1]
    page = invitee.get(f"/shared-concepts/{concept_id}")
    assert page.status_code == 200 and 'id="read-only"' in page.text
    assert "/edit" not in page.text and 'id="delete-concept"' not in page.text
    assert f"/api/shared-concepts/{concept_id}/images/" in page.text


def test_the_invitee_cannot_reach_the_owners_pages(owner, invitee) -> None:
    url = _concept(owner)
    _share(owner, url, "anya")
    path = url.removeprefix("http://testserver")
    token = csrf_meta(invitee.get("/concepts").text)
    assert invitee.get(path).status_code == 404
    assert invitee.get(path + "/edit").status_code == 404
    assert invitee.post(path + "/delete", data={"csrf_token": token}).status_code == 404
    assert invitee.post(path + "/shares",
                        data={"username": "anya", "csrf_token": token}).status_code == 404
    assert owner.get(path).status_code == 200


def test_sharing_with_an_unknown_account_says_so(owner, invitee) -> None:
    url = _concept(owner)
    page = _share(owner, url, "nobody")
    assert "No account named &#39;nobody&#39;" in page and 'id="no-shares"' in page


def test_revoking_removes_it_from_the_invitees_page(owner, invitee) -> None:
    url = _concept(owner)
    page = _share(owner, url, "anya")
    import re

    action = re.search(r'action="(/concepts/\d+/shares/\d+/revoke)"', page)
    assert action
    r = owner.post(action.group(1), data={"csrf_token": csrf_field(page)})
    assert r.status_code == 200 and 'id="no-shares"' in r.text
    assert 'id="shared-with-you"' not in invitee.get("/concepts").text


def test_leaving_removes_it_for_the_invitee(owner, invitee) -> None:
    url = _concept(owner)
    _share(owner, url, "anya")
    concept_id = url.rsplit("/", 1)[1]
    page = invitee.get(f"/shared-concepts/{concept_id}").text
    r = invitee.post(f"/shared-concepts/{concept_id}/leave",
                     data={"csrf_token": csrf_field(page)})
    assert r.status_code == 200 and "is no longer shared with you" in r.text
    assert invitee.get(f"/shared-concepts/{concept_id}").status_code == 404
    assert 'id="no-shares"' in owner.get(url).text
