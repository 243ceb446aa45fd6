"""Concepts through the real API."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.utils.images import make_image


def create_concept(
    client: TestClient,
    headers: dict[str, str],
    name: str = "bo",
    images: list[bytes] | None = None,
    description: str = "our corgi",
    category: str = "dog",
    **extra: Any,
) -> dict[str, Any]:
    images = images if images is not None else [make_image(shape=i) for i in range(2)]
    files = [("images", (f"{name}{i}.png", data, "image/png")) for i, data in enumerate(images)]
    data = {"name": name, "description": description, "category": category, **extra}
    r = client.post("/api/concepts", headers=headers, data=data, files=files)
    assert r.status_code == 201, r.text
    return r.json()
