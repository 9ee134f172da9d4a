"""ONNX protobuf helpers that touch no file: weight sizes, the 2 GB message limit, a message
without one field, and a streamed serialisation. Imports nothing of lvvit_opt."""
from __future__ import annotations

# protobuf cannot serialise a single message above 2 GiB; past this we use external data.
ONNX_PROTO_LIMIT = 2 * 1024**3 - 1024**2


def weights_nbytes(model) -> int:
    """Bytes held by the initializers (cheap; no full serialisation)."""
    return sum(len(t.raw_data) + 4 * len(t.float_data) + 8 * (len(t.int64_data) + len(t.double_data))
               + 4 * len(t.int32_data) for t in model.graph.initializer)


def needs_external_data(model) -> bool:
    """True when the model cannot be one protobuf message (over 2 GB), or already keeps
    its tensors outside. The weights dominate the size, so they decide, with a margin."""
    import onnx

    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return True
    return weights_nbytes(model) > ONNX_PROTO_LIMIT - 64 * 1024**2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def without_field(message, field_name: str):
    """A new message of the same type with every field but `field_name` (those are copied)."""
    shell = type(message)()
    for descriptor, value in message.ListFields():
        if descriptor.name == field_name:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(shell, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(shell, descriptor.name).CopyFrom(value)
        else:
            setattr(shell, descriptor.name, value)
    return shell


def write_model_streamed(model, handle) -> None:
    """Write `model`'s protobuf encoding one initializer at a time: the same message as
    model.SerializeToString() (fields in another order, which protobuf allows), without a
    second whole copy of the weights in memory (issue 20: apply's peak RSS)."""
    graph = model.graph
    graph_head = without_field(graph, "initializer").SerializeToString()
    sizes = [init.ByteSize() for init in graph.initializer]
    graph_len = len(graph_head) + sum(1 + len(_varint(size)) + size for size in sizes)
    handle.write(without_field(model, "graph").SerializeToString())
    handle.write(b"\x3a" + _varint(graph_len))  # ModelProto.graph: field 7, length-delimited
    handle.write(graph_head)
    for init, size in zip(graph.initializer, sizes):  # GraphProto.initializer: field 5
        handle.write(b"\x2a" + _varint(size))
        handle.write(init.SerializeToString())


class TruncatedModel(ValueError):
    """The protobuf encoding ends inside a field, or uses a wire type ONNX never writes."""


def _read_varint(handle) -> int | None:
    """The next varint, or None at a clean end of input."""
    shift = value = 0
    while True:
        byte = handle.read(1)
        if not byte:
            if shift == 0:
                return None
            raise TruncatedModel("input ends inside a varint")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise TruncatedModel("varint longer than 10 bytes")


def _read_exactly(handle, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise TruncatedModel(f"input ends inside a field ({len(data)} of {size} bytes)")
    return data


def _fields(handle, end: int | None = None):
    """(field number, wire type, tag bytes, payload length or raw payload) up to offset `end`:
    length-delimited payloads are NOT read (the caller reads or skips them), others are."""
    while end is None or handle.tell() < end:
        key = _read_varint(handle)
        if key is None:
            if end is not None:
                raise TruncatedModel("input ends inside a message")
            return
        number, wire = key >> 3, key & 7
        tag = _varint(key)
        if wire == 2:
            yield number, wire, tag, _read_varint_required(handle)
        elif wire == 0:
            yield number, wire, tag, _varint(_read_varint_required(handle))
        elif wire in (1, 5):
            yield number, wire, tag, _read_exactly(handle, 8 if wire == 1 else 4)
        else:  # groups (3, 4) are proto2 relics no ONNX writer emits
            raise TruncatedModel(f"wire type {wire} (field {number})")
    if end is not None and handle.tell() != end:
        raise TruncatedModel("a field runs past the end of its message")


def _read_varint_required(handle) -> int:
    value = _read_varint(handle)
    if value is None:
        raise TruncatedModel("input ends after a field tag")
    return value


_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5


def read_model_streamed(handle, on_initializer=None):
    """Parse an ONNX ModelProto from a binary file `handle` (seekable) one initializer at a time:
    the same message onnx.load_model_from_string gives, while the peak holds the parsed model and
    one tensor's bytes, not the parsed model AND the whole file (issue 20: apply's peak RSS was
    2.4x lvvit_s's file, most of it the two side by side). Raises TruncatedModel, or protobuf's
    DecodeError for a malformed field, like a whole-message parse would.
    `on_initializer(tensor)` is called on each top-level initializer as soon as it is parsed
    (onnx_files.load_onnx checks it there and may drop its data: a structure-only load)."""
    import onnx

    model = onnx.ModelProto()
    rest = bytearray()  # every top-level field but the graph, in file order
    for number, wire, tag, payload in _fields(handle):
        if number == _MODEL_GRAPH and wire == 2:
            _read_graph(handle, handle.tell() + payload, model.graph, on_initializer)
        elif wire == 2:
            rest += tag + _varint(payload) + _read_exactly(handle, payload)
        else:
            rest += tag + payload
    model.MergeFromString(bytes(rest))
    return model


def _tensor_proto():
    import onnx

    return onnx.TensorProto()


def _read_graph(handle, end: int, graph, on_initializer=None) -> None:
    """Merge the GraphProto encoded up to `end` into `graph`: initializers parsed one by one,
    the other fields (nodes, inputs, ...) gathered and merged after them, in their order."""
    rest = bytearray()
    for number, wire, tag, payload in _fields(handle, end):
        if wire == 2:
            data = _read_exactly(handle, payload)
            if number == _GRAPH_INITIALIZER:
                if on_initializer is None:
                    graph.initializer.add().ParseFromString(data)
                    continue
                # parsed on its own and then appended (copied): what the callback drops is freed
                # with the standalone message (a field cleared inside the graph keeps its memory
                # in the graph's protobuf arena)
                tensor = _tensor_proto()
                tensor.ParseFromString(data)
                on_initializer(tensor)
                graph.initializer.append(tensor)
            else:
                rest += tag + _varint(payload) + data
        else:
            rest += tag + payload
    graph.MergeFromString(bytes(rest))
