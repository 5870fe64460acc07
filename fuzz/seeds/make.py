#!/usr/bin/env python3
"""Writes the committed seed corpus fuzz/corpus/<target>/ from the PROTOCOL.md examples and a
capture of simulator traffic made with capture.py (one JSON line per exchange).

    python3 fuzz/seeds/make.py /tmp/sim.jsonl
"""
import hashlib, json, os, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

PROTOCOL_EXAMPLES = [
    {"client_id": "01J0000000000000000000000C", "mutations": [
        {"mutation_id": "01J0000000000000000000000M", "entity_id": "01J0000000000000000000000E", "model": "Task",
         "operation": "create", "payload": {"title": "Buy milk"}, "version": 1, "timestamp": 1716000000000}]},
    {"applied": ["01J0000000000000000000000M"],
     "rejected": [{"mutation_id": "01J0000000000000000000000N", "reason": "validation_failed",
                   "data": {"messages": {"title": ["The title field is required."]}}}],
     "conflicts": [{"mutation_id": "01J0000000000000000000000P", "reason": "conflict",
                    "data": {"server_state": {"tether_id": "01J0000000000000000000000E", "title": "Server"},
                             "server_updated_at": "2026-05-18T10:00:00Z"}}]},
    {"client_id": "01J0000000000000000000000C", "last_sync_cursor": 1716000000000000, "limit": 100},
    {"client_id": "01J0000000000000000000000C", "last_sync_cursor": None},
    {"snapshots": [
        {"entity_id": "01J0000000000000000000000E", "model": "Task", "operation": "upsert", "payload": {"title": "x"}},
        {"entity_id": "01J0000000000000000000000F", "model": "Task", "operation": "delete", "payload": {}}],
     "new_sync_cursor": 1716000000123456, "has_more": False},
    {"applied": None, "rejected": [{"mutation_id": "m", "reason": "rate_limited", "data": None}]},
    {"mutation_id": "m", "reason": "duplicate"},
    {"messages": {"title": ["The title field is required."], "priority": ["The priority must be between 0 and 5."]}},
    {"server_state": {"tether_id": "e", "title": "Server", "api_key": "sk_live_0123456789"}, "server_updated_at": "2026-05-18T10:00:00Z"},
]

# Hand-written redaction seeds: the documented spellings and near misses, at depth.
REDACT_EXAMPLES = [
    {"user_password": "hunter2hunter2", "X-Api-Key": "key_0123456789", "db.Password": "pw_0123456789",
     "AUTHORIZATION": "Bearer abcdef0123", "Set-Cookie": "sid=0123456789", "csrf_token": "csrf_0123456789",
     "client secret": "cs_0123456789", "tokens_used": 12, "session_count": 3, "password_policy": "strict",
     "cookies_enabled": True},
    [{"a": [{"b": {"c": [{"refresh_token": {"nested": ["rt_0123456789"]}}]}}]}],
    {"credit_card": {"number": "4111111111111111", "cvv": 123}, "ssn": "078-05-1120", "notes": "{\"token\":\"tk_0123456789\"}"},
    {"callback": "/cb?access_token=at_0123456789&state=x", "header": "Authorization: Bearer br_0123456789"},
    # Issue 12: word-part key spellings, and credentials inside string values.
    {"password_confirmation": "pc_0123456789", "passwordHash": "ph_0123456789", "secret_key": "sk_0123456789",
     "apiKeys": ["ak_0123456789"], "password_policy": "strict", "token_type": "bearer", "tokenizer": "ws"},
    {"title": "t", "notes": "Authorization: Bearer FAKE-A0123",
     "metadata": {"callback": "https://example.test/cb?access_token=FAKE-B0123&x=1", "color": "red"}},
    {"dsn": "postgres://app:hunter2@db.internal:5432/main", "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
     "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
     "log": "login with password=hunter2 then; my api_key: k_9f8e7d", "plain": "tokenize the passport x=1"},
]

TEXT_EXAMPLES = [
    b'{"client_id":"c","mutations":[{"payload":{"password":"pw_01234567',
    b'user[password]=pw_0123456789&remember=1&api_key=ak_0123456789',
    b'Authorization: Bearer br_0123456789\nCookie: sid=sid_0123456789; theme=dark\n',
    b'{"notes":"{\\"token\\":\\"tk_0123456789\\"}","x":"/cb?access_token=at_0123456789"}',
    b"{'password': 'pw_0123456789', 'secret': [1, {'x': 'y'}]}",
    b'password%5B0%5D=pw_0123456789&session=s_0123456789',
    b'{"password" :\t"unterminated \\" quote',
    b'{"a":[{"b":{"secret":{"deep":["x","y"]}}}],"token":tk_bare_0123,"ok":true}',
    b'{"notes":"Authorization: Bearer FAKE-A0123","metadata":{"callback":"https://example.test/cb?access_token=FAKE-B',
    b'{"dsn":"postgres://app:hunter2@db.internal/main","jwt":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln',
]

# The value rules' target draws everything from the input bytes: seeds are fixed pseudo-random
# bytes of a few lengths, so a first run starts with every kind of planted text.
VALUE_SEEDS = [hashlib.sha256(b"redact_values %d" % i).digest() * (1 + i % 8) for i in range(24)]


def write(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, (dict, list)):
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()


def main(capture):
    exchanges = [json.loads(line) for line in open(capture)]
    pushes = [e for e in exchanges if e["path"].endswith("/push")]
    pulls = [e for e in exchanges if e["path"].endswith("/pull")]

    for v in PROTOCOL_EXAMPLES:
        write("protocol", v)
        write("redact", v)
    for v in REDACT_EXAMPLES:
        write("redact", v)
        write("redact_text", compact(v))
    for t in TEXT_EXAMPLES:
        write("redact_text", t)
    for b in VALUE_SEEDS:
        write("redact_values", b)

    def interesting(e):
        return any(k in e["response"] for k in ('"rejected":[{', '"conflicts":[{')) or "sk_live" in e["request"]

    chosen = [e for e in pushes if interesting(e)][:8] + pushes[:2]
    for e in chosen:
        req, resp = json.loads(e["request"]), json.loads(e["response"])
        write("protocol", req)
        write("protocol", resp)
        write("redact", req)
        write("rows", compact(req) + b"\0" + compact(resp))
        # A body cut by the capture limit, as the textual scrub sees it.
        write("redact_text", e["request"].encode()[: len(e["request"]) * 2 // 3])
    for e in pulls[:3] + [p for p in pulls if len(p["response"]) < 2000][:2]:
        write("protocol", json.loads(e["request"]))
        write("protocol", json.loads(e["response"]))

    # Diff seeds: successive payloads of one entity, and conflicts (server state vs payload).
    by_entity = {}
    for e in pushes:
        for m in json.loads(e["request"]).get("mutations", []):
            by_entity.setdefault(m["entity_id"], []).append(m.get("payload") or {})
    pairs = [(ps[0], ps[-1]) for ps in by_entity.values() if len(ps) > 1][:6]
    for e in pushes:
        req, resp = json.loads(e["request"]), json.loads(e["response"])
        payloads = {m["mutation_id"]: m.get("payload") or {} for m in req.get("mutations", [])}
        for c in resp.get("conflicts") or []:
            state = (c.get("data") or {}).get("server_state")
            if state is not None and c["mutation_id"] in payloads and len(pairs) < 10:
                pairs.append((state, payloads[c["mutation_id"]]))
    pairs.append(({"a": [1, 2, 3], "b": {"password": "old_pw_0123"}}, {"a": [1, 3], "b": {"password": "new_pw_0123"}, "c": None}))
    for before, after in pairs:
        write("diff", compact(before) + b"\0" + compact(after))


if __name__ == "__main__":
    main(sys.argv[1])
