"""pusher-http-python operations for the compat suite.

Usage: python ops.py OP '{"config": {...}, ...args}'
       python ops.py serve '{"config": {...}}'

`serve` keeps one process for many calls (the webhook receiver validates every request it gets
this way instead of starting Python per request): it reads one JSON object per line on stdin,
`{"id": ANY, "op": OP, "args": {...}}` (`config` is taken from the serve argument unless `args`
has its own), and answers each with one line, the object described below plus the same `id`. It
ends at the end of stdin.

`config` is {app_id, key, secret, host, port, ssl}; `config_overrides` (optional) is merged over it,
e.g. {"secret": "wrong"} or {"app_id": "999"} or {"encryption_master_key_base64": "..."}.

Prints exactly one JSON object on stdout and exits 0:
  {"ok": true, "result": ..., "sent": BOOL, "http_status": N|null}
  {"ok": false, "error": CLASS, "status": N|null, "message": TEXT, "sent": BOOL, "http_status": N|null}

`error` is the exception class name: the SDK's typed errors (PusherBadRequest, PusherBadAuth,
PusherForbidden, PusherBadStatus), its client-side validation errors (ValueError, TypeError), or a
transport error (requests' ConnectionError, ...). `status` is the HTTP status the error stands for
(400/401/403 from the class, N from PusherBadStatus' "N: body" text), null for client-side errors.
`sent` says whether an HTTP request actually left the SDK and `http_status` is the status of its
response; both are observed with a requests response hook, the SDK itself is used unmodified.

Every op calls the SDK's public API exactly as an application would. Nothing here knows Herald.
"""

import base64
import json
import re
import sys

import pusher
import pusher.errors

# HTTP status each typed exception stands for (pusher/http.py process_response).
STATUS_OF = {
    "PusherBadRequest": 400,
    "PusherBadAuth": 401,
    "PusherForbidden": 403,
}

CONFIG_KEYS = (
    "app_id", "key", "secret", "host", "port", "ssl", "timeout", "cluster",
    "encryption_master_key_base64",
)


class Observed(object):
    """What went over the wire, recorded by a requests response hook."""

    def __init__(self):
        self.responses = []

    def hook(self, response, *args, **kwargs):
        self.responses.append({
            "status": response.status_code,
            "method": response.request.method,
            "url": response.request.url,
        })
        return response

    @property
    def sent(self):
        return bool(self.responses)

    @property
    def http_status(self):
        return self.responses[-1]["status"] if self.responses else None


def make_client(args, observed):
    config = dict(args["config"])
    config.update(args.get("config_overrides") or {})
    kwargs = {k: config[k] for k in CONFIG_KEYS if k in config and config[k] is not None}
    kwargs["app_id"] = str(kwargs["app_id"])
    kwargs["port"] = int(kwargs["port"])
    kwargs["ssl"] = bool(kwargs.get("ssl", False))
    c = pusher.Pusher(**kwargs)
    # Both inner clients have their own requests.Session (RequestsBackend); observe both.
    for inner in (c._pusher_client, c._authentication_client):
        session = getattr(inner.http, "session", None)
        if session is not None:
            session.hooks["response"].append(observed.hook)
    return c


# --- REST calls ------------------------------------------------------------------------------

def op_trigger(c, args):
    return c.trigger(args["channels"], args["event"], args["data"], args.get("socket_id"))


def op_trigger_batch(c, args):
    return c.trigger_batch(args["batch"], bool(args.get("already_encoded", False)))


def op_send_to_user(c, args):
    return c.send_to_user(args["user_id"], args["event"], args["data"])


def op_channels_info(c, args):
    return c.channels_info(args.get("prefix_filter"), args.get("attributes") or [])


def op_channel_info(c, args):
    return c.channel_info(args["channel"], args.get("attributes") or [])


def op_users_info(c, args):
    return c.users_info(args["channel"])


def op_terminate_user_connections(c, args):
    return c.terminate_user_connections(args["user_id"])


# --- helpers that make no HTTP call ------------------------------------------------------------

def op_authenticate(c, args):
    """Channel authorization (private-, presence-, private-encrypted-). pusher-http-python 3.3.4
    calls it `authenticate`; later versions may add `authorize_channel`: use whichever exists."""
    helper = getattr(c, "authenticate", None) or getattr(c, "authorize_channel")
    return helper(args["channel"], args["socket_id"], args.get("custom_data"))


def op_authenticate_user(c, args):
    return c.authenticate_user(args["socket_id"], args.get("user_data"))


def op_validate_webhook(c, args):
    return c.validate_webhook(args["key"], args["signature"], args["body"])


# The request the SDK would send for a REST call, without sending it (method, path, query
# parameters incl. the signature, body). Shows which SDK quirks a scenario exercises.
REQUEST_BUILDERS = {
    "trigger": lambda c, a: c._pusher_client.trigger.make_request(
        a["channels"], a["event"], a["data"], a.get("socket_id")),
    "trigger_batch": lambda c, a: c._pusher_client.trigger_batch.make_request(
        a["batch"], bool(a.get("already_encoded", False))),
    "channels_info": lambda c, a: c._pusher_client.channels_info.make_request(
        a.get("prefix_filter"), a.get("attributes") or []),
    "channel_info": lambda c, a: c._pusher_client.channel_info.make_request(
        a["channel"], a.get("attributes") or []),
    "users_info": lambda c, a: c._pusher_client.users_info.make_request(a["channel"]),
    "terminate_user_connections": lambda c, a: c._pusher_client.terminate_user_connections
    .make_request(a["user_id"]),
}


def op_describe_request(c, args):
    request = REQUEST_BUILDERS[args["call"]](c, args.get("args") or {})
    return {
        "method": request.method,
        "path": request.path,
        "query_params": request.query_params,
        "body": request.body.decode("utf8"),
        "url": request.url,
        "headers": request.headers,
    }


OPS = {
    "trigger": op_trigger,
    "trigger_batch": op_trigger_batch,
    "send_to_user": op_send_to_user,
    "channels_info": op_channels_info,
    "channel_info": op_channel_info,
    "users_info": op_users_info,
    "terminate_user_connections": op_terminate_user_connections,
    "authenticate": op_authenticate,
    "authorize_channel": op_authenticate,
    "authenticate_user": op_authenticate_user,
    "validate_webhook": op_validate_webhook,
    "describe_request": op_describe_request,
}


def to_json(value):
    def default(obj):
        if isinstance(obj, (bytes, bytearray)):
            return bytes(obj).decode("ascii")  # e.g. the base64 shared_secret of encrypted channels
        raise TypeError("not JSON serializable: %r" % (obj,))
    return json.dumps(value, default=default)


def error_status(error, observed):
    name = type(error).__name__
    if name in STATUS_OF:
        return STATUS_OF[name]
    if isinstance(error, pusher.errors.PusherBadStatus):
        match = re.match(r"^(\d{3}): ", str(error))
        if match:
            return int(match.group(1))
    if isinstance(error, pusher.errors.PusherError):
        return observed.http_status
    return None


def run_op(op, args):
    """Runs one op; returns the JSON-ready object described at the top of this file."""
    observed = Observed()
    try:
        c = make_client(args, observed)
        result = OPS[op](c, args)
        out = {"ok": True, "result": result}
    except Exception as error:  # SDK typed errors, client-side validation, transport errors
        out = {
            "ok": False,
            "error": type(error).__name__,
            "status": error_status(error, observed),
            "message": str(error),
        }
    out["sent"] = observed.sent
    out["http_status"] = observed.http_status
    return out


def serve(base):
    """One JSON request per stdin line, one JSON answer per stdout line, in order."""
    for line in sys.stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            op = request.get("op")
            if op not in OPS:
                raise ValueError("unknown op %r" % (op,))
            args = dict(request.get("args") or {})
            args.setdefault("config", base["config"])
            out = run_op(op, args)
        except Exception as error:  # a malformed request line: answer it, keep serving
            out = {"ok": False, "error": type(error).__name__, "status": None,
                   "message": str(error), "sent": False, "http_status": None}
        out["id"] = request_id
        sys.stdout.write(to_json(out) + "\n")
        sys.stdout.flush()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(json.loads(sys.argv[2]))
        return
    if len(sys.argv) != 3 or sys.argv[1] not in OPS:
        print(json.dumps({"ok": False, "error": "UsageError", "status": None,
                          "message": "usage: ops.py {%s|serve} ARGS_JSON" % "|".join(sorted(OPS))}))
        return
    op, raw = sys.argv[1], sys.argv[2]
    print(to_json(run_op(op, json.loads(raw))))


if __name__ == "__main__":
    main()
