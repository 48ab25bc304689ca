"""Speech synthesis with espeak-ng (the Debian package's CLI; no network).

``Speaker.synthesize(text)`` runs ``espeak-ng --stdout`` in a subprocess and returns one complete
WAV file. espeak-ng writes its header before it knows the length (both RIFF sizes are
0x7FFFFFFF-ish when stdout is a pipe), so the sizes are patched: browsers' ``decodeAudioData``
refuses a RIFF chunk that claims more bytes than it holds.

A semaphore bounds the concurrent synthesis processes (one sentence at a time per answer is
already progressive; the bound keeps a loaded host from running dozens at once).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct

#: Citation markers ("[1]", "[2, 3]") are for the eye, not the ear.
_MARKERS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


def speakable(text: str) -> str:
    """The sentence as it should be spoken: without citation markers and markdown emphasis."""
    text = _MARKERS.sub("", text)
    return text.replace("*", "").replace("`", "").strip()


def fix_wav_sizes(wav: bytes) -> bytes:
    """Patches the RIFF and ``data`` chunk sizes of a streamed WAV to the bytes actually there."""
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not produce a RIFF/WAVE file")
    out = bytearray(wav)
    struct.pack_into("<I", out, 4, len(out) - 8)
    pos = 12
    while pos + 8 <= len(out):
        chunk, size = out[pos : pos + 4], struct.unpack_from("<I", out, pos + 4)[0]
        if chunk == b"data":
            struct.pack_into("<I", out, pos + 4, len(out) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    return bytes(out)


class SpeechError(RuntimeError):
    """espeak-ng failed (missing, crashed, or produced no audio)."""


class Speaker:
    """espeak-ng as an async WAV synthesizer."""

    def __init__(
        self,
        *,
        binary: str = "espeak-ng",
        voice: str = "en-us",
        words_per_minute: int = 175,
        max_concurrent: int = 2,
    ) -> None:
        self.binary = binary
        self.voice = voice
        self.words_per_minute = words_per_minute
        self._slots = asyncio.Semaphore(max_concurrent)

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    async def synthesize(self, text: str) -> bytes:
        """One WAV file for ``text`` (spoken as is; see ``speakable``)."""
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self.binary,
                    "--stdout",
                    "--stdin",
                    "-v",
                    self.voice,
                    "-s",
                    str(self.words_per_minute),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except FileNotFoundError:
                raise SpeechError(f"{self.binary} is not installed") from None
            out, err = await proc.communicate(text.encode())
        if proc.returncode != 0 or not out:
            detail = err.decode(errors="replace").strip()[:200]
            raise SpeechError(f"{self.binary} exited with {proc.returncode}: {detail}")
        return fix_wav_sizes(out)
