"""A CPU preview of static AIPP: the model with AIPP's operations in front, against our float pipeline.

`prepend_aipp` puts in front of the ONNX what the AIPP op computes (lvvit_opt.ascend.aipp says which part is
documented and which assumed): Cast of the uint8 pixels, the crop as a Slice on H and W, Sub (mean_chn +
min_chn), Mul var_reci_chn, each rounded to fp16 (assumed: the hardware computes in fp16; its exact rounding
is not published), then NHWC -> NCHW into the model's own input. `preview_aipp` feeds it the uint8
source squares the host sends and feeds the original model our float pipeline's tensors of the same images
(the seed's float64 normalisation with the model's recorded mean/std), then compares the normalised input
and every output. The input comparison is the error AIPP adds; a wrong mapping (say var_reci = 1/std without
the 255) fails it by orders of magnitude.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lvvit_opt.ascend.aipp import AippConfig, aipp_for_model
from lvvit_opt.core.errors import UserError
from lvvit_opt.verify.golden import ComparisonReport, Tolerance, compare_outputs

AIPP_INPUT = "aipp_uint8_nhwc"
AIPP_OUTPUT_SUFFIX = "/aipp_nchw"


def prepend_aipp(model, config: AippConfig):
    """A copy of the ONNX ModelProto whose one image input is replaced by uint8 NHWC through AIPP's ops."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"--aipp: the model has {len(inputs)} inputs; AIPP here feeds one image input")
    image = inputs[0]
    dims = image.type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value or "batch"
    name = image.name
    prefix = f"{name}/aipp"
    y, x = config.load_start_pos_h, config.load_start_pos_w
    # fp16 arithmetic, kept by onnxruntime: its CPU kernels lift fp16 Sub/Mul to fp32 and drop the rounding in
    # between, so each step runs in fp32 on fp16 values (exact for a difference and a product of two fp16
    # numbers) and is rounded to fp16 by an explicit Cast pair: IEEE fp16 results, as aipp_numpy computes them.
    mean16 = (np.asarray(config.mean_chn, np.float16) + np.asarray(config.min_chn, np.float16)).astype(np.float16)
    consts = {
        f"{prefix}/starts": np.array([y, x], np.int64),
        f"{prefix}/ends": np.array([y + config.crop_size_h, x + config.crop_size_w], np.int64),
        f"{prefix}/axes": np.array([1, 2], np.int64),
        f"{prefix}/mean": mean16.astype(np.float32).reshape(1, 1, 1, 3),
        f"{prefix}/var_reci": np.asarray(config.var_reci_chn, np.float16).astype(np.float32).reshape(1, 1, 1, 3),
    }

    def to_fp16(source: str, step: str) -> list:
        return [helper.make_node("Cast", [source], [f"{prefix}/{step}16"], to=TensorProto.FLOAT16,
                                 name=f"{prefix}/{step}_to_fp16"),
                helper.make_node("Cast", [f"{prefix}/{step}16"], [f"{prefix}/{step}_r"], to=TensorProto.FLOAT,
                                 name=f"{prefix}/{step}_rounded")]

    nodes = [
        helper.make_node("Cast", [AIPP_INPUT], [f"{prefix}/pixels"], to=TensorProto.FLOAT, name=f"{prefix}/Cast"),
        helper.make_node("Slice", [f"{prefix}/pixels", f"{prefix}/starts", f"{prefix}/ends", f"{prefix}/axes"],
                         [f"{prefix}/crop"], name=f"{prefix}/Slice"),
        helper.make_node("Sub", [f"{prefix}/crop", f"{prefix}/mean"], [f"{prefix}/centred"], name=f"{prefix}/Sub"),
        *to_fp16(f"{prefix}/centred", "centred"),
        helper.make_node("Mul", [f"{prefix}/centred_r", f"{prefix}/var_reci"], [f"{prefix}/scaled"],
                         name=f"{prefix}/Mul"),
        *to_fp16(f"{prefix}/scaled", "scaled"),
        helper.make_node("Transpose", [f"{prefix}/scaled_r"], [name], perm=[0, 3, 1, 2], name=f"{prefix}/Transpose"),
    ]
    model.graph.initializer.extend(numpy_helper.from_array(value, key) for key, value in consts.items())
    new_input = helper.make_tensor_value_info(AIPP_INPUT, TensorProto.UINT8,
                                              [batch, config.src_image_size_h, config.src_image_size_w, 3])
    kept = [i for i in model.graph.input if i.name != name]
    del model.graph.input[:]
    model.graph.input.extend([new_input] + kept)
    old_nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + old_nodes)
    exposed = onnx.ValueInfoProto()
    exposed.CopyFrom(image)  # the AIPP result, fetched to measure the error it adds
    model.graph.output.append(exposed)
    return model


@dataclass
class AippPreview:
    """The float pipeline vs the AIPP preview on the same images."""

    model: str
    config: dict
    images: str  # where the uint8 sources came from
    batch: int
    input_error: ComparisonReport   # the normalised input tensor: the error AIPP adds
    outputs: ComparisonReport       # the model's outputs
    assumed: list[str] = field(default_factory=lambda: [
        "fp16 parameters and fp16 rounding after each step (the hardware's exact rounding is not published)"])

    @property
    def passed(self) -> bool:
        return self.input_error.passed and self.outputs.passed

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "aipp": self.config, "images": self.images, "batch": self.batch,
                "passed": self.passed, "input_error": self.input_error.to_dict(), "outputs": self.outputs.to_dict(),
                "assumed": self.assumed}

    def format(self) -> str:
        worst = self.input_error.outputs[0]
        lines = [f"AIPP preview of {self.model} on {self.batch} image(s) from {self.images}",
                 f"  uint8 NHWC {self.config['input']['shape']} -> crop {self.config.get('crop_size_w', '-')}"
                 f"x{self.config.get('crop_size_h', '-')} -> (x - min_chn) * var_reci_chn in fp16",
                 f"error AIPP adds to the normalised input: max_abs={worst.max_abs:.3g} mean_abs={worst.mean_abs:.3g} "
                 f"range_rel={worst.range_rel:.3g} cosine={worst.cosine:.8f} -> {'PASS' if worst.passed else 'FAIL'}",
                 "outputs (AIPP preview vs float pipeline):", self.outputs.format(),
                 f"verdict: {'PASS' if self.passed else 'FAIL'} by cosine and range_rel of the input and every output "
                 f"({self.outputs.tolerance.enforced()}); assumed: {'; '.join(self.assumed)}"]
        return "\n".join(lines)


def preview_aipp(model_path: str | os.PathLike, config: AippConfig | None = None, *,
                 images: Sequence[str | os.PathLike] | None = None, count: int = 4, seed: int = 0,
                 tolerance: Tolerance | None = None) -> AippPreview:
    """Compare MODEL fed by the float pipeline with MODEL behind the AIPP preview, on the same images.

    `config` defaults to the one `atc --aipp` writes (aipp_for_model). `images`: image files (the host's resize
    and source cut, then AIPP; the float side: the eval transform), else `count` random uint8 sources (said so).
    The float side normalises with the model's recorded mean/std, never with the config's values.
    """
    from lvvit_opt.core.onnx_files import load_onnx
    from lvvit_opt.data.transform import EvalTransform, transform_from_onnx
    from lvvit_opt.runtime.ort import OrtRunner

    config = config or aipp_for_model(model_path)
    transform = transform_from_onnx(model_path, img_size=config.crop_size_w)
    if transform is None:
        raise UserError(f"{model_path} records no preprocessing: the float pipeline to compare with is unknown "
                        "(export it with lvvit-opt)")
    if transform.img_size != config.crop_size_h or config.crop_size_w != config.crop_size_h:
        raise UserError("--aipp preview: square crops only")
    start = (config.load_start_pos_w, config.load_start_pos_h)
    src = (config.src_image_size_w, config.src_image_size_h)
    if images:  # the float side: the whole eval transform of each file, whatever the config says
        sources = np.stack([transform.load_source(p, src, start) for p in images])
        floats = np.stack([transform(p) for p in images])
        label = f"{len(images)} image file(s)"
    else:  # the float side: the centre crop of the square (torchvision's CenterCrop), not the config's offset
        rng = np.random.default_rng(seed)
        sources = rng.integers(0, 256, size=(count, src[1], src[0], 3), dtype=np.uint8)
        left, top, right, bottom = transform.crop_box(*src)
        floats = np.stack([transform.normalize(s[top:bottom, left:right]) for s in sources])
        label = f"random uint8 images (seed {seed}; no image given)"
    model = load_onnx(model_path)
    batch_dim = next(i for i in model.graph.input).type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value or len(sources)
    if len(sources) % batch:
        raise UserError(f"{model_path} has a static batch of {batch}; give a multiple of {batch} images")
    aipp_model = prepend_aipp(model, config)
    input_name = [i.name for i in model.graph.input][0]
    reference, candidate, aipp_inputs = [], [], []
    with OrtRunner.from_model(model) as ref, OrtRunner.from_model(aipp_model) as cand:
        for begin in range(0, len(sources), batch):
            reference.append(ref.infer({input_name: floats[begin:begin + batch]}))
            out = cand.infer({AIPP_INPUT: sources[begin:begin + batch]})
            aipp_inputs.append(out.pop(input_name))
            candidate.append(out)
    tolerance = tolerance or Tolerance.fp16()
    joined_ref = {k: np.concatenate([r[k] for r in reference]) for k in reference[0]}
    joined_cand = {k: np.concatenate([c[k] for c in candidate]) for k in candidate[0]}
    input_error = compare_outputs({input_name: floats}, {input_name: np.concatenate(aipp_inputs)}, tolerance)
    return AippPreview(str(model_path), config.to_dict(), label, len(sources), input_error,
                       compare_outputs(joined_ref, joined_cand, tolerance))


def preview_inputs(inputs: int | str | None) -> tuple[list[str] | None, int]:
    """--inputs for the preview: a count of random images, an image directory, or one image file."""
    from pathlib import Path

    from lvvit_opt.data.images import IMAGE_SUFFIXES, list_images

    if inputs is None:
        return None, 4
    text = str(inputs)
    if text.isdigit():
        return None, max(1, int(text))
    path = Path(text)
    if path.is_dir():
        return [str(p) for p in list_images(path)], 0
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [str(path)], 0
    raise UserError(f"--inputs {text}: with --aipp give a number of random images, an image directory or an image "
                    f"file ({', '.join(sorted(IMAGE_SUFFIXES))})")
