#!/usr/bin/env python3
"""Generates grafana/dashboards/*.json (run from the repository root: python3 grafana/generate.py).
tests/grafana.rs runs every query in the output against a real ClickHouse."""
import json, os

DS = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
INSPECT = "${dashboard_url}/requests/${__data.fields.request_id}"
TRACE = "/d/tether-traces/tether-traces?var-trace_id=${__data.fields.trace_id}&${__url_time_range}"

def target(sql, fmt="table", ref="A"):
    return {"datasource": DS, "editorType": "sql", "format": 0 if fmt == "timeseries" else (3 if fmt == "traces" else 1),
            "queryType": fmt, "rawSql": sql.strip(), "refId": ref}

_id = [0]
def panel(kind, title, x, y, w, h, targets, unit=None, links=None, overrides=None, extra=None, transformations=None):
    _id[0] += 1
    p = {"id": _id[0], "type": kind, "title": title, "datasource": DS,
         "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
         "fieldConfig": {"defaults": {}, "overrides": overrides or []}, "options": {}}
    if unit: p["fieldConfig"]["defaults"]["unit"] = unit
    if links: p["fieldConfig"]["defaults"]["links"] = links
    if transformations: p["transformations"] = transformations
    if extra: p.update(extra)
    return p

def link_override(field, title, url):
    return {"matcher": {"id": "byName", "options": field},
            "properties": [{"id": "links", "value": [{"title": title, "url": url, "targetBlank": True}]}]}

def variables(extra=()):
    return [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "grafana-clickhouse-datasource",
             "current": {"text": "", "value": ""}, "hide": 0, "refresh": 1, "regex": ""},
            {"name": "dashboard_url", "label": "tether-pro dashboard", "type": "textbox",
             "query": "http://localhost:8080/tether/dashboard",
             "current": {"text": "http://localhost:8080/tether/dashboard", "value": "http://localhost:8080/tether/dashboard"}, "hide": 0},
            *extra]

def query_var(name, sql, all_value="__all"):
    return {"name": name, "type": "query", "datasource": DS, "query": sql, "refresh": 2,
            "includeAll": True, "allValue": all_value, "multi": False,
            "current": {"text": "All", "value": "$__all"}, "sort": 1, "hide": 0}

def textbox(name, label, default=""):
    return {"name": name, "label": label, "type": "textbox", "query": default,
            "current": {"text": default, "value": default}, "hide": 0}

def dashboard(uid, title, tags, panels, vars_, time="now-6h", refresh="1m"):
    return {"id": None, "uid": uid, "title": title, "tags": ["tether", *tags], "timezone": "browser",
            "schemaVersion": 41, "version": 1, "editable": True, "graphTooltip": 1,
            "time": {"from": time, "to": "now"}, "refresh": refresh,
            "templating": {"list": vars_}, "annotations": {"list": []}, "links": [
                {"title": "Tether dashboards", "type": "dashboards", "tags": ["tether"], "asDropdown": True, "includeVars": False, "keepTime": True,
                 "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
            "panels": panels}

# ---------------------------------------------------------------- Sync overview
_id[0] = 0
# Five-minute tables. A window counts every bucket it touches, whole (its partial first and
# last buckets included), as the metrics API and the overview page do: from rounded down to a
# bucket, to exclusive.
WIN5 = "bucket >= toStartOfFiveMinutes($__fromTime) AND bucket < $__toTime"
REQ5 = f"FROM sync_requests_5m WHERE {WIN5}"
# A time series over five-minute buckets steps by whole buckets: Grafana's interval rounded up
# to a multiple of 300 s (at least one bucket), so no step is empty or holds part of a bucket,
# and a rate is the step's sum divided by the step's length, at any interval (2 s, 60 s, 3600 s).
STEP5 = "(intDiv(greatest($__interval_s, 300) + 299, 300) * 300)"
TIME5 = f"toDateTime(intDiv(toUInt32(bucket), {STEP5}) * {STEP5}, 'UTC')"
overview = [
    panel("stat", "Requests", 0, 0, 4, 4, [target(f"SELECT sum(requests) AS requests {REQ5}")], unit="short"),
    panel("stat", "Mutations", 4, 0, 4, 4, [target(f"SELECT sum(mutations) AS mutations {REQ5}")], unit="short"),
    panel("stat", "Conflict rate", 8, 0, 4, 4, [target(f"SELECT if(sum(mutations) = 0, 0, sum(conflicts) / sum(mutations)) AS conflict_rate {REQ5}")], unit="percentunit"),
    panel("stat", "Failure rate", 12, 0, 4, 4, [target(f"SELECT if(sum(requests) = 0, 0, sumIf(requests, outcome = 'error') / sum(requests)) AS failure_rate {REQ5}")], unit="percentunit"),
    panel("stat", "p95 push latency", 16, 0, 4, 4, [target(f"SELECT quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles)[2] / 1000 AS p95_ms {REQ5} AND kind = 'push'")], unit="ms"),
    panel("stat", "Records dropped (capture)", 20, 0, 4, 4, [target(
        "SELECT sum(Value) AS dropped FROM (SELECT max(Value) - if(min(StartTimeUnix) >= $__fromTime, 0, min(Value)) AS Value FROM otel_metrics_sum "
        "WHERE MetricName = 'tether.capture.records.dropped' AND $__timeFilter(TimeUnix) "
        "GROUP BY ServiceName, ResourceAttributes, Attributes)")], unit="short"),
    panel("timeseries", "Throughput by kind and outcome (requests/s)", 0, 4, 12, 8, [target(
        f"SELECT {TIME5} AS time, concat(kind, ' ', outcome) AS series, sum(requests) / {STEP5} AS rps "
        f"{REQ5} GROUP BY time, series ORDER BY time", "timeseries")], unit="reqps"),
    panel("timeseries", "Latency p50 / p95 / p99", 12, 4, 12, 8, [target(
        f"SELECT {TIME5} AS time, kind, quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles) AS q, "
        f"q[1] / 1000 AS p50_ms, q[2] / 1000 AS p95_ms, q[3] / 1000 AS p99_ms {REQ5} GROUP BY time, kind ORDER BY time", "timeseries")], unit="ms",
        transformations=[{"id": "organize", "options": {"excludeByName": {"q": True}}}]),
    panel("timeseries", "Conflict rate and failure rate", 0, 12, 12, 8, [target(
        f"SELECT {TIME5} AS time, if(sum(mutations) = 0, 0, sum(conflicts) / sum(mutations)) AS conflict_rate, "
        f"if(sum(requests) = 0, 0, sumIf(requests, outcome = 'error') / sum(requests)) AS failure_rate {REQ5} GROUP BY time ORDER BY time", "timeseries")],
        unit="percentunit"),
    panel("state-timeline", "Health, five-minute buckets (24 hours)", 12, 12, 12, 8, [target(
        "SELECT bucket AS time, multiIf(sum(requests) = 0, 'idle', sumIf(requests, outcome = 'error') / sum(requests) >= 0.05, 'failing', "
        "sumIf(requests, outcome = 'error') / sum(requests) >= 0.01 OR (sum(mutations) > 0 AND sum(conflicts) / sum(mutations) >= 0.10) "
        "OR quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles)[2] > 1000000, 'degraded', 'ok') AS health "
        "FROM sync_requests_5m WHERE bucket >= toStartOfFiveMinutes($__toTime) - INTERVAL 1 DAY AND bucket <= $__toTime GROUP BY time ORDER BY time", "timeseries")],
        overrides=[{"matcher": {"id": "byName", "options": "health"}, "properties": [{"id": "mappings", "value": [{"type": "value", "options": {
            "ok": {"color": "green", "index": 0}, "degraded": {"color": "orange", "index": 1}, "failing": {"color": "red", "index": 2}, "idle": {"color": "transparent", "index": 3}}}]}]}],
        extra={"timeFrom": "24h"}),
    panel("table", "Top models", 0, 20, 8, 8, [target(
        "SELECT model, sumIf(mutations, outcome = 'conflict') AS conflicts, sumIf(mutations, outcome = 'rejected') AS rejected, sum(mutations) AS total_mutations "
        f"FROM sync_mutations_5m WHERE {WIN5} GROUP BY model ORDER BY total_mutations DESC LIMIT 10")]),
    panel("table", "Top clients", 8, 20, 8, 8, [target(
        "SELECT client_id, sumIf(mutations, outcome = 'conflict') AS conflicts, sumIf(mutations, outcome = 'rejected') AS rejected, sum(mutations) AS total_mutations "
        f"FROM sync_mutations_5m WHERE {WIN5} GROUP BY client_id ORDER BY total_mutations DESC LIMIT 10")],
        overrides=[link_override("client_id", "Client timeline", "${dashboard_url}/clients/${__data.fields.client_id}")]),
    panel("table", "Clients with suspicious clocks", 0, 28, 24, 6, [target(
        "SELECT client_id, sum(future) AS future_timestamps, sum(invalid) AS invalid_timestamps, max(furthest_ahead_ms) / 1000 AS furthest_ahead_s "
        f"FROM sync_clock_anomalies_5m WHERE {WIN5} GROUP BY client_id ORDER BY sum(future) + sum(invalid) DESC, client_id LIMIT 20")],
        overrides=[link_override("client_id", "Client timeline", "${dashboard_url}/clients/${__data.fields.client_id}"),
                   {"matcher": {"id": "byName", "options": "furthest_ahead_s"}, "properties": [{"id": "unit", "value": "s"}]}],
        extra={"description": "Mutations timestamped more than 60 s after their push arrived (only a clock ahead of the server's does that) or with a missing or invalid timestamp (migration 9). Long delays are not listed: offline time and a clock behind look alike."}),
    panel("timeseries", "Capture pipeline (OpenTelemetry metrics)", 16, 20, 8, 8, [target(
        "SELECT $__timeInterval(TimeUnix) AS time, concat(MetricName, if(Attributes['reason'] != '', concat(' ', Attributes['reason']), if(Attributes['stage'] != '', concat(' ', Attributes['stage']), ''))) AS series, max(Value) AS value "
        "FROM otel_metrics_sum WHERE MetricName IN ('tether.capture.records.dropped', 'tether.capture.rows.written', 'tether.capture.insert.failures') "
        "AND $__timeFilter(TimeUnix) GROUP BY time, series ORDER BY time", "timeseries")], unit="short",
        extra={"description": "Cumulative counters written by the OpenTelemetry Collector's ClickHouse exporter (otel-collector/config.yaml). Empty unless the collector is deployed."}),
]

# ---------------------------------------------------------------- Conflicts and failures
_id[0] = 0
MUT5 = f"FROM sync_mutations_5m WHERE {WIN5} AND outcome IN ('rejected', 'conflict')"
conflicts = [
    panel("timeseries", "Conflicts and rejections by model", 0, 0, 8, 8, [target(
        f"SELECT {TIME5} AS time, concat(model, ' ', outcome) AS series, sum(mutations) AS n {MUT5} GROUP BY time, series ORDER BY time", "timeseries")]),
    panel("timeseries", "By reason", 8, 0, 8, 8, [target(
        f"SELECT {TIME5} AS time, reason, sum(mutations) AS n {MUT5} GROUP BY time, reason ORDER BY time", "timeseries")]),
    # GLOBAL IN (here and in the explorer): on a cluster the subquery runs once and its
    # result goes to every shard; ClickHouse refuses a plain IN over a second Distributed
    # table (distributed_product_mode = 'deny'). On one node it is a plain IN.
    panel("timeseries", "Top clients", 16, 0, 8, 8, [target(
        f"SELECT {TIME5} AS time, client_id, sum(mutations) AS n {MUT5} AND client_id GLOBAL IN "
        f"(SELECT client_id FROM sync_mutations_5m WHERE {WIN5} AND outcome IN ('rejected', 'conflict') GROUP BY client_id ORDER BY sum(mutations) DESC LIMIT 10) "
        "GROUP BY time, client_id ORDER BY time", "timeseries")]),
    panel("table", "Failures by reason x model x client", 0, 8, 24, 8, [target(
        f"SELECT reason, model, client_id, sum(mutations) AS failures, min(bucket) AS first_seen, max(bucket) AS last_seen {MUT5} "
        "GROUP BY reason, model, client_id ORDER BY failures DESC LIMIT 200")],
        overrides=[link_override("client_id", "Client timeline", "${dashboard_url}/clients/${__data.fields.client_id}")]),
    panel("table", "Latest conflicts", 0, 16, 24, 9, [target(
        "SELECT started_at, request_id, client_id, model, entity_id, state_before AS server_state, payload AS client_payload, trace_id "
        "FROM sync_mutations WHERE $__timeFilter(started_at) AND outcome = 'conflict' ORDER BY started_at DESC LIMIT 100")],
        overrides=[link_override("request_id", "Inspect request", INSPECT), link_override("trace_id", "Open trace", TRACE)]),
    panel("table", "Latest failures", 0, 25, 24, 9, [target(
        "SELECT started_at, request_id, client_id, model, operation, outcome, reason, reason_data, trace_id "
        "FROM sync_mutations WHERE $__timeFilter(started_at) AND outcome = 'rejected' ORDER BY started_at DESC LIMIT 100")],
        overrides=[link_override("request_id", "Inspect request", INSPECT), link_override("trace_id", "Open trace", TRACE)]),
    panel("table", "Failed requests (errors)", 0, 34, 24, 7, [target(
        "SELECT started_at, request_id, kind, client_id, http_status, error, trace_id "
        "FROM sync_requests WHERE $__timeFilter(started_at) AND outcome = 'error' ORDER BY started_at DESC LIMIT 100")],
        overrides=[link_override("request_id", "Inspect request", INSPECT), link_override("trace_id", "Open trace", TRACE)]),
]

# ---------------------------------------------------------------- Request explorer
_id[0] = 0


def sv(name):
    """A template variable as a SQL string. Grafana's `percentencode` leaves only [A-Za-z0-9-_.~%]
    (quotes and backslashes percent-encoded), so nothing a user types can end the literal;
    ClickHouse decodes it back. (`sqlstring` doubles quotes but leaves backslashes, which
    ClickHouse string literals treat as escapes: `\' OR 1=1 --` would still break out.)"""
    return f"decodeURLComponent('${{{name}:percentencode}}')"


FILT = (f"({sv('client')} = '' OR client_id = {sv('client')}) AND ({sv('kind')} = '__all' OR kind = {sv('kind')}) "
        f"AND ({sv('outcome')} = '__all' OR outcome = {sv('outcome')}) "
        f"AND ({sv('model')} = '__all' OR request_id GLOBAL IN (SELECT request_id FROM sync_mutations WHERE $__timeFilter(started_at) AND model = {sv('model')}))")
explorer_vars = variables([
    textbox("client", "Client id"),
    query_var("model", f"SELECT DISTINCT model FROM sync_mutations_5m WHERE {WIN5} ORDER BY model"),
    query_var("outcome", f"SELECT DISTINCT outcome FROM sync_requests_5m WHERE {WIN5} ORDER BY outcome"),
    query_var("kind", f"SELECT DISTINCT kind FROM sync_requests_5m WHERE {WIN5} ORDER BY kind"),
])
explorer = [
    panel("timeseries", "Matching requests", 0, 0, 24, 6, [target(
        f"SELECT $__timeInterval(started_at) AS time, outcome, count() AS requests FROM sync_requests WHERE $__timeFilter(started_at) AND {FILT} "
        "GROUP BY time, outcome ORDER BY time", "timeseries")]),
    panel("table", "Requests", 0, 6, 24, 18, [target(
        "SELECT started_at, request_id, kind, client_id, client_version, outcome, http_status, duration_us / 1000 AS duration_ms, "
        "mutation_count, applied_count, rejected_count, conflict_count, duplicate_count, snapshot_count, trace_id "
        f"FROM sync_requests WHERE $__timeFilter(started_at) AND {FILT} ORDER BY started_at DESC LIMIT 500")],
        overrides=[link_override("request_id", "Inspect request", INSPECT), link_override("trace_id", "Open trace", TRACE),
                   link_override("client_id", "Client timeline", "${dashboard_url}/clients/${__data.fields.client_id}"),
                   {"matcher": {"id": "byName", "options": "duration_ms"}, "properties": [{"id": "unit", "value": "ms"}]}]),
]

# ---------------------------------------------------------------- Traces
_id[0] = 0
traces = [
    panel("traces", "Trace", 0, 0, 24, 14, [target(
        "SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID, ServiceName AS serviceName, SpanName AS operationName, "
        "toUnixTimestamp64Milli(Timestamp) AS startTime, Duration / 1000000 AS duration, "
        "arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags, "
        "arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags "
        f"FROM otel_traces WHERE TraceId = {sv('trace_id')} ORDER BY Timestamp LIMIT 1000", "traces")]),
    panel("table", "Recent Tether spans", 0, 14, 24, 10, [target(
        "SELECT Timestamp AS time, TraceId AS trace_id, SpanName, ServiceName, Duration / 1000000 AS duration_ms, "
        "SpanAttributes['tether.request_id'] AS request_id, SpanAttributes['tether.outcome'] AS outcome "
        "FROM otel_traces WHERE $__timeFilter(Timestamp) AND SpanName IN ('tether.push', 'tether.pull') "
        f"AND ({sv('trace_id')} = '' OR TraceId = {sv('trace_id')}) ORDER BY Timestamp DESC LIMIT 200")],
        overrides=[link_override("trace_id", "Open trace", "/d/tether-traces/tether-traces?var-trace_id=${__data.fields.trace_id}&${__url_time_range}"),
                   link_override("request_id", "Inspect request", INSPECT),
                   {"matcher": {"id": "byName", "options": "duration_ms"}, "properties": [{"id": "unit", "value": "ms"}]}]),
]

out = {
    "sync-overview.json": dashboard("tether-sync-overview", "Tether: sync overview", ["overview"], overview, variables(), time="now-24h"),
    "conflicts-failures.json": dashboard("tether-conflicts-failures", "Tether: conflicts and failures", ["conflicts", "failures"], conflicts, variables()),
    "request-explorer.json": dashboard("tether-request-explorer", "Tether: request explorer", ["requests"], explorer, explorer_vars, time="now-1h", refresh="30s"),
    "traces.json": dashboard("tether-traces", "Tether: traces", ["traces"], traces, variables([textbox("trace_id", "Trace id")]), time="now-1h", refresh=""),
}
here = os.path.dirname(os.path.abspath(__file__))
for name, d in out.items():
    with open(os.path.join(here, "dashboards", name), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
