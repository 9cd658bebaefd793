#!/usr/bin/env python3
"""Container health check: f2-healthcheck PORT [PATH].

Exits 0 when GET http://127.0.0.1:PORT/PATH (default /health) answers 2xx
within 3 seconds, 1 otherwise. Standard library only, so it costs one short
Python start per check.
"""

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: f2-healthcheck PORT [PATH]", file=sys.stderr)
        return 2
    port = int(argv[1])
    path = argv[2] if len(argv) == 3 else "/health"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
