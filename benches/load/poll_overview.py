"""Polls GET /qiflow/api/overview like N open dashboards: each its own keep-alive connection, one
request at a time, 2 s apart (what the /qiflow/ page does). One process for all of them, so the
client side costs little next to wrk on the same CPU. Runs until killed.

    python3 benches/load/poll_overview.py PORT TOKEN_FILE PAGES [PATH]

PATH (default /qiflow/api/overview) polls another path at the same rate: /health/live gives the
floor, what any request every 2 s per page costs the server.
"""

import http.client
import sys
import time


def main() -> None:
    port, token_file, pages = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "/qiflow/api/overview"
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(pages)]
    # The pages opened at different moments: their polls are spread over the 2 s period.
    period = 2.0
    start = time.monotonic()
    due = [start + period * i / max(pages, 1) for i in range(pages)]
    answered = failed = 0
    while True:
        i = min(range(pages), key=due.__getitem__)
        delay = due[i] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            connections[i].request("GET", path, headers=headers)
            response = connections[i].getresponse()
            response.read()
            if response.status == 200:
                answered += 1
            else:
                failed += 1
        except OSError:
            failed += 1
            connections[i].close()
            connections[i] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        due[i] += period
        if failed > 10 and answered == 0:
            sys.exit(f"poll_overview: {failed} polls failed, none answered 200")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
