"""Decode Kubernetes protobuf request bodies (Secret, ConfigMap, Namespace, ServiceAccount) into JSON form.

client-go's typed clientset (and so helm's default `secret` storage driver) writes with
`Content-Type: application/vnd.kubernetes.protobuf`: the magic `k8s\\x00`, then a `runtime.Unknown`
message {1: TypeMeta{1: apiVersion, 2: kind}, 2: raw object bytes}. Field numbers come from
k8s.io/api/core/v1/generated.proto and apimachinery's meta/v1/generated.proto. Other kinds get a
415 naming the kind (typed `kubectl create deployment` etc. would need more decoders).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"

WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_I32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    pass


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value): ints for varint/fixed fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            value, pos = read_varint(data, pos)
            yield number, value
        elif wire == WIRE_LEN:
            length, pos = read_varint(data, pos)
            yield number, data[pos : pos + length]
            pos += length
        elif wire in (WIRE_I64, WIRE_I32):
            size = 8 if wire == WIRE_I64 else 4
            yield number, int.from_bytes(data[pos : pos + size], "little")
            pos += size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def text(value: int | bytes) -> str:
    return bytes(value).decode() if isinstance(value, bytes) else str(value)


def map_entry(value: int | bytes) -> tuple[str, bytes]:
    entry = dict(fields(bytes(value)))  # map<k, v> entries are messages {1: key, 2: value}
    return text(entry.get(1, b"")), bytes(entry.get(2, b""))  # type: ignore[arg-type]


def decode_object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    scalars = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    maps = {11: "labels", 12: "annotations"}
    for number, value in fields(data):
        if number in scalars and value:  # gogo-protobuf writes empty strings; JSON would omit them
            meta[scalars[number]] = text(value)
        elif number in maps:
            key, item = map_entry(value)
            meta.setdefault(maps[number], {})[key] = item.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(text(value))
        # Server-owned or unused fields (timestamps, generation, managedFields) are ignored.
    return meta


def decode_secret(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1:
            obj["metadata"] = decode_object_meta(bytes(value))  # type: ignore[arg-type]
        elif number == 2:
            key, item = map_entry(value)
            obj.setdefault("data", {})[key] = base64.b64encode(item).decode()
        elif number == 3 and value:
            obj["type"] = text(value)
        elif number == 4:
            key, item = map_entry(value)
            obj.setdefault("stringData", {})[key] = item.decode()
        elif number == 5:
            obj["immutable"] = bool(value)
    return obj


def decode_config_map(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1:
            obj["metadata"] = decode_object_meta(bytes(value))  # type: ignore[arg-type]
        elif number == 2:
            key, item = map_entry(value)
            obj.setdefault("data", {})[key] = item.decode()
        elif number == 3:
            key, item = map_entry(value)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(item).decode()
        elif number == 4:
            obj["immutable"] = bool(value)
    return obj


def decode_namespace(data: bytes) -> dict[str, Any]:
    # spec.finalizers and status are server-owned; only metadata matters on writes
    return {"metadata": decode_object_meta(bytes(value)) for number, value in fields(data) if number == 1}  # type: ignore[arg-type]


def decode_service_account(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1:
            obj["metadata"] = decode_object_meta(bytes(value))  # type: ignore[arg-type]
        elif number == 3:
            reference = dict(fields(bytes(value)))  # type: ignore[arg-type]
            obj.setdefault("imagePullSecrets", []).append({"name": text(reference.get(1, b""))})
        elif number == 4:
            obj["automountServiceAccountToken"] = bool(value)
    return obj


DECODERS: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "Secret": decode_secret,
    "ConfigMap": decode_config_map,
    "Namespace": decode_namespace,
    "ServiceAccount": decode_service_account,
}


def decode(body: bytes) -> dict[str, Any]:
    """Turn a protobuf-encoded request body into the equivalent JSON object."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing k8s protobuf magic")
    unknown = dict(fields(body[len(MAGIC) :]))
    type_meta = dict(fields(bytes(unknown.get(1, b""))))  # type: ignore[arg-type]
    api_version, kind = text(type_meta.get(1, b"")), text(type_meta.get(2, b""))
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise ProtobufError(f"protobuf bodies are not supported for kind {kind!r}; send JSON")
    return {"apiVersion": api_version, "kind": kind, **decoder(bytes(unknown.get(2, b"")))}  # type: ignore[arg-type]
