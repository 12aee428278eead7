"""``irn-serve-bench``: load-test ``irn-serve`` on loopback against the same backend in process.

N client threads (each its own :class:`~irn_trt.runtime.client.RemoteRescaler`, one
connection) send ``--requests`` images (or as many as fit ``--duration``) of several
sizes; every response is compared with the in-process result of a local
:class:`~irn_trt.runtime.api.Rescaler` on the same backend and settings, so nothing
lost, duplicated, mixed up or altered goes unnoticed. The in-process pass runs the
distinct images once before the load and once after (after an untimed pass that makes
the reference results), in this process, while the server (started here as a child on
free loopback ports unless ``--server`` is given) idles: the serving overhead is the
ratio of the two throughputs, measured side by side.

The JSON report: throughput (images/s, megapixels/s), latency p50/p95/p99/max,
errors, mismatches, lost and duplicated responses, the in-process throughput and the
ratio, and the server's own Prometheus counters (requests, executions: how much the
dynamic batcher merged, queue and compute time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IRNError, cli_entry

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "LoadResult",
    "ServerProcess",
    "in_process_pass",
    "main",
    "make_images",
    "percentile",
    "run_load",
    "scrape_metrics",
]

PROG = "irn-serve-bench"
DEFAULT_SIZES = "256,512,768,1024"


# --- the server as a child process --------------------------------------------------------


class ServerProcess:
    """``irn-serve`` in a child process on free loopback ports; ``stop()`` sends SIGTERM."""

    def __init__(
        self,
        model_dirs: Sequence[str | os.PathLike[str]],
        args: Sequence[str] = (),
        startup_timeout: float = 180.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="irn-serve-")
        self.ready_file = Path(self._tmp.name) / "ready.json"
        self.log_path = Path(self._tmp.name) / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "irn_trt.runtime.serve",
            *map(str, model_dirs),
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--ready-file",
            str(self.ready_file),
            *args,
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + startup_timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                self._log.close()
                raise IRNError(f"irn-serve exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise IRNError(
                    f"irn-serve not ready after {startup_timeout:.0f} s: {self.log_tail()}"
                )
            time.sleep(0.2)
        self.info: dict[str, Any] = json.loads(self.ready_file.read_text())
        self.http: str = self.info["http"]
        self.grpc: str = self.info["grpc"]
        self.metrics: str = self.info["metrics"]

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        keep = [ln for ln in text.splitlines() if ln.strip()]
        return "\n".join(keep[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        self._tmp.cleanup()
        return int(self.proc.returncode)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- workload -----------------------------------------------------------------------------


def make_images(sizes: Sequence[int], image: str | None = None) -> list[np.ndarray]:
    """One square image per size: crops of ``image`` (resized up if small), else synthetic."""
    from .bench import bench_image

    return [bench_image(image, s, s) for s in sizes]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def in_process_pass(
    rescaler: Any, images: Sequence[np.ndarray], direction: str
) -> tuple[list[np.ndarray], float]:
    """Every image once through the local Rescaler: (results, seconds)."""
    run = rescaler.downscale if direction == "down" else rescaler.upscale
    t0 = time.perf_counter()
    out = [run(img) for img in images]
    return out, time.perf_counter() - t0


@dataclass
class LoadResult:
    clients: int
    requests: int  # sent
    ok: int = 0
    errors: int = 0
    mismatches: int = 0
    lost: int = 0  # sent without any answer (neither result nor error)
    duplicates: int = 0  # answered more than once
    wall_s: float = 0.0
    megapixels: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        d = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms",)}
        d.update(
            {
                "images_per_s": round(self.ok / self.wall_s, 3) if self.wall_s else None,
                "megapixels_per_s": round(self.megapixels / self.wall_s, 4)
                if self.wall_s
                else None,
                "latency_ms": {
                    "p50": round(percentile(lat, 50), 1),
                    "p95": round(percentile(lat, 95), 1),
                    "p99": round(percentile(lat, 99), 1),
                    "max": round(max(lat), 1) if lat else None,
                    "mean": round(statistics.fmean(lat), 1) if lat else None,
                },
            }
        )
        return d


def run_load(
    url: str,
    images: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    clients: int,
    requests: int,
    direction: str = "down",
    duration: float | None = None,
    model: str | None = None,
) -> LoadResult:
    """``clients`` threads share ``requests`` jobs (image ``i % len(images)``); each result
    is compared with ``expected``. Stops issuing new jobs after ``duration`` seconds."""
    import numpy as np

    from .client import RemoteRescaler

    jobs: queue.Queue[int] = queue.Queue()
    for i in range(requests):
        jobs.put(i)
    answers = [0] * requests
    res = LoadResult(clients=clients, requests=0)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [float("inf")]

    def worker() -> None:
        rr = RemoteRescaler.connect(url, model=model)
        try:
            start.wait()
            while time.perf_counter() < deadline[0]:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                k = i % len(images)
                img = images[k]
                run = rr.downscale if direction == "down" else rr.upscale
                with lock:
                    res.requests += 1
                t0 = time.perf_counter()
                try:
                    out = run(img)
                except IRNError as exc:
                    with lock:
                        answers[i] += 1
                        res.errors += 1
                        if len(res.error_samples) < 5:
                            res.error_samples.append(str(exc))
                    continue
                ms = (time.perf_counter() - t0) * 1000.0
                same = np.array_equal(out, expected[k])
                hr = img.shape[0] * img.shape[1] * (1 if direction == "down" else rr.scale**2)
                with lock:
                    answers[i] += 1
                    res.latencies_ms.append(ms)
                    if same:
                        res.ok += 1
                        res.megapixels += hr / 1e6
                    else:
                        res.mismatches += 1
        finally:
            rr.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    if duration is not None:
        deadline[0] = t0 + duration
    for t in threads:
        t.join()
    res.wall_s = time.perf_counter() - t0
    sent = res.requests
    res.lost = sum(1 for i in range(sent) if answers[i] == 0)
    res.duplicates = sum(1 for a in answers if a > 1)
    return res


_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)


def scrape_metrics(metrics_url: str, timeout: float = 10.0) -> dict[str, dict[str, float]]:
    """Triton's Prometheus counters per model: ``{model: {metric: value}}`` (failures summed
    over reasons)."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name not in _METRICS or 'model="' not in line:
            continue
        model = line.split('model="', 1)[1].split('"', 1)[0]
        value = float(line.rsplit(" ", 1)[1])
        bucket = out.setdefault(model, {})
        bucket[name] = bucket.get(name, 0.0) + value
    return out


def _delta(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]) -> dict:
    return {
        m: {k: v - before.get(m, {}).get(k, 0.0) for k, v in vals.items()}
        for m, vals in after.items()
    }


# --- CLI ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Load-test irn-serve on loopback: N concurrent clients, every response "
        "checked against the same backend in process, throughput and latency percentiles, "
        "the server's own metrics and the serving overhead (server / in-process throughput), "
        "as JSON. Starts irn-serve itself on free loopback ports unless --server is given.",
        epilog="examples:\n"
        "  irn-serve-bench build/irn_x4 --backend ov-cpu --threads 1 --clients 8 --requests 200\n"
        "  irn-serve-bench build/irn_x4 --sizes 64,128 --requests 16 --clients 4 --json -\n"
        "  irn-serve-bench build/irn_x4 --server grpc://10.0.0.5:8001 --duration 60\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", type=Path, help="the model directory (local reference results)")
    p.add_argument("--server", help="an irn-serve already running (default: start one here)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=200, help="requests in all (default 200)")
    p.add_argument("--duration", type=float, help="stop issuing requests after this many seconds")
    p.add_argument(
        "--sizes", default=DEFAULT_SIZES, help=f"square image edges (default {DEFAULT_SIZES})"
    )
    p.add_argument("--image", help="crop the images from this file (default: synthetic texture)")
    p.add_argument("--direction", choices=("down", "up"), default="down")
    from .backends import backend_names

    p.add_argument("--backend", choices=backend_names(), default="ov-cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=1, help="backend threads (default 1)")
    p.add_argument("--instances", type=int, default=1, help="server instances per model")
    p.add_argument("--json", metavar="PATH", help="write the report here ('-' = stdout)")
    p.add_argument("--quiet", action="store_true")
    return p


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[tuple[str, str | None]]:
    if args.server:
        yield args.server, None
        return
    extra = [
        "--backend",
        args.backend,
        "--precision",
        args.precision,
        "--threads",
        str(args.threads),
        "--instances",
        str(args.instances),
        "--max-queue",
        str(max(64, 2 * args.clients)),
        "--quiet",
    ]
    with ServerProcess([args.model_dir], extra) as srv:
        yield (srv.grpc if args.protocol == "grpc" else srv.http), srv.metrics


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        raise IRNError("--clients and --requests must be at least 1")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise IRNError(f"--sizes {args.sizes!r}: give edges like 256,512") from None

    def info(msg: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    from .api import Rescaler

    local = Rescaler.load(
        args.model_dir, backend=args.backend, precision=args.precision, threads=args.threads
    )
    with local:
        s = local.scale
        images = make_images(sizes, args.image)
        if args.direction == "up":  # LRs of the images, made here
            images = [local.downscale(img) for img in images]
        pixels = sum(img.shape[0] * img.shape[1] for img in images)
        hr_mp = pixels * (s * s if args.direction == "up" else 1) / 1e6
        # An untimed pass first: it is the reference, and OpenVINO compiles kernels for each
        # new input shape on first sight (the server sees them first during the load).
        expected, _ = in_process_pass(local, images, args.direction)
        _, first = in_process_pass(local, images, args.direction)
        info(f"in process: {hr_mp / first:.4f} MP/s ({local.selection.describe()})")
        with _server(args) as (url, metrics_url):
            before = scrape_metrics(metrics_url) if metrics_url else {}
            info(f"{args.clients} clients, {args.requests} requests on {url}")
            load = run_load(
                url, images, expected, args.clients, args.requests, args.direction, args.duration
            )
            after = scrape_metrics(metrics_url) if metrics_url else {}
            _, second = in_process_pass(local, images, args.direction)
        ip_mps = 2 * hr_mp / (first + second)
    summary = load.summary()
    report = {
        "model_dir": str(args.model_dir),
        "server": url if args.server else "started here (irn-serve child, loopback)",
        "protocol": args.protocol,
        "direction": args.direction,
        "sizes": sizes,
        "backend": args.backend,
        "threads": args.threads,
        "instances": args.instances,
        "load": summary,
        "in_process": {
            "megapixels_per_s": round(ip_mps, 4),
            "passes_s": [round(first, 3), round(second, 3)],
        },
        "server_vs_in_process": (
            round(summary["megapixels_per_s"] / ip_mps, 3) if summary["megapixels_per_s"] else None
        ),
        "server_metrics": _delta(after, before),
    }
    info(
        f"{load.ok}/{load.requests} ok, {load.errors} errors, {load.mismatches} mismatches, "
        f"{load.lost} lost, {load.duplicates} duplicated; {summary['megapixels_per_s']} MP/s "
        f"served vs {ip_mps:.4f} in process (ratio {report['server_vs_in_process']}); "
        f"p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms"
    )
    if args.json:
        from .atomic import json_text, write_text_atomic

        text = json_text(report)
        if args.json == "-":
            sys.stdout.write(text)
        else:
            write_text_atomic(args.json, text)
    bad = load.errors + load.mismatches + load.lost + load.duplicates
    return 1 if bad or load.ok == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
