"""Ascend tooling: CANN discovery and environment, npu-smi, atc.

Plain functions; the CLI (`lvvit-opt atc`) and the `run` pipeline call them.
"""
from lvvit_opt.ascend.atc import (AtcError, AtcResult, OnnxInput, build_atc_command, compile_onnx,
                                  default_output_prefix, display_command, find_om, format_input_shape, keep_dtype_lines,
                                  onnx_inputs, parse_atc_errors, parse_atc_messages, parse_atc_warnings, locate_atc,
                                  resolve_input_shapes, resolve_soc_version, run_atc, write_keep_dtype_file)
from lvvit_opt.core.cann import (CannToolkit, ToolNotFound, build_cann_env, cann_environment, find_cann, find_tool,
                                 require_tool, seed_exports)
from lvvit_opt.ascend.npu_smi import (ChipMapping, NpuChip, NpuInfo, NpuSmiTable, SocVersionUnknown, detect_soc_version,
                                      parse_board_info, parse_npu_smi_info, parse_npu_smi_mapping, parse_npu_smi_table,
                                      soc_from_board, soc_from_name, soc_version_from_table)

__all__ = [
    "AtcError", "AtcResult", "OnnxInput", "build_atc_command", "compile_onnx", "default_output_prefix",
    "display_command", "find_om", "format_input_shape", "keep_dtype_lines", "onnx_inputs", "parse_atc_errors",
    "parse_atc_messages", "parse_atc_warnings",
    "locate_atc", "resolve_input_shapes", "resolve_soc_version", "run_atc", "write_keep_dtype_file",
    "CannToolkit", "ToolNotFound", "build_cann_env", "cann_environment", "find_cann", "find_tool",
    "require_tool", "seed_exports",
    "ChipMapping", "NpuChip", "NpuInfo", "NpuSmiTable", "SocVersionUnknown", "detect_soc_version",
    "parse_board_info", "parse_npu_smi_info", "parse_npu_smi_mapping", "parse_npu_smi_table", "soc_from_board",
    "soc_from_name", "soc_version_from_table",
]
