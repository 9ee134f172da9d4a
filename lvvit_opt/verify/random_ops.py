"""Nodes whose output changes from run to run (RandomUniform*, RandomNormal*, Bernoulli,
Multinomial, Dropout in training mode): a validation that compares two runs of such a graph
compares noise. `validate` and `debug` warn with the node names (ViTMAE's masking is one).
"""
from __future__ import annotations

import logging
import os

RANDOM_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli", "Multinomial"}


def random_nodes(model) -> list[str]:
    """'name (OpType)' of every random node of the main graph and its subgraphs."""
    found: list[str] = []

    def visit(graph) -> None:
        constants = {i.name: i for i in graph.initializer}
        for node in graph.node:
            label = f"{node.name or node.output[0]} ({node.op_type})"
            if node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS:
                found.append(label)
            elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
                mode = constants.get(node.input[2])
                if mode is None or bool(_scalar(mode)):  # computed or True: training mode
                    found.append(f"{label} training_mode")
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)

    visit(model.graph)
    return found


def warn_random_ops(*models_or_paths, log: logging.Logger | None = None) -> list[str]:
    """Log one warning per model that has random nodes; returns every label found."""
    log = log or logging.getLogger(__name__)
    found_all = []
    for item in models_or_paths:
        if item is None:
            continue
        model = item
        if isinstance(item, (str, os.PathLike)):
            if not str(item).endswith(".onnx") or not os.path.isfile(item):
                continue
            from lvvit_opt.core.onnx_files import load_onnx

            model = load_onnx(item, load_external_data=False)
        found = random_nodes(model)
        if found:
            name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else "the model"
            log.warning(f"{name} has {len(found)} random node(s), so runs differ and the comparison judges noise "
                        f"there: {', '.join(found[:6])}{' ...' if len(found) > 6 else ''} (remove or fix them "
                        "before exporting, e.g. mask_ratio=0 for ViTMAE)")
        found_all += found
    return found_all


def _scalar(tensor) -> object:
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(tensor).reshape(-1)[0]
    except Exception:  # external or empty: treat as unknown, i.e. random
        return True
