"""Speech recognition for transcription: worker processes (``pool``, ``worker``), the per-track
audio pipeline (``stream``), the backends (``backends``) and the model check (``model``).
Imported only when transcription is used: faster-whisper is an optional dependency
(``pip install 'visio-sfu[notes]'``)."""
