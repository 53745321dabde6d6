"""What `ented eval` hands back: averages, a Markdown table, the JSON report, a contact sheet."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Every row `ented eval` can score, in table order; a run scores BASE_METHODS and any of
# EXTRA_METHODS not switched off (--no-wrong-ref, --no-classical).
METHODS = ("input", "blind", "ented", "wrong_ref", "classical")
BASE_METHODS = ("input", "blind", "ented")
EXTRA_METHODS = ("wrong_ref", "classical")
METHOD_LABELS = {
    "input": "input (degraded, bicubic)",
    "blind": "blind (no reference)",
    "ented": "ented (with reference)",
    "wrong_ref": "wrong_ref (another person's reference)",
    "classical": "classical (landmark warp + detail transfer)",
}
# (key, column title, decimals); arrows say which way is better.
COLUMNS = (
    ("psnr", "PSNR ↑", 2),
    ("ssim", "SSIM ↑", 4),
    ("lpips", "LPIPS ↓", 4),
    ("id_gt", "ID→GT ↑", 4),
    ("id_ref", "ID→ref ↑", 4),
    ("fid", "FID ↓", 2),
)


def rounded(value: float | None, decimals: int = 6) -> float | None:
    """A metric for JSON: 6 decimals (float32 noise beyond), and null for PSNR's inf (identical
    images), since JSON has no inf."""
    return round(value, decimals) if value is not None and math.isfinite(value) else None


def methods_of(images: list[dict]) -> tuple[str, ...]:
    """The rows scored in a run (those of METHODS present in its images), in table order."""
    return tuple(m for m in METHODS if any(m in im for im in images))


def averages(
    images: list[dict], metrics: tuple[str, ...], methods: tuple[str, ...] | None = None
) -> dict[str, dict[str, float | None]]:
    """Mean of each metric per method over the images (finite values only; None if none).
    `methods` defaults to the rows present in the images."""
    out: dict[str, dict[str, float | None]] = {}
    for method in methods_of(images) if methods is None else methods:
        out[method] = {}
        for metric in metrics:
            values = [
                im[method][metric]
                for im in images
                if im.get(method) and im[method].get(metric) is not None
            ]
            values = [v for v in values if math.isfinite(v)]
            out[method][metric] = float(np.mean(values)) if values else None
    return out


def difference(
    means: dict[str, dict[str, float | None]], a: str, b: str
) -> dict[str, float | None]:
    """Row a − row b, metric by metric (None where either is missing)."""
    first, second = means[a], means[b]
    return {
        k: (first[k] - second[k])
        if first.get(k) is not None and second.get(k) is not None
        else None
        for k in first
    }


def contribution(means: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """What the reference adds: ented − blind, metric by metric."""
    return difference(means, "ented", "blind")


def right_vs_wrong(means: dict[str, dict[str, float | None]]) -> dict[str, float | None] | None:
    """What the right person's reference adds over another person's: ented − wrong_ref (None
    when the wrong_ref row was not scored). Near zero: the weights do not use whose face it is."""
    return difference(means, "ented", "wrong_ref") if "wrong_ref" in means else None


def _cell(value: float | None, decimals: int, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def markdown_table(means: dict, delta: dict, right_wrong: dict | None = None) -> str:
    """Methods × metric averages, the reference's contribution (ented − blind) and, when the
    wrong_ref row was scored, the right reference against the wrong one (ented − wrong_ref)."""
    lines = [
        "| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for method in (m for m in METHODS if m in means):
        cells = [_cell(means[method].get(key), d) for key, _, d in COLUMNS]
        lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
    cells = [_cell(delta.get(key), d, signed=True) for key, _, d in COLUMNS]
    lines.append("| *reference's contribution (ented − blind)* | " + " | ".join(cells) + " |")
    if right_wrong is not None:
        cells = [_cell(right_wrong.get(key), d, signed=True) for key, _, d in COLUMNS]
        title = "*right vs wrong reference (ented − wrong_ref)*"
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


METHOD_NOTE = (
    "Metrics are computed at each ground truth's resolution on 8-bit RGB images: the 256 px "
    "restorations and the degraded input are resized to it (bicubic up, area down). PSNR and "
    "SSIM on RGB (data range 1), LPIPS-VGG v0.1, identity = cosine of dlib face descriptors "
    "(to the ground truth, and to the reference photo(s); same person ≳ 0.92)."
)
EXTRA_NOTES = {
    "wrong_ref": (
        "wrong_ref: the model given another person's reference (the next triplet's first "
        "reference in benchmark order, skipping any of the same person); its ID→ref is to that "
        "person's photo. If it scores like ented, the weights do not use whose face the "
        "reference shows."
    ),
    "classical": (
        "classical: no learning (ented_cli.evaluation.classical): the reference warped piecewise-affinely "
        "onto the input's dlib 68 landmarks, colour-matched, its high frequencies added to the "
        "input's low frequencies inside the feathered warp mask; the bar a learned model must "
        "clear (TRAINING.md)."
    ),
}


def markdown_report(result: dict) -> str:
    s, w, t = result["settings"], result["weights"], result["timing"]
    failed = f" ({len(result['problems'])} could not be scored)" if result["problems"] else ""
    settings = f"fidelity {s['fidelity']}, {result['machine']['device']}, {result['date']}"
    extra_times = "".join(
        f", {m} {t[f'{m}_ms_per_face']} ms" for m in EXTRA_METHODS if f"{m}_ms_per_face" in t
    )
    timing = (
        f"Restoration time per face: blind {t['blind_ms_per_face']} ms, with reference "
        f"{t['ented_ms_per_face']} ms (encoding the reference included){extra_times}; whole run "
        f"{t['total_s']} s."
    )
    notes = [EXTRA_NOTES[m] for m in EXTRA_METHODS if m in result["averages"]]
    lines = [
        f"# ented eval: {w['name']}",
        "",
        f"{result['count']} images from `{result['benchmark']}`{failed}; {settings}.",
        "",
        markdown_table(
            result["averages"],
            result["reference_contribution"],
            result.get("right_vs_wrong_reference"),
        ),
        f"FID: {result['fid']['note']}.",
        "",
        METHOD_NOTE,
        "",
        *(line for n in notes for line in (n, "")),
        timing,
        "",
        f"Weights: `{w['name']}` (sha256 `{w['sha256']}` of `{Path(w['path']).name}`).",
        "",
    ]
    if result["problems"]:
        lines += ["Not scored:", "", *(f"- {p}" for p in result["problems"]), ""]
    return "\n".join(lines)


def json_text(result: dict) -> str:
    return json.dumps(result, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# ------------------------------------------------------------------------------ contact sheet
SHEET_COLUMNS = ("degraded", "blind", "ented", "wrong_ref", "classical", "reference", "gt")
SHEET_TITLES = {
    "degraded": "degraded",
    "blind": "blind",
    "ented": "ented",
    "wrong_ref": "wrong ref",
    "classical": "classical",
    "reference": "reference",
    "gt": "ground truth",
}
TILE = 192
HEADER = 26


@dataclass
class SheetRow:
    name: str
    tiles: dict[str, np.ndarray]  # column → uint8 RGB image (any square size)
    captions: dict[str, str]


def _label(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    """White text on a dark strip, bottom-left anchored at (x, y)."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    cv2.rectangle(canvas, (x - 2, y - h - 4), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(canvas, text, (x, y - 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def contact_sheet(rows: list[SheetRow]) -> np.ndarray:
    """Rows of degraded | blind | ented | [wrong ref | classical |] reference | ground truth,
    labelled (the optional columns when the rows have those tiles); uint8 BGR."""
    columns = [c for c in SHEET_COLUMNS if rows and c in rows[0].tiles]
    width = TILE * len(columns)
    sheet = np.full((HEADER + TILE * len(rows), width, 3), 255, np.uint8)
    for c, column in enumerate(columns):
        cv2.putText(
            sheet,
            SHEET_TITLES[column],
            (c * TILE + 6, HEADER - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.55,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    for r, row in enumerate(rows):
        top = HEADER + r * TILE
        for c, column in enumerate(columns):
            tile = row.tiles[column]
            mode = cv2.INTER_AREA if tile.shape[0] > TILE else cv2.INTER_CUBIC
            tile = cv2.resize(tile, (TILE, TILE), interpolation=mode)
            sheet[top : top + TILE, c * TILE : (c + 1) * TILE] = tile[:, :, ::-1]
            if row.captions.get(column):
                _label(sheet, row.captions[column], c * TILE + 4, top + TILE - 4)
    return sheet
