"""INT8 post-training quantization of ViTs: which layers (`select`), calibration (`calibrate`),
a CPU preview of the target's arithmetic (`preview`), per-layer sensitivity and the rollback
to float (`rollback`), onnxruntime's static QDQ (`ort_static`), AMCT's config, data and
commands (`amct`), and the verb (`run.quantize`). Uses passes, verify, runtime and ascend;
never measure or debug."""
