"""Identity embeddings of aligned face crops (dlib's ResNet face descriptor).

The pipeline aligns every face to the FFHQ-style template before it gets here, so the face
always sits in the same place: the face rectangle is derived from the template and dlib's face
detector is never run. dlib's 5-point shape predictor then refines the landmarks inside that
rectangle, and its ResNet maps the face chip it cuts from them to a 128-d descriptor.

dlib is imported inside `IdentityEncoder`, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ented_cli.errors import WeightsError

# Same person if cosine similarity >= MATCH_THRESHOLD. Measured on london (102 people, aligned 256
# crops; same person = neutral vs smiling; different = 10,302 neutral-vs-smiling pairs of two people):
#   same person, both clean:     min 0.858*  1st pct 0.961  median 0.989
#   same, smiling degraded**:    min 0.848*  1st pct 0.929  median 0.971
#   same, harsher (x8, s3, q30): min 0.842*  1st pct 0.903  median 0.946
#   different people, clean:     median 0.837  99th pct 0.915  99.9th pct 0.934  max 0.948
#   different, query degraded**: median 0.834  99th pct 0.910  99.9th pct 0.927  max 0.946
#   (*) london 005_neutral is misaligned in the data (face at the top of the crop); without it the
#       minima are 0.960 / 0.929 / 0.903.  (**) downscale x4 (area), upscale (bicubic), Gaussian
#       blur sigma 2, JPEG q40, matched against the other expression, clean.
# At 0.92: TPR clean 99.0 % (101/102), degraded 99.0 % (101/102), harsher 94.1 % (96/102);
# FPR 0.58 % (60/10302) clean, 0.28 % with a degraded query. 0.915 would reach FPR 0.98 %, 0.93
# starts to lose degraded faces. dlib's own rule (euclidean < 0.6 on descriptors of norm ~1.47)
# lands at the same place: 1 - 0.6**2 / (2 * 1.47**2) = 0.917.
# In a gallery every extra person is another chance of a look-alike: a stranger is accepted by
# some person of a 5-person gallery 3 % of the time, of a 30-person gallery 15 % (london, 0.92).
MATCH_THRESHOLD: float = 0.92

# dlib's shape predictor was trained on its HOG detector's boxes. On the 204 aligned london crops
# that detector returns a square box centred near the eye-mouth midpoint with a side of about
# 2.3x the eye-to-mouth distance, so that is the box we hand the predictor.
_BOX_SIDE_PER_EYE_MOUTH = 2.3

_MODEL_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


def _models_dir() -> Path:
    # find_spec, not import: face_recognition_models' __init__ needs pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "face_recognition_models is not installed: run `pip install face_recognition_models`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in _MODEL_FILES:
        if not (folder / name).is_file():
            raise WeightsError(
                f"{folder / name} is missing: reinstall with "
                "`pip install --force-reinstall face_recognition_models`"
            )
    return folder


def face_box(size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the face rectangle in an aligned crop of side `size`."""
    from ented_cli.faces.align import TEMPLATE_512

    points = TEMPLATE_512 * (size / 512.0)
    eyes = points[:2].mean(axis=0)
    mouth = points[3:].mean(axis=0)
    center = (eyes + mouth) / 2.0
    half = _BOX_SIDE_PER_EYE_MOUTH * float(np.linalg.norm(mouth - eyes)) / 2.0
    left, top = np.round(center - half).astype(int)
    right, bottom = np.round(center + half).astype(int)
    return int(left), int(top), int(right), int(bottom)


def _to_rgb(crop: np.ndarray) -> np.ndarray:
    if crop.dtype != np.uint8:
        raise ValueError(f"identity crops must be uint8, got {crop.dtype}")
    if crop.ndim == 2:
        return np.ascontiguousarray(np.repeat(crop[:, :, None], 3, axis=2))
    if crop.ndim == 3 and crop.shape[2] in (3, 4):
        # The pipeline works in BGR(A); dlib's network was trained on RGB.
        return np.ascontiguousarray(crop[:, :, 2::-1])
    raise ValueError(f"identity crops must be HxW or HxWx3/4, got shape {crop.shape}")


class IdentityEncoder:
    """128-d dlib face descriptors of aligned crops; the dlib models load once per encoder."""

    def __init__(self) -> None:
        import dlib  # heavy, and only the pipeline's pairing step needs it

        folder = _models_dir()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(folder / _MODEL_FILES[0]))
        self._net = dlib.face_recognition_model_v1(str(folder / _MODEL_FILES[1]))

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 descriptors of aligned square crops (uint8 BGR, BGRA or gray).

        Built for 256 crops on the FFHQ-style template; other square sizes work because the
        face rectangle scales with the crop. No jitter (dlib's default): the result is
        deterministic, and jitter buys little on crops that are already aligned.
        """
        out = np.empty((len(crops), 128), dtype=np.float32)
        for i, crop in enumerate(crops):
            rgb = _to_rgb(np.asarray(crop))
            height, width = rgb.shape[:2]
            if height != width:
                raise ValueError(
                    f"identity crops must be square aligned faces, got {width}x{height}"
                )
            rect = self._dlib.rectangle(*face_box(width))
            shape = self._predictor(rgb, rect)
            out[i] = np.asarray(self._net.compute_face_descriptor(rgb, shape, 0), dtype=np.float32)
        return out


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity in [-1, 1] between descriptors (1 = same direction).

    Two single vectors (128,) give a float; (N, 128) against (M, 128) give an (N, M) array, and
    a single vector against a stack gives a 1-D array. dlib descriptors of faces are never far
    apart: different people typically score about 0.84, the same person 0.95-0.99 (see
    MATCH_THRESHOLD).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a_unit = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b_unit = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    sim = a_unit @ b_unit.T
    if np.ndim(sim) == 0:
        return float(sim)
    return sim
