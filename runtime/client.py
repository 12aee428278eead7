"""Client of ``irn-serve``: :class:`RemoteRescaler`, the ``Rescaler`` interface over the network.

``RemoteRescaler.connect("http://host:8000")`` (or ``grpc://host:8001``) asks the
server's ``irn_trt.info`` model what it serves (the model's manifest, backend, tile
overlap, limits) and then offers the same ``downscale`` / ``upscale`` as a local
:class:`~irn_trt.runtime.api.Rescaler`: :class:`~irn_trt.runtime.image_io.ImageData`
in and out (the LR carries irn-trt's metadata; ``upscale`` restores the original
size, colour kind and alpha) or plain arrays.

No message exceeds ``max_message_bytes`` (default 4 MiB, gRPC's default limit, which
other gRPC stacks and proxies keep): an image whose input or output would not fit is
sent in tiles, planned and stitched by the runtime's own tiler
(:func:`~irn_trt.runtime.tiling.run_tiled`) with the server's overlap, several tiles per
request where they fit. On gRPC the channel itself is limited to 4 MiB, so a message
that would not pass everywhere fails here too. Results are byte-identical to a local
``Rescaler`` on the server's backend and settings: images that fit run whole, as
locally; larger ones equal a local run with the tile the client reports (``tile_lr``
times the scale, HR px).

Server errors arrive as one line (:class:`ServerError`, an ``IRNError``), whatever the
protocol. One ``RemoteRescaler`` is one connection: use one per thread.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .api import ALPHA_RESIZED_NOTE, NO_METADATA_NOTE, Selection, text_with_metadata
from .errors import IRNError
from .image_io import ImageData, resize_alpha
from .manifest import ModelManifest
from .pngmeta import LRMetadata
from .scales import lr_size as scaled_lr_size
from .tiling import TileConfig, pad_to_multiple, plan_tiles, run_tiled

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "RemoteRescaler",
    "ServerError",
    "chunk_tile_lr",
    "parse_server_url",
    "server_error_line",
]

#: gRPC's default message limit, which many clients and proxies keep.
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
#: Room for the request's header and framing inside the message limit.
_HEADROOM = 64 * 1024
#: Seconds one request may take (a large tile on one slow CPU core takes a while).
DEFAULT_TIMEOUT = 600.0

INFO_MODEL = "irn_trt.info"  # the names irn-serve binds (runtime/serve.py)
INPUT = "image"
OUTPUT = "result"

Log = Callable[[str], None]


class ServerError(IRNError):
    """The server refused or failed a request (its message, in one line)."""


def parse_server_url(url: str) -> tuple[str, str]:
    """``http://h:p`` / ``grpc://h:p`` / ``h:p`` (HTTP) -> (protocol, "h:p")."""
    m = re.fullmatch(r"(?:(https?|grpc)://)?([^/\s]+?)/?", url.strip())
    if m is None:
        raise IRNError(f"--server {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    scheme, hostport = m.group(1) or "http", m.group(2)
    if scheme == "https":
        raise IRNError(f"--server {url}: https is not supported yet; use http:// or grpc://")
    if ":" not in hostport:
        hostport += ":8001" if scheme == "grpc" else ":8000"
    return scheme, hostport


_IRN_LINE = re.compile(r"IRNError: (.+)")


def server_error_line(message: str) -> str:
    """One line from a Triton error: the runtime's own message where there is one
    (PyTriton sends the Python traceback of the inference callable)."""
    hits = _IRN_LINE.findall(message or "")
    if hits:
        return hits[-1].strip()
    for line in (message or "").splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"


def chunk_tile_lr(scale: int, overlap_lr: int, max_bytes: int, max_pixels: int) -> int:
    """The largest square tile (LR px, a multiple of 8) whose HR side fits ``max_bytes``
    as uint8 RGB and the server's ``max_pixels``; refuses one that keeps nothing."""
    budget = max_bytes - _HEADROOM
    hr_edge = math.isqrt(min(budget // 3, max_pixels))
    tile = (hr_edge // scale) // 8 * 8
    if tile <= 2 * overlap_lr:
        raise IRNError(
            f"a message limit of {max_bytes} bytes leaves tiles of {tile} LR px, not more than "
            f"twice the overlap ({overlap_lr} LR px); raise max_message_bytes"
        )
    return tile


def _tritonclient(protocol: str):  # type: ignore[no-untyped-def]
    try:
        if protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
        from tritonclient.utils import InferenceServerException
    except ImportError as exc:
        raise IRNError(
            f"the irn-serve client needs tritonclient ({exc}); install the serve extra: "
            "pip install 'irn-trt[serve]'"
        ) from None
    return mod, InferenceServerException


class RemoteRescaler:
    """``downscale`` / ``upscale`` on an ``irn-serve`` server (see the module docstring)."""

    def __init__(
        self,
        url: str,
        protocol: str,
        client: Any,
        module: Any,
        error_type: type[Exception],
        model_info: dict[str, Any],
        server_info: dict[str, Any],
        max_message_bytes: int,
        tile_lr: int | None,
        timeout: float,
        log: Log,
    ) -> None:
        self.url = url
        self.protocol = protocol
        self._client = client
        self._mod = module
        self._error_type = error_type
        self._timeout = timeout
        self._log = log
        self.manifest = ModelManifest.from_dict(model_info["manifest"])
        self.model_names: dict[str, str] = dict(model_info["models"])
        self.overlap_lr = int(model_info["overlap_lr"])
        self.max_pixels = int(model_info["max_pixels"])
        self.max_batch = int(server_info.get("max_batch", 1))
        self.max_message_bytes = max_message_bytes
        s = self.manifest.scale
        auto_tile = chunk_tile_lr(s, self.overlap_lr, max_message_bytes, self.max_pixels)
        if tile_lr is not None and tile_lr > auto_tile:
            raise IRNError(
                f"--tile {tile_lr * s}: a tile that large does not fit a {max_message_bytes}-byte "
                f"message; at most {auto_tile * s} HR px"
            )
        if tile_lr is not None and tile_lr <= 2 * self.overlap_lr:
            raise IRNError(
                f"--tile {tile_lr * s} must be larger than twice the overlap "
                f"({self.overlap_lr * s} HR px)"
            )
        #: LR tile of images too large for one message (HR tile = tile_lr x scale).
        self.tile_lr: int = tile_lr or auto_tile
        self.whole = False
        self.output_scale = float(s)
        self.model_dir = url  # what the run summaries print as the model's place
        self.selection = Selection(
            model_info["backend"],
            model_info["precision"],
            f"served by irn-serve at {url} ({model_info.get('backend_reason', '')})",
        )
        self.tiles_run = 0
        self.requests = 0
        self.seconds = 0.0  # time spent waiting for the server
        self._ids = itertools.count(1)

    # --- connection ----------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        url: str,
        model: str | None = None,
        tile: int | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        timeout: float = DEFAULT_TIMEOUT,
        log: Log | None = None,
    ) -> RemoteRescaler:
        """Connect to ``url`` and pick ``model`` (default: the only one served, else
        ``irn_x4``). ``tile`` is the HR tile for images too large for one message
        (default: the largest that fits ``max_message_bytes``)."""
        protocol, hostport = parse_server_url(url)
        mod, error_type = _tritonclient(protocol)
        if max_message_bytes <= _HEADROOM:
            raise IRNError(f"max_message_bytes must be above {_HEADROOM}, got {max_message_bytes}")
        if protocol == "grpc":
            limit = max(max_message_bytes, DEFAULT_MAX_MESSAGE)
            client = mod.InferenceServerClient(
                hostport,
                channel_args=[
                    ("grpc.max_send_message_length", limit),
                    ("grpc.max_receive_message_length", limit),
                ],
            )
        else:
            client = mod.InferenceServerClient(
                hostport, connection_timeout=min(timeout, 60.0), network_timeout=timeout
            )
        try:
            server_info = cls._query_info(client, mod, error_type, url, protocol, timeout)
            models = server_info.get("models", {})
            if model is None:
                model = next(iter(models)) if len(models) == 1 else "irn_x4"
            if model not in models:
                have = ", ".join(sorted(models)) or "none"
                raise IRNError(f"{url} does not serve {model} (it serves {have})")
            info = models[model]
            scale = int(info["manifest"]["scale"])
            tile_lr = None
            if tile is not None:
                if tile <= 0 or tile % scale:
                    raise IRNError(
                        f"--tile {tile} must be a positive multiple of the scale {scale}"
                    )
                tile_lr = tile // scale
            return cls(
                url,
                protocol,
                client,
                mod,
                error_type,
                info,
                server_info,
                max_message_bytes,
                tile_lr,
                timeout,
                log or (lambda _m: None),
            )
        except BaseException:
            client.close()
            raise

    @staticmethod
    def _query_info(
        client: Any, mod: Any, error_type: type[Exception], url: str, protocol: str, timeout: float
    ) -> dict[str, Any]:
        query = mod.InferInput("query", [1], "BYTES")
        query.set_data_from_numpy(np.array([b"models"], dtype=np.object_))
        kwargs = {"client_timeout": timeout} if protocol == "grpc" else {}
        try:
            res = client.infer(INFO_MODEL, [query], **kwargs)
        except error_type as exc:
            msg = server_error_line(exc.message() or str(exc))
            if "unknown model" in msg:
                raise IRNError(f"{url} is a Triton server, but not irn-serve ({msg})") from None
            raise IRNError(f"cannot reach irn-serve at {url}: {msg}") from None
        except (OSError, ConnectionError) as exc:
            raise IRNError(f"cannot reach irn-serve at {url}: {exc}") from None
        raw = res.as_numpy("info")[0]
        return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteRescaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def scale(self) -> int:
        return self.manifest.scale

    # --- transport -----------------------------------------------------------------------
    def infer(self, direction: str, batch: np.ndarray) -> np.ndarray:
        """One request: ``[n, h, w, 3]`` uint8 through ``<model>.<direction>``; the result
        is checked for its id and shape (nothing lost, nothing from another request)."""
        name = self.model_names[direction]
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        n, h, w = batch.shape[:3]
        s = self.scale
        want = (n, h // s, w // s, 3) if direction == "down" else (n, h * s, w * s, 3)
        inp = self._mod.InferInput(INPUT, list(batch.shape), "UINT8")
        out = self._mod.InferRequestedOutput(OUTPUT)
        rid = f"{next(self._ids)}"
        kwargs: dict[str, Any] = {"request_id": rid, "outputs": [out]}
        if self.protocol == "grpc":
            inp.set_data_from_numpy(batch)
            kwargs["client_timeout"] = self._timeout
        else:
            inp.set_data_from_numpy(batch, binary_data=True)
        t0 = time.perf_counter()
        try:
            res = self._client.infer(name, [inp], **kwargs)
        except self._error_type as exc:
            raise ServerError(f"server: {server_error_line(exc.message() or str(exc))}") from None
        except (OSError, ConnectionError) as exc:
            raise ServerError(f"lost the connection to {self.url}: {exc}") from None
        finally:
            self.seconds += time.perf_counter() - t0
        got_id = self._response_id(res)
        if got_id != rid:
            raise ServerError(f"response id {got_id!r} does not match request {rid!r}")
        result = res.as_numpy(OUTPUT)
        if result is None or tuple(result.shape) != want or result.dtype != np.uint8:
            shape = None if result is None else list(result.shape)
            raise ServerError(f"server returned {shape} for a {list(batch.shape)} {direction}")
        self.requests += 1
        self.tiles_run += n
        return result

    def _response_id(self, res: Any) -> str:
        resp = res.get_response()
        return str(resp.get("id", "")) if isinstance(resp, dict) else str(resp.id)

    def _chunking(self, direction: str, lr_h: int, lr_w: int) -> TileConfig | None:
        """None: the image fits one message; else the tiles (and tiles per request)."""
        s = self.scale
        hr_pixels = lr_h * lr_w * s * s
        if hr_pixels * 3 <= self.max_message_bytes - _HEADROOM and hr_pixels <= self.max_pixels:
            return None
        tile_bytes = (self.tile_lr * s) ** 2 * 3
        per_request = max(
            1, min(self.max_batch, (self.max_message_bytes - _HEADROOM) // tile_bytes)
        )
        return TileConfig(self.tile_lr, self.overlap_lr, batch=per_request)

    def _rescale(
        self, direction: str, img: np.ndarray, on_tile: Callable[[int], None] | None
    ) -> np.ndarray:
        s = self.scale
        in_per_lr, out_per_lr = (s, 1) if direction == "down" else (1, s)
        lr_h, lr_w = img.shape[0] // in_per_lr, img.shape[1] // in_per_lr
        config = self._chunking(direction, lr_h, lr_w)
        if config is None:
            out = self.infer(direction, img[None])[0]
            if on_tile is not None:
                on_tile(1)
            return out
        return run_tiled(
            img, lambda b: self.infer(direction, b), in_per_lr, out_per_lr, config, on_tile
        )

    def count_tiles(self, height: int, width: int, direction: str = "down") -> int:
        """How many tiles (progress units) an image of this size takes (input side)."""
        s = self.scale
        if direction == "down":
            lr_w, lr_h = scaled_lr_size((width, height), s)
        else:
            lr_w, lr_h = width, height
        config = self._chunking(direction, lr_h, lr_w)
        return 1 if config is None else len(plan_tiles(lr_h, lr_w, config.tile, config.overlap))

    # --- the Rescaler interface -------------------------------------------------------------
    def downscale(
        self, image: ImageData | np.ndarray, on_tile: Callable[[int], None] | None = None
    ) -> ImageData | np.ndarray:
        """HR -> LR of ceil(W/s) x ceil(H/s), as :meth:`Rescaler.downscale` at the model's scale."""
        img = image if isinstance(image, ImageData) else ImageData.from_array(image)
        s = self.scale
        w, h = img.size
        if min(w, h) < s:
            raise IRNError(f"{w}x{h} is too small to downscale (at least {s}x{s} at x{s})")
        lw, lh = scaled_lr_size(img.size, s)
        lr = self._rescale("down", pad_to_multiple(img.rgb, s, s), on_tile)
        alpha = None
        notes = []
        if img.alpha is not None:
            src = pad_to_multiple(img.alpha[:, :, None], s, s)[:, :, 0]
            alpha = resize_alpha(src, (lw, lh))
            notes.append(ALPHA_RESIZED_NOTE)
        meta = LRMetadata.for_model(self.manifest, img.size, img.kind, alpha is not None)
        text = text_with_metadata(img.text, meta)
        out = ImageData(lr, alpha, "rgb", img.icc_profile, text, notes)
        if isinstance(image, ImageData):
            return out
        return replace(out, kind=img.kind).to_array()

    def upscale(
        self,
        image: ImageData | np.ndarray,
        original_size: tuple[int, int] | None = None,
        on_tile: Callable[[int], None] | None = None,
    ) -> ImageData | np.ndarray:
        """LR -> HR, as :meth:`Rescaler.upscale` (metadata checked, original size restored)."""
        img = image if isinstance(image, ImageData) else ImageData.from_array(image)
        s = self.scale
        notes = []
        kind = img.kind
        meta = LRMetadata.from_text(img.text) if isinstance(image, ImageData) else None
        if meta is not None:
            meta.check_model(self.manifest)
            meta.check_lr_size(img.size)
            if meta.requested_scale is not None:
                raise IRNError(
                    f"this LR was made at x{meta.requested_scale:g} (a bicubic resize around the "
                    "model); irn-serve runs the model's own scale only: upscale it locally"
                )
            kind, original_size = meta.kind, meta.original_size
        elif isinstance(image, ImageData):
            notes.append(NO_METADATA_NOTE)
        w, h = img.size
        if original_size is None:
            original_size = (w * s, h * s)
        elif scaled_lr_size(original_size, s) != (w, h):
            ow, oh = original_size
            raise IRNError(f"original size {ow}x{oh} does not match an LR of {w}x{h} at x{s}")
        hr = self._rescale("up", img.rgb, on_tile)
        ow, oh = original_size
        hr = hr[:oh, :ow]
        alpha = None
        if img.alpha is not None:
            alpha = resize_alpha(img.alpha, original_size)
            if meta is None or not meta.alpha:
                notes.append(ALPHA_RESIZED_NOTE)
        out = ImageData(
            np.ascontiguousarray(hr),
            alpha,
            kind,
            img.icc_profile,
            text_with_metadata(img.text, None),
            notes,
        )
        return out if isinstance(image, ImageData) else out.to_array()


def connect_for_cli(args: Any, log: Log | None = None) -> RemoteRescaler:
    """``irn-trt-run --server URL``: the flags that only mean something locally are refused
    in one line; ``--model`` picks the served model, ``--tile`` the tile of large images."""
    from .trt_plan import parse_wxh

    local_only = {
        "--model-dir": args.model_dir is not None,
        "--scale": args.scale is not None,
        "--backend": args.backend != "auto",
        "--precision": args.precision != "auto",
        "--overlap": args.overlap is not None,
        "--no-tile": args.no_tile,
        "--max-memory": args.max_memory is not None,
        "--threads": args.threads is not None,
        "--batch": args.batch is not None,
        "--cache-dir": args.cache_dir is not None,
        "--plugins": args.plugins,
    }
    given = [flag for flag, on in local_only.items() if on]
    if given:
        raise IRNError(
            f"--server runs on the server's settings; {', '.join(given)} only apply locally "
            "(set them on irn-serve)"
        )
    tile = None
    if args.tile is not None:
        w, h = parse_wxh(args.tile, "--tile")
        if w != h:
            raise IRNError(f"--tile {args.tile}: --server tiles are square (one number)")
        tile = w
    return RemoteRescaler.connect(args.server, model=args.model, tile=tile, log=log)
