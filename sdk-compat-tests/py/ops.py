"""pusher-http-python operations for the compat suite.

Usage: python ops.py OP '{"config": {...}, ...args}'
Prints one JSON object: {"ok": true, "result": ...} or {"ok": false, "error": CLASS, "status": N,
"message": TEXT}. The suite (Node) asserts on it; nothing here knows Herald.
"""

import json
import sys

import pusher


def client(config):
    return pusher.Pusher(
        app_id=config["app_id"],
        key=config["key"],
        secret=config["secret"],
        host=config["host"],
        port=int(config["port"]),
        ssl=bool(config.get("ssl", False)),
    )


def op_trigger(c, args):
    return c.trigger(args["channels"], args["event"], args["data"], args.get("socket_id"))


OPS = {
    "trigger": op_trigger,
}


def main():
    op, raw = sys.argv[1], sys.argv[2]
    args = json.loads(raw)
    c = client(args["config"])
    try:
        result = OPS[op](c, args)
        print(json.dumps({"ok": True, "result": result}))
    except pusher.errors.PusherError as error:  # pusher's typed errors carry the HTTP status
        print(json.dumps({
            "ok": False,
            "error": type(error).__name__,
            "status": getattr(error, "status", None),
            "message": str(error),
        }))


if __name__ == "__main__":
    main()
