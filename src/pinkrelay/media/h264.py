"""H.264 bitstream helpers: Annex B NAL parsing and the Annex B <-> avcC conversions.

The encoder emits Annex B (start-code delimited NAL units) because it is what
live transport and decoders joining mid-stream want: every keyframe carries
its own SPS/PPS. MP4 and Matroska instead store an ``avcC`` configuration
record plus length-prefixed NAL units, so the recorder converts with these
functions. Pure Python on ``bytes``; no PyAV involved.
"""

from __future__ import annotations

import struct

__all__ = [
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SPS",
    "annexb_to_avcc",
    "avcc_to_annexb",
    "build_avcc",
    "is_keyframe",
    "join_annexb",
    "nal_type",
    "parameter_sets",
    "parse_avcc",
    "split_nal_units",
    "to_annexb",
    "to_length_prefixed",
]

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

_START_CODE = b"\x00\x00\x01"
_LONG_START_CODE = b"\x00\x00\x00\x01"
_HIGH_PROFILES = frozenset({100, 110, 122, 144})


def _payload_offsets(data: bytes) -> list[int]:
    """Offsets just past each 3-byte start code (a 4-byte code ends the same way)."""
    offsets = []
    find = data.find
    i = find(_START_CODE)
    while i != -1:
        offsets.append(i + 3)
        i = find(_START_CODE, i + 3)
    return offsets


def split_nal_units(data: bytes) -> list[bytes]:
    """Split an Annex B byte string into NAL units, start codes removed.

    Both 3- and 4-byte start codes are accepted. Trailing zero bytes between
    units are dropped (a NAL unit never ends in 0x00). Bytes before the first
    start code are ignored, so data without any start code yields ``[]``.
    """
    offsets = _payload_offsets(data)
    units = []
    for n, start in enumerate(offsets):
        end = offsets[n + 1] - 3 if n + 1 < len(offsets) else len(data)
        unit = data[start:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def nal_type(nal: bytes) -> int:
    """Return ``nal_unit_type`` (the low five bits of the NAL header byte)."""
    if not nal:
        raise ValueError("an empty NAL unit has no type; pass a unit from split_nal_units()")
    return nal[0] & 0x1F


def is_keyframe(data: bytes) -> bool:
    """Tell whether an Annex B access unit contains an IDR slice, i.e. decoding can start here."""
    size = len(data)
    for offset in _payload_offsets(data):
        if offset < size and data[offset] & 0x1F == NAL_IDR:
            return True
    return False


def parameter_sets(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """Return the ``(sps_units, pps_units)`` found in Annex B data, in stream order."""
    sps: list[bytes] = []
    pps: list[bytes] = []
    for unit in split_nal_units(data):
        kind = unit[0] & 0x1F
        if kind == NAL_SPS:
            sps.append(unit)
        elif kind == NAL_PPS:
            pps.append(unit)
    return sps, pps


def join_annexb(units: list[bytes]) -> bytes:
    """Concatenate NAL units, each behind a 4-byte start code."""
    return b"".join(_LONG_START_CODE + unit for unit in units)


def to_length_prefixed(data: bytes, length_size: int = 4) -> bytes:
    """Convert an Annex B access unit to the length-prefixed form stored in MP4/MKV samples."""
    if length_size not in (1, 2, 4):
        raise ValueError(f"NAL length size {length_size} is invalid; use 1, 2 or 4")
    limit = 1 << (8 * length_size)
    parts = []
    for unit in split_nal_units(data):
        if len(unit) >= limit:
            raise ValueError(
                f"NAL unit of {len(unit)} bytes does not fit a {length_size}-byte length prefix; use length_size=4"
            )
        parts.append(len(unit).to_bytes(length_size, "big"))
        parts.append(unit)
    return b"".join(parts)


def to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """Convert a length-prefixed access unit (as read from MP4/MKV) back to Annex B."""
    parts = []
    pos = 0
    size = len(data)
    while pos < size:
        if pos + length_size > size:
            raise ValueError(
                f"truncated NAL length prefix at byte {pos} of {size}; is this really length-prefixed H.264?"
            )
        length = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + length > size:
            raise ValueError(
                f"NAL unit of {length} bytes at byte {pos} overruns the {size}-byte buffer; "
                "check the length size given by the avcC record"
            )
        parts.append(_LONG_START_CODE)
        parts.append(data[pos : pos + length])
        pos += length
    return b"".join(parts)


class _BitReader:
    """Reads the Exp-Golomb coded fields at the start of an SPS."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bit(self) -> int:
        byte = self._pos >> 3
        if byte >= len(self._data):
            raise ValueError("SPS ended early; the parameter set is truncated or corrupt")
        value = (self._data[byte] >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid Exp-Golomb code in SPS; the parameter set is corrupt")
        value = 0
        for _ in range(zeros):
            value = (value << 1) | self.bit()
        return (1 << zeros) - 1 + value


def _unescape(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00) to get the raw RBSP."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _chroma_info(sps: bytes) -> tuple[int, int, int]:
    """Return ``(chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8)`` of a high-profile SPS."""
    reader = _BitReader(_unescape(sps[4:]))
    reader.ue()
    chroma_format_idc = reader.ue()
    if chroma_format_idc == 3:
        reader.bit()
    return chroma_format_idc, reader.ue(), reader.ue()


def build_avcc(sps: list[bytes], pps: list[bytes]) -> bytes:
    """Build an ``AVCDecoderConfigurationRecord`` (ISO/IEC 14496-15) with 4-byte NAL lengths."""
    if not sps or not pps:
        raise ValueError(
            f"avcC needs at least one SPS and one PPS, got {len(sps)} SPS and {len(pps)} PPS; "
            "take them from a keyframe produced with repeated headers"
        )
    first = sps[0]
    if len(first) < 4:
        raise ValueError(f"SPS of {len(first)} bytes is too short to hold profile and level")
    record = bytearray((1, first[1], first[2], first[3], 0xFC | 3, 0xE0 | len(sps)))
    for unit in sps:
        record += struct.pack(">H", len(unit)) + unit
    record.append(len(pps))
    for unit in pps:
        record += struct.pack(">H", len(unit)) + unit
    if first[1] in _HIGH_PROFILES:
        chroma, luma_depth, chroma_depth = _chroma_info(first)
        record += bytes((0xFC | chroma, 0xF8 | luma_depth, 0xF8 | chroma_depth, 0))
    return bytes(record)


def parse_avcc(record: bytes) -> tuple[list[bytes], list[bytes], int]:
    """Return ``(sps_units, pps_units, nal_length_size)`` from an avcC record."""
    if len(record) < 7 or record[0] != 1:
        raise ValueError(
            f"not an avcC record ({len(record)} bytes, version {record[0] if record else None}); "
            "Annex B extradata starts with 00 00 01 instead"
        )
    length_size = (record[4] & 3) + 1
    pos = 5
    units: list[list[bytes]] = []
    for count_mask in (0x1F, 0xFF):
        if pos >= len(record):
            raise ValueError("avcC record is truncated before its parameter set count")
        count = record[pos] & count_mask
        pos += 1
        found = []
        for _ in range(count):
            if pos + 2 > len(record):
                raise ValueError("avcC record is truncated inside a parameter set length")
            length = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if pos + length > len(record):
                raise ValueError("avcC record is truncated inside a parameter set")
            found.append(record[pos : pos + length])
            pos += length
        units.append(found)
    return units[0], units[1], length_size


def annexb_to_avcc(data: bytes) -> bytes:
    """Build an avcC record from the SPS/PPS found in Annex B extradata or a keyframe."""
    sps, pps = parameter_sets(data)
    return build_avcc(sps, pps)


def avcc_to_annexb(record: bytes) -> bytes:
    """Turn an avcC record into Annex B SPS+PPS, the form :class:`TrackInfo` carries."""
    sps, pps, _ = parse_avcc(record)
    return join_annexb(sps + pps)
