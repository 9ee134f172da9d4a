"""Finding where a candidate goes wrong: layer-by-layer comparison against the ONNX reference
(`layers`), fp16 and keep-dtype previews (`precision`), NPU dump reading (`dump`). Uses every
stage up to ascend; never measure."""
