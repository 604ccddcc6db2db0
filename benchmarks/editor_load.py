"""The editor under a crowd: ``semsynth serve`` in a subprocess, ``--clients`` real
``gradio_client`` clients on 127.0.0.1 calling ``/generate_label`` all at once, ``--rounds``
times. Prints one JSON line per round (served, refused and their messages, latency median
and max, server resident memory, files in the server's temp folders) and a summary.

    python benchmarks/editor_load.py CHECKPOINT [--clients 48] [--rounds 3] [--k 1]
        [--queue-size 256] [--cache-seconds 3600]

The server's Gradio cache goes to a fresh ``GRADIO_TEMP_DIR`` so that its growth is counted.
Figures: docs/reliability.md ("The editor under load").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = ROOT / ".." / "shared" / "datasets" / "camvid" / "valannot" / "0016E5_07959.png"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB (Linux /proc)."""
    total = 0
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def count_files(*dirs: Path) -> int:
    return sum(1 for d in dirs if d.exists() for p in d.rglob("*") if p.is_file())


def crowd_round(clients, labels: str | list[str], k: int, seed0: int = 0) -> dict:
    """All clients call ``/generate_label`` at once (client ``i``: ``labels[i]``, seed
    ``seed0 + i``). Returns the counts and latencies, and under ``"results"`` what each client
    got: its list of image files, or the exception."""
    from gradio_client import handle_file

    labels = [labels] * len(clients) if isinstance(labels, str) else list(labels)
    results: list[tuple[bool, float, str]] = [(False, 0.0, "")] * len(clients)
    got: list = [None] * len(clients)
    start = threading.Barrier(len(clients))

    def one(i: int) -> None:
        start.wait()
        t = time.perf_counter()
        try:
            files = clients[i].predict(handle_file(labels[i]), seed0 + i, k, api_name="/generate_label")
            results[i] = (len(files) == k, time.perf_counter() - t, "")
            got[i] = files
        except Exception as exc:  # noqa: BLE001 — counted and reported
            results[i] = (False, time.perf_counter() - t, str(exc)[:160])
            got[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    ok = [r[1] for r in results if r[0]]
    return {"served": len(ok), "refused": len(clients) - len(ok), "wall_s": round(wall, 2),
            "latency_median_s": round(statistics.median(ok), 2) if ok else None,
            "latency_max_s": round(max(ok), 2) if ok else None,
            "messages": sorted({r[2] for r in results if not r[0]}), "results": got}


class Server:
    """``semsynth serve CHECKPOINT`` in a subprocess on a free port, its Gradio cache and temp
    files in a fresh folder (``tmp``); a context manager (``url``, ``pid``)."""

    def __init__(self, checkpoint: str, queue_size: int = 256, cache_seconds: float = 3600) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.tmp = Path(tempfile.mkdtemp(prefix="gradio-tmp-"))
        env = dict(os.environ, GRADIO_TEMP_DIR=str(self.tmp), TMPDIR=str(self.tmp))
        self.log = Path(tempfile.mkdtemp(prefix="semsynth-serve-log-")) / "serve.log"  # a pipe would fill and block it
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "semsynth.cli", "serve", checkpoint, "--port", str(port),
                                          "--queue-size", str(queue_size), "--cache-seconds", str(cache_seconds)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{port}/"
        self.pid = self.proc.pid

    def __enter__(self) -> "Server":
        for _ in range(480):
            try:
                urllib.request.urlopen(self.url, timeout=1)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.25)
        raise RuntimeError(f"server did not answer at {self.url}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--clients", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--queue-size", type=int, default=256)
    ap.add_argument("--cache-seconds", type=float, default=3600)
    args = ap.parse_args()
    from gradio_client import Client

    with Server(args.checkpoint, args.queue_size, args.cache_seconds) as server:
        clients = [Client(server.url, verbose=False) for _ in range(args.clients)]
        rounds = []
        for r in range(args.rounds):
            out = crowd_round(clients, str(LABEL), args.k)
            out.pop("results")
            out.update(round=r + 1, server_rss_mb=round(rss_mb(server.pid), 1), temp_files=count_files(server.tmp))
            rounds.append(out)
            print(json.dumps(out), flush=True)
        print(json.dumps({"summary": True, "clients": args.clients, "rounds": args.rounds,
                          "served": sum(r["served"] for r in rounds), "refused": sum(r["refused"] for r in rounds),
                          "rss_growth_after_round1_mb": round(rounds[-1]["server_rss_mb"] - rounds[0]["server_rss_mb"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
