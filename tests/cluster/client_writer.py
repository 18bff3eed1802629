"""The application in the cluster tests: runs in the lab's client namespace and writes through
the VIP, one transaction per id (insert a ledger row, bump an account), logging each id whose
COMMIT returned OK — what the application saw committed — and each failure, with timestamps.

Usage: client_writer.py HOST DBNAME LOGFILE INTERVAL_S

A failed or unknown commit is never retried with the same id (its outcome is unknown to the
client, as for a real application); the next attempt takes the next id.  TCP keepalives and
``tcp_user_timeout`` make a connection to a vanished server fail within a few seconds instead
of hanging; no statement_timeout, because cancelling a synchronous commit's wait returns
success for a commit that was not replicated.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import psycopg


def main() -> None:
    host, db, path, interval = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    conn: psycopg.Connection | None = None
    next_id = 1
    while True:
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(
                    host=host, dbname=db, user="postgres", connect_timeout=2, keepalives=1,
                    keepalives_idle=1, keepalives_interval=1, keepalives_count=2, tcp_user_timeout=3000,
                    application_name="app-writer",
                )  # fmt: skip
            i = next_id
            next_id += 1
            with conn.transaction():
                conn.execute("INSERT INTO ledger (id) VALUES (%s)", (i,))
                conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (i % 10,))
            out.write(json.dumps({"id": i, "t": time.time()}) + "\n")
        except psycopg.Error as exc:
            out.write(json.dumps({"err": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                  "t": time.time()}) + "\n")  # fmt: skip
            if conn is not None:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            conn = None
            time.sleep(0.2)  # pacing of a client's reconnect attempts, not synchronisation
            continue
        time.sleep(interval)  # the application's write rate


if __name__ == "__main__":
    main()
