"""The bare floor: a plain ASGI app on uvicorn + httptools + uvloop, no framework.

It reads the body, parses it with orjson (the same JSON our server parses) and answers a
constant: what one core can do for this payload before any routing, validation or model.
Run: python bare_floor.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import uvicorn

ANSWER = orjson.dumps({"predictions": [[0.1] * 10]})
READY = orjson.dumps({"ready": True})
HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    answer = READY
    if scope["method"] == "POST":
        orjson.loads(body)
        answer = ANSWER
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        access_log=False, log_level="warning", lifespan="on",
    )  # fmt: skip
