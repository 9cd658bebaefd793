#!/usr/bin/env python3
"""`make health`: every service of the running system as a table, from the pipeline worker's /health.

    deploy/health-table.py [URL]     (default http://127.0.0.1:6066/health)

Exit status 0 when no service is failing, 1 otherwise, 2 when the pipeline
worker does not answer. Standard library only.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def main(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: the worker is failing, and says why
        body = json.loads(exc.read())
    except (OSError, ValueError) as exc:
        print(f"health: the pipeline worker at {url} does not answer ({exc.__class__.__name__}): start it, or make up")
        return 2
    rows = [("service", "status", "detail")]
    rows += [(name, e["status"], e["detail"]) for name, e in sorted(body.get("services", {}).items())]
    rows += [(f"pipeline/{name}", e["status"], e["detail"]) for name, e in body.get("checks", {}).items()]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, status, detail in rows:
        print(f"{name:<{width[0]}}  {status:<{width[1]}}  {detail}")
    return 1 if any(r[1] == "failing" for r in rows[1:]) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:6066/health"))
