"""``irn-serve``: exported IRN models on NVIDIA Triton Inference Server (through PyTriton).

Each model directory becomes two Triton models, ``<model>.down`` (HR -> LR) and
``<model>.up`` (LR -> HR), plus one ``irn_trt.info`` model that describes what is
served (manifests, backend, tile overlap, limits) for :mod:`irn_trt.runtime.client`.
The Triton server itself is the real ``tritonserver`` binary that the
``nvidia-pytriton`` wheel ships (extra ``serve``): HTTP/REST and gRPC (KServe v2
protocol), ``/v2/health/live`` and ``/v2/health/ready``, Prometheus metrics, a
dynamic batcher with a bounded queue. Triton hands each batch of requests to a
Python callable in this process (PyTriton's proxy), which runs irn-trt's own runtime
(:class:`~irn_trt.runtime.api.Rescaler`: its backends, tile policy and engines), so
``ov-cpu`` and ``ort-cpu`` serve on a CPU machine and ``trt`` on a GPU one.

Tensors: input ``image`` and output ``result``, UINT8, ``[batch, height, width, 3]``
RGB; a batch is a stack of same-size images (the client's tiles). Triton's dynamic
batcher merges queued requests of the same shape into one execution. ``up`` returns
the LR size times the scale; the client crops to the original size (in the LR's
metadata), so every image of a batch is independent and one error fails only
requests of that shape.

Shutdown: SIGTERM (or SIGINT) to this process stops Triton from taking new requests,
lets in-flight requests finish (``--exit-timeout``), and exits 0. Signal this
process, not its process group: Triton's helper processes must outlive the requests.

PyTriton's Python-backend stub links ``libpython3.X.so`` by name; on interpreters
built outside the system (pyenv, conda) the loader finds the system's copy instead,
and the stub fails (``'_thread.RLock' object has no attribute '_recursion_count'``).
:func:`stub_environment` puts this interpreter's own library folder first on
``LD_LIBRARY_PATH`` for Triton's processes, so that never reaches the user.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IRNError, cli_entry

if TYPE_CHECKING:
    import numpy as np

    from .api import Rescaler

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "INFO_MODEL",
    "INPUT",
    "OUTPUT",
    "ServeConfig",
    "ServedModel",
    "build_parser",
    "check_port",
    "free_port",
    "main",
    "model_names",
    "run_server",
    "stub_environment",
]

PROG = "irn-serve"
INFO_MODEL = "irn_trt.info"
INPUT = "image"
OUTPUT = "result"
#: Largest image (input of down, output of up) one request may carry, in pixels.
DEFAULT_MAX_PIXELS = 16 * 1024 * 1024
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_QUEUE = 64
DEFAULT_EXIT_TIMEOUT = 30
LOOPBACK = "127.0.0.1"

Log = Callable[[str], None]


def model_names(model: str) -> dict[str, str]:
    """Triton model names of one exported model: ``{"down": "<model>.down", "up": ...}``."""
    return {"down": f"{model}.down", "up": f"{model}.up"}


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(host: str, port: int, flag: str) -> None:
    """Refuse, in one line, a port something else listens on (Triton would fail late)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise IRNError(
                f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None


def stub_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with this interpreter's libpython folder first on
    ``LD_LIBRARY_PATH``, where the loader looks before the system folders.

    Triton's Python-backend stub is linked against ``libpython3.X.so.1.0`` by name; an
    interpreter built elsewhere (pyenv, conda) ships its own in ``LIBDIR``, and the
    system's copy of another patch release breaks the stub (see the module docstring).
    """
    env = dict(os.environ if env is None else env)
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    if not libdir or not ldlib.endswith(".so") or not (Path(libdir) / ldlib).exists():
        return env  # a static interpreter: the stub uses the system library anyway
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if parts[:1] != [libdir]:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *(p for p in parts if p != libdir)])
    return env


@dataclass(frozen=True)
class ServeConfig:
    """Where and how Triton serves (ports 0: a free port is picked)."""

    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = DEFAULT_MAX_BATCH  # images (tiles) per execution
    queue_delay_us: int = 0  # how long the batcher may wait for more requests
    max_queue: int = DEFAULT_MAX_QUEUE  # queued requests per model before refusing
    max_pixels: int = DEFAULT_MAX_PIXELS
    instances: int = 1  # executions in parallel per model (each its own Rescaler)
    exit_timeout: int = DEFAULT_EXIT_TIMEOUT  # seconds in-flight requests get at shutdown
    log_verbose: int = 0

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port < 65536:
                raise IRNError(f"--{name.replace('_', '-')} {port} is not a TCP port")
        if self.max_batch < 1:
            raise IRNError(f"--max-batch-size must be at least 1, got {self.max_batch}")
        if self.max_queue < 1:
            raise IRNError(f"--max-queue must be at least 1, got {self.max_queue}")
        if self.max_pixels < 1:
            raise IRNError(f"--max-pixels must be positive, got {self.max_pixels}")
        if self.instances < 1:
            raise IRNError(f"--instances must be at least 1, got {self.instances}")
        if self.queue_delay_us < 0 or self.exit_timeout < 0:
            raise IRNError("--queue-delay-us and --exit-timeout must not be negative")

    def with_ports(self) -> ServeConfig:
        """The same configuration with every port 0 replaced by a free one."""
        from dataclasses import replace

        ports = {
            name: getattr(self, name) or free_port(self.host)
            for name in ("http_port", "grpc_port", "metrics_port")
        }
        return replace(self, **ports)

    def urls(self) -> dict[str, str]:
        host = self.host if self.host not in ("0.0.0.0", "") else LOOPBACK
        return {
            "http": f"http://{host}:{self.http_port}",
            "grpc": f"grpc://{host}:{self.grpc_port}",
            "metrics": f"http://{host}:{self.metrics_port}/metrics",
        }


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


@dataclass
class ServedModel:
    """One exported model on the server: a Rescaler per direction and instance."""

    model_dir: Path
    load: Callable[[], Rescaler]  # a fresh Rescaler on the chosen backend
    max_pixels: int
    rescalers: dict[str, list[Rescaler]] = field(default_factory=dict)

    def open(self, instances: int) -> None:
        """Load ``instances`` Rescalers per direction and run one small image through each
        (compiles graphs / loads engines now, so the first request is not the slow one)."""
        import numpy as np

        for direction in ("down", "up"):
            self.rescalers[direction] = []
            for _ in range(instances):
                r = self.load()
                self.rescalers[direction].append(r)
                s = r.scale
                if direction == "down":
                    r.downscale(np.full((8 * s, 8 * s, 3), 128, np.uint8))
                else:
                    r.upscale(np.full((8, 8, 3), 128, np.uint8))

    @property
    def first(self) -> Rescaler:
        return self.rescalers["down"][0]

    def close(self) -> None:
        for rs in self.rescalers.values():
            for r in rs:
                with contextlib.suppress(Exception):  # shutting down: release what we can
                    r.close()

    def describe(self) -> dict[str, Any]:
        """What the client needs to know (``irn_trt.info``)."""
        r = self.first
        return {
            "manifest": r.manifest.to_dict(),
            "models": model_names(r.manifest.model),
            "backend": r.selection.backend,
            "precision": r.selection.precision,
            "backend_reason": r.selection.describe(),
            "overlap_lr": r.overlap_lr,
            "max_pixels": self.max_pixels,
        }

    def check(self, direction: str, batch: np.ndarray) -> None:
        """Refuse, in one line, what this model cannot take (Triton checked dtype and rank)."""
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise IRNError(f"expected [batch, height, width, 3] RGB, got shape {list(batch.shape)}")
        n, h, w = batch.shape[:3]
        if h < 1 or w < 1:
            raise IRNError(f"empty image ({w}x{h} pixels)")
        s = self.first.scale
        pixels = h * w * (s * s if direction == "up" else 1)
        if pixels > self.max_pixels:
            side = "input" if direction == "down" else f"output ({w * s}x{h * s})"
            raise IRNError(
                f"image {w}x{h}: its {side} has {_megapixels(pixels)}, above this server's "
                f"limit of {_megapixels(self.max_pixels)} per image (irn-serve --max-pixels); "
                "send it in tiles (irn_trt.runtime.client does)"
            )

    def infer_fn(self, direction: str, instance: int) -> Callable[[list], list[dict]]:
        """The callable Triton runs for one model instance: a list of requests in, a list
        of responses out (one per request; the dynamic batcher groups equal shapes)."""
        import numpy as np

        rescaler = self.rescalers[direction][instance]
        run = rescaler.downscale if direction == "down" else rescaler.upscale

        def infer(requests: list) -> list[dict]:
            responses = []
            for request in requests:
                batch = request[INPUT]
                self.check(direction, batch)
                outs = [run(np.ascontiguousarray(image)) for image in batch]
                responses.append({OUTPUT: np.stack(outs)})
            return responses

        infer.__name__ = f"{model_names(rescaler.manifest.model)[direction]}_{instance}"
        return infer


def _info_fn(served: list[ServedModel], config: ServeConfig) -> Callable[[list], list[dict]]:
    import numpy as np

    payload = json.dumps(
        {
            "server": "irn-serve",
            "max_batch": config.max_batch,
            "max_pixels": config.max_pixels,
            "models": {m.first.manifest.model: m.describe() for m in served},
        },
        sort_keys=True,
    ).encode()

    def info(requests: list) -> list[dict]:
        return [{"info": np.array([payload], dtype=np.object_)} for _ in requests]

    return info


def _pytriton():  # type: ignore[no-untyped-def]
    """PyTriton's modules, or a one-line hint to install the ``serve`` extra."""
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise IRNError(
            f"irn-serve needs PyTriton ({exc}); install the serve extra: "
            "pip install 'irn-trt[serve]'"
        ) from None
    return Triton, TritonConfig, ModelConfig, DynamicBatcher, QueuePolicy, Tensor


def run_server(
    served: list[ServedModel],
    config: ServeConfig,
    stop: threading.Event,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    log: Log | None = None,
) -> int:
    """Serve until ``stop`` is set (or Triton dies); returns 0 after a clean shutdown.

    Ports must be set (see :meth:`ServeConfig.with_ports`). ``on_ready`` gets the URLs
    and model names once every model answers ready.
    """
    import numpy as np

    log = log or (lambda _m: None)
    Triton, TritonConfig, ModelConfig, DynamicBatcher, QueuePolicy, Tensor = _pytriton()
    # Triton's processes copy this environment when they start (the libpython fix).
    os.environ.update(stub_environment())
    tc = TritonConfig(
        http_address=config.host,
        http_port=config.http_port,
        grpc_address=config.host,
        grpc_port=config.grpc_port,
        metrics_address=config.host,
        metrics_port=config.metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=False,
        strict_readiness=True,
        exit_timeout_secs=config.exit_timeout,
        log_verbose=config.log_verbose,
    )
    triton = Triton(config=tc)
    image = Tensor(name=INPUT, dtype=np.uint8, shape=(-1, -1, 3))
    result = Tensor(name=OUTPUT, dtype=np.uint8, shape=(-1, -1, 3))
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=config.queue_delay_us,
        default_queue_policy=QueuePolicy(max_queue_size=config.max_queue),
    )
    names: list[str] = []
    try:
        for m in served:
            for direction, name in model_names(m.first.manifest.model).items():
                triton.bind(
                    model_name=name,
                    infer_func=[m.infer_fn(direction, i) for i in range(config.instances)],
                    inputs=[image],
                    outputs=[result],
                    config=ModelConfig(max_batch_size=config.max_batch, batcher=batcher),
                    strict=True,
                )
                names.append(name)
        triton.bind(
            model_name=INFO_MODEL,
            infer_func=_info_fn(served, config),
            inputs=[Tensor(name="query", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="info", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(batching=False),
        )
        try:
            triton.run()
        except Exception as exc:  # PyTriton's timeouts and client errors: say it in one line
            text = str(exc).strip().splitlines()
            raise IRNError(
                f"Triton Inference Server did not start ({type(exc).__name__}"
                f"{': ' + text[0] if text else ''}); see its log above"
            ) from None
        info = {"pid": os.getpid(), "models": [*names, INFO_MODEL], **config.urls()}
        if on_ready is not None:
            on_ready(info)
        while not stop.wait(0.5):
            if not triton.is_alive():
                log("Triton Inference Server stopped unexpectedly (see its log above)")
                return 1
        log("stopping: in-flight requests finish, new ones are refused")
        return 0
    finally:
        t0 = time.perf_counter()
        triton.stop()
        log(f"stopped in {time.perf_counter() - t0:.1f} s")


# --- CLI ----------------------------------------------------------------------------------


def _memory_arg(text: str) -> int:
    from .memory import parse_memory

    return parse_memory(text)


def _pixels_arg(text: str) -> int:
    """``16M`` / ``4096x4096`` / ``2000000`` -> pixels."""
    t = text.strip().lower()
    try:
        if "x" in t:
            w, h = t.split("x", 1)
            return int(w) * int(h)
        mult = {"k": 10**3, "m": 10**6}.get(t[-1:], 1)
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give pixels as 16M, 4096x4096 or a number"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    from .options import add_engine_arguments

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve exported IRN models on NVIDIA Triton Inference Server (PyTriton; "
        "extra 'serve'): <model>.down and <model>.up over HTTP and gRPC with dynamic batching, "
        "a bounded queue, health/ready endpoints and Prometheus metrics, running irn-trt's own "
        "runtime (backends, tiling). SIGTERM stops it gracefully (in-flight requests finish). "
        "With --write-repository, writes a Triton model repository for NVIDIA's Triton "
        "container instead (TensorRT or ONNX Runtime models plus a tiling Python model).",
        epilog="examples:\n"
        "  irn-serve build/irn_x4 --backend ov-cpu --threads 4      # ports 8000/8001/8002\n"
        "  irn-serve build/irn_x4 build/irn_x2 --http-port 0 --ready-file /tmp/ports.json\n"
        "  irn-serve build/irn_x4 --backend trt --batch 4 --instances 2 --host 0.0.0.0\n"
        "  irn-trt-run photo.jpg --server http://127.0.0.1:8000 -o out/   # a client\n"
        "  curl -s 127.0.0.1:8000/v2/health/ready -o /dev/null -w '%{http_code}\\n'\n"
        "  irn-serve build/irn_x4 --write-repository /models --repo-kind tensorrt_plan\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model_dirs", nargs="+", type=Path, metavar="MODEL_DIR", help="irn-export outputs"
    )
    net = p.add_argument_group("network")
    net.add_argument("--host", default=LOOPBACK, help=f"address to bind (default {LOOPBACK})")
    net.add_argument("--http-port", type=int, default=8000, help="0: a free port (default 8000)")
    net.add_argument("--grpc-port", type=int, default=8001, help="0: a free port (default 8001)")
    net.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus /metrics; 0: a free port"
    )
    net.add_argument(
        "--ready-file",
        type=Path,
        help="write the URLs and model names as JSON here once every model is ready",
    )
    sched = p.add_argument_group("scheduling")
    sched.add_argument(
        "--max-batch-size",
        dest="triton_max_batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"images (tiles) per execution, dynamic batching (default {DEFAULT_MAX_BATCH})",
    )
    sched.add_argument(
        "--queue-delay-us",
        type=int,
        default=0,
        help="how long the batcher may hold a request to fill a batch (default 0)",
    )
    sched.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help=f"queued requests per model; more are refused at once (default {DEFAULT_MAX_QUEUE})",
    )
    sched.add_argument(
        "--max-pixels",
        type=_pixels_arg,
        default=DEFAULT_MAX_PIXELS,
        help="largest image per request (input of down, output of up), e.g. 16M or 4096x4096 "
        f"(default {DEFAULT_MAX_PIXELS // 2**20}Mi pixels); the client tiles larger ones",
    )
    sched.add_argument(
        "--instances", type=int, default=1, help="parallel executions per model (default 1)"
    )
    sched.add_argument(
        "--exit-timeout",
        type=int,
        default=DEFAULT_EXIT_TIMEOUT,
        help=f"seconds in-flight requests get at shutdown (default {DEFAULT_EXIT_TIMEOUT})",
    )
    rt = p.add_argument_group("runtime (as irn-trt-run)")
    from .api import PRECISIONS
    from .backends import backend_names

    rt.add_argument("--backend", choices=["auto", *backend_names()], default="auto")
    rt.add_argument("--precision", choices=PRECISIONS, default="auto")
    rt.add_argument("--threads", type=int, help="CPU threads per instance for CPU backends")
    rt.add_argument("--overlap", help="tile overlap in HR px or 'exact' (default: effective halo)")
    rt.add_argument("--max-memory", metavar="SIZE", help="CPU backends: memory to plan tiles for")
    add_engine_arguments(p)
    repo = p.add_argument_group("model repository for the Triton container")
    repo.add_argument(
        "--write-repository",
        type=Path,
        metavar="DIR",
        help="write a Triton model repository for MODEL_DIRs to DIR and exit",
    )
    from .serve_repository import REPO_KINDS

    repo.add_argument(
        "--repo-kind",
        choices=REPO_KINDS,
        default=REPO_KINDS[0],
        help="tile models: TensorRT plans built by trtexec/irn-build on the target GPU, or "
        "ONNX Runtime with the TensorRT accelerator (default %(default)s)",
    )
    repo.add_argument(
        "--repo-tile",
        type=int,
        help="HR tile edge of the repository's tile models (default: irn-build's, "
        "max(256, 4 x the model's halo) LR px times the scale)",
    )
    p.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    p.add_argument("--quiet", action="store_true", help="no info lines")
    return p


def _overlap(text: str | None) -> int | str | None:
    if text is None or text == "exact":
        return text
    try:
        return int(text)
    except ValueError:
        raise IRNError(f"--overlap {text!r} must be 'exact' or a number of HR pixels") from None


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def info(msg: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    if args.write_repository is not None:
        from .serve_repository import write_repository

        written = write_repository(
            args.model_dirs,
            args.write_repository,
            kind=args.repo_kind,
            tile_hr=args.repo_tile,
            max_batch=args.triton_max_batch,
            instances=args.instances,
            max_queue=args.max_queue,
            max_pixels=args.max_pixels,
        )
        for path in written:
            print(path)
        info(f"wrote a Triton model repository to {args.write_repository}")
        return 0

    from .api import Rescaler
    from .options import engine_options_from_args

    config = ServeConfig(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.triton_max_batch,
        queue_delay_us=args.queue_delay_us,
        max_queue=args.max_queue,
        max_pixels=args.max_pixels,
        instances=args.instances,
        exit_timeout=args.exit_timeout,
        log_verbose=1 if args.verbose else 0,
    )
    from .manifest import load_manifest
    from .serve_repository import check_rgb_layout

    for model_dir in args.model_dirs:  # a model it cannot serve: before PyTriton loads
        try:
            manifest = load_manifest(model_dir)
        except IRNError:
            continue  # a bad directory is reported where the models load, after the flags
        check_rgb_layout(manifest, model_dir)
    _pytriton()  # the extra is missing: say so before loading any model
    for flag in ("http_port", "grpc_port", "metrics_port"):
        if getattr(config, flag):
            check_port(config.host, getattr(config, flag), "--" + flag.replace("_", "-"))
    engine = engine_options_from_args(args, prog=PROG)
    max_memory = _memory_arg(args.max_memory) if args.max_memory else None
    served: list[ServedModel] = []
    seen: dict[str, Path] = {}
    for model_dir in args.model_dirs:

        def load(model_dir: Path = model_dir) -> Rescaler:
            return Rescaler.load(
                model_dir,
                backend=args.backend,
                precision=args.precision,
                overlap=_overlap(args.overlap),
                threads=args.threads,
                max_memory=max_memory,
                options=engine,
            )

        m = ServedModel(model_dir, load, config.max_pixels)
        with load() as probe:  # one-line errors for a bad directory before anything starts
            name = probe.manifest.model
        if name in seen:
            raise IRNError(f"{model_dir} and {seen[name]} both hold {name}; serve one of them")
        seen[name] = model_dir
        served.append(m)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not args.verbose:
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("pytriton").setLevel(logging.ERROR)
    try:
        for m in served:
            info(f"loading {m.model_dir} ({config.instances} instance(s) per direction)")
            m.open(config.instances)
            info(m.first.selection.describe())
        if stop.is_set():
            return 0
        config = config.with_ports()

        def ready(urls: dict[str, Any]) -> None:
            if args.ready_file is not None:
                from .atomic import write_text_atomic

                write_text_atomic(args.ready_file, json.dumps(urls, indent=2) + "\n")
            info(
                f"ready: {', '.join(urls['models'][:-1])} on {urls['http']} and {urls['grpc']}; "
                f"metrics {urls['metrics']}; pid {urls['pid']} (SIGTERM stops gracefully)"
            )

        return run_server(served, config, stop, ready, info)
    finally:
        for m in served:
            m.close()


if __name__ == "__main__":
    sys.exit(main())
