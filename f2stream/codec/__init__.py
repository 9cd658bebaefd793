"""Decoding, pure: bytes and parameters in, measurements out.

- :mod:`f2stream.codec.values`: value encodings, timestamps, Modbus RTU frames;
- :mod:`f2stream.codec.model`: parameter rows, templates, compiled device codecs;
- :mod:`f2stream.codec.message`: one MQTT message to measurements.
"""
