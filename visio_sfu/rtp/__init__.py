"""Bytes-level RTP and RTCP: reading and rewriting packets without parsing into objects."""
