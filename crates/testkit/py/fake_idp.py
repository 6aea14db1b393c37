#!/usr/bin/env python3
"""A fake OAuth2 identity provider for mailferry's tests, on 127.0.0.1 only.

It answers in the documented shapes of Microsoft's identity platform v2 endpoints
(RFC 6749, RFC 7636 PKCE, RFC 8628 device authorization) and of Google's tokeninfo, which
Dovecot's oauth2 passdb asks about bearer tokens:

  POST /devicecode   client_id, scope
      200 {device_code, user_code, verification_uri, expires_in, interval, message}
  GET  /authorize    response_type=code, client_id, redirect_uri, scope, state,
                     code_challenge, code_challenge_method=S256 [, access_type=offline]
      302 to redirect_uri?code=..&state=..  (the "browser user" approves at once)
  POST /token        grant_type = urn:ietf:params:oauth:grant-type:device_code
                                | authorization_code (PKCE verified) | refresh_token
      200 {token_type: "Bearer", access_token, expires_in, scope, refresh_token?, id_token}
      400 {error, error_description, error_codes?}  (authorization_pending, slow_down,
          expired_token, access_denied, invalid_grant "AADSTS700082: ...", ...)
      A refresh rotates: the old refresh token dies, a new one is issued.
      A refresh token comes only with offline_access in scope, or access_type=offline.
  GET  /tokeninfo?access_token=T
      200 {email, active: true, ...} for a live token; 401 {error: invalid_token} otherwise

Test controls (not part of any provider):
  POST /control/grant?token=T&email=E     make T a live access token of E
  POST /control/approve?user_code=C&email=E   approve a device code as E
  POST /control/deny?user_code=C
  POST /control/revoke?email=E            kill every token of E (refresh and access)
  POST /control/set?KEY=VALUE             access_ttl (real life, s), declared_ttl (what
                                          expires_in says), browser_email, slow_down (answer
                                          the next N device polls with slow_down),
                                          date_offset (s added to the Date header),
                                          garble_2xx (the next N token replies are 200 with
                                          the tokens but an expires_in that is not a number),
                                          clock_offset (s added to the IdP's clock: a
                                          simulated year), refresh_idle (s after which an
                                          unused refresh token dies, AADSTS700082; Microsoft:
                                          90 days)
  POST /control/mint?email=E&client_id=C&scope=S   tokens as a finished sign-in gets them
  POST /control/fail_next?error=E&description=D   the next /token call fails with 400
  GET  /control/stats                     counters and the live refresh tokens

Binds port 0 and prints "PORT <n>" once listening. No arguments.
"""

import base64
import email.utils
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

LOCK = threading.Lock()
STATE = {
    "access": {},        # token -> {"email", "expires"}
    "refresh": {},       # token -> {"email", "client_id", "scope"}
    "devices": {},       # device_code -> {"user_code", "client_id", "scope", "email", "denied", "expires", "last_poll"}
    "codes": {},         # code -> {"client_id", "redirect_uri", "challenge", "scope", "email", "offline"}
    "config": {"access_ttl": 3600, "declared_ttl": 3600, "browser_email": "alice@test.example",
               "slow_down": 0, "date_offset": 0, "interval": 1, "garble_2xx": 0,
               "clock_offset": 0, "refresh_idle": 0},
    "fail_next": None,
    "stats": {"refreshes": 0, "device_polls": 0, "slow_downs": 0, "poll_times": [],
              "issued": 0, "code_exchanges": 0, "refresh_failures": 0, "last_access": None,
              "last_refresh": None},
}


def now():
    """The IdP's clock: the real one, moved on by clock_offset (a simulated year)."""
    return time.time() + float(STATE["config"]["clock_offset"])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue(email, client_id, scope, offline):
    """Issues tokens; call with LOCK held."""
    cfg = STATE["config"]
    access = "at-" + secrets.token_urlsafe(16)
    STATE["access"][access] = {"email": email, "expires": now() + float(cfg["access_ttl"])}
    body = {
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": int(cfg["declared_ttl"]),
        "ext_expires_in": int(cfg["declared_ttl"]),
        "scope": " ".join(s for s in scope.split() if s not in ("openid", "email")),
    }
    if offline:
        refresh = "rt-" + secrets.token_urlsafe(16)
        STATE["refresh"][refresh] = {"email": email, "client_id": client_id, "scope": scope,
                                     "issued": now()}
        body["refresh_token"] = refresh
        STATE["stats"]["last_refresh"] = refresh
    STATE["stats"]["last_access"] = access
    if cfg["garble_2xx"] > 0:
        cfg["garble_2xx"] -= 1
        body["expires_in"] = "soon, with " + access
    if "openid" in scope.split():
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        claims = b64url(json.dumps({"email": email, "preferred_username": email,
                                    "aud": client_id, "iat": int(now())}).encode())
        body["id_token"] = "%s.%s.fake-signature" % (header, claims)
    STATE["stats"]["issued"] += 1
    return body


def oauth_error(error, description, code=None):
    body = {"error": error, "error_description": description}
    if code is not None:
        body["error_codes"] = [code]
    return body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, each answer on
    # a kept-alive connection waits for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        offset = float(STATE["config"].get("date_offset", 0))
        return email.utils.formatdate(now() + offset, usegmt=True)

    def reply(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    # ---- GET ---------------------------------------------------------------------------
    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path == "/tokeninfo":
            return self.tokeninfo(q)
        if url.path == "/authorize":
            return self.authorize(q)
        if url.path == "/control/stats":
            with LOCK:
                stats = dict(STATE["stats"])
                stats["live_refresh_tokens"] = sorted(STATE["refresh"].keys())
            return self.reply(200, stats)
        return self.reply(404, {"error": "not_found"})

    def tokeninfo(self, q):
        token = q.get("access_token", "")
        with LOCK:
            entry = STATE["access"].get(token)
            live = entry is not None and entry["expires"] > now()
        if not live:
            return self.reply(401, {"error": "invalid_token", "error_description": "Invalid Value"})
        return self.reply(200, {"email": entry["email"], "active": True, "email_verified": "true",
                                "scope": "https://mail.google.com/",
                                "expires_in": str(int(entry["expires"] - now()))})

    def authorize(self, q):
        required = ["response_type", "client_id", "redirect_uri", "state", "code_challenge"]
        missing = [k for k in required if not q.get(k)]
        if missing or q.get("response_type") != "code":
            return self.reply(400, oauth_error("invalid_request", "missing " + ",".join(missing)))
        if q.get("code_challenge_method") != "S256":
            return self.reply(400, oauth_error("invalid_request", "code_challenge_method must be S256"))
        # Registered: http://127.0.0.1 and http://localhost, any port (loopback rule).
        if not q["redirect_uri"].startswith(("http://127.0.0.1:", "http://localhost:")):
            return self.reply(400, oauth_error("invalid_request", "AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.", 50011))
        code = "code-" + secrets.token_urlsafe(12)
        with LOCK:
            STATE["codes"][code] = {
                "client_id": q["client_id"], "redirect_uri": q["redirect_uri"],
                "challenge": q["code_challenge"], "scope": q.get("scope", ""),
                "email": STATE["config"]["browser_email"],
                "offline": q.get("access_type") == "offline",
            }
        sep = "&" if "?" in q["redirect_uri"] else "?"
        location = q["redirect_uri"] + sep + urlencode({"code": code, "state": q["state"]})
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # ---- POST --------------------------------------------------------------------------
    def do_POST(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path.startswith("/control/"):
            return self.control(url.path[len("/control/"):], q)
        form = self.form()
        if url.path == "/devicecode":
            return self.devicecode(form)
        if url.path == "/token":
            return self.token(form)
        return self.reply(404, {"error": "not_found"})

    def control(self, what, q):
        with LOCK:
            if what == "grant":
                STATE["access"][q["token"]] = {"email": q["email"], "expires": now() + 86400}
            elif what == "approve" or what == "deny":
                for d in STATE["devices"].values():
                    if d["user_code"] == q["user_code"]:
                        d["email"] = q.get("email")
                        d["denied"] = what == "deny"
                        break
                else:
                    return self.reply(404, {"error": "no such user_code"})
            elif what == "revoke":
                for table in ("access", "refresh"):
                    for t in [t for t, e in STATE[table].items() if e["email"] == q["email"]]:
                        del STATE[table][t]
            elif what == "set":
                for k, v in q.items():
                    STATE["config"][k] = v if k == "browser_email" else float(v)
            elif what == "fail_next":
                STATE["fail_next"] = (q["error"], q.get("description", ""))
            elif what == "mint":
                body = issue(q["email"], q["client_id"], q.get("scope", "offline_access"), True)
                return self.reply(200, body)
            else:
                return self.reply(404, {"error": "no such control"})
        return self.reply(200, {"ok": True})

    def devicecode(self, form):
        if not form.get("client_id"):
            return self.reply(400, oauth_error("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'client_id'.", 900144))
        scope = form.get("scope", "")
        device_code = "dc-" + secrets.token_urlsafe(16)
        user_code = secrets.token_hex(4).upper()
        port = self.server.server_address[1]
        with LOCK:
            STATE["devices"][device_code] = {
                "user_code": user_code, "client_id": form["client_id"], "scope": scope,
                "email": None, "denied": False, "expires": now() + 900, "last_poll": None,
            }
            interval = int(STATE["config"]["interval"])
        uri = "http://127.0.0.1:%d/devicelogin" % port
        return self.reply(200, {
            "device_code": device_code, "user_code": user_code, "verification_uri": uri,
            "expires_in": 900, "interval": interval,
            "message": "To sign in, use a web browser to open the page %s and enter the code %s to authenticate." % (uri, user_code),
        })

    def token(self, form):
        grant = form.get("grant_type")
        with LOCK:
            if STATE["fail_next"] is not None:
                error, description = STATE["fail_next"]
                STATE["fail_next"] = None
                if grant == "refresh_token":
                    STATE["stats"]["refresh_failures"] += 1
                return self.reply(400, oauth_error(error, description))
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                return self.device_token(form)
            if grant == "authorization_code":
                return self.code_token(form)
            if grant == "refresh_token":
                return self.refresh_token(form)
        return self.reply(400, oauth_error("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.", 70003))

    def device_token(self, form):
        stats = STATE["stats"]
        stats["device_polls"] += 1
        stats["poll_times"].append(now())
        d = STATE["devices"].get(form.get("device_code", ""))
        if d is None or d["client_id"] != form.get("client_id"):
            return self.reply(400, oauth_error("invalid_grant", "AADSTS70000: The provided value for the 'device_code' is not valid.", 70000))
        if STATE["config"]["slow_down"] > 0:
            STATE["config"]["slow_down"] -= 1
            stats["slow_downs"] += 1
            return self.reply(400, oauth_error("slow_down", "AADSTS70016: polling too fast"))
        if now() > d["expires"]:
            return self.reply(400, oauth_error("expired_token", "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. This device code has expired.", 70020))
        if d["denied"]:
            return self.reply(400, oauth_error("access_denied", "AADSTS70021: The user declined.", 70021))
        if d["email"] is None:
            return self.reply(400, oauth_error("authorization_pending", "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.", 70016))
        del STATE["devices"][form["device_code"]]
        offline = "offline_access" in d["scope"].split()
        return self.reply(200, issue(d["email"], d["client_id"], d["scope"], offline))

    def code_token(self, form):
        STATE["stats"]["code_exchanges"] += 1
        c = STATE["codes"].pop(form.get("code", ""), None)
        if c is None:
            return self.reply(400, oauth_error("invalid_grant", "AADSTS70000: The provided authorization code is invalid or expired.", 70000))
        if c["client_id"] != form.get("client_id") or c["redirect_uri"] != form.get("redirect_uri"):
            return self.reply(400, oauth_error("invalid_grant", "AADSTS50148: The code_verifier or redirect_uri does not match.", 50148))
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != c["challenge"]:
            return self.reply(400, oauth_error("invalid_grant", "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.", 501481))
        offline = c["offline"] or "offline_access" in c["scope"].split()
        return self.reply(200, issue(c["email"], c["client_id"], c["scope"], offline))

    def refresh_token(self, form):
        STATE["stats"]["refreshes"] += 1
        old = form.get("refresh_token", "")
        r = STATE["refresh"].get(old)
        idle = float(STATE["config"]["refresh_idle"])
        if r is not None and idle > 0 and now() - r["issued"] > idle:
            # Microsoft: a refresh token unused for 90 days is dead (AADSTS700082).
            del STATE["refresh"][old]
            r = None
        if r is None or r["client_id"] != form.get("client_id"):
            STATE["stats"]["refresh_failures"] += 1
            return self.reply(400, oauth_error(
                "invalid_grant",
                "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was inactive for 90.00:00:00.",
                700082))
        del STATE["refresh"][old]
        return self.reply(200, issue(r["email"], r["client_id"], r["scope"], True))


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
