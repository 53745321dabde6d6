"""The streams beside the picture (sound, subtitles, data, attachments) on their way into the
output container. Each one is, by preference:

- copied packet for packet, when the output container takes it. Whether it does is asked of
  FFmpeg itself: a scratch container in memory is given a copy of the stream and must write its
  header (a list of codec names cannot tell, e.g., that MP4 takes GoPro telemetry but not KLV);
- converted, for text subtitles the container cannot hold as they are (SubRip or ASS into MP4,
  MP4's mov_text into Matroska): each cue is decoded to its text and styling and encoded in the
  container's own text format, at its own time;
- dropped, named in one note line with the reason and the output formats that would keep it.

A timecode track (QuickTime `tmcd`) is not copied as a track: FFmpeg hands its timecode to the
video stream as a tag, from which the MP4 and MOV muxers write the track again (Matroska keeps
the tag). A part cut with --start would carry the whole video's timecode, so there it is dropped.
"""

from __future__ import annotations

import io

# Each container's own format for text subtitles (FFmpeg encoder names).
TEXT_SUBTITLES = {"mp4": "mov_text", "mov": "mov_text", "matroska": "ass", "webm": "webvtt"}
# Outputs a note suggests for a dropped stream, when they would keep it.
_SUGGEST = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv"}
_EXTENSION = {**_SUGGEST, "webm": ".webm", "avi": ".avi"}


def label(stream) -> str:
    """How notes and --json name a stream: 'audio aac (#1)', 'attachment font.ttf (#3)'."""
    if stream.type == "attachment":
        name = stream.name  # the file name
    elif is_timecode(stream):
        name = "timecode"
    elif stream.codec_context is not None:
        name = stream.codec_context.codec.canonical_name  # 'subrip', where the decoder is 'srt'
    else:
        name = getattr(stream, "name", None)  # a data stream's codec, when FFmpeg knows it
    return f"{stream.type} {name} (#{stream.index})" if name else f"{stream.type} (#{stream.index})"


def is_timecode(stream) -> bool:
    return stream.type == "data" and "timecode" in stream.metadata


def _av():
    from ented_cli.video.container import _av

    return _av()


def _header_written(muxer: str, add) -> bool:
    """Whether `muxer` writes its header with the stream that `add(container)` adds."""
    scratch = _av().open(io.BytesIO(), "w", format=muxer)
    try:
        add(scratch)
        scratch.start_encoding()
        return True
    except Exception:  # any refusal (unknown codec, no tag for it, bad parameters) means no
        return False
    finally:
        try:
            scratch.close()
        except Exception:  # a container that wrote no header may not close cleanly: no matter
            pass


def can_copy(stream, muxer: str) -> bool:
    return _header_written(muxer, lambda c: c.add_stream_from_template(stream))


def conversion(stream, muxer: str) -> str | None:
    """The text-subtitle encoder that carries `stream` into `muxer`, or None."""
    av = _av()
    target = TEXT_SUBTITLES.get(muxer)
    decoder = stream.codec_context
    if stream.type != "subtitle" or target is None or decoder is None:
        return None
    if not decoder.codec.text_sub:  # subtitles that are pictures: no text to re-encode
        return None
    try:
        decoder.open(strict=False)  # its header (the styles) is known once it is open
    except av.error.FFmpegError:
        return None
    if not decoder.subtitle_header:
        return None
    return target if _header_written(muxer, lambda c: _add_text(c, stream, target)) else None


def _add_text(container, stream, codec: str):
    """A `codec` subtitle stream in `container` with the styles of the text stream `stream`."""
    out = container.add_stream(codec)
    out.codec_context.time_base = stream.time_base
    out.codec_context.subtitle_header = stream.codec_context.subtitle_header
    return out


class _TextConverter:
    """The cues of one text subtitle stream, encoded in another text format at their times."""

    def __init__(self, container, stream, codec: str):
        self.decoder = stream.codec_context
        self.out = _add_text(container, stream, codec)
        self.lost = 0  # cues that could not be converted

    def __call__(self, packet):
        av = _av()
        try:
            cues = self.decoder.decode2(packet)
            if cues is None or len(cues) == 0:
                return None  # an empty cue, the gap between two: MP4 muxers mark gaps themselves
            out = self.out.codec_context.encode_subtitle(cues)
        except av.error.FFmpegError:
            self.lost += 1
            return None
        out.pts = out.dts = packet.pts
        ms = cues.end_display_time - cues.start_display_time
        out.duration = packet.duration or round(ms / 1000 / packet.time_base)
        out.time_base = packet.time_base
        return out


def _empty_mov_text(packet) -> bool:
    """An MP4 text sample with no text: the gap between two cues. The MP4 muxer writes these
    itself, and copied ones come out doubled (a zero-length sample beside each)."""
    data = bytes(packet)
    return len(data) >= 2 and data[:2] == b"\x00\x00"


class OtherStreams:
    """What becomes of each stream of `source` but the picture, in `container` (the output,
    before its header is written); then `packet(p)` gives each packet as it is to be muxed."""

    def __init__(self, container, muxer: str, source, copy_tags):
        self.muxer = muxer
        self.copied: list[str] = []
        self.converted: list[str] = []
        self.dropped: list[str] = []
        self._reasons: list[str] = []
        self._out: dict = {}  # input stream index -> its output stream
        self._convert: dict = {}  # input stream index -> _TextConverter
        self._skip_empty: set = set()
        self._timecode_only = bool(source.shift)
        for stream in source.others:
            self._add(container, stream, copy_tags)
        for stream in source.skipped:
            self._drop(stream, "FFmpeg cannot tell what it holds")

    def _add(self, container, stream, copy_tags) -> None:
        name = label(stream)
        if is_timecode(stream):
            if self._timecode_only:
                self._drop(stream, "it gives the start of the whole video, not of the part")
            else:
                self.copied.append(name)  # written again from the video's timecode tag
            return
        target = None
        if not can_copy(stream, self.muxer):
            target = conversion(stream, self.muxer)
            if target is None:
                self._drop(stream)
                return
        if target is None:
            out = container.add_stream_from_template(stream)
            if stream.codec_context is not None and stream.codec_context.name == "mov_text":
                self._skip_empty.add(stream.index)
            self.copied.append(name)
        else:
            converter = _TextConverter(container, stream, target)
            out = converter.out
            self._convert[stream.index] = converter
            self.converted.append(f"{name} as {target}")
        copy_tags(stream.metadata, out.metadata)
        out.disposition = stream.disposition
        self._out[stream.index] = out

    def _drop(self, stream, why: str | None = None) -> None:
        name = label(stream)
        self.dropped.append(name)
        if why is None:
            ext = _EXTENSION.get(self.muxer, self.muxer)
            others = [
                e
                for m, e in _SUGGEST.items()
                if m != self.muxer and (can_copy(stream, m) or conversion(stream, m))
            ]
            why = f"which {ext} files cannot hold" + (f" ({_either(others)} can)" if others else "")
            self._reasons.append(f"dropped {name}, {why}")
        else:
            self._reasons.append(f"dropped {name}: {why}")

    def packet(self, packet):
        """`packet` ready for the output (None: its stream is dropped, or the packet is an
        empty cue)."""
        index = packet.stream.index
        out = self._out.get(index)
        if out is None:
            return None
        converter = self._convert.get(index)
        if converter is not None:
            packet = converter(packet)
            if packet is None:
                return None
        elif index in self._skip_empty and _empty_mov_text(packet):
            return None
        packet.stream = out
        return packet

    def note(self, display: str) -> str | None:
        """One line naming what was dropped or lost, and why; None when nothing was."""
        lines = list(self._reasons)
        for index, converter in self._convert.items():
            if converter.lost:
                lines.append(f"{converter.lost} cue(s) of subtitle #{index} could not be converted")
        return f"{display}: " + "; ".join(lines) if lines else None


def _either(extensions: list[str]) -> str:
    if len(extensions) == 1:
        return extensions[0]
    return ", ".join(extensions[:-1]) + " and " + extensions[-1]
