"""The one reader of every file a user names in an option: spaces, keep-dtype lists, info files,
.npy/.npz inputs, .om graph JSON, checkpoints and the tool's own state files.

Each read is bounded before it starts, so that a hostile file costs a one-line refusal (exit 2)
instead of a hang or the machine's memory:

- regular files only: the path is stat'ed first, and a FIFO, device, socket or folder is refused
  without being opened (opening a FIFO, even with O_NONBLOCK, is visible to its writer); the
  descriptor is checked again after the open (fileio.open_regular_file), so a file swapped for a
  FIFO between the two is refused too, still without blocking;
- a size limit by kind (`FileKind`): 16 MB of state, 1 MB of a list or space, ...; a file that
  grows while it is read is cut at the limit and refused;
- arrays: the size a .npy header declares, and every .npz member's declared size (its ZIP entry
  and its .npy header), is checked against the available memory before anything is inflated;
- YAML: aliases are counted as the tree they expand to, bounded (a 427-byte "billion laughs" is
  refused in milliseconds), and nesting is bounded (no RecursionError);
- state files: `check_schema` holds their structure to a schema, one line naming the first field
  that differs and the way out.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from lvvit_opt.core.errors import UserError, reason_of, shown
from lvvit_opt.core.fileio import open_regular_file, stat_regular_file

MB = 1024 * 1024


@dataclass(frozen=True)
class FileKind:
    """What a file is for the reader: its name in messages and the most bytes it may have
    (None: arrays and checkpoints, bounded by the memory instead)."""

    name: str
    max_bytes: int | None


STATE = FileKind("state file", 16 * MB)            # tune_state.json, run's .stages.json, provenance records
SPACE = FileKind("search space", 1 * MB)           # tune --space (JSON or YAML)
LIST = FileKind("list", 1 * MB)                    # debug layers --keep-dtype
INFO = FileKind("info file", 64 * MB)              # benchmark .info (one line an image)
OM_JSON = FileKind(".om graph JSON", 1024 * MB)    # atc --mode=1 output (also checked against memory)
ARRAY = FileKind("array file", None)               # --inputs .npy / .npz
CHECKPOINT = FileKind("checkpoint", None)          # --checkpoint .pth / .safetensors

# Parsed JSON/YAML takes several times its text in Python objects.
PARSED_MEMORY_FACTOR = 10
# A YAML tree may expand (through aliases) to at most this many nodes, nested at most this deep.
MAX_YAML_NODES = 100_000
MAX_NESTING = 100
MAX_NPZ_MEMBERS = 10_000


def _label(label: str, path) -> str:
    return f"{label} {shown(path)}" if label else shown(path)


def check_regular(path: str | os.PathLike, label: str = "") -> os.stat_result:
    """The stat of `path` when it is a regular file (through symlinks); a one-line UserError
    otherwise, decided on the stat alone: a FIFO or device is never opened."""
    with _labelled(label):
        return stat_regular_file(path)


def check_loadable(path: str | os.PathLike, label: str, kind: FileKind) -> os.stat_result:
    """check_regular, and a file that is loaded whole (a checkpoint's tensors) must fit the memory."""
    from lvvit_opt.core.resources import require_memory

    st = check_regular(path, label)
    _check_size(st.st_size, path, label, kind)
    require_memory(st.st_size, f"{_label(label, path)} ({kind.name})")
    return st


@contextlib.contextmanager
def _labelled(label: str) -> Iterator[None]:
    """A UserError from fileio (which names the path only) with the option's label in front."""
    try:
        yield
    except UserError as exc:
        if label and not str(exc).startswith(label + " "):
            raise UserError(f"{label} {exc}") from None
        raise


@contextlib.contextmanager
def open_input(path: str | os.PathLike, label: str, kind: FileKind) -> Iterator[tuple[io.BufferedReader, int]]:
    """(binary handle, size) of one open of a regular file within `kind`'s size limit."""
    size = check_regular(path, label).st_size
    _check_size(size, path, label, kind)
    with contextlib.ExitStack() as stack:
        with _labelled(label):
            handle, identity = stack.enter_context(open_regular_file(path))
        _check_size(identity[2], path, label, kind)  # the file opened, not the one stat'ed
        yield handle, identity[2]


def _check_size(size: int, path, label: str, kind: FileKind) -> None:
    if kind.max_bytes is not None and size > kind.max_bytes:
        raise UserError(f"{_label(label, path)}: {_mb(size)} is more than a {kind.name} may hold "
                        f"({_mb(kind.max_bytes)}); refusing to read it")


def _mb(n: int) -> str:
    from lvvit_opt.core.resources import format_bytes

    return format_bytes(n)


def read_bytes(path: str | os.PathLike, label: str, kind: FileKind) -> bytes:
    """The bytes of a regular file, at most kind.max_bytes (a file growing past it is refused)."""
    with open_input(path, label, kind) as (handle, size):
        limit = kind.max_bytes
        if limit is None:
            from lvvit_opt.core.resources import require_memory

            require_memory(size, f"{_label(label, path)} ({kind.name})")
            return handle.read()
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{_label(label, path)}: grew past what a {kind.name} may hold "
                        f"({_mb(limit)}) while being read; refusing it")
    return data


def read_text(path: str | os.PathLike, label: str, kind: FileKind, encoding: str = "utf-8-sig") -> str:
    data = read_bytes(path, label, kind)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{_label(label, path)}: not UTF-8 text (byte {exc.start})") from None


def _require_parse_memory(size: int, path, label: str, kind: FileKind) -> None:
    from lvvit_opt.core.resources import require_memory

    require_memory(PARSED_MEMORY_FACTOR * size, f"reading {_label(label, path)} ({kind.name})")


def read_json(path: str | os.PathLike, label: str, kind: FileKind) -> Any:
    """Parsed JSON of a regular file within `kind`'s limit (NaN/Infinity literals, which Python's
    json writes, are read; schemas and ranges judge the numbers)."""
    text = read_text(path, label, kind)
    _require_parse_memory(len(text), path, label, kind)
    return parse_json(text, _label(label, path))


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{what}: nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise UserError(f"{what}: not valid JSON ({reason_of(exc, 160)})") from None


def read_yaml(path: str | os.PathLike, label: str, kind: FileKind) -> Any:
    """Parsed YAML (safe types only) of a regular file within `kind`'s limit, its expansion
    through aliases bounded by MAX_YAML_NODES and its nesting by MAX_NESTING."""
    text = read_text(path, label, kind)
    _require_parse_memory(len(text), path, label, kind)
    return parse_yaml(text, _label(label, path))


def parse_yaml(text: str, what: str) -> Any:
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise UserError(f"{what}: nested too deeply") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{what}: not valid YAML ({' '.join(str(exc).split())[:160]})") from None
        if root is None:
            return None
        _bound_yaml_tree(root, what)
        try:
            return loader.construct_document(root)
        except RecursionError:
            raise UserError(f"{what}: nested too deeply") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{what}: not valid YAML ({' '.join(str(exc).split())[:160]})") from None
    finally:
        loader.dispose()


def _bound_yaml_tree(root, what: str) -> None:
    """Refuse a YAML node graph whose expansion (every alias counted as the tree it names) has
    more than MAX_YAML_NODES nodes, is nested deeper than MAX_NESTING, or refers to itself."""
    import yaml

    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            sizes[key], depths[key] = 1, 1
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
            if sizes[key] > MAX_YAML_NODES:
                raise UserError(f"{what}: expands to more than {MAX_YAML_NODES} values through its aliases "
                                f"(&anchor/*alias); refusing it")
            if depths[key] > MAX_NESTING:
                raise UserError(f"{what}: nested more than {MAX_NESTING} levels deep; refusing it")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise UserError(f"{what}: an alias refers to a value that contains it; refusing it")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise UserError(f"{what}: an alias refers to a value that contains it; refusing it")
            if id(child) not in sizes:
                stack.append((child, False))


def read_json_or_yaml(path: str | os.PathLike, label: str, kind: FileKind) -> Any:
    """YAML for .yaml/.yml, JSON otherwise."""
    if os.fspath(path).lower().endswith((".yaml", ".yml")):
        return read_yaml(path, label, kind)
    return read_json(path, label, kind)


# -- arrays ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: Any  # numpy dtype
    fortran_order: bool
    nbytes: int


def _read_npy_header(handle, what: str) -> ArrayHeader:
    """The header of a .npy stream (the stream is left at the data); pickled arrays refused."""
    import numpy as np
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
    except Exception as exc:  # ValueError on a bad magic or header
        raise UserError(f"{what}: not a readable .npy file ({reason_of(exc, 160)})") from None
    if dtype.hasobject:
        raise UserError(f"{what}: holds Python objects (a pickled array), which could run code on load; "
                        f"refusing it")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise UserError(f"{what}: the header declares an invalid shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    return ArrayHeader(tuple(shape), np.dtype(dtype), bool(fortran), nbytes)


def _require_array_memory(nbytes: int, what: str) -> None:
    from lvvit_opt.core.resources import require_memory

    require_memory(nbytes, what)


def _read_array_data(handle, header: ArrayHeader, what: str):
    import numpy as np

    array = np.empty(header.shape[::-1] if header.fortran_order else header.shape, dtype=header.dtype)
    view = memoryview(array.reshape(-1).view(np.uint8)) if header.nbytes else memoryview(b"")
    got = 0
    while got < header.nbytes:
        n = handle.readinto(view[got:])
        if not n:
            raise UserError(f"{what}: truncated: {got} of the {header.nbytes} bytes its header declares")
        got += n
    return array.T if header.fortran_order else array


def read_npy(path: str | os.PathLike, label: str = "") -> Any:
    """One array of a .npy file: its declared size is checked against the file and the memory
    before any allocation."""
    what = _label(label, path)
    with open_input(path, label, ARRAY) as (handle, size):
        header = _read_npy_header(handle, what)
        left = size - handle.tell()
        if header.nbytes > left:
            raise UserError(f"{what}: its header declares {header.shape} {header.dtype.name} "
                            f"({_mb(header.nbytes)}) but the file holds {_mb(max(left, 0))} of data")
        _require_array_memory(header.nbytes, f"{what} ({header.shape} {header.dtype.name})")
        return _read_array_data(handle, header, what)


@dataclass
class NpzMember:
    name: str
    header: ArrayHeader
    info: Any = field(repr=False)  # zipfile.ZipInfo


def npz_members(archive: zipfile.ZipFile, what: str) -> list[NpzMember]:
    """Every `*.npy` member with its header, read from the first bytes of each member (nothing
    else inflated); a member whose header declares more than its ZIP entry holds is refused."""
    infos = archive.infolist()
    if len(infos) > MAX_NPZ_MEMBERS:
        raise UserError(f"{what}: {len(infos)} members, more than the {MAX_NPZ_MEMBERS} an input file may have")
    members = []
    for info in infos:
        if not info.filename.endswith(".npy"):
            continue
        name = info.filename[:-4]
        member_what = f"{what}: member {name!r}"
        try:
            with archive.open(info) as stream:
                header = _read_npy_header(_Prefix(stream), member_what)
                header_len = stream.tell()
        except UserError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, NotImplementedError (compression), zlib.error
            raise UserError(f"{member_what}: cannot be read ({reason_of(exc, 160)})") from None
        if header.nbytes > info.file_size - header_len:
            raise UserError(f"{member_what}: its header declares {header.shape} {header.dtype.name} "
                            f"({_mb(header.nbytes)}) but the archive entry holds {_mb(info.file_size)}")
        members.append(NpzMember(name, header, info))
    return members


class _Prefix(io.RawIOBase):
    """A read-only view of a stream for numpy's header readers (they call read(n) only)."""

    def __init__(self, stream):
        self.stream = stream

    def read(self, n=-1):
        return self.stream.read(n)


@contextlib.contextmanager
def open_npz(path: str | os.PathLike, label: str = "") -> Iterator[tuple[zipfile.ZipFile, list[NpzMember]]]:
    """(archive, members) of a .npz (a ZIP of .npy members), headers checked, nothing inflated."""
    what = _label(label, path)
    with open_input(path, label, ARRAY) as (handle, _size):
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise UserError(f"{what}: not a readable .npz file (a ZIP of .npy arrays: {reason_of(exc, 160)})") from None
        with archive:
            yield archive, npz_members(archive, what)


def read_npz(path: str | os.PathLike, label: str = "", names: Sequence[str] | None = None) -> dict[str, Any]:
    """The arrays of a .npz (all, or `names`, in that order), their declared sizes together checked
    against the memory before the first member is inflated. A missing name is a UserError."""
    what = _label(label, path)
    with open_npz(path, label) as (archive, members):
        by_name = {m.name: m for m in members}
        wanted = list(by_name) if names is None else list(names)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise UserError(f"{what} lacks {', '.join(map(repr, missing))} (has {', '.join(by_name) or 'nothing'})")
        chosen = [by_name[n] for n in wanted]
        _require_array_memory(sum(m.header.nbytes for m in chosen),
                              f"{what} ({len(chosen)} array(s), as their headers declare)")
        out = {}
        for member in chosen:
            try:
                with archive.open(member.info) as stream:
                    _read_npy_header(_Prefix(stream), what)
                    out[member.name] = _read_array_data(stream, member.header, f"{what}: member {member.name!r}")
            except UserError:
                raise
            except Exception as exc:  # a bad CRC, a corrupt deflate stream
                raise UserError(f"{what}: member {member.name!r} cannot be read ({reason_of(exc, 160)})") from None
        return out


def npz_names(path: str | os.PathLike, label: str = "") -> list[str]:
    """The array names of a .npz, nothing inflated."""
    with open_npz(path, label) as (_archive, members):
        return [m.name for m in members]


# -- schemas of the tool's own files --------------------------------------------------------

class Schema:
    """A structure a parsed JSON value must have; `problem(value, where)` -> None or what differs."""

    def problem(self, value: Any, where: str) -> str | None:
        raise NotImplementedError


class Is(Schema):
    """One of the given JSON kinds: 'str', 'int', 'number' (finite), 'bool', 'null', 'list', 'dict'."""

    _TESTS = {"str": lambda v: isinstance(v, str),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              "bool": lambda v: isinstance(v, bool),
              "null": lambda v: v is None,
              "list": lambda v: isinstance(v, list),
              "dict": lambda v: isinstance(v, dict)}

    def __init__(self, *kinds: str):
        self.kinds = kinds

    def problem(self, value, where):
        if any(self._TESTS[k](value) for k in self.kinds):
            return None
        return f"{where} is {_kind_of(value)}, expected {' or '.join(self.kinds)}"


class OneOf(Schema):
    def __init__(self, *values):
        self.values = values

    def problem(self, value, where):
        return None if value in self.values else f"{where} is {value!r}, expected one of {', '.join(map(repr, self.values))}"


class ListOf(Schema):
    def __init__(self, item: Schema):
        self.item = item

    def problem(self, value, where):
        if not isinstance(value, list):
            return f"{where} is {_kind_of(value)}, expected a list"
        return next((p for i, v in enumerate(value) if (p := self.item.problem(v, f"{where}[{i}]"))), None)


class MapOf(Schema):
    """A JSON object with any (string) keys, each value of one schema."""

    def __init__(self, value: Schema):
        self.value = value

    def problem(self, value, where):
        if not isinstance(value, dict):
            return f"{where} is {_kind_of(value)}, expected an object"
        return next((p for k, v in value.items() if (p := self.value.problem(v, f"{where}[{k!r}]"))), None)


class Fields(Schema):
    """A JSON object with these required (and optional) fields; other fields are allowed."""

    def __init__(self, required: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None):
        self.required, self.optional = dict(required), dict(optional or {})

    def problem(self, value, where):
        if not isinstance(value, dict):
            return f"{where} is {_kind_of(value)}, expected an object"
        for name, schema in self.required.items():
            if name not in value:
                return f"{where} lacks {name!r}"
            found = schema.problem(value[name], f"{where}.{name}")
            if found:
                return found
        for name, schema in self.optional.items():
            if name in value:
                found = schema.problem(value[name], f"{where}.{name}")
                if found:
                    return found
        return None


class Nullable(Schema):
    def __init__(self, inner: Schema):
        self.inner = inner

    def problem(self, value, where):
        return None if value is None else self.inner.problem(value, where)


def _kind_of(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def check_schema(value: Any, schema: Schema, what: str, way_out: str) -> Any:
    """`value` when it has `schema`'s structure; else one line: what, the first difference, the way out."""
    found = schema.problem(value, "$")  # "$.candidates['k'].gate": the path of the first difference
    if found:
        raise UserError(f"{what}: not in the expected format ({found[:200]}); {way_out}")
    return value


def read_state(path: str | os.PathLike, label: str, schema: Schema, way_out: str) -> Any:
    """A state file of the tool (JSON within STATE's limit) checked against `schema`; any problem,
    unreadable, not JSON or another structure, is one line ending with `way_out`."""
    what = _label(label, path)
    try:
        data = read_json(path, label, STATE)
    except UserError as exc:
        raise UserError(f"{exc}; {way_out}") from None
    return check_schema(data, schema, what, way_out)


def file_sha256(path: str | os.PathLike, label: str = "", kind: FileKind = ARRAY) -> str:
    """The SHA-256 of a regular file, read in chunks (provenance of a stored artefact)."""
    import hashlib

    digest = hashlib.sha256()
    with open_input(path, label, kind) as (handle, _size):
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
