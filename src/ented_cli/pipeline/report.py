"""What `ented restore --json` prints, one line per input: `ImageReport.to_json()` is the schema.

    {"input": "old.jpg", "output": "results/old.jpg", "status": "restored", "error": null,
     "fidelity": 0.5, "width": 1024, "height": 768,
     "timing_ms": {"read": .., "detect": .., "align": .., "match": .., "restore": ..,
                   "paste": .., "write": .., "total": ..},
     "faces": [FaceReport.to_json(), ...]}

`warnings`, `faces_saved`, `comparison` and `comparison_faces` appear only when there is
something to say; `width` and `height` once the input was read, `faces` once its faces were found
(also in the report of an input that failed later; not for an input that failed before, nor for
one skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Status of one input. SKIPPED: its output already existed (--skip-existing).
RESTORED, UNCHANGED, NO_FACE, ERROR = "restored", "unchanged", "no_face", "error"
SKIPPED = "skipped"

# Why a face has no reference (mode "blind") or was not restored (mode "skipped"): its `reason`.
NO_REFERENCES = "no_references"  # the run gave no reference photos
BELOW_THRESHOLD = "below_threshold"  # no reference person reaches --match-threshold
PERSON_TAKEN = "person_taken"  # the matching person went to a closer face of the same photo
NOT_CHOSEN = "not_chosen"  # --faces largest|center chose another face
REASONS = (NO_REFERENCES, BELOW_THRESHOLD, PERSON_TAKEN, NOT_CHOSEN)


@dataclass
class FaceReport:
    box: list[float]  # x0, y0, x1, y1 in the input image
    score: float  # detector confidence
    landmarks: list[list[float]]  # five points: eyes, nose, mouth corners
    restored: bool
    mode: str  # "reference" | "blind" | "skipped"
    guard: str | None  # "passed" | "kept_input" (the do-no-harm checks) | None (not run)
    person: str | None  # the reference person it was paired with
    references: list[str]  # that person's photos
    match_similarity: float | None  # best identity similarity to the gallery
    reason: str | None = None  # one of REASONS when the face has no reference; else None
    guard_reason: str | None = None  # with "kept_input": "already_sharp" | "less_like_reference"
    # identity_before / identity_after / identity_kept (with --json)
    identity: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record = {
            "box": self.box,
            "score": self.score,
            "landmarks": self.landmarks,
            "restored": self.restored,
            "mode": self.mode,
            "guard": self.guard,
            "guard_reason": self.guard_reason,
            "person": self.person,
            "references": self.references,
            "match_similarity": self.match_similarity,
            "reason": self.reason,
        }
        record.update(self.identity)
        return record


@dataclass
class ImageReport:
    input: str  # as the user named it ("-" for stdin)
    output: str | None = None  # where it was written; None when it failed
    fidelity: float | None = None
    status: str | None = None  # RESTORED | UNCHANGED | NO_FACE | ERROR | SKIPPED
    error: str | None = None  # the one-line message when status is ERROR
    width: int | None = None
    height: int | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    faces: list[FaceReport] | None = None
    faces_saved: list[str] | None = None  # --save-faces
    comparison: str | None = None  # --save-cmp: the photo, before | after
    comparison_faces: str | None = None  # --save-cmp: the restored faces' crops

    def fail(self, message: str) -> None:
        self.status, self.error, self.output = ERROR, message, None

    @property
    def failed(self) -> bool:
        return self.status == ERROR

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "fidelity": self.fidelity,
        }
        if self.width is not None:
            record.update(width=self.width, height=self.height)
        record["timing_ms"] = self.timing_ms
        optional = {
            "warnings": self.warnings or None,
            "faces": None if self.faces is None else [f.to_json() for f in self.faces],
            "faces_saved": self.faces_saved,
            "comparison": self.comparison,
            "comparison_faces": self.comparison_faces,
        }
        record.update({k: v for k, v in optional.items() if v is not None})
        return record
