"""The floor: a FastAPI endpoint that only parses the request JSON and answers a constant.

No model, no validation: what one core can do with uvicorn + FastAPI for this payload.
Run: python floor_app.py PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()
ANSWER = orjson.dumps({"predictions": [[0.1] * 10]})


@app.post("/v1/models/{name}:predict")
async def predict(name: str, request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
