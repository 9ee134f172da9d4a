"""ImageNet data: the seed's eval transform, `.bin` preprocessing, the legacy benchmark's info
file, postprocessing of benchmark/ais_bench outputs, the one scorer and shards. Streaming eval
(which runs a model) is lvvit_opt.measure.evaluate, above this package.

Importing this package is cheap (numpy only); PIL and the worker pool are loaded by the
functions that use them.
"""
from lvvit_opt.data.images import IMAGE_SUFFIXES, default_workers, image_stem, list_images
from lvvit_opt.data.info import info_lines, write_info_file, write_info_for_dir
from lvvit_opt.data.scoring import AccuracyResult, score_predictions, top_k
from lvvit_opt.data.postprocess import find_result_files, postprocess, read_labels, read_scores
from lvvit_opt.data.preprocess import PreprocessResult, preprocess_dir, read_bin
from lvvit_opt.data.transform import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, EvalTransform

__all__ = [
    "AccuracyResult", "EvalTransform", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES",
    "INTERPOLATIONS", "PreprocessResult", "default_workers", "find_result_files", "image_stem",
    "info_lines", "list_images", "postprocess", "preprocess_dir", "read_bin", "read_labels", "read_scores",
    "score_predictions", "top_k", "write_info_file", "write_info_for_dir",
]
