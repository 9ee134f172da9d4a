"""Nodes whose output changes from run to run (RandomUniform*, RandomNormal*, Bernoulli,
Multinomial, Dropout in training mode): a validation that compares two runs of such a graph
compares noise. `validate` and `debug` warn with the node names (ViTMAE's masking is one), and
`validate` seeds them: `seed_random_nodes` gives every such node of both models the same fixed
`seed` attribute (derived from its output name), so two onnxruntime sessions fed the same
batches in the same order draw the same numbers and the comparison judges the rest of the graph.
"""
from __future__ import annotations

import logging
import os
import zlib

RANDOM_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli", "Multinomial"}


def random_nodes(model) -> list[str]:
    """'name (OpType)' of every random node of every graph: the main graph, its subgraphs at
    any depth and model-local functions (the one walker)."""
    return [label for _, label in _random_node_kinds(model)]


def _random_node_kinds(model):
    """(node, label) for every random node of the model, in walk order."""
    from lvvit_opt.core.graph_walk import walk_graphs, walk_nodes

    constants = {i.name: i for scope in walk_graphs(model, functions=False) for i in scope.container.initializer}
    for node, scope in walk_nodes(model):
        label = f"{node.name or node.output[0]} ({node.op_type})"
        if node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS:
            yield node, label
        elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            mode = constants.get(node.input[2])
            if mode is None or bool(_scalar(mode)):  # computed or True: training mode
                yield node, f"{label} training_mode"


def node_seed(node, seed: int = 0) -> int:
    """A seed for one random node that does not depend on its position: a pass that adds or
    removes other nodes leaves it alone. Below 2**24, so the float `seed` attribute holds it exactly."""
    return (zlib.crc32(node.output[0].encode()) + seed) % (1 << 24)


def seed_random_nodes(model, seed: int = 0) -> list[str]:
    """Set the `seed` attribute of every random node of `model` in place (an int for Dropout,
    a float for the others, as ONNX defines them); returns their labels. A seed the node
    already has is replaced, so both sides of a comparison agree."""
    from onnx import helper

    seeded = []
    for node, label in list(_random_node_kinds(model)):
        value = node_seed(node, seed)
        kept = [a for a in node.attribute if a.name != "seed"]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("seed", value if node.op_type == "Dropout" else float(value)))
        seeded.append(label)
    return seeded


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

            model = load_onnx(item, weights=False)
        found = random_nodes(model)
        if found:
            name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else "the model"
            log.warning(f"{name} has {len(found)} random node(s), so runs differ from process to process: "
                        f"{', '.join(found[:6])}{' ...' if len(found) > 6 else ''} (validate and golden seed them "
                        "alike where onnxruntime runs them, a layer-by-layer debug does not; remove or fix them "
                        "before exporting, e.g. mask_ratio=0 for ViTMAE)")
        found_all += found
    return found_all


def _scalar(tensor) -> object:
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(tensor).reshape(-1)[0]
    except Exception:  # external or empty: treat as unknown, i.e. random
        return True
