"""`GET /metrics` in the OpenAPI document: Prometheus's text format, or OpenMetrics by
`Accept`, behind the `/api/v1` bearer token unless `metrics.public` (`http.metrics`)."""

from __future__ import annotations

from supervisor.http.openapi.kit import BEARER, STR, Schema, operation

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def metrics_paths() -> dict[str, Schema]:
    answer = {
        "description": "The figures: Prometheus's text format (0.0.4, or 1.0.0 when the "
        "Accept asks for it), or OpenMetrics when the Accept names application/openmetrics-text",
        "content": {TEXT: {"schema": STR}, OPENMETRICS: {"schema": STR}},
    }
    return {
        "/metrics": {
            "get": operation(
                "metrics",
                "Metrics for Prometheus",
                "metrics",
                {"200": answer},
                {},
                BEARER,
                description="The /api/v1 bearer token (server/api.token; Prometheus: "
                "`authorization: {type: Bearer, credentials_file: <home>/server/api.token}`), "
                "or none when config.yaml says `metrics: {public: true}`. Formations (info, "
                "state, up, start time, restarts by reason, CPU, memory, fds), the proxy "
                "(requests by method and code, duration, in flight, held, hold duration, "
                "retries, upstream errors by kind), the event stream, searches and fsup's "
                "own process. Scrapes are not audited.",
            )
        }
    }
