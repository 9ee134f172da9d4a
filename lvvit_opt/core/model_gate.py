"""The model gate: every verb that reads an ONNX model checks it here first (issue 22).

An invalid model is the user's input (UserError, exit 2, one line naming the defect),
never "pass X failed" later. The checks, cheapest first:

1. external-data locations stay inside the model's folder (a security boundary: checked
   on the proto loaded *without* external data, so no file outside is ever opened;
   `..`, absolute paths and symlinks that leave the folder are refused), and each one is
   a regular file whose offset/length fit (a FIFO there would block the reader);
2. the ai.onnx opset is one this onnx knows (`onnx.defs.onnx_opset_version()`);
3. every top-level node input is defined, and the nodes form no cycle;
4. `onnx.checker.check_model(full_check=True)`: on the path for external-data models
   (the proto checker would resolve locations against the cwd), on the proto otherwise;
   a proto whose weights are big is checked as a skeleton (big initializers become typed
   graph inputs, each tensor checked alone) so the gate never holds a second copy.

A file that passed is remembered by (device, inode, size, mtime): the loaders and
onnxruntime runners of one command run the graph checks once; the external-data
locations (cheap) are checked again on every use.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.onnx_proto import weights_nbytes, without_field

# Above this many bytes of embedded weights the checker sees a skeleton (see module doc): the
# full check copies the model about three times over (serialise, parse in C++, infer shapes),
# 5x a 22 MB vit_tiny file in peak RSS; tests/hostile prove the skeleton gives the same verdicts.
SKELETON_ABOVE = 1024**2
# initializers at least this big leave the skeleton (the small ones, shape vectors among them,
# stay to feed shape inference); a ViT-Tiny's largest weight is 0.6 MB
_BIG_TENSOR = 64 * 1024
# files that passed in this process -> their external-data locations (rechecked on every use)
_passed: dict[tuple[int, int, int, int], list] = {}


def _q(name: str) -> str:
    """A tensor/node/file name quoted for a one-line message (newlines escaped)."""
    return "'" + str(name).encode("unicode_escape").decode("ascii") + "'"


def invalid(path: str | os.PathLike, defect: str) -> UserError:
    return UserError(f"{_q(os.fspath(path))[1:-1]}: invalid model: {defect}")


def _file_key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def gate_loaded(model, path: str | os.PathLike, identity: tuple[int, int, int, int] | None = None,
                stripped: frozenset[str] = frozenset()) -> None:
    """Check `model` (loaded from `path` WITHOUT its external data); UserError naming the defect.
    `identity`: (st_dev, st_ino, st_size, st_mtime_ns) of the descriptor the model was read
    from (fileio.read_regular_file); without it, of the path now. `stripped`: initializers whose
    data strip_weight already checked and dropped (a structure-only load)."""
    path = Path(path)
    key = identity or _file_key(path)
    if key in _passed:  # the graph checks are done; a location may now be a new symlink
        recheck_locations(path, _passed[key])
        return
    locations = external_locations(model, path)
    check_opset(model, path)
    check_graph_order(model.graph, path)
    check_io(model.graph, path)
    run_checker(model, path, bool(locations), stripped)
    _passed[key] = locations


# -- 1. external data ----------------------------------------------------------------------

def _graph_tensors(graph) -> Iterator:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node) -> Iterator:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def model_tensors(model) -> Iterator:
    """Every TensorProto of the model: initializers, Constant values, subgraphs, functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def external_locations(model, path: Path) -> list[tuple[str, dict[str, str]]]:
    """(tensor name, external_data) of every external tensor, each checked: refused when it
    leaves the model's folder or is no regular file (see _check_location)."""
    import onnx

    found = [(t.name, {e.key: e.value for e in t.external_data}) for t in model_tensors(model)
             if t.data_location == onnx.TensorProto.EXTERNAL]
    recheck_locations(path, found)
    return found


def recheck_locations(path: Path, locations: list[tuple[str, dict[str, str]]]) -> None:
    folder = os.path.realpath(path.parent)
    for name, info in locations:
        _check_location(path, folder, name, info)


def _check_location(path: Path, folder: str, name: str, info: dict[str, str]) -> None:
    location = info.get("location", "")
    what = f"tensor {_q(name)} keeps its data in {_q(location)}"
    if not location:
        raise invalid(path, f"tensor {_q(name)} has external data without a location")
    if os.path.isabs(location) or location.startswith("\\"):
        raise invalid(path, f"{what}: an absolute path; external data must be inside the model's folder")
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, target]) != folder:
        raise invalid(path, f"{what}, outside the model's folder; refusing to read it")
    try:
        st = os.stat(target)  # stat, never open: a FIFO would block the reader
    except OSError as exc:
        raise invalid(path, f"{what}: {exc.strerror.lower()}") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise invalid(path, f"{what}: not a regular file")
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
    except ValueError:
        raise invalid(path, f"{what}: offset/length are not numbers") from None
    if offset < 0 or offset + max(length, 0) > st.st_size:
        raise invalid(path, f"{what} at offset {offset} length {length}, past the end of the "
                            f"{st.st_size}-byte file")


# -- 2. opset ------------------------------------------------------------------------------

def check_opset(model, path: Path) -> None:
    import onnx

    known = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > known:
            raise invalid(path, f"ai.onnx opset {entry.version} is unknown (this onnx {onnx.__version__} knows "
                                f"opsets up to {known}); export with a lower opset")
    if not any(e.domain in ("", "ai.onnx") for e in model.opset_import) and model.graph.node:
        if any(n.domain in ("", "ai.onnx") for n in model.graph.node):
            raise invalid(path, "no ai.onnx opset is imported but the graph uses ai.onnx operators")


# -- 3. undefined inputs and cycles ------------------------------------------------------

def _node_label(node, index: int) -> str:
    return _q(node.name) if node.name else f"#{index} ({node.op_type})"


def check_graph_order(graph, path: Path) -> None:
    """Top-level nodes: every input defined somewhere, no cycle (the checker's own message for
    both is "not topologically sorted", which names neither defect)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    producer = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = index
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in defined and name not in producer:
                raise invalid(path, f"node {_node_label(node, index)} input {_q(name)} is not defined "
                                    "(no graph input, initializer or node output has that name)")
    for out in graph.output:
        if out.name not in defined and out.name not in producer:
            raise invalid(path, f"graph output {_q(out.name)} is not defined by any node, input or initializer")
    cycle = _find_cycle(graph, defined, producer)
    if cycle:
        names = " -> ".join(_node_label(graph.node[i], i) for i in cycle)
        raise invalid(path, f"the graph has a cycle: {names}")


def _find_cycle(graph, defined: set[str], producer: dict[str, int]) -> list[int]:
    """Indices of nodes on one cycle (Kahn's algorithm, then a walk among the leftovers), [] if none."""
    deps = [{producer[n] for n in node.input if n and n not in defined and n in producer}
            for node in graph.node]
    users: dict[int, list[int]] = {}
    for index, wanted in enumerate(deps):
        for dep in wanted:
            users.setdefault(dep, []).append(index)
    remaining = [len(d) for d in deps]
    ready = [i for i, count in enumerate(remaining) if count == 0]
    while ready:
        for user in users.get(ready.pop(), []):
            remaining[user] -= 1
            if remaining[user] == 0:
                ready.append(user)
    stuck = {i for i, count in enumerate(remaining) if count > 0}
    if not stuck:
        return []
    start = min(stuck)
    walk, seen = [start], {start: 0}
    while True:  # every stuck node has a stuck dependency: walking them must repeat
        nxt = min(d for d in deps[walk[-1]] if d in stuck)
        if nxt in seen:
            return list(reversed(walk[seen[nxt]:]))
        seen[nxt] = len(walk)
        walk.append(nxt)


def check_io(graph, path: Path) -> None:
    """Outputs to compute: onnx.checker takes a graph without any, onnxruntime then fails at
    run time. (A zero or negative dim_value is no defect: tensor_spec reads it as unknown, as
    some exporters mean it; the verbs that need it fixed say so.)"""
    if not graph.output:
        raise invalid(path, "the graph has no outputs (nothing to compute)")


# -- 4. onnx.checker -----------------------------------------------------------------------

def run_checker(model, path: Path, external: bool, stripped: frozenset[str] = frozenset()) -> None:
    import onnx

    try:
        if external:
            onnx.checker.check_model(str(path), full_check=True)
        elif stripped or weights_nbytes(model) > SKELETON_ABOVE:
            for tensor in model.graph.initializer:
                if tensor.name not in stripped:
                    onnx.checker.check_tensor(tensor)
            onnx.checker.check_model(with_io_shapes(skeleton(model, stripped), copied=True), full_check=True)
        else:
            onnx.checker.check_model(with_io_shapes(model), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        if str(exc).startswith(_NO_SHAPE) and _shapeless_io(model.graph):
            return  # see with_io_shapes: the IR leaves that shape optional, onnxruntime runs it
        raise invalid(path, _checker_line(exc)) from None


# onnx.checker requires a `shape` on every graph input/output; the IR spec makes it optional
# (unknown rank), onnx.helper.make_tensor_value_info(name, type, None) writes none, and
# onnxruntime runs such graphs: legitimate models, so the checker sees inferred shapes there.
_NO_SHAPE = "Field 'shape' of 'type' is required but missing"


def _shapeless_io(graph) -> list:
    return [v for v in list(graph.input) + list(graph.output)
            if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]


def with_io_shapes(model, copied: bool = False):
    """`model`, or where a graph input/output has no shape, a copy whose outputs take the shape
    that (lenient) shape inference finds; what stays shapeless is accepted by run_checker."""
    import onnx

    if not _shapeless_io(model.graph):
        return model
    if not copied:
        model = _copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the strict check that follows reports the real defect
        return model
    known = {v.name: v.type for v in list(inferred.graph.output) + list(inferred.graph.value_info)}
    for value in _shapeless_io(model.graph):
        found = known.get(value.name)
        if found is not None and found.HasField("tensor_type") and found.tensor_type.HasField("shape"):
            value.type.CopyFrom(found)
    return model


def _copy(model):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _checker_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    return text.encode("unicode_escape").decode("ascii")[:300]


def strip_weight(tensor, path: str | os.PathLike) -> bool:
    """For a structure-only load: check a big embedded initializer as the gate would
    (onnx.checker.check_tensor; UserError naming the defect), then drop its data, keeping its
    name, type and dims. True when it was stripped (small and external ones are kept)."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.ByteSize() < _BIG_TENSOR:
        return False
    try:
        onnx.checker.check_tensor(tensor)
    except onnx.checker.ValidationError as exc:
        raise invalid(path, _checker_line(exc)) from None
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                  "string_data"):
        tensor.ClearField(field)
    return True


def skeleton(model, stripped: frozenset[str] = frozenset()):
    """A copy of `model` whose big (or `stripped`) initializers are typed graph inputs instead:
    the checker and shape inference see every name, type and shape, without a copy of the weights."""
    from onnx import helper

    graph = model.graph
    shell = without_field(model, "graph")
    skel = without_field(graph, "initializer")
    inputs = {i.name for i in graph.input}
    for init in graph.initializer:
        if init.ByteSize() < _BIG_TENSOR and init.name not in stripped:
            skel.initializer.append(init)
        elif init.name not in inputs:
            skel.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    shell.graph.CopyFrom(skel)
    return shell
