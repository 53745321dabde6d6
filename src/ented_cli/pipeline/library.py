"""Reference photos, each read, detected, aligned, embedded and encoded once per run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from ented_cli.errors import EntedError, InputError
from ented_cli.faces.align import estimate_alignment, warp_face
from ented_cli.faces.detect import FaceDetector
from ented_cli.imaging.pixels import LoadedImage, to_float_bgr, to_uint8
from ented_cli.imaging.read import read_image
from ented_cli.model.restorer import FACE_SIZE, Restorer
from ented_cli.paths import DEFAULT_MAX_PIXELS, file_key
from ented_cli.pipeline.references import ReferenceFace


class ReferenceLibrary:
    """The reference faces of a run. The restorer caches each one's features under
    `reference_key(face)`, so a photo used for a thousand inputs is encoded once."""

    def __init__(
        self,
        detector: FaceDetector,
        encoder,
        restorer: Restorer,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.detector, self.encoder, self.restorer = detector, encoder, restorer
        self.max_pixels = max_pixels
        self._faces: dict[str, ReferenceFace] = {}

    def face(self, person: str, path: Path, image: LoadedImage | None = None) -> ReferenceFace:
        """The largest face of a reference photo (InputError if unreadable or without a face);
        `image`: the photo already decoded, so it is not read twice."""
        key = file_key(path)
        if key not in self._faces:
            if image is None:
                image = read_image(path, max_pixels=self.max_pixels)
            self.add_image(key, person, path, image)
        cached = self._faces[key]
        return ReferenceFace(person, cached.path, cached.crop, cached.embedding)

    def array_face(self, person: str, image: LoadedImage) -> ReferenceFace:
        """A reference given as pixels (Python API). Known by its content, never by `id()`:
        Python reuses ids, and a reused id must not bring back another photo's features."""
        digest = hashlib.sha256(image.pixels.tobytes())
        digest.update(repr((image.pixels.shape, image.pixels.dtype.str)).encode())
        name = f"<array {digest.hexdigest()[:16]}>"
        if name not in self._faces:
            self.add_image(name, person, Path(name), image)
        cached = self._faces[name]
        return ReferenceFace(person, cached.path, cached.crop, cached.embedding)

    def add_image(self, key: str, person: str, path: Path, image: LoadedImage) -> ReferenceFace:
        """Detect, align, embed and encode (for the restorer) the largest face of `image`."""
        faces = self.detector.detect(image.pixels)
        if not faces:
            raise InputError(
                f"{path}: no face found in this reference; use a photo where the face is clearly "
                "visible"
            )
        face = max(faces, key=lambda f: f.size)
        crop = warp_face(
            to_float_bgr(image), estimate_alignment(face.landmarks, FACE_SIZE), FACE_SIZE
        )
        embedding = self.encoder.embed([to_uint8(crop)])[0]
        ref = ReferenceFace(person, Path(path), to_uint8(crop), embedding)
        self.restorer.add_reference(reference_key(ref), crop)
        self._faces[key] = ref
        return ref

    def faces(
        self,
        refs: Iterable[tuple[str, Path]],
        errors: list[str],
        decoded: dict[str, LoadedImage] | None = None,
    ) -> list[ReferenceFace]:
        """The reference faces of `refs`; each that cannot be used adds its message to `errors`.
        `decoded`: photos already read, by `file_key`."""
        found = []
        for person, path in refs:
            try:
                found.append(self.face(person, path, (decoded or {}).get(file_key(path))))
            except EntedError as e:
                errors.append(str(e))
        return found


def reference_key(face: ReferenceFace) -> str:
    """How the restorer knows a reference photo: its real path (or its content name)."""
    return str(face.path) if face.path.name.startswith("<array") else file_key(face.path)


def merge_same_person(faces: list[ReferenceFace], threshold: float) -> list[ReferenceFace]:
    """Loose reference files of one person (`--ref a.jpg --ref b.jpg`) become one person, so the
    generator extracts texture from all of them; different people stay apart."""
    from ented_cli.faces.identity import similarity

    merged: list[ReferenceFace] = []
    for face in faces:
        for other in merged:
            if (
                other.person != face.person
                and similarity(face.embedding, other.embedding) >= threshold
            ):
                face = ReferenceFace(other.person, face.path, face.crop, face.embedding)
                break
        merged.append(face)
    return merged
