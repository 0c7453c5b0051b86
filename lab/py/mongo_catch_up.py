"""Catches a restarted member of the scripted replica set up with the primary (a real
member's initial sync, in miniature): every document of every user collection the
source holds and the target lacks is inserted on the target, marked as replicated so
the target's front takes it whatever its role and does not replicate it on.

    python mongo_catch_up.py --source HOST:PORT --target HOST:PORT

Prints how many documents it copied; exits non-zero when a member cannot be read or
written (every wait is bounded by the client's timeouts).
"""

import argparse

from pymongo import MongoClient

SYSTEM = ("admin", "local", "config")
BATCH = 500


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    a = ap.parse_args()
    opts = dict(directConnection=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=2000,
                socketTimeoutMS=30000, readPreference="primaryPreferred")
    source, target = MongoClient(f"mongodb://{a.source}/", **opts), MongoClient(f"mongodb://{a.target}/", **opts)
    copied = 0
    for db_name in source.list_database_names():
        if db_name in SYSTEM:
            continue
        for collection in source[db_name].list_collection_names():
            have = {doc["_id"] for doc in target[db_name][collection].find({}, {"_id": 1})}
            missing = [doc for doc in source[db_name][collection].find({}) if doc["_id"] not in have]
            for start in range(0, len(missing), BATCH):
                batch = missing[start:start + BATCH]
                target[db_name].command({"insert": collection, "documents": batch, "replicatedFrom": "catch-up"})
                copied += len(batch)
    print(f"copied {copied} documents from {a.source} to {a.target}", flush=True)


if __name__ == "__main__":
    main()
