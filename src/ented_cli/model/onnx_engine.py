"""The generator on ONNX Runtime (`--backend onnxruntime`, env ENTED_BACKEND): the same network
as PyTorch eager, faster on a CPU one face at a time (docs/benchmarks.md, "The generator on ONNX
Runtime": about 1.5x at 1 and 2 threads, outputs within one 8-bit level). Opt-in: it needs the
`onnx` package (`pip install "ented[onnx]"`) and a few seconds to export the graph, once.

The graph is exported from the loaded model itself (torch.onnx's TorchScript exporter), so it is
always the code and the weights in use. It is cached under $ENTED_CACHE_DIR (default
~/.cache/ented) by a hash of the generator's source, its config and weights and torch's version;
where the cache cannot be written it is made in memory, every run.

The graph restores one face: the aligned input, the guide, the fidelity and the reference
features (which `EntedRestorer` computes once per reference, in torch). The number of reference
tokens and positions is free, so several references per face work; nn.MultiheadAttention would
be exported with its key length fixed, so the style refiner's attention is written out here with
the same weights (`_refine`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from inspect import signature
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ented_cli.errors import EntedError, UsageError
from ented_cli.model.weights import first_line

BACKENDS = ("auto", "torch", "onnxruntime")
ENV = "ENTED_BACKEND"
# Part of the cache key: change it when the exported wrapper below changes.
GRAPH_VERSION = "1"
# The modules the generator's forward pass runs through (their source is in the cache key).
_SOURCES = ("generator.py", "layers.py", "nted.py", "style.py", "guide.py", "vq.py", "config.py")
_OPSET = 17

log = logging.getLogger("ented")


def requested_backend(name: str | None) -> str:
    """--backend `name` checked; None: ENTED_BACKEND, else torch."""
    name = (name or os.environ.get(ENV) or "torch").strip().lower()
    if name not in BACKENDS:
        raise UsageError(f"--backend {name!r} is unknown; use auto, torch or onnxruntime")
    return name


def choose_backend(name: str, device, dtype, config) -> str:
    """ "torch" or "onnxruntime" for the requested `name`. auto: ONNX Runtime where it can run
    (CPU, float32, the onnx package to export with), else torch."""
    if name == "torch":
        return name
    if device.type != "cpu":
        why = "runs on the CPU; use --device cpu, or --backend torch on a GPU"
    elif dtype != torch.float32:
        why = "computes in float32; use --dtype float32 or --backend torch"
    elif not (config.use_nted and config.use_ref_style):
        why = "needs a network with the reference route; use --backend torch for these weights"
    elif importlib.util.find_spec("onnx") is None:
        why = 'needs the onnx package to convert the network: pip install "ented[onnx]"'
    else:
        return "onnxruntime"
    if name == "auto":
        return "torch"
    raise UsageError(f"--backend onnxruntime {why}")


def cache_dir() -> Path:
    if env := os.environ.get("ENTED_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ented"


class OnnxGenerator:
    """`generator(lq, refs, fidelity, guide)` like `EntedGenerator.__call__` (float32 CPU
    tensors, any batch: the faces go through one at a time), on ONNX Runtime."""

    def __init__(self, model):
        self.model = model
        self.resolutions = sorted(int(r) for r in model.extract)
        self.uses_guide = bool(model.config.use_guide)
        self._sessions: dict[int, object] = {}  # intra-op threads -> session
        try:  # the cached file's path, or the graph itself
            self._graph: bytes | str = self._graph_source()
        except Exception as e:  # a torch whose exporter cannot trace this network
            raise EntedError(
                f"cannot convert the generator for ONNX Runtime ({first_line(e)}); "
                "use --backend torch"
            ) from None

    def __call__(self, lq, refs, fidelity, guide, threads: int | None = None):
        session = self._session(threads or 1)
        n = lq.shape[0]
        fidelities = np.broadcast_to(np.asarray(fidelity, np.float32).reshape(-1), (n,))
        out = []
        for i in range(n):
            feed = {
                "lq": _array(lq[i : i + 1]),
                "fidelity": fidelities[i : i + 1].copy(),
                **self._reference_inputs(refs.select(i)),
            }
            if self.uses_guide:
                feed["guide"] = _array(guide[i : i + 1])
            out.append(session.run(None, feed)[0])
        return torch.from_numpy(np.concatenate(out))

    def _reference_inputs(self, refs) -> dict[str, np.ndarray]:
        tokens = _array(refs.tokens)
        feed = {"tokens": tokens, "token_mask": _mask(refs.token_mask, tokens.shape[:2])}
        for r in self.resolutions:
            keys = refs.keys[r]
            logits = _array(keys.logits)
            feed[f"logits{r}"], feed[f"values{r}"] = logits, _array(keys.values)
            feed[f"mask{r}"] = _mask(keys.mask, (logits.shape[0], logits.shape[2]))
        return feed

    def _session(self, threads: int):
        if threads not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only (it warns about buffer reuse)
            # Idle threads sleep instead of spinning: on a busy machine spinning costs more than
            # it saves (the same reason the CLI sets OMP_WAIT_POLICY=PASSIVE for torch).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[threads] = ort.InferenceSession(
                self._graph, options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[threads]

    def _graph_source(self) -> bytes | str:
        """The cached graph's path, exporting it first when there is none."""
        from ented_cli.imaging.atomic import write_atomic

        path = cache_dir() / "onnx" / f"generator-{graph_key(self.model)[:24]}.onnx"
        if path.is_file():
            return str(path)
        graph = export_graph(self.model)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, graph)
            return str(path)
        except (OSError, EntedError) as e:  # no cache: the graph from memory, this run only
            log.debug("ONNX graph not cached at %s: %s", path, e)
            return graph


def graph_key(model) -> str:
    """A hash of everything the exported graph depends on."""
    h = hashlib.sha256(f"{GRAPH_VERSION} {torch.__version__} {_OPSET}".encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    h.update(json.dumps(asdict(model.config), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_graph(model) -> bytes:
    """The ONNX graph (with its weights) of one face through `model` (float32, CPU)."""
    size = model.config.size
    generator = torch.Generator().manual_seed(0)  # example values: any that take every path
    lq = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    wrapper = _OneFace(model)
    with torch.inference_mode():
        refs = model.encode_reference(lq)
    inputs = {"lq": lq, "fidelity": torch.tensor([0.5])}
    if wrapper.uses_guide:
        inputs["guide"] = torch.rand(1, 4, size, size, generator=generator)
    inputs["tokens"] = refs.tokens.clone()
    inputs["token_mask"] = torch.zeros(refs.tokens.shape[:2], dtype=torch.bool)
    dynamic = {"tokens": {1: "tokens"}, "token_mask": {1: "tokens"}}
    for r in wrapper.resolutions:
        keys = refs.keys[r]
        inputs[f"logits{r}"], inputs[f"values{r}"] = keys.logits.clone(), keys.values.clone()
        inputs[f"mask{r}"] = torch.zeros(keys.logits.shape[0], keys.logits.shape[2], dtype=bool)
        dynamic.update({f"logits{r}": {2: f"n{r}"}, f"values{r}": {2: f"n{r}"}})
        dynamic[f"mask{r}"] = {1: f"n{r}"}
    buffer = io.BytesIO()
    # The TorchScript exporter (no onnxscript needed); torch before 2.5 has no other.
    legacy = {"dynamo": False} if "dynamo" in signature(torch.onnx.export).parameters else {}
    with _refiner_written_out(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapper,
            tuple(inputs.values()),
            buffer,
            **legacy,
            opset_version=_OPSET,
            input_names=list(inputs),
            output_names=["restored"],
            dynamic_axes=dynamic,
        )
    return buffer.getvalue()


def _array(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def _mask(mask, shape) -> np.ndarray:
    return np.zeros(shape, bool) if mask is None else np.ascontiguousarray(mask.cpu().numpy())


class _OneFace(nn.Module):
    """The generator's forward with its inputs as plain tensors (what a graph can take)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.resolutions = sorted(int(r) for r in model.extract)
        self.uses_guide = bool(model.config.use_guide)

    def forward(self, lq, fidelity, *rest):
        from ented_cli.model.generator import ReferenceFeatures
        from ented_cli.model.nted import TextureKeys

        guide = None
        if self.uses_guide:
            guide, *rest = rest
        tokens, token_mask, *per_res = rest
        keys = {
            r: TextureKeys(per_res[3 * i], per_res[3 * i + 1], per_res[3 * i + 2])
            for i, r in enumerate(self.resolutions)
        }
        refs = ReferenceFeatures(keys, tokens, token_mask)
        return self.model(lq, refs, fidelity, guide=guide)


@contextmanager
def _refiner_written_out(model):
    """The style refiner's attention as plain matrix products while the graph is traced."""
    import types

    refiner = model.style_refiner
    refiner.forward = types.MethodType(_refine, refiner)
    try:
        yield
    finally:
        del refiner.forward  # the class's own forward again


def _refine(self, w_lq, tokens, mask):
    """`ReferenceStyleRefiner.forward` with nn.MultiheadAttention's arithmetic spelled out (the
    same weights, equal to float rounding), the token count left free."""
    attn = self.attn
    heads, dim = attn.num_heads, attn.embed_dim
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    batch, layers = w_lq.shape[:2]  # fixed sizes: the modulated convolutions need them known

    def split(x, w, b, length):  # B x L x D -> B x heads x L x D/heads
        return F.linear(x, w, b).reshape(batch, length, heads, dim // heads).transpose(1, 2)

    q = split(self.norm(w_lq), w_q, b_q, layers)
    k, v = split(tokens, w_k, b_k, -1), split(tokens, w_v, b_v, -1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim // heads)
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, layers, dim)
    return w_lq + self.out(attn.out_proj(attended))
