"""Run the visio-sfu server with every aiortc codec constructor trapped.

``python -m tests.support.codec_guard FILE serve ...`` runs ``visio-sfu serve ...`` after
patching aiortc's encoder/decoder classes and factories: any construction is appended to FILE.
The end-to-end tests assert that FILE stays empty: the SFU never decodes nor encodes.
"""

from __future__ import annotations

import sys
import traceback


def install(path: str) -> None:
    """Trap every way aiortc builds a codec; each attempt is logged to ``path``."""
    import aiortc.codecs as codecs
    import aiortc.codecs.h264 as h264
    import aiortc.codecs.opus as opus
    import aiortc.codecs.vpx as vpx
    import aiortc.rtcrtpreceiver as receiver
    import aiortc.rtcrtpsender as sender

    def record(what: str) -> None:
        with open(path, "a") as f:
            f.write(f"{what}\n{''.join(traceback.format_stack(limit=6))}\n")

    for module, names in (
        (vpx, ["Vp8Decoder", "Vp8Encoder"]),
        (h264, ["H264Decoder", "H264Encoder"]),
        (opus, ["OpusDecoder", "OpusEncoder"]),
    ):
        for name in names:
            cls = getattr(module, name)
            original = cls.__init__

            def trapped(self, *args, _original=original, _name=name, **kwargs):
                record(_name)
                _original(self, *args, **kwargs)

            cls.__init__ = trapped

    def trap_factory(name: str, original):
        def factory(*args, **kwargs):
            record(name)
            return original(*args, **kwargs)

        return factory

    codecs.get_decoder = trap_factory("get_decoder", codecs.get_decoder)
    codecs.get_encoder = trap_factory("get_encoder", codecs.get_encoder)
    receiver.get_decoder = trap_factory("get_decoder", receiver.get_decoder)
    sender.get_encoder = trap_factory("get_encoder", sender.get_encoder)
    receiver.decoder_worker = trap_factory("decoder_worker", receiver.decoder_worker)


if __name__ == "__main__":
    install(sys.argv[1])
    from signaling.cli import main

    raise SystemExit(main(sys.argv[2:]))
