#!/usr/bin/env python3
"""A Prometheus stand-in for bench/scale.sh: answers the instant queries of
serin's Prometheus metric source (GET /api/v1/query?query=Q&time=T) with
counters that grow steadily, so every rollout has fresh data at each verdict
without anything scraping anything.

    bench/prometheus-standin.py SECONDS PORT [PORT...]

Queries, `{{version}}` already replaced by serin (the rollout files of
bench/scale.sh use these names):
  requests_stable / requests_canary   RATE requests/s since the start
  errors_stable / errors_canary       0.5 % of them
  latency_stable / latency_canary     cumulative buckets by le (seconds)
Both versions answer the same numbers: the judge passes every interval, and
the rollouts stay in their pause. Any other path answers 200 `ok`, so the
same server on two more ports stands in for the upstreams the daemon
health-checks before a rollout starts. Listens on 127.0.0.1 only,
keep-alive, one asyncio loop (cheap: a few hundred queries/s at 500
rollouts); exits after SECONDS.
"""

import asyncio
import sys
import time
from urllib.parse import parse_qs, urlsplit

RATE = 20.0
ERRORS = 0.005
# Share of requests at or below each bound (seconds).
BUCKETS = [("0.01", 0.30), ("0.025", 0.70), ("0.05", 0.90), ("0.1", 0.97), ("0.25", 0.995), ("1", 1.0)]
START = time.time()


def vector(at, series):
    items = ",".join(
        '{"metric":{%s},"value":[%.3f,"%d"]}' % (labels, at, value) for labels, value in series
    )
    return '{"status":"success","data":{"resultType":"vector","result":[%s]}}' % items


def answer(target):
    url = urlsplit(target)
    if url.path != "/api/v1/query":
        return 200, "ok\n"
    q = parse_qs(url.query)
    query = q.get("query", [""])[0]
    at = float(q.get("time", [time.time()])[0])
    n = max(0.0, at - START) * RATE
    if query.startswith("requests_"):
        return 200, vector(at, [("", int(n))])
    if query.startswith("errors_"):
        return 200, vector(at, [("", int(n * ERRORS))])
    if query.startswith("latency_"):
        series = [('"le":"%s"' % le, int(n * share)) for le, share in BUCKETS]
        series.append(('"le":"+Inf"', int(n)))
        return 200, vector(at, series)
    return 400, '{"status":"error","errorType":"bad_data","error":"unknown query"}'


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            status, body = answer(parts[1]) if len(parts) == 3 else (400, "{}")
            data = body.encode()
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % (status, b"OK" if status == 200 else b"Bad Request", len(data))
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(seconds, ports):
    servers = [await asyncio.start_server(serve, "127.0.0.1", p, backlog=1024) for p in ports]
    await asyncio.sleep(seconds)
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), [int(p) for p in sys.argv[2:]]))
