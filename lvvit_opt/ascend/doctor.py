"""`lvvit-opt doctor`: can this host run the whole pipeline, and if not, what exactly to fix.

`run_doctor()` returns one `Check` per question, in the order a user fixes them:
CANN toolkit (where, which version, from the install's own files), set_env.sh variables,
atc, npu-smi (and the SoC it reports), driver version, an .om runner (ais_bench or the
legacy benchmark binary), CANN's transpose.py (era, writable), optionally the model's
Transpose shapes against it, and free disk space where atc will work. Every failed check
carries the command that fixes it. Nothing is modified; nothing needs root.

Version files read (real 8.1.RC1 install, GitHub leideng/CANN-8.1.RC1; CANN docs "File Paths"):
  <toolkit>/<arch>-linux/ascend_toolkit_install.info   version=8.1.RC1
  <toolkit>/{compiler,opp,toolkit,runtime}/version.info Version=7.7.0.1.238, version_dir=8.1.RC1
  <toolkit>/version.cfg (8.0 images)                     toolkit_running_version=[7.6.T13.0.B094:8.0.T63]
  /usr/local/Ascend/driver/version.info                  Version=24.1.rc2.2, package_version=...
"""
from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from lvvit_opt.core.errors import LvvitOptError, UserError
from lvvit_opt.core.cann import (DEFAULT_TOOLKIT_HOME, TOOLKIT_ENV_VARS, USER_TOOLKIT_HOME, CannToolkit, build_cann_env,
                                 find_cann, find_tool, toolkit_exports)

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
DEFAULT_TOOLKIT_HOMES = (DEFAULT_TOOLKIT_HOME, USER_TOOLKIT_HOME)
DEFAULT_DRIVER_DIR = "/usr/local/Ascend/driver"
DEFAULT_SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
ARCH_DIRS = ("x86_64-linux", "aarch64-linux", "arm64-linux")
# component version.info files, newest layout first (atc/ and fwkacllib/ are the 5.x/6.x names)
COMPONENTS = ("compiler", "opp", "toolkit", "runtime", "atc", "fwkacllib", "acllib")
DEFAULT_MIN_FREE_GB = 2.0
NPU_SMI_DIRS = ("/usr/local/sbin", "/usr/local/bin")  # where the driver puts npu-smi (root's PATH only)
TOOL_TIMEOUT_S = 60


@dataclass
class Check:
    """One line of the checklist."""

    key: str            # stable id: cann, environment, atc, npu, driver, runner, transpose, model, disk
    title: str
    status: str         # ok | warn | fail
    summary: str
    fix: str | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "status": self.status, "summary": self.summary,
                "fix": self.fix, "details": self.details}


@dataclass
class DoctorReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """True when nothing failed (warnings allowed): the host can run the whole pipeline."""
        return all(c.status != FAIL for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    def get(self, key: str) -> Check | None:
        return next((c for c in self.checks if c.key == key), None)

    def to_dict(self) -> dict:
        return {"ready": self.ok, "checks": [c.to_dict() for c in self.checks], "scope": self.scope_lines()}

    def format_lines(self) -> list[str]:
        """The checklist: one line per check, then `fix:` under every failed or warned one."""
        marks = {OK: "[ok]  ", WARN: "[warn]", FAIL: "[FAIL]"}
        width = max(len(c.title) for c in self.checks)
        lines = []
        for check in self.checks:
            lines.append(f"{marks[check.status]} {check.title:<{width}}  {check.summary}")
            if check.fix and check.status != OK:
                lines.append(f"{'':6} {'':<{width}}  fix: {check.fix}")
        if self.ok:
            lines.append("ready: this host can run the whole pipeline"
                         + (f" ({len(self.warnings)} warning(s))" if self.warnings else ""))
        else:
            lines.append(f"not ready: {len(self.failed)} check(s) failed: "
                         + ", ".join(c.title for c in self.failed))
            lines += self.scope_lines()
        return lines

    def scope_lines(self) -> list[str]:
        """Without a CANN toolkit: what this machine can do all the same, and what needs the Ascend host."""
        cann = self.get("cann")
        if cann is None or cann.status != FAIL:
            return []
        return ["works here: export, apply, validate, golden, debug layers, whitelist shapes/check/patch (a copied "
                "transpose.py), bench and eval on onnxruntime, tune --target ort-cpu, run (writes atc_commands.sh)",
                "needs the Ascend host: atc (the .om), bench/eval of an .om (ais_bench or benchmark), npu-smi, "
                "patching the installed transpose.py, tune --target ascend"]


# ---------------------------------------------------------------- version files

def read_key_values(path: str | os.PathLike) -> dict[str, str]:
    """`key=value` lines of an Ascend .info/.cfg file; keys lower-cased, quotes and BOM stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip().lower(), value.strip().strip('"').strip("'"))
    return values


_RUNNING_VERSION = re.compile(r"^\[([^:\]]*):([^\]]*)\]$")


@dataclass(frozen=True)
class CannVersion:
    """The toolkit's version and the file it was read from; per-component versions beside it."""

    version: str | None
    source: Path | None
    components: dict[str, str]

    @property
    def mixed(self) -> bool:
        """Components report different versions (a partial upgrade)."""
        return len(set(self.components.values())) > 1


def cann_version(home: str | os.PathLike) -> CannVersion:
    """Read the version the way the install records it, most specific file first."""
    home = Path(home)
    components = {}
    for name in COMPONENTS:
        values = read_key_values(home / name / "version.info")
        if values.get("version"):
            components[name] = values["version"]
    for arch in ARCH_DIRS:
        info = home / arch / "ascend_toolkit_install.info"
        version = read_key_values(info).get("version")
        if version:
            return CannVersion(version, info, components)
    cfg = home / "version.cfg"
    values = read_key_values(cfg)
    running = [values[k] for k in ("toolkit_running_version", "runtime_running_version") if k in values]
    running += [v for k, v in values.items() if k.endswith("_running_version")]
    for value in running:
        match = _RUNNING_VERSION.match(value)
        if match and match.group(2):
            return CannVersion(match.group(2), cfg, components)
    if values.get("version"):
        return CannVersion(values["version"], cfg, components)
    for name in COMPONENTS:
        info = home / name / "version.info"
        version_dir = read_key_values(info).get("version_dir")
        if version_dir:
            return CannVersion(version_dir, info, components)
    return CannVersion(None, None, components)


def driver_version(npu_smi_text: str | None, driver_dir: str | os.PathLike) -> tuple[str | None, str | None]:
    """(version, where from): npu-smi's header `Version: 23.0.rc1`, else the driver's version.info."""
    if npu_smi_text:
        from lvvit_opt.ascend.npu_smi import parse_npu_smi_table

        version = parse_npu_smi_table(npu_smi_text).version
        if version:
            return version, "npu-smi info"
    info = Path(driver_dir) / "version.info"
    values = read_key_values(info)
    version = values.get("package_version") or values.get("version")
    return (version, str(info)) if version else (None, None)


# ---------------------------------------------------------------- the checks

def find_toolkit(cann_home: str | os.PathLike | None, environ: Mapping[str, str],
                 default_homes: Iterable[str | os.PathLike]) -> CannToolkit | None:
    """find_cann over each default root (root install, then the user's own ~/Ascend)."""
    defaults = [Path(os.path.expanduser(str(d))) for d in default_homes] or [None]
    for default in defaults:
        toolkit = find_cann(cann_home, environ, default_home=default)
        if toolkit is not None:
            return toolkit
    return None


def set_env_fix(toolkit: CannToolkit | None) -> str:
    if toolkit is not None and toolkit.set_env is not None:
        return f"source {shlex.quote(str(toolkit.set_env))}"
    if toolkit is not None:  # the exports set_env.sh would make (core.cann.toolkit_exports), as shell lines
        placeholders = {name: f"${name}" for name in ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH")}
        exports = toolkit_exports(toolkit.home, placeholders)
        lines = [f'export {k}="{v}"' for k, v in sorted(exports.items()) if placeholders.get(k) != v]
        return "this install has no set_env.sh; run: " + "; ".join(lines)
    return f"install the CANN toolkit, then: source {DEFAULT_SET_ENV}"


def check_cann(toolkit: CannToolkit | None, searched: list[str]) -> Check:
    if toolkit is None:
        return Check("cann", "CANN toolkit", FAIL, "not found (looked in " + ", ".join(searched) + ")",
                     "install the CANN toolkit (Ascend-cann-toolkit_<version>_linux-<arch>.run --install), "
                     "or pass --cann-home DIR")
    version = cann_version(toolkit.home)
    real = Path(os.path.realpath(toolkit.home))
    where = str(toolkit.home) + (f" -> {real}" if real != toolkit.home.absolute() else "")
    details = {"home": str(toolkit.home), "real_path": str(real), "from": toolkit.source,
               "version": version.version, "version_file": str(version.source) if version.source else None,
               "components": version.components, "set_env": str(toolkit.set_env) if toolkit.set_env else None}
    if version.version is None:
        return Check("cann", "CANN toolkit", WARN, f"version unknown at {where} (no ascend_toolkit_install.info, "
                     "version.cfg or version.info)", "reinstall the toolkit; its install files are missing",
                     details)
    source = os.path.relpath(version.source, toolkit.home) if version.source else "?"
    summary = f"{version.version} at {where} ({source})"
    if version.mixed:
        mixed = ", ".join(f"{k} {v}" for k, v in version.components.items())
        return Check("cann", "CANN toolkit", WARN, f"{summary}; components differ: {mixed}",
                     "reinstall the toolkit so all components share one version", details)
    return Check("cann", "CANN toolkit", OK, summary, None, details)


def _path_entries(value: str | None) -> set[str]:
    return {os.path.realpath(p) for p in (value or "").split(os.pathsep) if p}


def check_environment(toolkit: CannToolkit | None, environ: Mapping[str, str]) -> Check:
    """The variables set_env.sh exports (ASCEND_TOOLKIT_HOME, ASCEND_OPP_PATH, PYTHONPATH, LD_LIBRARY_PATH)."""
    roots = {os.path.realpath(p) for p in (environ.get("ASCEND_TOOLKIT_HOME"), environ.get("install_path"),
                                           toolkit.home if toolkit else None) if p}
    wanted = {
        "ASCEND_TOOLKIT_HOME": lambda: bool(environ.get("ASCEND_TOOLKIT_HOME"))
        and Path(environ["ASCEND_TOOLKIT_HOME"]).is_dir(),
        "ASCEND_OPP_PATH": lambda: bool(environ.get("ASCEND_OPP_PATH")) and Path(environ["ASCEND_OPP_PATH"]).is_dir(),
        "PYTHONPATH": lambda: bool(_path_entries(environ.get("PYTHONPATH")) & {
            os.path.join(r, sub) for r in roots for sub in ("python/site-packages", "atc/python/site-packages")}),
        "LD_LIBRARY_PATH": lambda: bool(_path_entries(environ.get("LD_LIBRARY_PATH")) & {
            os.path.join(r, sub) for r in roots for sub in ("lib64", "atc/lib64", "fwkacllib/lib64", "acllib/lib64")}),
    }
    missing = [name for name, test in wanted.items() if not test()]
    details = {name: environ.get(name) for name in wanted}
    if not missing:
        return Check("environment", "set_env.sh", OK, "ASCEND_TOOLKIT_HOME, ASCEND_OPP_PATH, PYTHONPATH, "
                     "LD_LIBRARY_PATH point at the toolkit", None, details)
    return Check("environment", "set_env.sh", FAIL, f"not in effect: {', '.join(missing)} "
                 f"{'is' if len(missing) == 1 else 'are'} not set for the toolkit", set_env_fix(toolkit), details)


def _run(argv: list[str], env: Mapping[str, str]) -> tuple[int | None, str]:
    """(exit code or None if it could not run, combined output)."""
    try:
        proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True, errors="replace",
                              timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {TOOL_TIMEOUT_S}s"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def check_atc(toolkit: CannToolkit | None, environ: Mapping[str, str]) -> Check:
    atc = find_tool("atc", environ)
    env, via = environ, ""
    if atc is None and toolkit is not None:
        try:
            env = build_cann_env(toolkit, environ)
        except LvvitOptError as exc:
            log.info("could not build the CANN environment: %s", exc)
            env = environ
        atc = find_tool("atc", env)
        via = " (found after sourcing set_env.sh, which lvvit-opt does for atc)"
    if atc is None:
        return Check("atc", "atc", FAIL, "not found on PATH" + (" nor after sourcing set_env.sh" if toolkit else ""),
                     set_env_fix(toolkit) if toolkit else "install the CANN toolkit (atc is in its compiler "
                     "component), then: source " + DEFAULT_SET_ENV)
    code, output = _run([str(atc), "--help"], env)
    broken = code is None or code in (126, 127) or "error while loading shared libraries" in output
    if broken:
        return Check("atc", "atc", FAIL, f"{atc} does not run: {_last_line(output)}", set_env_fix(toolkit),
                     {"path": str(atc), "exit_code": code})
    return Check("atc", "atc", OK, f"{atc}{via}", None, {"path": str(atc)})


def check_npu(environ: Mapping[str, str], npu_smi_dirs: Iterable[str | os.PathLike] = NPU_SMI_DIRS
              ) -> tuple[Check, str | None]:
    """npu-smi runs, lists NPUs, and names a SoC for atc; also returns its text for the driver check.

    The driver installs npu-smi in /usr/local/sbin, which is not on a normal user's PATH:
    found there, it is used for the checks and the missing PATH entry is a warning."""
    from lvvit_opt.ascend.npu_smi import detect_soc_version, parse_npu_smi_info

    tool = find_tool("npu-smi", environ)
    off_path = None
    if tool is None:
        off_path = next((Path(d) / "npu-smi" for d in npu_smi_dirs
                         if (Path(d) / "npu-smi").is_file() and os.access(Path(d) / "npu-smi", os.X_OK)), None)
        if off_path is None:
            return Check("npu", "npu-smi", FAIL, "not found on PATH (no Ascend driver here)",
                         "install the Ascend driver and firmware (npu-smi comes with the driver); in a container, "
                         "mount /usr/local/bin/npu-smi, /usr/local/Ascend/driver and the /dev/davinci* devices"), None
        tool = off_path
        environ = dict(environ, PATH=os.pathsep.join(p for p in (str(off_path.parent), environ.get("PATH")) if p))
    check, text = _npu_smi_report(tool, environ, detect_soc_version, parse_npu_smi_info)
    if off_path is not None and check.status != FAIL:
        check = Check("npu", "npu-smi", WARN, f"{check.summary}; {off_path} is not on PATH (--soc-version auto "
                      "needs it)", f"export PATH={shlex.quote(str(off_path.parent))}:$PATH", check.details)
    return check, text


def _npu_smi_report(tool: Path, environ: Mapping[str, str], detect_soc_version, parse_npu_smi_info
                    ) -> tuple[Check, str | None]:
    code, output = _run([str(tool), "info"], environ)
    if code != 0:
        return Check("npu", "npu-smi", FAIL, f"`npu-smi info` failed: {_last_line(output)}",
                     "the driver does not answer: check `dmesg` and the driver install under /usr/local/Ascend/driver; "
                     "in a container pass --device /dev/davinci_manager and the /dev/davinci* devices",
                     {"path": str(tool), "exit_code": code}), None
    npus = parse_npu_smi_info(output)  # one entry per chip (an NPU id repeats for multi-chip cards)
    details = {"path": str(tool), "npus": [{"id": n.npu_id, "chip": n.chip_id, "name": n.name, "health": n.health}
                                           for n in npus]}
    ids = list(dict.fromkeys(n.npu_id for n in npus))
    try:
        soc = detect_soc_version(environ)
    except UserError as exc:  # e.g. an `Ascend910` name on a 910-A3 host: the message names the candidates
        reason, sep, way_out = str(exc).splitlines()[0].partition("; pass ")
        return Check("npu", "npu-smi", FAIL, f"{len(ids)} NPU(s) listed, but no SoC for atc: {reason}",
                     f"pass {way_out}" if sep else "pass --soc-version to atc/run (e.g. --soc-version Ascend910B3)",
                     dict(details, error=str(exc))), output
    details["soc_version"] = soc
    unhealthy = [n for n in npus if n.health.upper() != "OK"]
    chips = f", {len(npus)} chips" if len(npus) != len(ids) else ""
    summary = f"{soc} ({len(ids)} NPU(s){chips}: {','.join(map(str, ids))})"
    if unhealthy:
        bad = ", ".join(f"NPU {n.npu_id} chip {n.chip_id} {n.health}" for n in unhealthy)
        return Check("npu", "npu-smi", WARN, f"{summary}; not healthy: {bad}",
                     "use a healthy NPU (--device-id), see `npu-smi info -t health -i ID`", details), output
    return Check("npu", "npu-smi", OK, summary, None, details), output


def check_driver(npu_smi_text: str | None, driver_dir: str | os.PathLike) -> Check:
    version, source = driver_version(npu_smi_text, driver_dir)
    if version is None:
        return Check("driver", "NPU driver", FAIL, f"version unknown (no npu-smi header, no {driver_dir}/version.info)",
                     "install the Ascend NPU driver (Ascend-hdk-<chip>-npu-driver_<version>_linux-<arch>.run)")
    return Check("driver", "NPU driver", OK, f"{version} (from {source})", None,
                 {"version": version, "source": source})


def ais_bench_status() -> tuple[bool, str]:
    """(importable, version or the import error): what the ais_bench runner will see in this process."""
    import importlib
    import importlib.metadata

    try:
        module = importlib.import_module("ais_bench.infer.interface")
    except Exception as exc:  # ImportError, or a missing libascendcl.so surfacing as OSError
        return False, f"{type(exc).__name__}: {_last_line(str(exc))}"
    try:
        return True, importlib.metadata.version("ais_bench")
    except importlib.metadata.PackageNotFoundError:
        top = importlib.import_module("ais_bench")
        return True, str(getattr(top, "__version__", None) or getattr(module, "__version__", None) or "version unknown")


def check_runner(toolkit: CannToolkit | None, environ: Mapping[str, str], workdir: str | os.PathLike) -> Check:
    from lvvit_opt.runtime.benchmark import benchmark_binary_name

    importable, detail = ais_bench_status()
    if importable:
        return Check("runner", ".om runner", OK, f"ais_bench {detail} (importable)", None,
                     {"ais_bench": detail})
    binary_name = benchmark_binary_name()
    binary = find_tool(binary_name, environ, extra_dirs=[workdir])
    if binary is not None:
        return Check("runner", ".om runner", OK, f"{binary_name} at {binary} (ais_bench not importable)", None,
                     {"benchmark": str(binary), "ais_bench_error": detail})
    needs_env = not detail.startswith("ModuleNotFoundError: No module named 'ais_bench")
    fix = (f"ais_bench is installed but does not load its libraries: {set_env_fix(toolkit)}" if needs_env else
           "install ais_bench (build the aclruntime and ais_bench wheels from Ascend/msit, "
           f"then pip install both), or put {binary_name} on PATH")
    return Check("runner", ".om runner", FAIL, f"ais_bench not importable ({detail}) and {binary_name} not found",
                 fix, {"ais_bench_error": detail})


def _writable(path: Path) -> bool:
    """The patcher rewrites the file and keeps a backup beside it: both must be allowed."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def check_transpose(file: str | os.PathLike | None, toolkit: CannToolkit | None, environ: Mapping[str, str],
                    model: str | os.PathLike | None) -> list[Check]:
    """transpose.py found, era, writable; with a model, whether its Transpose shapes get the fast kernel."""
    from lvvit_opt.whitelist import (WHITE_ERA, check_source, locate_transpose_py, read_transpose_source,
                                     shapes_from_model)

    default = str(toolkit.home) if toolkit is not None else None
    checks: list[Check] = []
    try:
        path = locate_transpose_py(file, environ, default_toolkit=default)
    except UserError as exc:
        first = str(exc).splitlines()[0]
        summary = first.split("; pass --file")[0].split("; pick one")[0]
        checks.append(Check("transpose", "transpose.py", FAIL, summary,
                            (f"{set_env_fix(toolkit)} (or pass --transpose-file PATH)" if "no CANN" in first
                             else "pass --transpose-file PATH (the one ASCEND_OPP_PATH will point at)"),
                            {"error": str(exc)}))
        if model is not None:
            checks.append(Check("model", "model shapes", FAIL, "cannot check without transpose.py",
                                "fix transpose.py above first"))
        return checks
    writable = _writable(path)
    details = {"path": str(path), "writable": writable}
    try:
        source = read_transpose_source(path)
    except UserError as exc:
        checks.append(Check("transpose", "transpose.py", WARN, f"{path}: {str(exc).splitlines()[0]}",
                            "`lvvit-opt whitelist` cannot read this file; check the kernel choice with "
                            "`lvvit-opt inspect MODEL.om` after atc", details))
        if model is not None:
            checks.append(Check("model", "model shapes", WARN, "not checked: transpose.py not recognised", None))
        return checks
    details["era"] = source.era
    access = "writable" if writable else "read-only"
    summary = f"{path} ({source.era} era, {access})"
    patch_hint = "" if writable else (" as its owner (e.g. sudo), or patch a copy with --output and point "
                                      "ASCEND_OPP_PATH at it")
    if not writable and source.era == WHITE_ERA:
        checks.append(Check("transpose", "transpose.py", WARN, summary,
                            "white-list era: `lvvit-opt whitelist patch` must write this file" + patch_hint, details))
    else:
        checks.append(Check("transpose", "transpose.py", OK, summary, None, details))
    if model is not None:
        checks.append(_check_model_shapes(source, model, check_source, shapes_from_model, patch_hint))
    return checks


def _check_model_shapes(source, model, check_source, shapes_from_model, patch_hint: str) -> Check:
    name = os.path.basename(os.fspath(model))
    try:
        shapes = shapes_from_model(model)
    except UserError as exc:
        if "no Transpose nodes" in str(exc):
            return Check("model", "model shapes", OK, f"{name}: no Transpose nodes", None, {"shapes": []})
        if "is static" in str(exc):  # a dynamic batch: atc needs one fixed batch per .om
            model_text = shlex.quote(os.fspath(model))
            return Check("model", "model shapes", FAIL, f"{name}: no Transpose input shape is static (dynamic batch)",
                         f"lvvit-opt apply {model_text} -o {shlex.quote(Path(model).stem + '_bs16.onnx')} "
                         "--passes fix_shapes --batch-size 16 (the batch you will compile)", {"shapes": []})
        raise
    from lvvit_opt.whitelist import format_shape, static_shapes, transpose_shapes

    report = check_source(source, shapes)
    created = static_shapes([u for u in transpose_shapes(model) if u.created])  # the one list's origin marks
    origin = f" ({len(created)} added by softmax_transpose)"
    details = {"model": os.fspath(model), "shapes": [s.to_dict() | {"created": tuple(s.shape) in created}
                                                     for s in report.selections]}
    if report.all_fast:
        return Check("model", "model shapes", OK, f"{name}: all {len(shapes)} Transpose shape(s){origin} get the fast "
                     "Transpose kernel", None, details)
    slow = " ".join(format_shape(s.shape) for s in report.slow)
    return Check("model", "model shapes", FAIL, f"{name}: {len(report.slow)} of {len(shapes)} Transpose shape(s)"
                 f"{origin} fall back to TransposeD: {slow}",
                 f"lvvit-opt whitelist patch --from-model {shlex.quote(os.fspath(model))}" + patch_hint, details)


def check_aipp_and_gears(model: str | os.PathLike) -> Check:
    """What `atc --aipp` and `atc --batch-gears` can do with MODEL, by the documented limits: static AIPP needs
    recorded preprocessing (or explicit values) and a static C, H, W (no fully dynamic shape); the resize stays on
    the host (AIPP has none on the 310/310P); gears need a dynamic batch axis. Informational (always ok): both are
    options of atc, not needs of the host."""
    from lvvit_opt.ascend.aipp import aipp_for_model, check_aipp_shapes
    from lvvit_opt.core.tensor_spec import input_specs

    notes, possible = [], True
    try:
        config = aipp_for_model(model)
        check_aipp_shapes(config, input_specs(model))
        notes.append(f"static AIPP possible (atc --aipp): uint8 NHWC {config.input_shape()[1:]} from the host's resize, "
                     f"crop {config.crop_size_w} at {config.load_start_pos_w} on the chip")
    except UserError as exc:
        possible = False
        notes.append(f"no static AIPP as is: {exc}")
    specs = input_specs(model)
    batch = specs[0].shape[0] if specs and specs[0].shape else None
    if isinstance(batch, int):
        notes.append(f"static batch {batch}: batch gears need `lvvit-opt export --dynamic-batch`")
    else:
        notes.append("dynamic batch: batch gears possible (atc --batch-gears 1,4,8,16)")
    return Check("aipp", "AIPP, gears", OK, "; ".join(notes),
                 fix=None if possible else "give --aipp-mean/--aipp-std/--aipp-crop-size, or re-export with lvvit-opt",
                 details={"resize": "on the host (AIPP has no resize on the 310/310P)"})


def check_disk(workdir: str | os.PathLike, min_free_gb: float) -> Check:
    """atc writes the .om, kernel_meta/ and its logs in the directory it runs from."""
    folder = Path(workdir).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_gb = shutil.disk_usage(existing).free / 1024**3
    details = {"workdir": str(folder), "free_gb": round(free_gb, 2), "min_free_gb": min_free_gb}
    if not existing.is_dir():
        return Check("disk", "disk space", FAIL, f"{existing} is not a directory",
                     "run from (or pass --workdir) a directory", details)
    if not os.access(existing, os.W_OK):
        return Check("disk", "disk space", FAIL, f"{existing} is not writable",
                     "run from (or pass --workdir) a directory you can write", details)
    summary = f"{free_gb:.1f} GiB free in {existing}"
    if free_gb < min_free_gb:
        return Check("disk", "disk space", FAIL, f"{summary} (atc needs about {min_free_gb:g} GiB)",
                     "free space there, or run from (pass --workdir) a larger disk", details)
    return Check("disk", "disk space", OK, summary, None, details)


def run_doctor(*, cann_home: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
               transpose_file: str | os.PathLike | None = None, workdir: str | os.PathLike = ".",
               min_free_gb: float = DEFAULT_MIN_FREE_GB, environ: Mapping[str, str] | None = None,
               default_homes: Iterable[str | os.PathLike] = DEFAULT_TOOLKIT_HOMES,
               driver_dir: str | os.PathLike = DEFAULT_DRIVER_DIR,
               npu_smi_dirs: Iterable[str | os.PathLike] = NPU_SMI_DIRS) -> DoctorReport:
    """Run every check; nothing is changed. UserError only for bad arguments (e.g. --cann-home missing)."""
    environ = dict(os.environ if environ is None else environ)
    if not (isinstance(min_free_gb, (int, float)) and math.isfinite(min_free_gb) and min_free_gb >= 0):
        raise UserError(f"--min-free-gb {min_free_gb}: expected a finite number >= 0")
    if model is not None and not Path(model).is_file():
        raise UserError(f"--model {model}: no such file")
    default_homes = list(default_homes)
    toolkit = find_toolkit(cann_home, environ, default_homes)
    searched = ([str(cann_home)] if cann_home else []) + [f"${v}" for v in TOOLKIT_ENV_VARS] \
        + [os.path.expanduser(str(d)) for d in default_homes]
    checks = [check_cann(toolkit, searched), check_environment(toolkit, environ), check_atc(toolkit, environ)]
    npu, npu_smi_text = check_npu(environ, npu_smi_dirs)
    checks += [npu, check_driver(npu_smi_text, driver_dir), check_runner(toolkit, environ, workdir)]
    checks += check_transpose(transpose_file, toolkit, environ, model)
    checks.append(check_disk(workdir, min_free_gb))
    if model is not None and str(model).lower().endswith(".onnx"):
        checks.append(check_aipp_and_gears(model))
    for check in checks:
        log.debug("doctor %s: %s %s", check.key, check.status, check.summary)
    return DoctorReport(checks)
