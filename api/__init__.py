"""The fleet's HTTP API (`monitao-pd api`): a door onto the functions of `config/`,
`producer/` and `worker/`, for MoniTao's application in any language.

    api/app.py       create_app(): the FastAPI app, its middleware and error handlers
    api/server.py    serve() and ApiService: uvicorn in the foreground or in a thread
    api/auth.py      bearer tokens and scopes (config/tokens.py), cached for at most 2 s
    api/problems.py  project errors -> RFC 9457 application/problem+json
    api/limits.py    request body size and read-time limits
    api/metrics.py   Prometheus: requests by route and status, latency
    api/models.py    request and response bodies (the OpenAPI document's schemas)
    api/routers/     one module per resource; a handler parses, calls once, renders
"""

from api.app import create_app

__all__ = ["create_app"]
