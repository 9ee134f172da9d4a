"""Install lvvit-opt.

`passes/` and `whitelist/` live at the top level of the repository but install as
`lvvit_opt.passes` and `lvvit_opt.whitelist` (package_dir mapping; editable installs work).
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "lvvit_opt" / "__init__.py").read_text()).group(1)

setup(
    name="lvvit-opt",
    version=VERSION,
    description="LV-ViT / ViT from a PyTorch checkpoint to a verified, fast Ascend NPU model",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=[
        "lvvit_opt",
        "lvvit_opt.core",
        "lvvit_opt.models",
        "lvvit_opt.runtime",
        "lvvit_opt.data",
        "lvvit_opt.verify",
        "lvvit_opt.ascend",
        "lvvit_opt.debug",
        "lvvit_opt.quantize",
        "lvvit_opt.measure",
        "lvvit_opt.scale",
        "lvvit_opt.pipeline",
        "lvvit_opt.tune",
        "lvvit_opt.cli",
        "lvvit_opt.passes",
        "lvvit_opt.whitelist",
    ],
    package_data={"lvvit_opt": ["models/timm_models.txt", "ascend/data/*.json"]},
    package_dir={
        "lvvit_opt": "lvvit_opt",
        "lvvit_opt.passes": "passes",
        "lvvit_opt.whitelist": "whitelist",
    },
    install_requires=[
        "numpy",
        "onnx>=1.14",
        "onnx-graphsurgeon>=0.3.27",
        "onnxsim>=0.4.33",
        "onnxruntime>=1.16",
        "torch>=2.0",
        "timm>=0.9",
        "pillow",
        "click>=8.0",
        "matplotlib",
        "onnxconverter-common>=1.13",  # debug layers --fp16: fp16 conversion with fp32 inputs/outputs
    ],
    # ray: `eval --engine ray` (lvvit_opt.scale.ray_engine); scripts/_env.sh installs it so its tests run.
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "transformers>=4.40", "onnxscript>=0.2", "import-linter>=2.0"], "ray": ["ray>=2.10"]},
    entry_points={"console_scripts": ["lvvit-opt=lvvit_opt.cli:main"]},
)
