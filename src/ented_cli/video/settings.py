"""How a video is encoded and which part is restored: names and defaults the command line shows
(pure Python, so `ented --help` stays light)."""

from __future__ import annotations

from dataclasses import dataclass

# --codec names → FFmpeg encoders (all inside the av wheel).
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
CODECS = ("auto", *ENCODERS)
# Constant-quality defaults, about equal to the eye: a restored video is a master, not a preview.
DEFAULT_CRF = {"h264": 18, "hevc": 20, "vp9": 24, "av1": 28}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower")
PRESETS += ("veryslow",)
DEFAULT_PRESET = "medium"
# Run the detector on every Nth frame and follow the faces by optical flow in between: at 30
# frames/s a new face waits at most 1/6 s, and the detector costs a fifth of what it would.
DEFAULT_DETECT_EVERY = 5


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "auto"  # auto: VP9 for .webm, H.264 otherwise
    crf: int | None = None  # None: DEFAULT_CRF of the codec
    preset: str = DEFAULT_PRESET

    def codec_for(self, muxer: str) -> str:
        if self.codec != "auto":
            return self.codec
        return "vp9" if muxer == "webm" else "h264"
