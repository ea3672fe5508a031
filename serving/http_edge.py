"""The HTTP edge of the decision service: authentication, strict request bodies, the OpenAPI spec and its docs page.

`EdgeMiddleware` is a pure ASGI middleware in front of BentoML's app, before any parsing:

- the API routes need ``Authorization: Bearer KEY`` (the scheme name in any case, RFC 7235; 401 otherwise) unless
  the service runs insecure, and a JSON body (415 for another declared content type);
- a body's top-level fields must be the route's own: an unknown one (``contxt``) gets a 400 that names it and the
  allowed ones, instead of being dropped silently (BentoML ignores them; nested objects forbid extras themselves);
- ``GET /openapi.json`` (and ``/docs.json``) serve `openapi_spec`: OpenAPI 3.1 built from the routes' own pydantic
  models (nullable fields stay nullable), the bearer security scheme on the API routes, offerlift's own info;
- ``GET /docs`` serves a Swagger UI page that loads only this server's own copy of Swagger UI (BentoML's static
  files) and no third-party script; ``GET /`` redirects there.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PROTECTED = ("/decide", "/outcomes", "/events", "/events/flush")
PUBLIC = ("/livez", "/readyz", "/healthz")
SPEC_PATHS = ("/openapi.json", "/docs.json")
MAX_BODY = 32 * 2**20  # larger bodies are left to BentoML (which refuses them)

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>offerlift decision API</title>
<link rel="stylesheet" href="/static_content/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""


#: The champion's channels, declared by the service once it is loaded: the spec lists them as the values
#: ``context.channels`` takes (any other is refused with a 400).
_CHANNELS: list[str] = []


def declare_channels(channels: list[str]) -> None:
    """Publish the channels the champion knows (the service calls this when it loads its champion)."""
    _CHANNELS[:] = sorted(channels)


def _with_channel_enum(components: dict[str, Any]) -> None:
    channels = components.get("DecideContext", {}).get("properties", {}).get("channels")
    if not channels or not _CHANNELS:
        return
    for option in channels.get("anyOf", [channels]):
        if option.get("type") == "array":
            option["items"] = {**option.get("items", {}), "enum": list(_CHANNELS)}


def _service_apis() -> Mapping[str, Any]:
    from offerlift.serving.service import OfferLift  # late: the service module installs this middleware

    return OfferLift.apis


def allowed_fields(apis: Mapping[str, Any] | None = None) -> dict[str, frozenset[str]]:
    """Per route, the top-level fields of its request body (from the route's own input model)."""
    apis = _service_apis() if apis is None else apis
    return {api.route: frozenset(api.input_spec.model_fields) for api in apis.values()}


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    return schema


def openapi_spec(apis: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service's routes."""
    apis = _service_apis() if apis is None else apis
    ref = "#/components/schemas/{model}"
    components: dict[str, Any] = {}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    components["Error"] = error
    paths: dict[str, Any] = {}
    for name, api in apis.items():
        request = _hoist(api.input_spec.model_json_schema(ref_template=ref), components)
        request["additionalProperties"] = False
        request["title"] = f"{name}_request"
        response = _hoist(api.output_spec.model_json_schema(ref_template=ref), components)
        response["title"] = f"{name}_response"
        components[request["title"]], components[response["title"]] = request, response
        err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        paths[api.route] = {
            "post": {
                "operationId": name,
                "summary": (api.func.__doc__ or "").strip().split("\n")[0],
                "description": (api.func.__doc__ or "").strip(),
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref.format(model=request["title"])}}},
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": {"$ref": ref.format(model=response["title"])}}},
                    },
                    "400": {"description": "a malformed body, an unknown field or value (named)", **err},
                    "401": {"description": "missing or wrong API key", **err},
                    "415": {"description": "not a JSON body", **err},
                },
            }
        }
    _with_channel_enum(components)
    for path in PUBLIC:
        ok = {"200": {"description": "OK"}}
        paths[path] = {"get": {"summary": f"{path[1:]} probe", "security": [], "responses": ok}}
    try:
        ours = version("offerlift")
    except PackageNotFoundError:
        ours = "0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "offerlift decision API",
            "version": ours,
            "description": "Real-time offer decisions (POST /decide), outcomes (POST /outcomes) and the event stream "
            "of the real-time triggers (POST /events, /events/flush). Every API route needs the header "
            "`Authorization: Bearer KEY` ($OFFERLIFT_API_KEY). Unknown fields and values get a 400 that names them.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def bearer_token(header: bytes) -> bytes | None:
    """The credentials of an ``Authorization: Bearer TOKEN`` header (scheme in any case), else None."""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


class EdgeMiddleware:
    """See the module docstring. ``settings`` default: the worker's (`settings_from_env`)."""

    def __init__(self, app: Any, settings: Any = None):
        from offerlift.serving.settings import settings_from_env

        self.app = app
        settings = settings or settings_from_env()
        key = settings.api_key
        self.expected = None if key is None else key.get_secret_value().encode()
        self._fields: dict[str, frozenset[str]] | None = None
        self._spec: bytes | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer 401, 415, 400 or the docs on our routes, else pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        if scope["method"] == "GET" and path in (*SPEC_PATHS, "/docs", "/"):
            await self._documentation(path, send)
            return
        if path not in PROTECTED:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.expected is not None:
            token = bearer_token(headers.get(b"authorization", b""))
            if token is None or not hmac.compare_digest(token, self.expected):
                await send_error(send, 401, "missing or wrong API key: send the header Authorization: Bearer KEY")
                return
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media != b"application/json":
            await send_error(send, 415, "header Content-Type: the API takes application/json bodies only")
            return
        body, more = await _read_body(receive)
        problem = self._unknown_fields(path, body) if not more else None
        if problem:
            await send_error(send, 400, problem)
            return
        await self.app(scope, _replay(body, receive, more), send)

    def _unknown_fields(self, path: str, body: bytes) -> str | None:
        if self._fields is None:
            self._fields = allowed_fields()
        allowed = self._fields.get(path)
        try:
            data = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            return None  # BentoML names the JSON error
        if allowed is None or not isinstance(data, dict):
            return None
        unknown = sorted(set(data) - allowed)
        if not unknown:
            return None
        names = ", ".join(repr(u) for u in unknown)
        return f"unknown field{'s' if len(unknown) > 1 else ''} {names}; the body of {path} takes {sorted(allowed)}"

    async def _documentation(self, path: str, send: Any) -> None:
        if path == "/":
            await send({"type": "http.response.start", "status": 307, "headers": [(b"location", b"/docs")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/docs":
            await _send(send, 200, DOCS_PAGE.encode(), b"text/html; charset=utf-8")
            return
        if self._spec is None:
            self._spec = json.dumps(openapi_spec()).encode()
        await _send(send, 200, self._spec, b"application/json")


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    """The request body (up to `MAX_BODY`); `more` is True when it was cut there."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), False
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), False
        if size > MAX_BODY:
            return b"".join(parts), True


def _replay(body: bytes, receive: Any, more: bool) -> Any:
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again


async def _send(send: Any, status: int, body: bytes, media: bytes) -> None:
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Any, status: int, message: str) -> None:
    """A JSON error ``{"error": message}`` (401 with ``WWW-Authenticate: Bearer``)."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
