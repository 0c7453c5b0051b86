#!/usr/bin/env python3
"""One member of a scripted MongoDB replica set, for switchyard's tests and drills.

Real storage and CRUD come from nx-27017 (a MongoDB wire-protocol server on SQLite), one
SQLite file per member. In front of it, this script answers `hello`/`isMaster` with the
role that DIR/state.json scripts, and refuses writes on non-primaries the way a real
member does. One OS process per member, so kill -9 and SIGSTOP hit one member.

Replication: a write the primary of record accepts is applied to every other member
that answers (a slow one gets a generous timeout and a second try) before it is
acknowledged (as `w: "majority"` with a
caught-up election would leave it); a member that does not answer (killed, stopped)
misses it, as a member that fell behind would, and is skipped for a second. A write a
stale claimant accepts (see "claims") stays on that member alone, as a rollback would
lose it on a real set: a client that was told "ok" by a stale primary has lost that
write. Every write reply carries `labMember` (the member's 1-based index), so a client
can tell who acknowledged it; every `hello` answered as a stale claimant appends a line
to DIR/stale-hellos-PORT.log, so a test can tell the claim was seen.

    python mongo_member.py --dir DIR --port PORT

DIR/config.json: {"set": "rs0", "ports": [..], "max_wire": 21}
DIR/state.json (re-read whenever it changes):
    {"primary": "127.0.0.1:PORT" | null,   # who is primary
     "term": N,                             # election counter -> electionId 7fffffff<N>
     "setVersion": 1,
     "claims": {"127.0.0.1:PORT": N}}       # members that claim primary with an old term
"""
import argparse
import datetime
import json
import os
import sys
import threading
import time

from bson import Int64, ObjectId, Timestamp

WRITES = {"insert", "update", "delete", "findandmodify", "create", "drop", "dropdatabase", "createindexes",
          "dropindexes", "renamecollection", "collmod", "bulkwrite"}
# Commands that start a read; getMore continues a cursor the read preference of its
# find or aggregate already allowed (drivers never send a read preference with it),
# so it is not gated, as on a real server.
READS = {"find", "aggregate", "count", "distinct", "listcollections", "listindexes"}


class State:
    """state.json, reloaded when its modification time changes."""

    def __init__(self, path):
        self.path, self.mtime, self.value = path, None, None
        self.lock = threading.Lock()

    def get(self):
        with self.lock:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self.mtime:
                with open(self.path) as f:
                    self.value, self.mtime = json.load(f), mtime
            return self.value


def election_id(term):
    return ObjectId("7fffffff" + format(term, "016x"))


# Fields of a command that belong to the client's session, not to the write.
SESSION_FIELDS = {"lsid", "txnNumber", "autocommit", "startTransaction", "$clusterTime", "$readPreference", "$db"}


class Replicator:
    """Applies a write to the other members. A member that is only slow (a busy
    machine) still gets it: a generous timeout, and a second try. A member that did not
    answer twice is dead or stopped: it is skipped for a second instead of slowing
    every write down, and misses what is written meanwhile."""

    def __init__(self, me, hosts):
        from pymongo import MongoClient
        self.peers = {h: MongoClient(f"mongodb://{h}/?directConnection=true", serverSelectionTimeoutMS=2000,
                                     connectTimeoutMS=1000, socketTimeoutMS=5000)
                      for h in hosts if h != me}
        self.me, self.skip_until = me, {}

    def apply(self, db_name, command):
        for host, client in self.peers.items():
            if self.skip_until.get(host, 0) > time.monotonic():
                continue
            for attempt in (1, 2):
                try:
                    client[db_name].command(dict(command, replicatedFrom=self.me))
                    break
                except Exception as e:  # noqa: BLE001 - any failure: unreachable this time
                    print(f"replication to {host} failed (try {attempt}): {e}", flush=True)
            else:
                self.skip_until[host] = time.monotonic() + 1.0


def write_command(msg):
    """The write in `msg` as one command document (document sequences folded into the
    body), and its database."""
    body, sequences = {}, {}
    for kind, doc in msg["sections"]:
        if kind == "body":
            body = dict(doc)
        elif kind == "payload":
            sequences.update(doc)
        elif kind == "payload_docs":
            sequences.setdefault("documents", []).extend(doc)
    db_name = body.get("$db", "test")
    command = {k: v for k, v in body.items() if k not in SESSION_FIELDS}
    command.update(sequences)
    return db_name, command


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    me = f"127.0.0.1:{a.port}"
    hosts = [f"127.0.0.1:{p}" for p in cfg["ports"]]
    state = State(os.path.join(a.dir, "state.json"))

    def role():
        st = state.get()
        claim = st.get("claims", {}).get(me)
        if claim is not None:
            return True, claim, st
        return st.get("primary") == me, st["term"], st

    def hello(cmd, name):
        is_primary, term, st = role()
        if me in st.get("claims", {}):
            with open(os.path.join(a.dir, f"stale-hellos-{a.port}.log"), "a") as log:
                log.write(f"{time.time()} term {term}\n")
        now = datetime.datetime.now(datetime.timezone.utc)
        op_time = {"ts": Timestamp(int(now.timestamp()), 1), "t": Int64(term)}
        reply = {
            ("ismaster" if name == "ismaster" else "isWritablePrimary"): is_primary,
            "secondary": not is_primary,
            "setName": cfg["set"],
            "setVersion": st.get("setVersion", 1),
            "hosts": hosts,
            "me": me,
            "lastWrite": {"opTime": op_time, "lastWriteDate": now, "majorityOpTime": op_time, "majorityWriteDate": now},
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": now,
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": cfg.get("max_wire", 21),
            "readOnly": False,
            "ok": 1.0,
        }
        if st.get("primary"):
            reply["primary"] = st["primary"]
        if is_primary:
            reply["electionId"] = election_id(term)
        if cmd.get("helloOk"):
            reply["helloOk"] = True
        return reply

    def gate(cmd, secondary_ok):
        """A reply for what the replica-set front answers itself, or None to pass on."""
        if "$query" in cmd:
            cmd = cmd["$query"]
        name = next(iter(cmd), "").lower()
        if name in ("ismaster", "hello"):
            return hello(cmd, name)
        if cmd.pop("replicatedFrom", None) is not None:
            return None  # a write the primary of record replicates: applied whatever our role
        is_primary = role()[0]
        if name in WRITES and not is_primary:
            reply = {"ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary"}
            if "txnNumber" in cmd:  # as servers >= 4.4 do, so drivers retry the write
                reply["errorLabels"] = ["RetryableWriteError"]
            return reply
        if name in READS and not is_primary and not secondary_ok:
            return {"ok": 0.0, "errmsg": "not primary and secondaryOk=false", "code": 13435,
                    "codeName": "NotPrimaryNoSecondaryOk"}
        return None

    import nx_27017.handler as nx_handler
    from nx_27017.nx_27017 import main as nx_main

    replicator = Replicator(me, hosts)
    index = hosts.index(me) + 1

    def gated(original):
        def handle(self, msg):
            body = next((doc for kind, doc in msg["sections"] if kind == "body"), None) or {}
            name = next(iter(body), "").lower()
            replicated = "replicatedFrom" in body
            mode = (body.get("$readPreference") or {}).get("mode", "primary")
            reply = gate(body, mode != "primary")
            if reply is not None:
                return msg["request_id"], reply
            if name not in WRITES or replicated:
                return original(self, msg)
            # A write we accept: applied here, then (primary of record only) on the
            # others, before the client hears "ok".
            db_name, command = write_command(msg)
            # Whether we accept it as the primary of record, decided with the gate's
            # view: an election during the write does not unmake an accepted write.
            st = state.get()
            of_record = st.get("primary") == me and me not in st.get("claims", {})
            request_id, result = original(self, msg)
            if result.get("ok") and of_record:
                replicator.apply(db_name, command)
            result["labMember"] = index
            return request_id, result
        return handle

    handler = nx_handler.NeoSQLiteHandler
    handler.handle_command = gated(handler.handle_command)
    handler.handle_insert = gated(handler.handle_insert)
    pid_file = os.path.join(a.dir, f"nx-{a.port}.pid")
    if os.path.exists(pid_file):  # left behind by a kill -9; nx-27017 refuses to start over it
        os.unlink(pid_file)
    sys.argv = ["nx-27017", "--host", "127.0.0.1", "-p", str(a.port), "--db", os.path.join(a.dir, f"nx-{a.port}.db"),
                "--log-file", os.path.join(a.dir, f"nx-{a.port}.log"), "--pid-file", pid_file]
    print(f"member {me} pid {os.getpid()} serving", flush=True)
    nx_main()


if __name__ == "__main__":
    main()
