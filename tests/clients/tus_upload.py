#!/usr/bin/env python3
"""Uploads a file with tuspy, a tus client Cascade did not write, for the
integration tests.

Prints `CHUNK <offset>` after each chunk. With --pause-after N it prints
`PAUSED` after N chunks and waits for a line on stdin, then resumes as a
fresh client from the upload URL (a HEAD asks the server for the offset) and
prints `RESUMED <offset>`. With several --endpoint values the chunks go to
the replicas in turn. Ends with `DONE <upload url>`.
"""
import argparse
import sys

from tusclient import client

parser = argparse.ArgumentParser()
parser.add_argument("--endpoint", action="append", required=True, help="base URL of an ingest replica")
parser.add_argument("--key", required=True)
parser.add_argument("--file", required=True)
parser.add_argument("--chunk-size", type=int, default=256 * 1024)
parser.add_argument("--pause-after", type=int, default=0)
args = parser.parse_args()

headers = {"Authorization": f"Bearer {args.key}"}


def uploader(url=None):
    tus = client.TusClient(args.endpoint[0] + "/v1/uploads", headers=headers)
    return tus.uploader(
        args.file,
        url=url,
        chunk_size=args.chunk_size,
        metadata={"filename": "fixture.mp4"},
        retries=10,
        retry_delay=1,
        upload_checksum=True,
    )


def on_replica(url, n):
    """The same upload URL on replica n."""
    path = url[url.index("/v1/uploads"):]
    return args.endpoint[n % len(args.endpoint)] + path


upload = uploader()
size = upload.get_file_size()
chunks = 0
while upload.offset < size:
    if upload.url and len(args.endpoint) > 1:
        upload.url = on_replica(upload.url, chunks)
    upload.upload_chunk()
    chunks += 1
    print(f"CHUNK {upload.offset}", flush=True)
    if args.pause_after and chunks == args.pause_after:
        print("PAUSED", flush=True)
        sys.stdin.readline()
        upload = uploader(url=upload.url)
        print(f"RESUMED {upload.offset}", flush=True)
print(f"DONE {upload.url}", flush=True)
