"""Writes through a MySQL endpoint until STOP_FILE exists (or a bound is reached), as a
web application does, and prints one JSON line per write:
{"tag": ..., "start": t0, "end": t1, "ok": bool, "server_id": N, "error": "..."}.

    mysql_writer.py HOST PORT KIND TAG STOP_FILE

KIND: "sqlalchemy-pre-ping" (one SQLAlchemy engine, pool_pre_ping=True: the pool pings
a connection before handing it out and replaces it if the ping fails) or
"pymysql-per-request" (a new PyMySQL connection per write, as Django opens one per
request without persistent connections).
"""

import json
import os
import sys
import time

import pymysql

host, port, kind, tag, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ARGS = dict(host=host, port=port, user="app", password="apppass", database="appdb", connect_timeout=30,
            read_timeout=30, write_timeout=30)
INSERT = "INSERT INTO kv (v, server_id) VALUES (%s, @@server_id)"

if kind == "sqlalchemy-pre-ping":
    import sqlalchemy
    from sqlalchemy import text

    engine = sqlalchemy.create_engine(
        "mysql+pymysql://", connect_args=ARGS, pool_pre_ping=True, pool_size=1, max_overflow=0)

    def write(v):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO kv (v, server_id) VALUES (:v, @@server_id)"), {"v": v})
            return conn.execute(text("SELECT @@server_id")).scalar()
elif kind == "pymysql-per-request":
    def write(v):
        conn = pymysql.connect(**ARGS)
        try:
            with conn.cursor() as cur:
                cur.execute(INSERT, (v,))
                cur.execute("SELECT @@server_id")
                server_id = cur.fetchone()[0]
            conn.commit()
            return server_id
        finally:
            try:
                conn.close()
            except Exception:
                pass
else:
    sys.exit(f"unknown kind {kind}")

out = []
deadline = time.time() + 600
n = 0
while not os.path.exists(stop_file) and time.time() < deadline and n < 1_000_000:
    n += 1
    v = f"{tag}-{n}"
    start = time.time()
    try:
        server_id = write(v)
        out.append({"tag": v, "start": start, "end": time.time(), "ok": True, "server_id": int(server_id)})
    except Exception as e:  # every failure a client would see
        out.append({"tag": v, "start": start, "end": time.time(), "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    time.sleep(0.005)
for line in out:
    print(json.dumps(line))
