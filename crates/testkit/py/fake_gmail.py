#!/usr/bin/env python3
"""A fake Gmail API for mailferry's tests, on 127.0.0.1 only, in the documented REST shapes
(https://developers.google.com/gmail/api/reference/rest/v1/users.messages/import, .../insert,
.../users.labels, .../users.messages/list, and the resumable upload protocol):

  POST /upload/gmail/v1/users/me/messages/import?uploadType=multipart|resumable
       &internalDateSource=..&neverMarkSpam=..&processForCalendar=..
  POST /upload/gmail/v1/users/me/messages?uploadType=multipart|resumable&internalDateSource=..
       multipart: Content-Type multipart/related; boundary=B; a JSON part {"labelIds": [...]}
       then a message/rfc822 part.
       resumable: JSON metadata body, X-Upload-Content-Type, X-Upload-Content-Length;
       200 with Location: the session URI. PUT chunks with Content-Range: bytes a-b/total;
       308 with Range: bytes=0-b until the last, then 200 with the Message resource.
  GET  /gmail/v1/users/me/labels                     {"labels": [{id, name, type}]}
  POST /gmail/v1/users/me/labels                     {name, ...} -> Label (409 if it exists)
  GET  /gmail/v1/users/me/messages?q=rfc822msgid:X   {"messages": [{id, threadId}], ...}
       (X may be quoted; like Gmail's search, a message is found only index_lag s after
       it was stored)
  GET  /gmail/v1/users/me/messages/ID?format=minimal  {id, threadId, labelIds, sizeEstimate}

Every call needs "Authorization: Bearer T"; T is checked at the tokeninfo URL given on the
command line (the fake IdP), like Google checks its own tokens: 401 otherwise.

Quota: a token bucket per user (capacity = rate, refilled at rate/s) when rate is set;
an empty bucket answers 429 rateLimitExceeded, as Gmail does.
Units per user per minute (units_per_minute): Gmail's real quota shape (developers.google.com
/gmail/api/reference/quota: messages.import and insert cost 25 units, labels.list 1,
labels.create 5, messages.list 5, messages.get 5; 15,000 units per user per minute, 6,000
for Cloud projects created since May 2026). Modelled as a rolling minute: a request whose
units would take the last 60 s over the limit gets Google's refusal, 429 rateLimitExceeded
"Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' ..."
(as quoted in shared/DESIGN.md, "What servers actually send"); refused requests cost
nothing. An upload session's units are charged when it starts.
Test behaviour, by a header in the message:  X-Test-Gmail: 400   -> 400 invalidArgument
                                              X-Test-Gmail: slow  -> stored, answer after 3 s
Controls:  POST /control/set?rate=10|storm=N|fail500=N|retry_after=S|latency=S|index_lag=S
             |fail500_after_store=N|garble_2xx=N|expire_sessions=N|short_chunk=N
             |daily_limit=N|concurrent=N|units_per_minute=N
           (storm: the next N uploads get 429/403 rate-limit errors; fail500: 500 before
           storing; fail500_after_store: stored, then 500; garble_2xx: stored, then 200
           with a body that is not JSON; expire_sessions: the next N chunk PUTs get 404 (the
           session expired); short_chunk: the next N chunks are half kept, and the 308's
           Range says so; daily_limit: the next N uploads get 403 dailyLimitExceeded;
           concurrent: the next N uploads get 429 "Too many concurrent requests for user")
           POST /control/label?name=N     a user label made by the user
           POST /control/delete_label?name=N   the user deletes a label (its id is gone)
           POST /control/add?labels=A,B  (body: raw message) a message as if the user had it
           (e.g. labels=SENT: their own sent copy)
           Label names Gmail reserves ("Chats", "Drafts", "All Mail", ...) are refused
           with 400 at labels.create.
           GET  /control/messages  (base64 raw, labels, params)   GET /control/stats
           GET  /control/digests   (id, size, sha256 of each message)

Binds port 0 and prints "PORT <n>". Command-line: fake_gmail.py TOKENINFO_URL
"""

import base64
import hashlib
import json
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
# Names Gmail keeps for itself and refuses at labels.create (400 Invalid label name).
RESERVED = {"chat", "chats", "drafts", "sent mail", "all mail", "muted", "snoozed", "scheduled"}
SYSTEM_LABELS = ["INBOX", "UNREAD", "SPAM", "TRASH", "STARRED", "IMPORTANT", "SENT", "DRAFT",
                 "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS",
                 "CATEGORY_UPDATES", "CATEGORY_FORUMS"]
STATE = {
    "messages": [],
    "labels": {name: {"id": name, "name": name, "type": "system"} for name in SYSTEM_LABELS},
    "sessions": {},
    "config": {"rate": 0.0, "storm": 0, "fail500": 0, "retry_after": 0, "latency": 0.0,
               "index_lag": 0.0, "fail500_after_store": 0, "garble_2xx": 0,
               "expire_sessions": 0, "short_chunk": 0, "daily_limit": 0, "concurrent": 0,
               "units_per_minute": 0},
    "units": [],
    "bucket": {"tokens": 0.0, "at": 0.0},
    "stats": {"uploads": 0, "throttled": 0, "server_errors": 0, "label_creates": 0,
              "label_lists": 0, "searches": 0, "chunks": 0, "max_chunk": 0,
              "upload_times": [], "unauthorized": 0, "sessions": 0, "gets": 0,
              "quota_refusals": 0},
}
TOKENINFO = None
TOKEN_CACHE = {}


def new_label_id():
    """A label id never used before (a label deleted and made again gets a new one, as in
    Gmail). Call with LOCK held."""
    STATE["label_serial"] = STATE.get("label_serial", len(SYSTEM_LABELS)) + 1
    return "Label_%d" % STATE["label_serial"]


def google_error(code, reason, message, status):
    return {"error": {"code": code, "message": message,
                      "errors": [{"domain": "global", "reason": reason, "message": message}],
                      "status": status}}


def token_ok(token):
    now = time.time()
    cached = TOKEN_CACHE.get(token)
    if cached and cached > now:
        return True
    try:
        with urllib.request.urlopen(TOKENINFO + urllib.parse.quote(token), timeout=5) as r:
            ok = r.status == 200 and "email" in json.load(r)
    except urllib.error.URLError:
        ok = False
    if ok:
        TOKEN_CACHE[token] = now + 0.5
    return ok


def header_of(raw, name):
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = re.search(rb"^" + name.encode() + rb":[ \t]*(.*(?:\r?\n[ \t].*)*)", head, re.M | re.I)
    return m.group(1).strip().decode("latin-1") if m else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, each answer on
    # a kept-alive connection waits for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and token_ok(auth[len("Bearer "):]):
            return True
        with LOCK:
            STATE["stats"]["unauthorized"] += 1
        self.reply(401, google_error(401, "authError", "Request had invalid authentication credentials.", "UNAUTHENTICATED"),
                   [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
        return False

    def charge(self, units):
        """The per-minute units quota; True when the request may go on (and is charged).
        Call with LOCK held."""
        limit = float(STATE["config"]["units_per_minute"])
        if limit <= 0:
            return True
        now = time.time()
        window = [(t, u) for (t, u) in STATE["units"] if now - t < 60.0]
        STATE["units"] = window
        if sum(u for _, u in window) + units > limit:
            STATE["stats"]["throttled"] += 1
            STATE["stats"]["quota_refusals"] += 1
            self.reply(429, google_error(
                429, "rateLimitExceeded",
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' "
                "of service 'gmail.googleapis.com' for consumer 'project_number:000000000000'.",
                "RESOURCE_EXHAUSTED"))
            return False
        window.append((now, units))
        return True

    def quota(self):
        """Token bucket; True when the request may go on. Call with LOCK held."""
        cfg = STATE["config"]
        if cfg["storm"] > 0:
            cfg["storm"] -= 1
            STATE["stats"]["throttled"] += 1
            headers = [("Retry-After", str(int(cfg["retry_after"])))] if cfg["retry_after"] else []
            if cfg["storm"] % 2:
                self.reply(429, google_error(429, "rateLimitExceeded", "Too many requests", "RESOURCE_EXHAUSTED"), headers)
            else:
                self.reply(403, google_error(403, "userRateLimitExceeded", "User-rate limit exceeded", "PERMISSION_DENIED"), headers)
            return False
        if cfg["daily_limit"] > 0:
            cfg["daily_limit"] -= 1
            self.reply(403, google_error(403, "dailyLimitExceeded", "Daily Limit Exceeded", "PERMISSION_DENIED"))
            return False
        if cfg["concurrent"] > 0:
            cfg["concurrent"] -= 1
            STATE["stats"]["throttled"] += 1
            self.reply(429, google_error(429, "rateLimitExceeded", "Too many concurrent requests for user", "RESOURCE_EXHAUSTED"))
            return False
        if cfg["fail500"] > 0:
            cfg["fail500"] -= 1
            STATE["stats"]["server_errors"] += 1
            self.reply(500, google_error(500, "backendError", "Backend Error", "INTERNAL"))
            return False
        rate = float(cfg["rate"])
        if rate > 0:
            b = STATE["bucket"]
            now = time.time()
            b["tokens"] = min(rate, b["tokens"] + (now - b["at"]) * rate)
            b["at"] = now
            if b["tokens"] < 1.0:
                STATE["stats"]["throttled"] += 1
                self.reply(429, google_error(429, "rateLimitExceeded", "Rate Limit Exceeded", "RESOURCE_EXHAUSTED"))
                return False
            b["tokens"] -= 1.0
        return self.charge(25)

    # ---- routing -------------------------------------------------------------------------
    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/control/messages":
            with LOCK:
                out = [dict(m, raw=base64.b64encode(m["raw"]).decode()) for m in STATE["messages"]]
            return self.reply(200, out)
        if url.path == "/control/digests":
            with LOCK:
                out = [{"id": m["id"], "size": len(m["raw"]),
                        "sha256": hashlib.sha256(m["raw"]).hexdigest(),
                        "uploadType": m["uploadType"]} for m in STATE["messages"]]
            return self.reply(200, out)
        if url.path == "/control/stats":
            with LOCK:
                return self.reply(200, dict(STATE["stats"]))
        if not self.authorized():
            return
        if url.path == "/gmail/v1/users/me/profile":
            return self.reply(200, {"emailAddress": "alice@test.example", "messagesTotal": len(STATE["messages"]),
                                    "threadsTotal": len(STATE["messages"]), "historyId": "1"})
        if url.path == "/gmail/v1/users/me/labels":
            with LOCK:
                if not self.charge(1):
                    return
                STATE["stats"]["label_lists"] += 1
                return self.reply(200, {"labels": list(STATE["labels"].values())})
        if url.path == "/gmail/v1/users/me/messages":
            with LOCK:
                if not self.charge(5):
                    return
            return self.search(q.get("q", ""))
        if url.path.startswith("/gmail/v1/users/me/messages/"):
            with LOCK:
                if not self.charge(5):
                    return
            return self.get_message(url.path.rsplit("/", 1)[1])
        self.reply(404, google_error(404, "notFound", "Not Found", "NOT_FOUND"))

    def do_POST(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/control/set":
            with LOCK:
                for k, v in q.items():
                    STATE["config"][k] = float(v)
            self.body()
            return self.reply(200, {"ok": True})
        if url.path == "/control/label":
            self.body()
            with LOCK:
                name = q["name"]
                STATE["labels"][name] = {"id": new_label_id(), "name": name, "type": "user"}
            return self.reply(200, STATE["labels"][name])
        if url.path == "/control/delete_label":
            self.body()
            with LOCK:
                gone = STATE["labels"].pop(q["name"], None)
            return self.reply(200 if gone else 404, {"deleted": bool(gone)})
        if url.path == "/control/add":
            raw = self.body()
            labels = [l for l in q.get("labels", "").split(",") if l]
            with LOCK:
                mid = self.append(raw, labels, "insert", {}, "control")
            return self.reply(200, {"id": mid})
        body = self.body()
        if not self.authorized():
            return
        if url.path == "/gmail/v1/users/me/labels":
            with LOCK:
                if not self.charge(5):
                    return
            return self.create_label(body)
        if url.path in ("/upload/gmail/v1/users/me/messages/import", "/upload/gmail/v1/users/me/messages"):
            mode = "import" if url.path.endswith("/import") else "insert"
            with LOCK:
                if not self.quota():
                    return
            if q.get("uploadType") == "multipart":
                return self.multipart(mode, q, body)
            if q.get("uploadType") == "resumable":
                return self.start_session(mode, q, body)
            return self.reply(400, google_error(400, "badRequest", "uploadType is required", "INVALID_ARGUMENT"))
        self.reply(404, google_error(404, "notFound", "Not Found", "NOT_FOUND"))

    def do_PUT(self):
        url = urlparse(self.path)
        body = self.body()
        if not url.path.startswith("/upload/session/"):
            return self.reply(404, google_error(404, "notFound", "Not Found", "NOT_FOUND"))
        if not self.authorized():
            return
        sid = url.path[len("/upload/session/"):]
        m = re.match(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
        with LOCK:
            cfg = STATE["config"]
            if cfg["expire_sessions"] > 0 and sid in STATE["sessions"]:
                cfg["expire_sessions"] -= 1
                del STATE["sessions"][sid]
            s = STATE["sessions"].get(sid)
            if s is None or m is None:
                return self.reply(404, google_error(404, "notFound", "No such upload session", "NOT_FOUND"))
            first, last, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if first != len(s["data"]) or last - first + 1 != len(body) or total != s["total"]:
                return self.reply(400, google_error(400, "badContent", "Content-Range does not match", "INVALID_ARGUMENT"))
            if cfg["short_chunk"] > 0 and len(body) > 1:
                cfg["short_chunk"] -= 1
                body = body[:len(body) // 2]
                s["data"] += body
                STATE["stats"]["chunks"] += 1
                self.send_response(308)
                self.send_header("Range", "bytes=0-%d" % (len(s["data"]) - 1))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            s["data"] += body
            STATE["stats"]["chunks"] += 1
            STATE["stats"]["max_chunk"] = max(STATE["stats"]["max_chunk"], len(body))
            if len(s["data"]) < s["total"]:
                self.send_response(308)
                self.send_header("Range", "bytes=0-%d" % (len(s["data"]) - 1))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            del STATE["sessions"][sid]
        return self.store(s["mode"], s["params"], s["metadata"], bytes(s["data"]), "resumable")

    # ---- behaviour -----------------------------------------------------------------------
    def multipart(self, mode, q, body):
        ctype = self.headers.get("Content-Type", "")
        m = re.match(r'multipart/related;\s*boundary="?([^";]+)"?', ctype)
        if not m:
            return self.reply(400, google_error(400, "badRequest", "Content-Type must be multipart/related", "INVALID_ARGUMENT"))
        delimiter = b"--" + m.group(1).encode()
        pieces = body.split(delimiter)
        # '', part1, part2, '--\r\n'
        if len(pieces) != 4 or not pieces[3].startswith(b"--"):
            return self.reply(400, google_error(400, "badRequest", "Malformed multipart body", "INVALID_ARGUMENT"))
        parts = []
        for p in pieces[1:3]:
            if not p.startswith(b"\r\n") or not p.endswith(b"\r\n"):
                return self.reply(400, google_error(400, "badRequest", "Malformed multipart part", "INVALID_ARGUMENT"))
            head, _, content = p[2:-2].partition(b"\r\n\r\n")
            parts.append((head.decode("latin-1").lower(), content))
        if "application/json" not in parts[0][0] or "message/rfc822" not in parts[1][0]:
            return self.reply(400, google_error(400, "badRequest", "Expected JSON then message/rfc822", "INVALID_ARGUMENT"))
        metadata = json.loads(parts[0][1] or b"{}")
        return self.store(mode, q, metadata, parts[1][1], "multipart")

    def start_session(self, mode, q, body):
        if self.headers.get("X-Upload-Content-Type") != "message/rfc822":
            return self.reply(400, google_error(400, "badRequest", "X-Upload-Content-Type must be message/*", "INVALID_ARGUMENT"))
        total = int(self.headers.get("X-Upload-Content-Length") or -1)
        sid = secrets.token_hex(8)
        with LOCK:
            STATE["stats"]["sessions"] += 1
            STATE["sessions"][sid] = {"mode": mode, "params": q, "metadata": json.loads(body or b"{}"),
                                      "total": total, "data": bytearray()}
        # The session URI is on the host the client asked (as Google's is): through a
        # proxy, it stays behind the proxy.
        host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1]
        self.send_response(200)
        self.send_header("Location", "http://%s/upload/session/%s" % (host, sid))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def store(self, mode, q, metadata, raw, upload_type):
        labels = metadata.get("labelIds", [])
        test = header_of(raw, "X-Test-Gmail")
        with LOCK:
            for label in labels:
                if label not in STATE["labels"] and label not in [l["id"] for l in STATE["labels"].values()]:
                    return self.reply(400, google_error(400, "invalidArgument", "Invalid label: %s" % label, "INVALID_ARGUMENT"))
            if test == "400":
                return self.reply(400, google_error(400, "invalidArgument", "Message blocked: an attachment may be harmful (.exe)", "INVALID_ARGUMENT"))
            mid = self.append(raw, labels, mode, q, upload_type)
            STATE["stats"]["uploads"] += 1
            STATE["stats"]["upload_times"].append(time.time())
            cfg = STATE["config"]
            if cfg["fail500_after_store"] > 0:
                cfg["fail500_after_store"] -= 1
                STATE["stats"]["server_errors"] += 1
                return self.reply(500, google_error(500, "backendError", "Backend Error", "INTERNAL"))
            garble = cfg["garble_2xx"] > 0
            if garble:
                cfg["garble_2xx"] -= 1
        if garble:
            data = b"<html>200 but not JSON</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if test == "slow":
            time.sleep(3)
        latency = float(STATE["config"]["latency"])
        if latency > 0:
            time.sleep(latency)
        return self.reply(200, {"id": mid, "threadId": mid, "labelIds": labels})

    def append(self, raw, labels, mode, q, upload_type):
        """Stores a message; call with LOCK held. Returns its id."""
        mid = "%016x" % (len(STATE["messages"]) + 0x18c0000000000000)
        STATE["messages"].append({
            "id": mid, "threadId": mid, "labelIds": labels, "raw": raw, "mode": mode,
            "uploadType": upload_type,
            "internalDateSource": q.get("internalDateSource"),
            "neverMarkSpam": q.get("neverMarkSpam"),
            "processForCalendar": q.get("processForCalendar"),
            "messageId": header_of(raw, "Message-ID"),
            "stored_at": time.time(),
        })
        return mid

    def get_message(self, mid):
        with LOCK:
            STATE["stats"]["gets"] += 1
            for x in STATE["messages"]:
                if x["id"] == mid:
                    return self.reply(200, {"id": x["id"], "threadId": x["threadId"],
                                            "labelIds": x["labelIds"], "sizeEstimate": len(x["raw"])})
        self.reply(404, google_error(404, "notFound", "Requested entity was not found.", "NOT_FOUND"))

    def create_label(self, body):
        req = json.loads(body or b"{}")
        name = req.get("name", "")
        with LOCK:
            STATE["stats"]["label_creates"] += 1
            if not name.strip() or name.lower() in RESERVED:
                return self.reply(400, google_error(400, "invalidArgument", "Invalid label name", "INVALID_ARGUMENT"))
            if any(l["name"].lower() == name.lower() for l in STATE["labels"].values()):
                return self.reply(409, google_error(409, "alreadyExists", "Label name exists or conflicts", "ALREADY_EXISTS"))
            label = {"id": new_label_id(), "name": name, "type": "user",
                     "labelListVisibility": req.get("labelListVisibility"),
                     "messageListVisibility": req.get("messageListVisibility")}
            STATE["labels"][name] = label
        return self.reply(200, label)

    def search(self, query):
        with LOCK:
            STATE["stats"]["searches"] += 1
            m = re.fullmatch(r'rfc822msgid:(?:"([^"]+)"|(\S+))', query)
            if not m:
                return self.reply(200, {"resultSizeEstimate": 0})
            want = (m.group(1) or m.group(2)).strip("<>")
            visible = time.time() - float(STATE["config"]["index_lag"])
            found = [{"id": x["id"], "threadId": x["threadId"]} for x in STATE["messages"]
                     if x["messageId"] and x["messageId"].strip("<>") == want
                     and x["stored_at"] <= visible]
        if not found:
            return self.reply(200, {"resultSizeEstimate": 0})
        return self.reply(200, {"messages": found, "resultSizeEstimate": len(found)})


def main():
    global TOKENINFO
    TOKENINFO = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
