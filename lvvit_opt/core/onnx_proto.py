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
