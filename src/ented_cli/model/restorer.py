"""The `Restorer` interface the pipeline talks to, and its ENTED implementation.

A restorer takes aligned 256x256 faces (float32 BGR in [0, 1], N x 256 x 256 x 3, as OpenCV
reads them), optional reference faces per face, and a fidelity weight, and returns restored faces
in the same layout. Reference features are computed once per reference photo and cached by the
caller's key. The network works in RGB: `network_rgb` is the one place the channels flip.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

import numpy as np

from ented_cli.errors import EntedError, UsageError, WeightsError

FACE_SIZE = 256


def network_rgb(faces: np.ndarray) -> np.ndarray:
    """BGR ↔ RGB: the restore path is BGR (OpenCV), the network RGB. Its own inverse."""
    return np.ascontiguousarray(faces[..., ::-1])


def _stderr_warning(message: str) -> None:
    print(f"ented: warning: {message}", file=sys.stderr)


class Restorer(Protocol):
    name: str

    def add_reference(self, key: Hashable, face: np.ndarray) -> None: ...

    def restore(
        self, faces: np.ndarray, references: Sequence[Sequence[Hashable]], fidelity: float
    ) -> np.ndarray: ...


def pick_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this torch build sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def pick_dtype(name: str, device, measured: dict | None = None):
    """The compute dtype for --dtype ``name``. ``auto``: fp32 on CPU (fast enough, exact); on a
    GPU the first of fp16, bf16 that the weights' export measured safe (the manifest's
    "inference_dtypes", `ented_cli.train.export`), else fp32; fp16 when nothing was measured."""
    import torch

    if name == "auto":
        if device.type == "cpu":
            return torch.float32
        if not measured:
            return torch.float16
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        for dtype, usable in ((torch.float16, True), (torch.bfloat16, bf16_ok)):
            result = measured.get(str(dtype).removeprefix("torch."))
            if usable and isinstance(result, dict) and result.get("safe") is True:
                return dtype
        return torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if name not in table:
        raise UsageError(f"--dtype {name!r} is unknown; use auto, float32, float16 or bfloat16")
    return table[name]


def default_batch_size(device) -> int:
    # On CPU a batch brings no speed-up per face, only memory (`ented bench`, docs/benchmarks.md:
    # 1.0x up to batch 8, 0.68x at 16); GPUs gain from large batches.
    return 1 if device.type == "cpu" else 16


class EntedRestorer:
    """Runs the ENTED generator from a weight set on one device.

    `threads`: torch's CPU threads on --device cpu, a count or None/"auto" (ENTED_THREADS, then
    OMP_NUM_THREADS, then the cores other processes leave free: `model/threads.py`).
    `backend`: what runs the generator: "torch", "onnxruntime" (faster on a CPU) or "auto" (ONNX
    Runtime where it can run); None: ENTED_BACKEND, else torch (`model/onnx_engine.py`).
    References are encoded in torch either way.
    """

    def __init__(
        self,
        weight_set,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | None = None,
        warn=None,
        threads: int | str | None = None,
        backend: str | None = None,
    ):
        import torch

        from ented_cli.model.config import EntedConfig
        from ented_cli.model.generator import EntedGenerator
        from ented_cli.model.onnx_engine import OnnxGenerator, choose_backend, requested_backend
        from ented_cli.model.weights import load_state_dict

        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device, weight_set.info.get("inference_dtypes"))
        self.batch_size = batch_size or default_batch_size(self.device)
        self.threads: int | None = None  # torch's intra-op threads; None: torch's (not on CPU)
        self.threads_source = "torch"
        self.use_threads(threads)
        self.name = weight_set.name
        # Where warnings go (the CLI passes one that honours -q).
        self.warn = warn or _stderr_warning
        where = weight_set.manifest or weight_set.shards[0]
        try:
            config = EntedConfig.from_dict(weight_set.config)
        except (TypeError, ValueError) as e:
            raise WeightsError(
                f"{where}: not an ENTED weight set ({e}); use weights made by `ented export`"
            ) from None
        requested = requested_backend(backend)
        self.backend = choose_backend(requested, self.device, self.dtype, config)
        # Verify (sha256) and read every shard before any model exists: a damaged file stops
        # here, and nothing below ever sees a state dict that is not complete and checked.
        state = load_state_dict(weight_set)
        model = EntedGenerator(config)
        _check_fit(model.state_dict(), state, where)
        model.load_state_dict(state, strict=True)
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self._onnx = None
        if self.backend == "onnxruntime":
            try:  # exports the graph, or reads it from the cache
                self._onnx = OnnxGenerator(self.model)
            except EntedError as e:
                if requested != "auto":
                    raise
                self.warn(f"{e}; the generator runs on torch")
                self.backend = "torch"
        self._refs: dict = {}
        # Weights with the aligned-reference route need each reference's pixels and 68 points,
        # to warp it onto every face it is used for.
        self._ref_faces: dict = {}
        self._landmarks = None
        self._torch = torch

    def use_threads(self, threads: int | str | None = None) -> None:
        """Compute with `threads` CPU threads (None or "auto": `choose_threads`) on --device cpu;
        other devices keep torch's own count."""
        from ented_cli.model.threads import apply_threads, choose_threads

        choice = choose_threads(threads)  # a bad count is a usage error on any device
        if self.device.type == "cpu":
            self.threads, self.threads_source = apply_threads(choice.count), choice.source

    @property
    def uses_guide(self) -> bool:
        return bool(self.model.config.use_guide)

    def _points(self, face: np.ndarray) -> np.ndarray:
        from ented_cli.faces.refwarp import Landmarks68, to_uint8

        if self._landmarks is None:
            self._landmarks = Landmarks68()
        return self._landmarks(to_uint8(face))

    def guide(self, face: np.ndarray, keys: Sequence[Hashable]) -> np.ndarray | None:
        """H×W×4 warped reference + mask for one face (RGB in [0, 1]), from the reference whose
        face geometry is closest to it; None when blind."""
        from ented_cli.faces.refwarp import guide_array, pose_distance

        if not keys or not self.uses_guide:
            return None
        points = self._points(face)
        ref_face, ref_points = min(
            (self._ref_faces[k] for k in keys), key=lambda fp: pose_distance(fp[1], points)
        )
        return guide_array(ref_face, ref_points, points)

    def _to_tensor(self, rgb: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)
        return t.to(self.device, self.dtype) * 2 - 1

    def add_reference(self, key: Hashable, face: np.ndarray) -> None:
        """Encode one reference face (256 x 256 x 3 float BGR) once; later faces reuse it by key."""
        if key in self._refs:
            return
        rgb = network_rgb(np.asarray(face, np.float32))
        try:
            with self._torch.inference_mode():
                features = self.model.encode_reference(self._to_tensor(rgb[None]))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            features = None
        if features is None:  # outside the except block, whose traceback pins the tensors
            self._free_cached_memory()
            raise EntedError(self._out_of_memory_message("a reference face"))
        self._refs[key] = features
        if self.uses_guide:
            self._ref_faces[key] = (rgb, self._points(rgb))

    def forget_references(self, keys: Iterable[Hashable]) -> None:
        """Drop encoded references (about 7 MB each) that no later face will use."""
        for key in keys:
            self._refs.pop(key, None)
            self._ref_faces.pop(key, None)

    def restore(
        self, faces: np.ndarray, references: Sequence[Sequence[Hashable]], fidelity: float
    ) -> np.ndarray:
        """Restore `faces` in batches; out of memory halves the batch for good and tries again.

        Each face's result does not depend on the batch it ran in (up to float rounding), so a
        retried run gives the same outputs as one that never ran out of memory.
        """
        if self.threads is not None and self._torch.get_num_threads() != self.threads:
            self._torch.set_num_threads(self.threads)  # called from another thread than __init__
        out, start = [], 0
        while start < len(faces):
            stop = min(start + self.batch_size, len(faces))
            try:
                chunk = self._restore_batch(faces[start:stop], references[start:stop], fidelity)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                chunk = None
            # Recover outside the except block: its traceback still holds the failed batch's
            # tensors, so memory could not be handed back from inside it.
            if chunk is None:
                self._free_cached_memory()
                if self.batch_size == 1:
                    raise EntedError(self._out_of_memory_message("one face"))
                # Half of what failed (not of --batch-size, which may exceed the faces left), and
                # kept for the rest of the run: growing back would fail again and again.
                self.batch_size = (stop - start + 1) // 2
                self.warn(
                    f"out of {self._memory_name()}; retrying with --batch-size {self.batch_size}"
                )
                continue
            out.append(chunk)
            start = stop
        return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.float32)

    def _memory_name(self) -> str:
        return "memory" if self.device.type == "cpu" else f"{self.device.type.upper()} memory"

    def _out_of_memory_message(self, what: str) -> str:
        if self.device.type == "cpu":
            fix = "close other programs or use a machine with more memory"
        else:
            fix = "use --device cpu, or free the GPU of other programs"
        return f"out of {self._memory_name()} ({self.device}) even for {what}; {fix}"

    def _free_cached_memory(self) -> None:
        torch = self._torch
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    def _restore_batch(
        self, faces: np.ndarray, references: Sequence[Sequence[Hashable]], fidelity: float
    ) -> np.ndarray:
        from ented_cli.model.generator import ReferenceFeatures

        torch = self._torch
        rgb = network_rgb(faces)
        with torch.inference_mode():
            lq = self._to_tensor(rgb)
            per_face = []
            for i, keys in enumerate(references):
                if keys:
                    per_face.append(ReferenceFeatures.join([self._refs[k] for k in keys]))
                else:  # blind: the face is its own reference, as in training
                    per_face.append(self.model.encode_reference(lq[i : i + 1]))
            guide = None
            if self.uses_guide:
                from ented_cli.model.guide import stack_guides

                guides = [self.guide(face, keys) for face, keys in zip(rgb, references)]
                guide = stack_guides(guides, lq.shape[-1]).to(self.device, self.dtype)
            refs = ReferenceFeatures.stack(per_face)
            if self._onnx is not None:
                restored = self._onnx(lq, refs, fidelity, guide, self.threads)
            else:
                restored = self.model(lq, refs, fidelity, guide=guide)
            restored = ((restored.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
            return network_rgb(restored.cpu().numpy())


# How an allocation failure reads on each backend: CUDA raises torch.OutOfMemoryError; the CPU
# allocator and older MPS builds raise a RuntimeError with one of these phrases.
_OOM_PHRASES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True when `exc` is an allocation failure (any device) rather than a bug."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc) for p in _OOM_PHRASES)


def _check_fit(expected: dict, state: dict, where) -> None:
    """Raise one WeightsError line unless `state` has exactly the model's tensors and shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]!r})")
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} tensor(s) of the wrong shape (e.g. {k!r} is "
            f"{tuple(state[k].shape)}, the model needs {tuple(expected[k].shape)})"
        )
    raise WeightsError(
        f"{where}: weights do not fit the ENTED model their config describes: {', '.join(parts)}; "
        "re-copy the weight set or re-export it with `ented export`"
    )
