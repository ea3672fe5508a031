"""A fuzz run of the service's OpenAPI schema: no request body, however broken, gets a 5xx.

Bodies come from the request schemas the service publishes at ``/docs.json`` (a small JSON-schema to hypothesis
translation): valid bodies, valid bodies with one field replaced by arbitrary JSON, dropped or added, arbitrary JSON,
and raw bytes under various content types. Valid bodies must be answered (200), or rejected with a 400 that names
``context.features`` when an override is not a number.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import ServiceProcess, fill_store, free_port, service_config

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), finite, st.text(max_size=40))
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory, registry):
    tmp = tmp_path_factory.mktemp("fuzz")
    fill_store(tmp / "store.db", n=50)
    svc = ServiceProcess(service_config(tmp, registry), free_port(), tmp / "service.log").start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(service):
    with service.client() as c:
        yield c


@pytest.fixture(scope="module")
def openapi(client) -> dict[str, Any]:
    return client.get("/docs.json").json()


def schema_strategy(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    """Values valid under a (pydantic-generated) JSON schema: types, anyOf, $ref, bounds, required/optional keys."""
    if "$ref" in schema:
        return schema_strategy(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth)
    if "anyOf" in schema:
        return st.one_of([schema_strategy(s, components, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {k: schema_strategy(v, components, depth + 1) for k, v in props.items() if k in required}
        optional = {k: schema_strategy(v, components, depth + 1) for k, v in props.items() if k not in required}
        if not props and isinstance(schema.get("additionalProperties"), dict):
            names = st.text(min_size=1, max_size=schema.get("propertyNames", {}).get("maxLength", 20))
            values = schema_strategy(schema["additionalProperties"], components, depth + 1)
            return st.dictionaries(names, values, max_size=min(5, schema.get("maxProperties", 5)))
        return st.fixed_dictionaries(fixed, optional=optional)
    if kind == "array":
        items = schema_strategy(schema.get("items", {}), components, depth + 1)
        return st.lists(items, max_size=min(4, schema.get("maxItems", 4)))
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes().map(lambda d: d.isoformat())
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40))
    if kind in ("number", "integer"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if kind == "integer":
            return st.integers(min_value=lo, max_value=hi)
        return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return any_json


def body_schema(openapi: dict[str, Any], path: str) -> dict[str, Any]:
    return openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def mutate(data: st.DataObject, body: dict[str, Any]) -> Any:
    """One change to a valid body: a field replaced by arbitrary JSON, a field dropped, or an unknown field added."""
    how = data.draw(st.sampled_from(["replace", "drop", "add", "nest"]))
    out = json.loads(json.dumps(body))
    target = out
    if how == "nest" and isinstance(out.get("context"), dict) and out["context"]:
        target = out["context"]
    if how in ("replace", "nest") and target:
        key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(any_json)
    elif how == "drop" and target:
        target.pop(data.draw(st.sampled_from(sorted(target))))
    else:
        target[data.draw(st.text(min_size=1, max_size=10))] = data.draw(any_json)
    return out


def check(r: httpx.Response, valid: bool) -> None:
    assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    if valid:
        assert r.status_code == 200 or (r.status_code == 400 and "context.features" in r.text), r.text[:300]


@pytest.mark.parametrize("path", ["/decide", "/outcomes"])
def test_valid_bodies_from_the_schema_are_answered(client, openapi, path):
    strategy = schema_strategy(body_schema(openapi, path), openapi["components"]["schemas"])

    @FUZZ
    @given(strategy)
    def run(body: Any) -> None:
        if path == "/outcomes":
            for i, e in enumerate(body["events"]):
                e["event_id"] = f"{e['event_id']}-{i}"  # distinct ids inside one batch
        check(client.post(path, json=body), valid=True)

    run()


@pytest.mark.parametrize("path", ["/decide", "/outcomes"])
def test_mutated_and_arbitrary_bodies_never_get_a_5xx(client, openapi, path):
    strategy = schema_strategy(body_schema(openapi, path), openapi["components"]["schemas"])

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        body = data.draw(st.one_of(strategy.map(lambda b: ("valid", b)), any_json.map(lambda b: ("any", b))))
        payload = mutate(data, body[1]) if body[0] == "valid" else body[1]
        check(client.post(path, json=payload), valid=False)

    run()


CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/vnd.bentoml+pickle",
    "application/octet-stream",
]


@FUZZ
@given(st.sampled_from(["/decide", "/outcomes"]), st.binary(max_size=200), st.sampled_from(CONTENT_TYPES))
def test_raw_bytes_under_any_content_type_never_get_a_5xx(client, path, raw, content_type):
    check(client.post(path, content=raw, headers={"Content-Type": content_type}), valid=False)


NASTY = [
    b'{"customer_id": "a", "context": {"features": {"age": NaN, "income": Infinity}}}',
    b'{"customer_id": "a", "context": {"timestamp": -1e300}}',
    b'{"customer_id": "a", "context": {"timestamp": 1e20}}',
    b'{"customer_id": "\\ud800"}',
    b'{"customer_id": "a\\u0000b"}',
    b'{"customer_id": "a", "customer_id": 3}',
    b'{"customer_id": "a", "context": {"features": {"age": 1e400}}}',
    b'{"events": [{"customer_id": "c", "ts": NaN, "visit": 1, "buy": 1, "spend": 1, "redeem": 0, "event_id": "n"}]}',
    b"[" * 5000 + b"]" * 5000,
    b'{"customer_id": "' + b"x" * 100_000 + b'"}',
]


@pytest.mark.parametrize("raw", NASTY, ids=range(len(NASTY)))
def test_handcrafted_nasty_json_never_gets_a_5xx(client, raw):
    for path in ("/decide", "/outcomes"):
        check(client.post(path, content=raw, headers={"Content-Type": "application/json"}), valid=False)


def test_every_documented_get_endpoint_answers_without_a_5xx(client, openapi):
    gets = [p for p, ops in openapi["paths"].items() if "get" in ops and "{" not in p]
    assert {"/livez", "/readyz"} <= set(gets)
    for path in gets:
        assert client.get(path).status_code < 500, path
