"""The one reader of tensor specs (name, dtype, shape) for ONNX graphs and runtimes.

Passes, the whitelist, atc, every runner and bench read shapes through this module.

Symbolic-dim policy (the same everywhere in lvvit-opt):
  * a dim the model fixes is an ``int`` > 0;
  * a dim the model names (ONNX ``dim_param``, onnxruntime's symbolic names) is that ``str``;
  * anything else (no value, ``dim_value`` 0 or negative, ais_bench's -1) is ``None``;
  * a tensor whose rank is unknown has ``shape`` ``None`` (``()`` is a scalar).
dtypes are numpy dtype names ("float32", "int64", ...); an unset ONNX elem_type reads as
"float32" (what the exporters mean by it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

Dim = Union[int, str, None]

_ORT_TYPES = {"float": "float32", "float16": "float16", "double": "float64", "bfloat16": "bfloat16",
              "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8",
              "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool", "string": "str"}
_NUMPY_NAMES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
                "uint16", "uint32", "uint64", "bool")


# A shape a user types (whitelist --shape, apply --input-shape) must be one a tensor can have:
# beyond these it is a typo, and a later allocation would fail with a MemoryError traceback.
MAX_RANK = 8
MAX_DIM = 2**20
MAX_ELEMENTS = 2**32
SHAPE_LIMITS = f"1 to {MAX_RANK} dims, each in 1..{MAX_DIM}, at most 2**32 elements in all"


def shape_problem(dims: Sequence[int]) -> str | None:
    """Why `dims` cannot be a user-given static shape (SHAPE_LIMITS), or None when it can."""
    elements = 1
    for dim in dims:
        elements *= dim
    if not 1 <= len(dims) <= MAX_RANK:
        return f"rank {len(dims)}"
    if any(not 1 <= d <= MAX_DIM for d in dims):
        return f"dim {next(d for d in dims if not 1 <= d <= MAX_DIM)}"
    if elements > MAX_ELEMENTS:
        return f"{elements} elements"
    return None


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, shape (see the module's dim policy) and numpy dtype name."""

    name: str
    shape: Optional[Tuple[Dim, ...]]
    dtype: str = "float32"

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) and d > 0 for d in self.shape)

    @property
    def batch(self) -> int | None:
        """The first dim when the model fixes it, else None."""
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None

    def with_batch(self, batch: int) -> "TensorSpec":
        return TensorSpec(self.name, (int(batch),) + tuple(self.shape[1:] if self.shape else ()), self.dtype)

    def concrete_shape(self, batch_size: int | None = None) -> tuple[int, ...]:
        """A runnable shape: a symbolic first dim becomes `batch_size` (default 1); any other
        symbolic dim is a UserError (fix it first with the fix_shapes pass)."""
        from lvvit_opt.core.errors import UserError

        if self.shape is None:
            raise UserError(f"input {self.name} has no shape in the model; give it one "
                            "(lvvit-opt apply --passes fix_shapes --input-shape ...)")
        dims = []
        for axis, dim in enumerate(self.shape):
            if isinstance(dim, int) and dim > 0:
                dims.append(dim)
            elif axis == 0:
                dims.append(int(batch_size or 1))
            else:
                raise UserError(f"input {self.name} {list(self.shape)} has a symbolic dim besides the batch; "
                                "fix it first (lvvit-opt apply --passes fix_shapes --input-shape ...)")
        return tuple(dims)

    def format_shape(self, batch_as: str | None = None) -> str:
        """(2, 3, 224, 224); `batch_as` replaces the first dim (e.g. 'N')."""
        if self.shape is None:
            return "(unknown rank)"
        dims = [("?" if d is None else str(d)) for d in self.shape]
        if batch_as is not None and dims:
            dims[0] = batch_as
        return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"

    def to_list(self) -> list:
        """[name, shape, dtype] for JSON reports."""
        return [self.name, None if self.shape is None else list(self.shape), self.dtype]


def normalise_dim(dim: Any) -> Dim:
    """One runtime/ONNX dim under the module's policy."""
    if isinstance(dim, bool):
        return None
    if isinstance(dim, int):
        return dim if dim > 0 else None
    if isinstance(dim, str):
        return dim or None
    try:  # numpy integers
        value = int(dim)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def normalise_shape(dims: Iterable[Any] | None) -> tuple[Dim, ...] | None:
    return None if dims is None else tuple(normalise_dim(d) for d in dims)


def normalise_dtype(text: Any) -> str:
    """A numpy dtype name from what runtimes report: 'tensor(float)' (onnxruntime),
    'dtype.FLOAT32' (ais_bench), numpy dtypes and names, ONNX elem_type ints."""
    if isinstance(text, int):
        return elem_type_to_dtype(text)
    raw = str(getattr(text, "name", None) or text) if not isinstance(text, str) else text
    lowered = raw.strip().lower()
    if lowered.startswith("tensor(") and lowered.endswith(")"):
        inner = lowered[len("tensor("):-1]
        return _ORT_TYPES.get(inner, inner)
    tail = lowered.rsplit(".", 1)[-1]
    for name in _NUMPY_NAMES:
        if tail == name:
            return name
    for name in sorted(_NUMPY_NAMES, key=len, reverse=True):
        if tail.endswith(name):
            return name
    return _ORT_TYPES.get(tail, tail)


def elem_type_to_dtype(elem_type: int) -> str:
    import onnx

    if not elem_type:
        return "float32"
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception:  # types numpy lacks (bfloat16, float8 ...): onnx's own name
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def dims_of(type_proto) -> tuple[Dim, ...] | None:
    """Dims of an ONNX TypeProto under the module's policy; None when the rank is unknown."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return tuple(dims)


def value_spec(value) -> TensorSpec:
    """TensorSpec of an ONNX ValueInfoProto (graph input, output or value_info). A value that is
    not a tensor (sequence, map, optional) has shape None and a dtype that says so, as
    onnxruntime writes it ("seq(tensor(float))", "map(int64,tensor(float))", ...)."""
    kind = value.type.WhichOneof("value")
    if kind not in (None, "tensor_type"):
        return TensorSpec(value.name, None, type_text(value.type))
    return TensorSpec(value.name, dims_of(value.type), elem_type_to_dtype(value.type.tensor_type.elem_type))


def type_text(type_proto) -> str:
    """onnxruntime's spelling of an ONNX type: tensor(float), seq(tensor(int64)), map(string,tensor(float))."""
    import onnx

    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        return f"seq({type_text(type_proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_text(type_proto.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(type_proto.map_type.key_type).lower()
        return f"map({key},{type_text(type_proto.map_type.value_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({elem_type_to_dtype(type_proto.sparse_tensor_type.elem_type)})"
    name = elem_type_to_dtype(type_proto.tensor_type.elem_type)
    return f"tensor({ {v: k for k, v in _ORT_TYPES.items()}.get(name, name)})"


def graph_specs(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an onnx.ModelProto; initializers listed as inputs are not inputs."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [value_spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [value_spec(v) for v in model.graph.output]


def read_specs(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an ONNX path or ModelProto (weights not loaded for paths)."""
    if isinstance(model, (str, os.PathLike)):
        from lvvit_opt.core.onnx_files import load_onnx

        model = load_onnx(model, weights=False)
    return graph_specs(model)


def input_specs(model: Any) -> list[TensorSpec]:
    """The real inputs of an ONNX path or ModelProto; UserError if it has none."""
    from lvvit_opt.core.errors import UserError

    inputs = read_specs(model)[0]
    if not inputs:
        raise UserError(f"{model if isinstance(model, (str, os.PathLike)) else 'the model'}: the model has no inputs")
    return inputs


def runtime_spec(name: str, shape: Sequence[Any] | None, dtype: Any) -> TensorSpec:
    """TensorSpec from what a runtime reports (onnxruntime NodeArg, ais_bench desc, ...)."""
    return TensorSpec(str(name), normalise_shape(shape), normalise_dtype(dtype))
