"""`atc --mode=1 --om=M.om --json=M.json` for the stand-in atc (tests only).

The JSON has the structure real atc writes: the protobuf-to-JSON form of GE's ModelDef
(Ascend/metadef proto/ge_ir.proto: ModelDef{name, version, graph[], attr}, GraphDef{name,
input, output, op[], attr}, OpDef{name, type, input[], attr, input_desc[], output_desc[]},
maps as lists of {"key", "value": {"s"|"i"|"f"|"b"|"list": ...}}, enums by name such as
"DT_FLOAT16"), which is what msit's reader (Ascend/msit msquickcmp/npu/om_parser.py) walks:
graph[].op[].{name,type,attr,input_desc}, model attr keys atc_cmdline / soc_version
(CANN docs, atc parameter --om / --json: opp_version, atc_version, atc_cmdline, soc_version).

Op types are those CANN's ONNX parser maps to (its plugins, mirrored in GitHub
dengguojie/vue-element-admin ops/built-in/framework/onnx_plugin/: Softmax -> SoftmaxV2 with
`axes`, Transpose -> Transpose with `perm` as a Const input; Conv -> Conv2D, ...); ops not
listed keep their ONNX name and no fusion is imitated. A Transpose
becomes the fast `Transpose` unless FAKE_ATC_FAST_TRANSPOSE_SHAPES (`2,3,197,197;...`)
is set at compile time and does not list its input shape: then it is `TransposeD`, the
way a white-list-era transpose.py sends unlisted shapes to the slow kernel. With
LVVIT_FAKE_ATC_READ_OPP=1 (and no FAKE_ATC_FAST_TRANSPOSE_SHAPES) the choice is instead made
the way real atc makes it: by the transpose.py of the opp tree in $ASCEND_OPP_PATH (read with
lvvit-opt's whitelist parser, never imported). The choice is made when the .om is compiled
(`compiled_types`) and kept in the .om, like the real one.
"""
from __future__ import annotations

import json
import os

GE_TYPES = {
    "Conv": "Conv2D", "MatMul": "BatchMatMulV2", "Gemm": "MatMulV2", "Div": "RealDiv", "Softmax": "SoftmaxV2",
    "Gather": "GatherV2", "Concat": "ConcatD", "ReduceMean": "ReduceMeanD", "ReduceMax": "ReduceMaxD",
    "Slice": "StridedSliceD", "Constant": "Const", "Flatten": "FlattenV2",
}


def _shapes(model, input_shapes: dict) -> dict:
    """Static shapes of every value after fixing the inputs (onnx shape inference)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _fast_shapes() -> set | None:
    text = os.environ.get("FAKE_ATC_FAST_TRANSPOSE_SHAPES")
    if text is None:
        return None
    return {tuple(int(d) for d in item.split(",")) for item in text.split(";") if item.strip()}


def _opp_source():
    """LVVIT_FAKE_ATC_READ_OPP=1: the transpose.py of $ASCEND_OPP_PATH, parsed (None: not asked for)."""
    if os.environ.get("LVVIT_FAKE_ATC_READ_OPP") != "1" or os.environ.get("FAKE_ATC_FAST_TRANSPOSE_SHAPES"):
        return None
    from lvvit_opt.whitelist import locate_transpose_py, read_transpose_source

    opp = {"ASCEND_OPP_PATH": os.environ.get("ASCEND_OPP_PATH", "")}
    return read_transpose_source(locate_transpose_py(None, opp, default_toolkit=None))


def compiled_types(model, input_names, input_shapes, argv) -> dict:
    """What the compile decides and the .om keeps: GE type per node and the atc command line."""
    shapes = _shapes(model, dict(zip(input_names, input_shapes)))
    fast = _fast_shapes()
    source = _opp_source()
    types = {}
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        ge_type = GE_TYPES.get(node.op_type, node.op_type)
        if node.op_type == "Transpose":
            shape = tuple(shapes.get(node.input[0], []))
            if source is not None:
                from lvvit_opt.whitelist import select_kernel

                ge_type = "Transpose" if select_kernel(source, shape).fast else "TransposeD"
            else:
                ge_type = "Transpose" if fast is None or shape in fast else "TransposeD"
        types[name] = ge_type
    return {"ge_types": types, "atc_cmdline": "atc " + " ".join(argv)}


def _attr(key, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"b": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"i": value}}
    if isinstance(value, list):
        return {"key": key, "value": {"list": {"i": value, "val_type": "VT_LIST_INT"}}}
    return {"key": key, "value": {"s": str(value)}}


def _desc(shape, layout="ND", dtype="DT_FLOAT16") -> dict:
    desc = {"dtype": dtype, "layout": layout, "attr": [_attr("origin_format", layout)]}
    if shape:
        desc["shape"] = {"dim": list(shape)}
    return desc


def _node_attrs(node, ge_type) -> list:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    result = []
    if ge_type == "TransposeD" and "perm" in attrs:
        result.append(_attr("perm", [int(p) for p in attrs["perm"]]))
    if ge_type == "SoftmaxV2":
        result.append(_attr("axes", [int(attrs.get("axis", -1))]))
    result.append(_attr("_ge_attr_op_kernel_lib_name", "AIcoreEngine"))
    return result


def om_json(header: dict, model) -> dict:
    """The ModelDef JSON of a stand-in .om."""
    input_names = header["input_names"]
    shapes = _shapes(model, dict(zip(input_names, header["input_shapes"])))
    compiled = header if "ge_types" in header else compiled_types(model, input_names, header["input_shapes"], [])
    ops = []
    for name, dims in zip(input_names, header["input_shapes"]):
        ops.append({"name": name, "type": "Data", "attr": [_attr("index", input_names.index(name))],
                    "input_desc": [_desc(dims, "NCHW", "DT_FLOAT")], "output_desc": [_desc(dims, "NCHW", "DT_FLOAT")]})
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        ge_type = compiled["ge_types"].get(name, node.op_type)
        inputs = [i for i in node.input if i]
        input_descs = [_desc(shapes.get(i)) for i in inputs]
        if ge_type == "Transpose":  # the ONNX plugin's Transpose takes perm as a Const input (TransposeD: attr)
            rank = len(shapes.get(inputs[0]) or [])
            ops.append({"name": f"{name}/perm", "type": "Const", "attr": [],
                        "output_desc": [_desc([rank], dtype="DT_INT32")]})
            inputs.append(f"{name}/perm")
            input_descs.append(_desc([rank], dtype="DT_INT32"))
        ops.append({"name": name, "type": ge_type, "input": [f"{i}:0" for i in inputs],
                    "attr": _node_attrs(node, ge_type), "input_desc": input_descs,
                    "output_desc": [_desc(shapes.get(o)) for o in node.output]})
    outputs = [o.name for o in model.graph.output]
    ops.append({"name": "Node_Output", "type": "NetOutput", "input": [f"{o}:0" for o in outputs],
                "attr": [], "input_desc": [_desc(shapes.get(o), dtype="DT_FLOAT") for o in outputs]})
    model_attrs = [_attr("soc_version", header["soc_version"]), _attr("atc_cmdline", compiled.get("atc_cmdline", "")),
                   _attr("atc_version", "7.7.0.1.238"), _attr("opp_version", "7.7.0.1.238")]
    return {"name": "lvvit_fake_om", "version": 1, "graph": [{"name": "lvvit_fake_om", "input": input_names,
                                                               "output": ["Node_Output"], "op": ops}],
            "attr": model_attrs}


def main(argv) -> int:
    """`--mode=1 --om=X.om --json=Y.json`: exit 1 with atc-style E10001 lines on bad arguments."""
    import onnx

    from fake_ascend import read_om

    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    print("ATC start working now, please wait for a moment.")
    for key in ("om", "json"):
        if not flags.get(key):
            print("ATC run failed, Please check the detail log, Try 'atc --help' for more information")
            print(f"E10004: Argument [--{key}] is required.")
            return 1
    try:
        header, onnx_bytes = read_om(flags["om"])
    except (OSError, ValueError) as exc:
        print("ATC run failed, Please check the detail log, Try 'atc --help' for more information")
        print(f"E10001: Value [{flags['om']}] for parameter [--om] is invalid. Reason: {exc}")
        return 1
    data = om_json(header, onnx.load_from_string(onnx_bytes))
    with open(flags["json"], "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    print("ATC run success, welcome to the next use.")
    return 0
