"""The OpenAPI document: 3.1, every body a schema with an example, errors documented as
application/problem+json."""

from __future__ import annotations

import httpx

from api.server import ApiService


def test_every_body_has_a_schema_with_an_example(api: ApiService) -> None:
    document = httpx.get(api.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    assert [name for name, schema in schemas.items() if not schema.get("examples")] == []

    def has_example(content: dict) -> bool:
        media = next(iter(content.values()))
        ref = media.get("schema", {}).get("$ref", "")
        return bool(media.get("examples") or media.get("example")
                    or (ref and schemas[ref.rsplit("/", 1)[1]].get("examples")))

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert has_example(operation["requestBody"]["content"]), (method, path)
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if status.startswith(("4", "5")) and path not in ("/healthz",):
                    assert list(content) == ["application/problem+json"], (method, path, status)
                if content and path != "/metrics":
                    assert has_example(content), (method, path, status)
