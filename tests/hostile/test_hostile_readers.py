"""Issue 32, file-valued options: every option that names a file is read through the one reader
(lvvit_opt.core.readers). Each hostile file (a FIFO with no writer, /dev/zero, a folder, a dangling
link, garbage, a sparse giant, ...) given to each option of each verb is refused in one line with
exit 2, without a hang, without opening a FIFO, and nothing is written. Then the kinds of their
own: YAML alias bombs, space values outside the CLI's ranges, .npz members that declare more
than the memory, --inputs N beyond it, state files of another shape, and an export of other
weights in OUT/models."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hostile_helpers import assert_refused, diff_snapshots, invoke, snapshot

FILE = "FILE"
# What a verb's plan makes of an owned --out before its work (core.plan: the folder, its owner mark
# and its lock): not output, and all a refused verb may leave.
PLAN_FILES = {"new: out", "new: out/.lvvit-opt-owner"}


def written(before: dict, ws: Path) -> list[str]:
    """What changed under ws since `before`, besides the plan's own folder marks."""
    return [c for c in diff_snapshots(before, snapshot(ws)) if c not in PLAN_FILES]

# option id -> (argv with FILE where the file goes, the suffix its name gets)
FILE_OPTIONS = {
    "tune-space-json": (["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", FILE], ".json"),
    "tune-space-yaml": (["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", FILE], ".yaml"),
    "debug-layers-keep-dtype": (["debug", "layers", "m.onnx", "--fp16", "--keep-dtype", FILE], ".cfg"),
    "debug-layers-om-json": (["debug", "layers", "m.onnx", "dump", "--om-json", FILE], ".json"),
    "validate-inputs-npy": (["validate", "m.onnx", "c2.onnx", "--inputs", FILE], ".npy"),
    "validate-inputs-npz": (["validate", "m.onnx", "c2.onnx", "--inputs", FILE], ".npz"),
    "validate-inputs-info": (["validate", "m.onnx", "c2.onnx", "--inputs", FILE], ".info"),
    "golden-make-inputs-npz": (["golden", "make", "m.onnx", "-o", "sub/g2.npz", "--inputs", FILE], ".npz"),
    "apply-inputs-npy": (["apply", "m.onnx", "-o", "sub/o.onnx", "--inputs", FILE], ".npy"),
    "debug-layers-inputs-npz": (["debug", "layers", "m.onnx", "c2.onnx", "--inputs", FILE], ".npz"),
    "tune-inputs-npz": (["tune", "m.onnx", "--inputs", FILE, "--out", "out"], ".npz"),
    "export-checkpoint": (["export", "--model", "lvvit_t", "--checkpoint", FILE, "-o", "sub/e.onnx"], ".pth"),
    "run-checkpoint": (["run", "--model", "lvvit_t", "--checkpoint", FILE, "--out", "out"], ".pth"),
    "tune-model-checkpoint": (["tune", "--model", "lvvit_t", "--checkpoint", FILE, "--inputs", "1",
                               "--out", "out"], ".pth"),
}
TEXT_SUFFIXES = (".json", ".yaml", ".cfg", ".info")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _dev_zero(path: Path) -> Path:
    os.symlink("/dev/zero", path)
    return path


def _dev_zero_itself(path: Path) -> Path:
    return Path("/dev/zero")


def _dangling(path: Path) -> Path:
    os.symlink(path.parent / "nowhere", path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _not_utf8(path: Path) -> Path:
    path.write_bytes(b"\xff\xfe\x00\x81 threads: [1]\n")
    return path


def _sparse_giant(path: Path) -> Path:
    """A file that claims 64 GB (sparse: no disk used): the size decides before any read. It lies
    beside the workspace (the snapshot reads every file's bytes)."""
    path = path.parent.parent / path.name
    with open(path, "wb") as fh:
        fh.truncate(64 * 1024 ** 3)
    return path


def _truncated(path: Path) -> Path:
    source = {".npz": "g.npz", ".pth": "c.pth"}.get(path.suffix)
    if source is None:
        path.write_text('{"threads": [1, 2' if path.suffix == ".json" else "batch_sizes: [1, 2\n")
    else:
        data = (path.parent / source).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


def _socket_like_fifo_with_data(path: Path) -> Path:
    """A FIFO whose name looks right and a directory of the same stem beside it."""
    os.mkfifo(path)
    (path.parent / (path.stem + "_d")).mkdir()
    return path


HOSTILE_FILES = {
    "fifo": _fifo,
    "dev-zero-link": _dev_zero,
    "dev-zero": _dev_zero_itself,
    "dangling-link": _dangling,
    "folder": _folder,
    "empty": _empty,
    "garbage": _garbage,
    "not-utf8": _not_utf8,
    "sparse-64GB": _sparse_giant,
    "truncated": _truncated,
    "fifo-beside-folder": _socket_like_fifo_with_data,
}


class FifoWatch:
    """Tries, all along the command, to open the FIFO's write end without blocking: that succeeds
    only while someone holds its read end; when this process then has a descriptor on the FIFO
    (/proc/self/fd), the verb opened it. (An opener outside this process, another test walking
    the temporary folders, is not the verb's doing and is not counted.)"""

    def __init__(self, path: Path):
        self.path, self.opened, self.stop = path, False, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.0002)
                continue
            try:
                self.opened = self.opened or self._held_here(fd)
            finally:
                os.close(fd)

    def _held_here(self, own: int) -> bool:
        target = os.path.realpath(self.path)
        for name in os.listdir("/proc/self/fd"):
            if int(name) == own:
                continue
            try:
                if os.readlink(f"/proc/self/fd/{name}") == target:
                    return True
            except OSError:
                continue
        return False

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def deadline():
    """SIGALRM after 90 s: a blocked open or read fails the test instead of hanging the suite."""
    def expire(signum, frame):
        raise TimeoutError("the verb blocked (no answer within 90 s)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _dump_dir(ws: Path) -> None:
    dump = ws / "dump"
    dump.mkdir(exist_ok=True)
    np.save(dump / "Add.add1.1.1.1.output.0.npy", np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("hostile", list(HOSTILE_FILES))
@pytest.mark.parametrize("option", list(FILE_OPTIONS))
def test_a_hostile_file_for_any_file_option_is_one_line_exit_2_and_nothing_written(ws, deadline, option, hostile):
    argv, suffix = FILE_OPTIONS[option]
    if hostile == "not-utf8" and suffix not in TEXT_SUFFIXES:
        pytest.skip("binary formats: `garbage` covers them")
    if hostile in ("empty", "truncated") and option == "debug-layers-keep-dtype":
        pytest.skip("an empty (or any text) keep-dtype list is a valid one: node names")
    if option == "debug-layers-om-json":
        _dump_dir(ws)
    path = HOSTILE_FILES[hostile](ws / f"x{suffix}")
    before = snapshot(ws)
    args = [str(path) if a == FILE else a for a in argv]
    if path.exists() and not path.is_dir() and not path.is_file() and str(path).startswith(str(ws)):
        with FifoWatch(path) as watch:
            outcome = invoke(args, ws)
        assert not watch.opened, f"{option} opened the FIFO {path.name} before refusing it"
    else:
        outcome = invoke(args, ws)
    assert_refused(outcome, 2)
    assert written(before, ws) == []


# -- YAML and JSON bombs ------------------------------------------------------------------------

def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels, width", [(9, 9), (6, 10), (12, 4), (30, 2), (4, 40)])
def test_a_yaml_alias_bomb_in_space_is_refused_quickly(ws, ws_before, deadline, levels, width):
    text = billion_laughs(levels, width)
    assert len(text) < 1024
    (ws / "bomb.yaml").write_text(text)
    before = snapshot(ws)
    start = time.perf_counter()
    outcome = invoke(["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", "bomb.yaml"], ws)
    assert time.perf_counter() - start < 20
    assert_refused(outcome, 2, "expands to more than 100000 values through its aliases")
    assert written(before, ws) == []


def test_the_427_byte_bomb_costs_milliseconds_in_the_reader(tmp_path):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.readers import SPACE, read_yaml

    text = billion_laughs().replace("a8:", "threads:")
    (tmp_path / "b.yaml").write_text(text)
    start = time.perf_counter()
    with pytest.raises(UserError, match="through its aliases"):
        read_yaml(tmp_path / "b.yaml", "--space", SPACE)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("text, message", [
    ("x: &x [1, *x]\n", "refers to a value that contains it"),
    ("[" * 3000 + "]" * 3000, "nested"),
    ("a: " + "{b: " * 150 + "1" + "}" * 150 + "\n", "nested more than 100 levels"),
    ("a: *nothing\n", "not valid YAML"),
    ("a: !!python/object:os.system {}\n", "not valid YAML"),
    ("--- 1\n--- 2\n", "not valid YAML"),
])
def test_hostile_yaml_structures_are_one_line(tmp_path, text, message):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.readers import SPACE, read_yaml

    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(UserError, match=message) as info:
        read_yaml(tmp_path / "s.yaml", "--space", SPACE)
    assert "\n" not in str(info.value)


def test_shared_anchors_within_the_bound_are_read(tmp_path):
    from lvvit_opt.core.readers import SPACE, read_yaml

    (tmp_path / "s.yaml").write_text("common: &p [softmax_transpose, cleanup]\npass_sets: [*p, [cleanup], *p]\n")
    data = read_yaml(tmp_path / "s.yaml", "--space", SPACE)
    assert data["pass_sets"] == [["softmax_transpose", "cleanup"], ["cleanup"], ["softmax_transpose", "cleanup"]]


def test_deep_json_is_one_line(tmp_path):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.readers import SPACE, read_json

    (tmp_path / "s.json").write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(UserError, match="nested too deeply"):
        read_json(tmp_path / "s.json", "--space", SPACE)


@pytest.mark.parametrize("kind, size", [("SPACE", 1), ("LIST", 1), ("STATE", 16), ("INFO", 64)])
def test_each_kind_has_its_size_limit(tmp_path, kind, size):
    from lvvit_opt.core import readers
    from lvvit_opt.core.errors import UserError

    limit = getattr(readers, kind)
    assert limit.max_bytes == size * 1024 * 1024
    path = tmp_path / "f.json"
    path.write_bytes(b" " * limit.max_bytes + b"1")
    with pytest.raises(UserError, match="more than a .* may hold"):
        readers.read_bytes(path, "--x", limit)
    path.write_bytes(b" " * (limit.max_bytes - 1) + b"1")
    assert len(readers.read_bytes(path, "--x", limit)) == limit.max_bytes


# -- space values: the CLI's ranges, and the budget --------------------------------------------

THREADS = "expected a number of threads in 1..1024"
BATCH = "expected a batch size in 1..65536"
BAD_SPACES = [
    ({"threads": [4096]}, THREADS), ({"threads": [0]}, THREADS), ({"threads": [-1]}, THREADS),
    ({"threads": [1.5]}, THREADS), ({"threads": ["4"]}, THREADS), ({"threads": [True]}, THREADS),
    ({"threads": [None]}, THREADS), ({"threads": [1025]}, THREADS), ({"threads": [2 ** 64]}, THREADS),
    ({"threads": [float("inf")]}, THREADS), ({"threads": [[1]]}, THREADS), ({"threads": [{"a": 1}]}, THREADS),
    ({"batch_sizes": [0]}, BATCH), ({"batch_sizes": [65537]}, BATCH), ({"batch_sizes": [-8]}, BATCH),
    ({"batch_sizes": [1e9]}, BATCH), ({"batch_sizes": ["8"]}, BATCH), ({"batch_sizes": [False]}, BATCH),
    ({"batch_sizes": [10 ** 30]}, BATCH), ({"batch_sizes": [2.0]}, BATCH),
    ({"precisions": ["int4"]}, "valid: fp32"), ({"precisions": [1]}, "valid: fp32"),
    ({"precisions": [None]}, "valid: fp32"), ({"precisions": [["fp32"]]}, "valid: fp32"),
    ({"graph_opt": ["max"]}, "valid: all"), ({"graph_opt": [0]}, "valid: all"),
    ({"precision_modes": ["fp8"]}, "valid: force_fp16"), ({"op_select_implmodes": ["fast"]}, "valid: high_"),
    ({"whitelist": ["maybe"]}, "valid: unpatched"),
    ({"threads": []}, "must be a non-empty list"), ({"threads": 4}, "must be a non-empty list"),
    ({"threads": "4"}, "must be a non-empty list"), ({"threads": None}, "must be a non-empty list"),
    ({"threads": list(range(1, 66))}, "threads has 65 entries; at most 64"),
    ({"batch_sizes": list(range(1, 100))}, "batch_sizes has 99 entries; at most 64"),
    ({"pass_sets": [["cleanup"]] * 5000}, "pass_sets has 5000 entries; at most 256"),
    ({"pass_sets": [["cleanup"] * 100]}, "each pass set is a list of at most 64 pass names"),
    ({"pass_sets": [[1]]}, "each pass set is a list"), ({"pass_sets": [{"a": 1}]}, "each pass set is a list"),
    ({"pass_sets": [["no_such_pass"]]}, "unknown pass"),
    ({"thread": [1]}, "unknown key(s) thread"), ({"": [1]}, "unknown key(s)"),
    ([1, 2], "expected a mapping"), ("threads", "expected a mapping"), (None, "expected a mapping"),
    (42, "expected a mapping"),
]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("space, message", BAD_SPACES, ids=[f"bad{i}" for i in range(len(BAD_SPACES))])
def test_space_values_outside_the_cli_ranges_are_refused(ws, deadline, space, message, suffix):
    import yaml

    if suffix == ".json" and any(isinstance(v, list) and any(isinstance(x, float) and not np.isfinite(x) for x in v)
                                 for v in (space.values() if isinstance(space, dict) else [])):
        pytest.skip("JSON has no infinity")
    path = ws / f"s{suffix}"
    path.write_text(json.dumps(space) if suffix == ".json" else yaml.safe_dump(space))
    before = snapshot(ws)
    outcome = invoke(["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", path.name], ws)
    assert_refused(outcome, 2, message)
    assert written(before, ws) == []


def test_space_threads_are_refused_in_the_words_of_the_threads_option(ws):
    (ws / "s.json").write_text('{"threads": [4096]}')
    from_file = invoke(["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", "s.json"], ws)
    from_option = invoke(["bench", "m.onnx", "--threads", "4096"], ws)
    assert_refused(from_file, 2, THREADS)
    assert_refused(from_option, 2, THREADS)


@pytest.mark.parametrize("budget, refused", [("90s", True), ("10m", True), ("1h", True), ("7d", None),
                                             ("168h", False)])
def test_a_space_larger_than_the_budget_can_gate_is_refused(budget, refused):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.tune.space import parse_budget, space_from_mapping

    if refused is None:
        with pytest.raises(UserError, match="--budget"):
            parse_budget(budget)
        return
    space = {"batch_sizes": list(range(1, 33)), "threads": list(range(1, 33)), "graph_opt": ["all", "basic"],
             "precisions": ["fp32", "fp16"]}  # 4096 candidates per pass set
    if refused:
        with pytest.raises(UserError, match=r"candidates, more than --budget .* can gate"):
            space_from_mapping(space, "ort-cpu", "--space s.json", budget_s=parse_budget(budget))
    else:
        assert space_from_mapping(space, "ort-cpu", budget_s=parse_budget(budget)).threads == list(range(1, 33))


def test_5000_pass_sets_are_refused_before_any_is_parsed(ws, monkeypatch):
    import lvvit_opt.passes as passes

    calls = []
    real = passes.parse_pass_list
    monkeypatch.setattr(passes, "parse_pass_list", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    (ws / "s.json").write_text(json.dumps({"pass_sets": [["cleanup"]] * 5000}))
    outcome = invoke(["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", "s.json", "--budget", "1h"], ws)
    assert_refused(outcome, 2, "at most 256")
    assert [c for c in calls if c != passes.DEFAULT_PRESET] == []  # the file's sets (the default space's preset aside)


# -- arrays: declared sizes against the memory --------------------------------------------------

GiB = 1024 ** 3


def zero_npz(path: Path, name: str, shape: tuple[int, ...], dtype=np.float32) -> Path:
    """A real .npz whose one member is zeros of `shape`, deflated (a few MB for GBs)."""
    from numpy.lib import format as npy_format

    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
            npy_format.write_array_header_1_0(member, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                       "shape": shape})
            chunk = bytes(1 << 24)
            while total:
                n = min(total, len(chunk))
                member.write(chunk[:n])
                total -= n
    return path


@pytest.fixture(scope="module")
def inflating_npz(tmp_path_factory):
    """1.2 GB of zeros as the golden model's `image` in a few MB."""
    path = zero_npz(tmp_path_factory.mktemp("bomb") / "bomb.npz", "image", (2048, 3, 224, 224))
    assert path.stat().st_size < 8 * 1024 * 1024
    return path


def lying_npy(path: Path, shape: tuple[int, ...], data: bytes = b"\0" * 64) -> Path:
    from numpy.lib import format as npy_format

    with open(path, "wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.write(data)
    return path


def lying_npz(path: Path, name: str, shape: tuple[int, ...]) -> Path:
    from numpy.lib import format as npy_format
    import io

    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buffer.write(b"\0" * 64)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


INPUT_VERBS = {
    "validate": ["validate", "m.onnx", "c2.onnx", "--inputs", FILE],
    "golden-make": ["golden", "make", "m.onnx", "-o", "sub/g2.npz", "--inputs", FILE],
    "apply": ["apply", "m.onnx", "-o", "sub/o.onnx", "--inputs", FILE],
    "debug-layers": ["debug", "layers", "m.onnx", "c2.onnx", "--inputs", FILE],
    "tune": ["tune", "m.onnx", "--inputs", FILE, "--out", "out"],
}


@pytest.mark.parametrize("verb", list(INPUT_VERBS))
def test_an_npz_inflating_past_the_memory_is_refused_before_inflating(ws, deadline, monkeypatch, inflating_npz, verb):
    import resource

    from lvvit_opt.core import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1 * GiB)
    os.symlink(inflating_npz, ws / "bomb.npz")
    before = snapshot(ws)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    outcome = invoke([str(a).replace(FILE, "bomb.npz") for a in INPUT_VERBS[verb]], ws)
    assert time.perf_counter() - start < 30
    assert_refused(outcome, 2, "as their headers declare) needs about 1.1 GiB of memory")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 500 * 1024  # KiB: nothing inflated
    assert written(before, ws) == []


@pytest.mark.parametrize("verb", list(INPUT_VERBS))
@pytest.mark.parametrize("case", ["npy-header-lies", "npz-header-lies", "npy-pickled", "npz-member-pickled",
                                  "npy-fortran-huge", "npz-not-npy-members"])
def test_array_files_that_lie_about_their_size_are_one_line(ws, deadline, verb, case):
    if case == "npy-header-lies":
        path = lying_npy(ws / "x.npy", (10 ** 6, 10 ** 6))
    elif case == "npy-fortran-huge":
        path = lying_npy(ws / "x.npy", (2, 3, 10 ** 9, 224))
    elif case == "npz-header-lies":
        path = lying_npz(ws / "x.npz", "image", (2, 3, 224, 10 ** 9))
    elif case == "npy-pickled":
        path = ws / "x.npy"
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "npz-member-pickled":
        path = ws / "x.npz"
        np.savez(path, image=np.array([{"a": 1}], dtype=object))
    else:
        path = ws / "x.npz"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("image.txt", "1 2 3")
    before = snapshot(ws)
    outcome = invoke([str(a).replace(FILE, path.name) for a in INPUT_VERBS[verb]], ws)
    assert_refused(outcome, 2)
    assert written(before, ws) == []


def test_read_npz_inflates_only_the_members_asked_for(tmp_path, monkeypatch):
    from lvvit_opt.core import readers, resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1 * GiB)
    path = zero_npz(tmp_path / "two.npz", "big", (600, 1024, 1024))  # 2.3 GiB declared
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("small.npy", _npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3)))
    got = readers.read_npz(path, "--inputs", ["small"])
    np.testing.assert_array_equal(got["small"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert readers.npz_names(path) == ["big", "small"]


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("array", [np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                                   np.asfortranarray(np.arange(24, dtype=np.float64).reshape(4, 6)),
                                   np.array(3.5, dtype=np.float16), np.zeros((0, 3), np.int64),
                                   np.array([True, False]), np.arange(10, dtype=">i4")])
def test_the_bounded_readers_give_numpys_arrays(tmp_path, array):
    from lvvit_opt.core import readers

    np.save(tmp_path / "a.npy", array)
    np.savez_compressed(tmp_path / "a.npz", x=array, y=array)
    for got in (readers.read_npy(tmp_path / "a.npy"), *readers.read_npz(tmp_path / "a.npz").values()):
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)


# -- --inputs N against the memory --------------------------------------------------------------

def _tiny_model(path: Path, shapes: dict[str, list], out_shape=None) -> Path:
    """Add/Mul of float inputs: y = x * scale (shapes per input)."""
    import onnx
    from onnx import TensorProto, helper

    names = list(shapes)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    node = helper.make_node("Mul", names[:2], ["y"]) if len(names) == 2 else helper.make_node("Identity", names, ["y"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or shapes[names[0]])
    model = helper.make_model(helper.make_graph([node], "tiny", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("count", ["5000000", "100000000", "99999999999"])
def test_inputs_count_beyond_the_memory_is_refused_before_allocating(ws, monkeypatch, count):
    from lvvit_opt.core import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 8 * GiB)
    _tiny_model(ws / "t.onnx", {"x": ["N", 4]})
    outcome = invoke(["validate", "t.onnx", "t.onnx", "--inputs", count], ws)
    assert_refused(outcome, 2, "needs about")


# -- an .npz of several inputs, each of its own shape ---------------------------------------------

def test_an_npz_of_inputs_without_a_shared_batch_is_fed_as_given(ws):
    """x (2, 4) and scale (1, 4) (broadcast): one call with the user's real inputs; the result is
    numerically x * scale (golden make stores it)."""
    _tiny_model(ws / "t.onnx", {"x": [2, 4], "scale": [1, 4]}, [2, 4])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    scale = np.array([[1, 2, 3, 4]], np.float32)
    np.savez(ws / "in.npz", x=x, scale=scale)
    outcome = invoke(["golden", "make", "t.onnx", "-o", "sub/g.npz", "--inputs", "in.npz"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    with np.load(ws / "sub" / "g.npz") as stored:
        np.testing.assert_array_equal(stored["y"], x * scale)
    validated = invoke(["validate", "t.onnx", "t.onnx", "--inputs", "in.npz"], ws)
    assert validated.exit_code == 0, validated.stderr


def test_an_npz_with_a_symbolic_input_of_its_own_length(ws):
    """x (N, 4) batched and scale (M, 4) with M != N: each input keeps its own shape."""
    from lvvit_opt.verify.inputs import load_inputs
    from lvvit_opt.core.tensor_spec import TensorSpec

    specs = [TensorSpec("x", ("N", 4), "float32"), TensorSpec("scale", ("M", 4), "float32")]
    np.savez(ws / "in.npz", x=np.ones((3, 4), np.float32), scale=np.ones((1, 4), np.float32))
    inputs = load_inputs(ws / "in.npz", specs)
    assert len(inputs.feeds) == 1
    assert inputs.feeds[0]["x"].shape == (3, 4) and inputs.feeds[0]["scale"].shape == (1, 4)


def test_an_npz_of_batched_inputs_is_still_split_by_the_models_batch(ws):
    from lvvit_opt.core.tensor_spec import TensorSpec
    from lvvit_opt.verify.inputs import load_inputs

    specs = [TensorSpec("a", (2, 4), "float32"), TensorSpec("b", (2, 3), "float32")]
    np.savez(ws / "in.npz", a=np.zeros((6, 4), np.float32), b=np.zeros((6, 3), np.float32))
    inputs = load_inputs(ws / "in.npz", specs)
    assert [f["a"].shape for f in inputs.feeds] == [(2, 4)] * 3 and inputs.rows == 6


def test_an_npz_input_of_the_wrong_shape_names_it(ws):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.tensor_spec import TensorSpec
    from lvvit_opt.verify.inputs import load_inputs

    specs = [TensorSpec("x", (2, 4), "float32"), TensorSpec("scale", (1, 4), "float32")]
    np.savez(ws / "in.npz", x=np.zeros((2, 4), np.float32), scale=np.zeros((1, 5), np.float32))
    with pytest.raises(UserError, match=r"input 'scale': the model expects \(1, 4\), got \(1, 5\)"):
        load_inputs(ws / "in.npz", specs)


def test_a_scalar_input_in_an_npz(ws):
    from lvvit_opt.core.tensor_spec import TensorSpec
    from lvvit_opt.verify.inputs import load_inputs

    specs = [TensorSpec("x", ("N", 4), "float32"), TensorSpec("t", (), "float32")]
    np.savez(ws / "in.npz", x=np.ones((5, 4), np.float32), t=np.array(0.5, np.float32))
    inputs = load_inputs(ws / "in.npz", specs)
    assert len(inputs.feeds) == 1 and inputs.feeds[0]["t"].shape == () and inputs.rows == 5


# -- state files of another shape ----------------------------------------------------------------

GOOD_CANDIDATE = {"batch": 2, "passes": [], "precision": "fp32", "options": {"threads": 1, "graph_opt": "all"},
                  "status": "passed", "reason": "", "gate": {"passed": True, "reasons": [], "top1_agreement": 1.0},
                  "screen": {"fps": 10.0, "spread_pct": 1.0}, "timing": None, "measured_s": 1.0}


def _with(**changes):
    return {**GOOD_CANDIDATE, **changes}


BAD_TUNE_STATES = {
    "a-list": [1, 2],
    "a-string": "state",
    "null": None,
    "no-candidates": {"version": 1, "fingerprint": {}},
    "candidates-a-list": {"version": 1, "fingerprint": {}, "candidates": []},
    "version-a-string": {"version": "1", "fingerprint": {}, "candidates": {}},
    "fingerprint-a-list": {"version": 1, "fingerprint": [], "candidates": {}},
    "candidate-a-list": {"version": 1, "fingerprint": {}, "candidates": {"k": [1]}},
    "gate-a-list": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(gate=[True])}},
    "gate-without-passed": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(gate={"reasons": []})}},
    "fps-a-string": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(screen={"fps": "fast"})}},
    "timing-without-rounds": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(timing={"fps": 3.0})}},
    "round-fps-strings": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(timing={"fps": 3.0,
                                                                                            "round_fps": ["a"]})}},
    "status-unknown": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(status="great")}},
    "batch-a-string": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(batch="2")}},
    "passes-a-string": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(passes="cleanup")}},
    "keep-fp32-numbers": {"version": 1, "fingerprint": {}, "candidates": {"k": _with(gate={"passed": True,
                                                                                         "reasons": [],
                                                                                         "keep_fp32": [1]})}},
}


@pytest.mark.parametrize("name", list(BAD_TUNE_STATES))
def test_a_tune_state_of_another_shape_is_one_line_with_the_way_out(tmp_path, name):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.tune.state import read_tune_state

    (tmp_path / "tune_state.json").write_text(json.dumps(BAD_TUNE_STATES[name]))
    with pytest.raises(UserError, match="give a fresh --out") as info:
        read_tune_state(tmp_path / "tune_state.json", tmp_path)
    assert "\n" not in str(info.value)


def test_a_good_tune_state_is_read(tmp_path):
    from lvvit_opt.tune.state import read_tune_state

    good = {"version": 1, "fingerprint": {"a": 1}, "candidates": {"k": GOOD_CANDIDATE}}
    (tmp_path / "tune_state.json").write_text(json.dumps(good))
    assert read_tune_state(tmp_path / "tune_state.json", tmp_path) == good


@pytest.mark.parametrize("name", ["candidates-a-list", "gate-a-list", "fps-a-string", "truncated", "fifo",
                                  "dev-zero", "folder", "huge"])
def test_tune_refuses_a_bad_state_in_its_out_in_one_line(ws, deadline, name):
    out = ws / "out"
    out.mkdir()
    (out / ".lvvit-opt-owner").write_text('{"verb": "tune"}\n')  # an earlier tune's folder (core.plan)
    state = out / "tune_state.json"
    if name == "truncated":
        state.write_text('{"version": 1, "fingerp')
    elif name == "fifo":
        os.mkfifo(state)
    elif name == "dev-zero":
        os.symlink("/dev/zero", state)
    elif name == "folder":
        state.mkdir()
    elif name == "huge":
        with open(state, "wb") as fh:
            fh.truncate(17 * 1024 * 1024)
    else:
        state.write_text(json.dumps(BAD_TUNE_STATES[name]))
    (ws / "s.json").write_text('{"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"], "threads": [1], '
                               '"graph_opt": ["all"]}')
    before = snapshot(ws)
    outcome = invoke(["tune", "m.onnx", "--inputs", "1", "--out", "out", "--space", "s.json", "--budget", "60s"], ws)
    assert_refused(outcome, 2, "tune_state.json")
    if name != "folder":  # (a folder is refused by the output guard first: it is an output too)
        assert "give a fresh --out" in outcome.stderr
    assert written(before, ws) == []


BAD_STAGES = {"a-list": [], "entry-a-list": {"export bs1": [1]}, "key-a-number": {"export bs1": {"key": 1,
                                                                                                 "result": {}}},
              "result-a-list": {"export bs1": {"key": "k", "result": []}}, "no-key": {"export bs1": {"result": {}}},
              "a-number": 3, "null": None}


@pytest.mark.parametrize("name", list(BAD_STAGES) + ["truncated", "fifo", "dev-zero", "not-utf8"])
def test_a_stage_cache_of_another_shape_is_one_line_with_the_way_out(tmp_path, deadline, name):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.pipeline.run import StageCache

    path = tmp_path / ".stages.json"
    if name == "truncated":
        path.write_text('{"export bs1": {"key"')
    elif name == "fifo":
        os.mkfifo(path)
    elif name == "dev-zero":
        os.symlink("/dev/zero", path)
    elif name == "not-utf8":
        path.write_bytes(b"\xff\xfe{}")
    else:
        path.write_text(json.dumps(BAD_STAGES[name]))
    with pytest.raises(UserError, match="give a fresh --out") as info:
        StageCache(tmp_path)
    assert "\n" not in str(info.value) and ".stages.json" in str(info.value)


def test_run_refuses_a_stage_cache_of_another_shape_before_any_stage(ws, deadline):
    (ws / "out").mkdir()
    (ws / "out" / ".stages.json").write_text('{"export bs1": [1, 2]}')
    before = snapshot(ws)
    outcome = invoke(["run", "--model", "lvvit_t", "--out", "out", "--batch-sizes", "1"], ws)
    assert_refused(outcome, 2, "remove it (every stage then runs again) or give a fresh --out")
    assert written(before, ws) == []


# -- provenance: an export of other weights in OUT/models is never reused silently ---------------

@pytest.fixture
def fake_export(monkeypatch):
    """export_onnx replaced by a writer of a file naming its weights (the real one takes a minute)."""
    import lvvit_opt.export as export

    calls = []

    def write(path, model, checkpoint=None, batch_size=1, seed=0, **kwargs):
        calls.append((model, checkpoint, batch_size))
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # (the real one writes through atomic_path)
        Path(path).write_text(f"{model} {checkpoint} {batch_size} {seed}")

    monkeypatch.setattr(export, "export_onnx", write)
    return calls


def test_an_export_is_reused_only_with_the_same_weights(ws, fake_export):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.tune.state import stored_export

    out = ws / "out"
    first = stored_export("lvvit_t", None, out, 1)
    again = stored_export("lvvit_t", None, out, 1)
    assert first == again and len(fake_export) == 1  # the same random weights: reused
    before = snapshot(ws)
    with pytest.raises(UserError, match=r"exported from random weights \(seed 0\), not from --checkpoint") as info:
        stored_export("lvvit_t", ws / "c.pth", out, 1, check_only=True)
    assert "give a fresh --out" in str(info.value) and "\n" not in str(info.value)
    assert written(before, ws) == [] and len(fake_export) == 1


def test_an_export_with_a_checkpoint_is_not_reused_for_another_checkpoint(ws, fake_export):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.tune.state import stored_export

    out = ws / "out"
    stored_export("lvvit_t", ws / "c.pth", out, 4)
    (ws / "other.pth").write_bytes((ws / "c.pth").read_bytes() + b"\0")
    with pytest.raises(UserError, match="exported from checkpoint sha256"):
        stored_export("lvvit_t", ws / "other.pth", out, 4)
    with pytest.raises(UserError, match=r"not from random weights \(seed 0\)"):
        stored_export("lvvit_t", None, out, 4)
    assert stored_export("lvvit_t", ws / "link.pth", out, 4) and len(fake_export) == 1  # same bytes: reused


@pytest.mark.parametrize("damage", ["no-record", "record-garbage", "model-replaced", "record-other-version"])
def test_an_export_without_a_matching_record_is_exported_again(ws, fake_export, damage):
    from lvvit_opt.tune.state import PROVENANCE_SUFFIX, stored_export

    out = ws / "out"
    path = stored_export("lvvit_t", None, out, 1)
    record = Path(str(path) + PROVENANCE_SUFFIX)
    if damage == "no-record":
        record.unlink()
    elif damage == "record-garbage":
        record.write_text("[1")
    elif damage == "model-replaced":
        path.write_text("something else")
    else:
        record.write_text(json.dumps({**json.loads(record.read_text()), "tool_version": "0.0.1"}))
    stored_export("lvvit_t", None, out, 1)
    assert len(fake_export) == 2
    assert json.loads(record.read_text())["onnx_sha256"]


def test_tune_model_with_a_checkpoint_refuses_an_earlier_random_export(ws, fake_export):
    from lvvit_opt.tune.state import stored_export

    for batch in (1, 4, 8, 16, 32):
        stored_export("lvvit_t", None, ws / "out", batch)
    (ws / "out" / ".lvvit-opt-owner").write_text('{"verb": "tune"}\n')  # an earlier tune's folder (core.plan)
    before = snapshot(ws)
    outcome = invoke(["tune", "--model", "lvvit_t", "--checkpoint", "c.pth", "--inputs", "1", "--out", "out"], ws)
    assert_refused(outcome, 2, "exported from random weights (seed 0), not from --checkpoint c.pth")
    assert written(before, ws) == [] and len(fake_export) == 5
