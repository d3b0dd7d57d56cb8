"""Real speech synthesis with espeak-ng, through the espeakng-loader wheel.

Why hand-written: no maintained Python binding ships the espeak-ng library and its
voices in a wheel; espeakng-loader does, and exposes only the shared library, so the
few C calls we need are made here through ctypes.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from dataclasses import dataclass

import numpy as np

# espeak_AUDIO_OUTPUT and espeak_PARAMETER values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    """One speaker setting: an espeak-ng voice name ("en-US+f3"), rate (words/min) and pitch (0-99)."""

    name: str
    rate: int = 175
    pitch: int = 50

    @property
    def key(self) -> str:
        return f"{self.name}@r{self.rate}p{self.pitch}"


class Synthesizer:
    """Synthesises text to int16 mono audio with espeak-ng; one library instance per process."""

    _lock = threading.Lock()
    _lib = None
    _rate_hz = 0

    def __init__(self) -> None:
        with Synthesizer._lock:
            if Synthesizer._lib is None:
                Synthesizer._lib, Synthesizer._rate_hz = _load()
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed with their Python object.
        self._callback = _SYNTH_CALLBACK(self._on_audio)

    @property
    def sample_rate(self) -> int:
        return Synthesizer._rate_hz

    def _on_audio(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, text: str, voice: Voice) -> np.ndarray:
        """Return the waveform (int16, `sample_rate` Hz) of `text` spoken with `voice`."""
        lib = Synthesizer._lib
        with Synthesizer._lock:
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice.name!r}; list voices with `espeak-ng --voices` "
                                 "or pick a name like 'en-US', 'en-GB-scotland+f2'")
            lib.espeak_SetParameter(_RATE, int(voice.rate), 0)
            lib.espeak_SetParameter(_PITCH, int(voice.pitch), 0)
            lib.espeak_SetSynthCallback(self._callback)
            # espeak-ng adds random noise (breath, jitter); seed it from the utterance for reproducible data.
            lib.espeak_ng_SetRandSeed(zlib.crc32(f"{voice.key}|{text}".encode()))
            self._chunks = []
            data = text.encode() + b"\0"
            err = lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with code {err} on {text!r}")
            lib.espeak_Synchronize()
            out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return out.astype(np.int16)


def _load():
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ImportError("speech synthesis needs espeakng-loader: pip install espeakng-loader") from e
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed (returned {rate}); is the espeakng-loader wheel complete?")
    return lib, rate


def _say_all(texts: list[str], voices: list[Voice], sample_rate: int | None) -> list[np.ndarray]:
    from scipy.signal import resample_poly

    synth = Synthesizer()
    out = []
    for voice in voices:
        for text in texts:
            w = synth.say(text, voice)
            if sample_rate and sample_rate != synth.sample_rate:
                g = np.gcd(sample_rate, synth.sample_rate)
                w = resample_poly(w.astype(np.float32), sample_rate // g, synth.sample_rate // g)
                w = np.clip(np.round(w), -32768, 32767).astype(np.int16)
            out.append(w)
    return out


def synthesize(texts: list[str], voices: list[Voice], sample_rate: int | None = 16_000, chunk: int = 10,
               workers: int = 2, progress=None) -> list[np.ndarray]:
    """Every voice saying every text (voice-major order), as int16 waveforms at `sample_rate`.

    espeak-ng carries state from one utterance to the next inside a process, so the same
    call gives the same audio only from a fresh library: each chunk of voices is spoken
    by a fresh interpreter (`python -m` this module; unlike multiprocessing's spawn, it
    never re-imports the caller's script), which makes the output reproducible and uses
    `workers` cores.
    """
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    chunks = [voices[i: i + chunk] for i in range(0, len(voices), chunk)]
    out: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="clbench-speech-") as tmp:
        jobs = []
        for k, c in enumerate(chunks):
            spec = Path(tmp) / f"{k}.json"
            spec.write_text(json.dumps({"texts": texts, "sample_rate": sample_rate,
                                        "voices": [[v.name, v.rate, v.pitch] for v in c]}))
            jobs.append((spec, Path(tmp) / f"{k}.npz", len(c)))
        pending, running = list(jobs), []
        while pending or running:
            while pending and len(running) < max(1, workers):
                spec, target, n = pending.pop(0)
                cmd = [sys.executable, "-m", __name__, str(spec), str(target)]
                running.append((subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True), n))
            proc, n = running.pop(0)
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"speech synthesis worker failed (exit {proc.returncode}): {err.strip()[-500:]}")
            if progress is not None:
                progress(n * len(texts))
        for _, target, _ in jobs:
            with np.load(target) as z:
                out.extend(z[f"w{i}"] for i in range(len(z.files)))
    return out


def _worker(spec_path: str, out_path: str) -> None:
    import json

    spec = json.loads(open(spec_path).read())
    voices = [Voice(name, rate, pitch) for name, rate, pitch in spec["voices"]]
    waves = _say_all(spec["texts"], voices, spec["sample_rate"])
    np.savez(out_path, **{f"w{i}": w for i, w in enumerate(waves)})


if __name__ == "__main__":
    import sys

    _worker(sys.argv[1], sys.argv[2])
