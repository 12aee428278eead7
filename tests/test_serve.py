"""irn-serve on the real Triton Inference Server (PyTriton's tritonserver), on loopback.

One server (a child process on free ports, the random-weight x4 on ov-cpu, one thread)
serves the whole module; every result is compared byte for byte with a local Rescaler
on the same backend and settings. The last test stops it with SIGTERM while a request
is in flight.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from irn_trt.runtime.errors import IRNError

pytest.importorskip("pytriton", reason="the serve extra is not installed")
pytest.importorskip("tritonclient", reason="the serve extra is not installed")

from irn_trt.runtime.client import (  # noqa: E402
    RemoteRescaler,
    ServerError,
    chunk_tile_lr,
    parse_server_url,
    server_error_line,
)

OVERLAP_HR = 32  # 8 LR px: small tiles stay cheap on the full-depth random model
MAX_PIXELS = 512 * 512
MAX_QUEUE = 2
SERVER_ARGS = [
    "--backend",
    "ov-cpu",
    "--threads",
    "1",
    "--overlap",
    str(OVERLAP_HR),
    "--max-pixels",
    str(MAX_PIXELS),
    "--max-queue",
    str(MAX_QUEUE),
    "--quiet",
]


# --- without a server ---------------------------------------------------------------------


def test_server_urls_and_error_lines() -> None:
    assert parse_server_url("http://127.0.0.1:9000") == ("http", "127.0.0.1:9000")
    assert parse_server_url("grpc://host") == ("grpc", "host:8001")
    assert parse_server_url("host") == ("http", "host:8000")
    with pytest.raises(IRNError, match="https"):
        parse_server_url("https://host:1")
    traceback = (
        "Model execute error: Traceback (most recent call last):\n  File x\n"
        "irn_trt.runtime.errors.IRNError: image 9x9: too large\n\n\nAt:\n  model.py(1)"
    )
    assert server_error_line(traceback) == "image 9x9: too large"
    assert server_error_line("[request id: 1] Exceeds maximum queue size") == (
        "[request id: 1] Exceeds maximum queue size"
    )


def test_chunk_tiles_fit_the_message_limit() -> None:
    limit = 4 * 1024 * 1024
    tile = chunk_tile_lr(4, 19, limit, 16 * 2**20)
    assert tile % 8 == 0 and (tile * 4) ** 2 * 3 <= limit - 64 * 1024
    assert ((tile + 8) * 4) ** 2 * 3 > limit - 64 * 1024  # the largest that fits
    assert chunk_tile_lr(4, 8, limit, 200 * 200) == 48  # the server's pixel limit binds
    with pytest.raises(IRNError, match="overlap"):
        chunk_tile_lr(4, 120, 100_000, 2**24)


def test_stub_environment_puts_this_libpython_first(tmp_path: Path) -> None:
    import sysconfig

    from irn_trt.runtime.serve import stub_environment

    libdir = sysconfig.get_config_var("LIBDIR")
    env = stub_environment({"LD_LIBRARY_PATH": f"/opt/x:{libdir}", "A": "1"})
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    if ldlib.endswith(".so") and (Path(libdir) / ldlib).exists():
        assert env["LD_LIBRARY_PATH"] == f"{libdir}:/opt/x"
    else:  # a static interpreter: nothing to fix
        assert env["LD_LIBRARY_PATH"] == f"/opt/x:{libdir}"
    assert env["A"] == "1"


def test_irn_serve_usage_errors_are_one_line(tmp_path: Path, capsys) -> None:
    from irn_trt.runtime import serve

    assert serve.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert serve.main([str(tmp_path), "--max-batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-batch-size must be at least 1" in err
    with socket.socket() as busy:  # a port in use: refused before anything loads
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serve.main([str(tmp_path), "--grpc-port", str(port)]) == 2
    assert f"--grpc-port {port}: cannot listen" in capsys.readouterr().err


# --- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_model_dir):
    from irn_trt.runtime.serve_bench import ServerProcess

    srv = ServerProcess([tmp_model_dir.path], SERVER_ARGS, startup_timeout=240)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local(tmp_model_dir):
    from irn_trt.runtime.api import Rescaler

    with Rescaler.load(tmp_model_dir.path, backend="ov-cpu", threads=1, overlap=OVERLAP_HR) as r:
        yield r


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_health_ready_and_metrics(server) -> None:
    import tritonclient.grpc as grpcclient

    assert _get(f"{server.http}/v2/health/live") == 200
    assert _get(f"{server.http}/v2/health/ready") == 200
    assert _get(f"{server.http}/v2/models/irn_x4.down/ready") == 200
    g = grpcclient.InferenceServerClient(parse_server_url(server.grpc)[1])
    assert g.is_server_ready() and g.is_model_ready("irn_x4.up")
    g.close()
    with urllib.request.urlopen(server.metrics, timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    assert 'nv_inference_request_success{model="irn_x4.down",version="1"}' in text


@pytest.mark.slow
def test_down_and_up_over_http_and_grpc_equal_local(server, local, set5_crop_images) -> None:
    from irn_trt.runtime.image_io import ImageData

    name, img = set5_crop_images[1]  # 96x128
    h, w = img.shape[:2]
    rgba = np.dstack([img, np.linspace(0, 255, h * w).reshape(h, w).astype(np.uint8)])
    want_lr = local.downscale(img)
    want_hr = local.upscale(want_lr, original_size=(w, h))
    want_lr_a = local.downscale(ImageData.from_array(rgba))
    want_hr_a = local.upscale(want_lr_a)
    for url in (server.http, server.grpc):
        with RemoteRescaler.connect(url) as rr:
            assert (rr.selection.backend, rr.overlap_lr, rr.scale) == ("ov-cpu", 8, 4)
            assert rr.selection.precision == local.selection.precision
            lr = rr.downscale(img)
            assert lr.dtype == np.uint8 and np.array_equal(lr, want_lr), url
            assert np.array_equal(rr.upscale(lr, original_size=(w, h)), want_hr), url
            lr_a = rr.downscale(ImageData.from_array(rgba))  # alpha, metadata, as locally
            assert np.array_equal(lr_a.rgb, want_lr_a.rgb) and lr_a.text == want_lr_a.text
            assert np.array_equal(lr_a.alpha, want_lr_a.alpha)
            hr_a = rr.upscale(lr_a)
            assert hr_a.size == (w, h) and np.array_equal(hr_a.rgb, want_hr_a.rgb)
            assert rr.requests == 4


@pytest.mark.slow
def test_images_over_the_message_limit_go_in_tiles(server, tmp_model_dir, set5_dir) -> None:
    """A client limited to 100 kB messages tiles a 160x136 image; the stitched result is
    the local run with the same tile, byte for byte. Over gRPC the channel itself refuses
    more than 4 MiB, so the tiles are what keeps the default limit from biting."""
    from irn_trt.runtime.api import Rescaler
    from irn_trt.runtime.image_io import list_images, read_rgb
    from irn_trt.runtime.tiling import plan_tiles

    img = np.ascontiguousarray(read_rgb(list_images(set5_dir)[0])[:136, :160])
    with RemoteRescaler.connect(server.grpc, max_message_bytes=100_000) as rr:
        assert rr.tile_lr == 24
        lr = rr.downscale(img)
        n = len(plan_tiles(34, 40, 24, OVERLAP_HR // 4))  # LR 40x34, tile 24, overlap 8
        assert n == 9 and rr.requests == n and rr.tiles_run == n
        hr = rr.upscale(lr)
        with pytest.raises(ServerError, match="larger than max"):
            rr.infer("down", np.zeros((1, 1200, 1200, 3), np.uint8))  # 4.3 MB > 4 MiB
    tile = 24 * 4
    with Rescaler.load(
        tmp_model_dir.path, backend="ov-cpu", threads=1, overlap=OVERLAP_HR, tile=tile
    ) as loc:
        assert np.array_equal(lr, loc.downscale(img))
        assert np.array_equal(hr, loc.upscale(lr))


def _raw_request(shape: list[int], datatype: str = "UINT8") -> tuple[bytes, int | None]:
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("image", shape, datatype)
    if datatype == "BYTES":
        inp.set_data_from_numpy(np.array([b"not an image"] * int(np.prod(shape)), np.object_))
    else:
        dtype = np.uint8 if datatype == "UINT8" else np.float32
        inp.set_data_from_numpy(np.zeros(shape, dtype), binary_data=True)
    out = httpclient.InferRequestedOutput("result", binary_data=True)
    return httpclient.InferenceServerClient.generate_request_body([inp], outputs=[out])


def _post(hostport: str, path: str, body: bytes, header_len: int | None, send: int | None) -> None:
    """An HTTP request over a bare socket; ``send`` bytes of the body, then hang up."""
    host, port = hostport.split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n"
        + (f"Inference-Header-Content-Length: {header_len}\r\n" if header_len else "")
        + "\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body[: len(body) if send is None else send])


@pytest.mark.slow
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    server, local, set5_crop_images
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    _, img = set5_crop_images[0]
    want = local.downscale(img)
    hostport = parse_server_url(server.http)[1]
    http = httpclient.InferenceServerClient(hostport, network_timeout=120)
    grpc = grpcclient.InferenceServerClient(parse_server_url(server.grpc)[1])

    def good() -> None:
        with RemoteRescaler.connect(server.http) as rr:
            assert np.array_equal(rr.downscale(img), want)

    def refused(mod, client, model: str, x: np.ndarray, datatype: str) -> str:
        inp = mod.InferInput("image", list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, [inp])
        return server_error_line(info.value.message())

    for mod, client in ((httpclient, http), (grpcclient, grpc)):
        msg = refused(mod, client, "irn_x4.down", np.zeros((1, 16, 16, 3), np.float32), "FP32")
        assert "FP32" in msg and "UINT8" in msg
        msg = refused(mod, client, "irn_x4.down", np.zeros((1, 16, 16, 4), np.uint8), "UINT8")
        assert "shape" in msg or "dim" in msg
        msg = refused(mod, client, "irn_x4.down", np.array([b"GIF89a"], np.object_), "BYTES")
        assert "BYTES" in msg and "UINT8" in msg
        msg = refused(mod, client, "irn_x4.down", np.zeros((1, 520, 520, 3), np.uint8), "UINT8")
        assert "above this server's limit" in msg and "tiles" in msg
        msg = refused(mod, client, "irn_x4.up", np.zeros((1, 130, 130, 3), np.uint8), "UINT8")
        assert "output (520x520)" in msg
        msg = refused(mod, client, "irn_x4.down", np.zeros((1, 2, 2, 3), np.uint8), "UINT8")
        assert "too small to downscale" in msg
        msg = refused(mod, client, "irn_x9.down", np.zeros((1, 16, 16, 3), np.uint8), "UINT8")
        assert "unknown model" in msg
        good()
    # Not an inference request at all, and clients that hang up mid-request.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(  # noqa: S310
            urllib.request.Request(
                f"{server.http}/v2/models/irn_x4.down/infer", data=b"\x89PNG garbage"
            ),
            timeout=10,
        )
    assert info.value.code in (400, 500)  # Triton: the body is not an inference request
    assert "error" in json.loads(info.value.read())
    body, header_len = _raw_request([1, 64, 64, 3])
    _post(hostport, "/v2/models/irn_x4.down/infer", body, header_len, send=len(body) // 2)
    _post(hostport, "/v2/models/irn_x4.down/infer", body, header_len, send=None)  # no read
    good()
    with RemoteRescaler.connect(server.grpc) as rr:  # gRPC: a call cancelled by its deadline
        rr._timeout = 1e-6  # no round trip fits in 1 us (50 ms did fit on a fast machine)
        with pytest.raises(ServerError):
            rr.downscale(img)
    time.sleep(1.0)
    good()
    http.close()
    grpc.close()


@pytest.mark.slow
def test_a_full_queue_refuses_at_once(server, set5_dir) -> None:
    """Requests of different sizes cannot share an execution: with one running and
    ``MAX_QUEUE`` waiting, the rest are refused at once, and the server goes on."""
    from irn_trt.runtime.image_io import list_images, read_rgb

    img = read_rgb(list_images(set5_dir)[0])
    results: list[str] = []

    def send(k: int) -> None:
        with RemoteRescaler.connect(server.http) as rr:
            try:
                rr.downscale(np.ascontiguousarray(img[: 96 + 8 * k, : 96 + 8 * k]))
                results.append("ok")
            except ServerError as exc:
                results.append(str(exc))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in results if "Exceeds maximum queue size" in r]
    assert refused and "ok" in results, results
    assert len(refused) + results.count("ok") == 7, results


@pytest.mark.slow
def test_small_load_nothing_lost_or_altered(server, local, set5_crop_images) -> None:
    from irn_trt.runtime.serve_bench import run_load, scrape_metrics

    images = [img for _, img in set5_crop_images[:2]]
    expected = [local.downscale(img) for img in images]
    before = scrape_metrics(server.metrics)["irn_x4.down"]
    res = run_load(server.grpc, images, expected, clients=2, requests=6)
    assert (res.ok, res.errors, res.mismatches, res.lost, res.duplicates) == (6, 0, 0, 0, 0)
    deadline = time.monotonic() + 15  # Triton refreshes its metrics every couple of seconds
    while True:
        after = scrape_metrics(server.metrics)["irn_x4.down"]
        done = after["nv_inference_request_success"] - before["nv_inference_request_success"]
        if done >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done == 6
    summary = res.summary()
    assert summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0


@pytest.mark.slow
def test_irn_trt_run_server_writes_what_a_local_run_writes(
    server, tmp_model_dir, tmp_path, set5_crop_images, capsys
) -> None:
    from irn_trt.runtime import cli
    from irn_trt.runtime.image_io import ImageData, read_image, write_image

    _, img = set5_crop_images[3]
    src = tmp_path / "pic.png"
    write_image(src, ImageData(img))
    local_args = ["--model-dir", str(tmp_model_dir.path), "--backend", "ov-cpu", "--threads", "1"]
    common = [str(src), "--mode", "roundtrip", "--quiet", "--json"]
    assert (
        cli.main([*common, str(tmp_path / "a.json"), "-o", str(tmp_path / "a"), *local_args]) == 0
    )
    remote = ["--server", server.grpc]
    assert cli.main([*common, str(tmp_path / "b.json"), "-o", str(tmp_path / "b"), *remote]) == 0
    for name in ("pic_lr.png", "pic_roundtrip.png"):
        a, b = read_image(tmp_path / "a" / name), read_image(tmp_path / "b" / name)
        assert np.array_equal(a.rgb, b.rgb) and a.text == b.text, name
    summary = json.loads((tmp_path / "b.json").read_text())
    assert summary["model_dir"] == server.grpc and summary["failed"] == 0
    capsys.readouterr()
    assert cli.main([str(src), "--server", server.http, "--backend", "ort-cpu"]) == 2
    assert "--backend only apply locally" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(server, local, set5_dir) -> None:
    """Runs last: SIGTERM while a request runs; it completes, the server exits 0."""
    from irn_trt.runtime.image_io import list_images, read_rgb

    big = np.ascontiguousarray(read_rgb(list_images(set5_dir)[0])[:192, :256])
    t0 = time.perf_counter()
    want = local.downscale(big)
    local_s = time.perf_counter() - t0
    got: list[object] = []
    done: list[float] = []

    def send() -> None:
        with RemoteRescaler.connect(server.http) as rr:
            try:
                got.append(rr.downscale(big))
            except IRNError as exc:
                got.append(exc)
        done.append(time.monotonic())

    t = threading.Thread(target=send)
    t.start()
    time.sleep(min(0.5, local_s / 4))  # sent and running (the queue is empty)
    t_stop = time.monotonic()
    code = server.stop(timeout=90)
    t.join(60)
    assert code == 0, server.log_tail()
    assert len(got) == 1 and isinstance(got[0], np.ndarray), got
    assert np.array_equal(got[0], want)
    assert done[0] > t_stop  # it was in flight when SIGTERM came
    with pytest.raises(IRNError, match="cannot reach"):
        RemoteRescaler.connect(server.http, timeout=5)
