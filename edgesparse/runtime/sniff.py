"""Which model format is this file, judged by its content (never by its name).

Agent side: standard library only. The agent must not need the `onnx` package, so the ONNX check
is a small protobuf wire-format walk: the top level must parse, end to end, as a ModelProto with
an ir_version and a non-empty graph whose own fields parse too. That rejects text, archives and
random bytes (the runtime in the child still has the last word on whether the model is valid).
"""
from __future__ import annotations

import os
from typing import BinaryIO, Iterator

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8

# ModelProto fields we know, with the wire type each must have (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
# GraphProto: node, name, initializer, doc_string, input, output, value_info, ...
_GRAPH_FIELDS = {1: 2, 2: 2, 5: 2, 10: 2, 11: 2, 12: 2, 13: 2, 14: 2, 15: 2}
_MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """The bytes are not protobuf wire format."""


def _read_varint(f: BinaryIO, end: int) -> int:
    value = 0
    for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
        if f.tell() >= end:
            raise WireError("truncated varint")
        byte = f.read(1)
        if not byte:
            raise WireError("truncated varint")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
    raise WireError("varint too long")


def _fields(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or payload length, payload offset) of each field."""
    f.seek(start)
    while f.tell() < end:
        key = _read_varint(f, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == 0:
            yield number, wire_type, _read_varint(f, end), f.tell()
        elif wire_type == 1 or wire_type == 5:
            size = 8 if wire_type == 1 else 4
            offset = f.tell()
            if offset + size > end:
                raise WireError("truncated fixed-width field")
            f.seek(offset + size)
            yield number, wire_type, size, offset
        elif wire_type == 2:
            length = _read_varint(f, end)
            offset = f.tell()
            if offset + length > end:
                raise WireError("length-delimited field runs past the end")
            yield number, wire_type, length, offset
            f.seek(offset + length)
        else:  # 3/4 are deprecated groups, 6/7 do not exist: never in an ONNX file
            raise WireError(f"wire type {wire_type}")


def _check_known(number: int, wire_type: int, known: dict[int, int]) -> None:
    if number in known and known[number] != wire_type:
        raise WireError(f"field {number} has wire type {wire_type}")


def looks_like_onnx(f: BinaryIO, size: int) -> bool:
    """True when the bytes parse as an ONNX ModelProto with ir_version and a graph."""
    try:
        seen: set[int] = set()
        graph: tuple[int, int] | None = None
        for number, wire_type, value, offset in list(_fields(f, 0, size)):
            _check_known(number, wire_type, _MODEL_FIELDS)
            seen.add(number)
            if number == 7:
                graph = (offset, offset + value)
        if 1 not in seen or graph is None or graph[0] == graph[1]:
            return False
        graph_fields = set()
        for number, wire_type, _, _ in _fields(f, *graph):
            _check_known(number, wire_type, _GRAPH_FIELDS)
            graph_fields.add(number)
        return 1 in graph_fields  # a graph with no node is not a model we can time
    except WireError:
        return False


def sniff_format(path: str) -> str | None:
    """'tflite', 'onnx', or None for bytes that are neither."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8 and head[4:8] == TFLITE_IDENTIFIER:
            return "tflite"
        if size >= 4 and looks_like_onnx(f, size):
            return "onnx"
    return None
