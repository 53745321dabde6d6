"""The explanation picture: input | reference(s) | restored, each with its heat map, and a bar
chart of the reference-reliance ratio R per region. Pure OpenCV drawing on uint8 BGR arrays.

Heat maps on the input and references: how far each cell's entropy is below the background (the
deeper, the more the region relies on that cell), on one colour scale for all images, with the
knowledge points outlined. On the restored face: the share of each pixel's change that comes from
the references (blue: from the input, red: from the references), with the region outlined.
"""

from __future__ import annotations

import cv2
import numpy as np

from ented_cli.explain.measure import RegionExplanation

TILE = 256
HEADER = 28
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _overlay(face: np.ndarray, heat: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend a colour-mapped `heat` (H x W in [0, 1]) over `face` with per-pixel `alpha`."""
    colours = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    a = alpha[..., None].astype(np.float32)
    return np.uint8(face.astype(np.float32) * (1 - a) + colours.astype(np.float32) * a)


def _cells_to_pixels(grid: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(grid.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def _outline_points(tile: np.ndarray, points: np.ndarray) -> None:
    step = tile.shape[0] / points.shape[0]
    for y, x in zip(*np.nonzero(points)):
        p1 = (int(x * step), int(y * step))
        p2 = (int((x + 1) * step) - 1, int((y + 1) * step) - 1)
        cv2.rectangle(tile, p1, p2, (255, 255, 255), 1)


def _title(tile: np.ndarray, text: str) -> np.ndarray:
    head = np.full((HEADER, tile.shape[1], 3), 32, np.uint8)
    cv2.putText(head, text, (6, 19), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([head, tile])


def _region_outline(tile: np.ndarray, mask: np.ndarray) -> None:
    contours, _ = cv2.findContours(np.uint8(mask > 0.5), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tile, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)


def reliance_tiles(
    faces: list[np.ndarray], restored: np.ndarray, result: RegionExplanation, mask: np.ndarray
) -> list[np.ndarray]:
    """faces = [input, ref1, ...] (uint8 BGR, TILE x TILE); one titled tile per image."""
    drop = result.drop()
    scale = max(float(drop.max()), 1e-6)
    tiles = []
    for i, face in enumerate(faces):
        heat = _cells_to_pixels(drop[i] / scale, TILE)
        tile = _overlay(face, heat, 0.55 * np.clip(heat * 1.5, 0, 1))
        _outline_points(tile, result.points[i] & result.foreground)
        n = result.input_points if i == 0 else result.ref_points_each[i - 1]
        name = "input" if i == 0 else ("reference" if len(faces) == 2 else f"reference {i}")
        tiles.append(_title(tile, f"{name}: {n} points"))
    share = result.ref_share if result.ref_share is not None else np.zeros((TILE, TILE), np.float32)
    share = cv2.resize(share, (TILE, TILE), interpolation=cv2.INTER_AREA)
    tile = _overlay(restored, share, np.full(share.shape, 0.45, np.float32) * (mask > 0.5))
    _region_outline(tile, mask)
    tiles.append(_title(tile, f"restored: ref share ({result.region})"))
    return tiles


def bar_chart(reliance: dict[str, float | None], height: int = TILE + HEADER) -> np.ndarray:
    """One bar of R (0..1) per region; '-' when a region has no knowledge point."""
    width = max(200, 60 + 44 * len(reliance))
    chart = np.full((height, width, 3), 255, np.uint8)
    top, bottom = HEADER + 12, height - 34
    cv2.putText(chart, "R = ref / (ref + input)", (6, 19), FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for value in (0.0, 0.5, 1.0):
        y = int(bottom - value * (bottom - top))
        cv2.line(chart, (34, y), (width - 6, y), (200, 200, 200), 1)
        cv2.putText(chart, f"{value:.1f}", (4, y + 4), FONT, 0.35, (80, 80, 80), 1, cv2.LINE_AA)
    for i, (name, r) in enumerate(reliance.items()):
        x = 44 + 44 * i
        if r is not None:
            y = min(int(bottom - r * (bottom - top)), bottom - 2)  # R = 0 still shows a sliver
            cv2.rectangle(chart, (x, y), (x + 30, bottom), (60, 60, 200), -1)
            cv2.putText(chart, f"{r:.2f}", (x, y - 4), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        else:
            cv2.putText(chart, "-", (x + 10, bottom - 4), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(chart, name[:5], (x - 2, bottom + 16), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return chart


def explanation_picture(
    faces: list[np.ndarray],
    restored: np.ndarray,
    results: dict[str, RegionExplanation],
    shown: str,
    mask: np.ndarray,
) -> np.ndarray:
    """The whole picture for one face: tiles for region `shown`, then the bar chart."""
    tiles = reliance_tiles(faces, restored, results[shown], mask)
    chart = bar_chart({name: r.reliance for name, r in results.items()})
    return np.hstack([*tiles, chart])
