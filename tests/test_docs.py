"""The README a newcomer reads (issue 34): every quick-start block runs as written, on tiny or
random-weight models, and every relative link in README.md and docs/ resolves (files and
#anchors); every page in docs/ is linked from the README, which stays short.

What the quick-start runs change, and only this: a checkpoint the machine does not have is
replaced by the tiny golden LV-ViT (lvvit_golden and its weights), `model.onnx` is made by the
test (that tiny model exported with a dynamic batch), and benchmarks are shortened
(`--bench-duration`/`--duration` 0.3 s, one round). Everything else is the README's text.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
SHORT_RUN = "run --bench-duration 0.3 --bench-rounds 1 --threads 1 "


def quick_starts() -> dict[str, str]:
    """Heading -> the first ```bash block under each '## Quick start: ...' heading."""
    text = README.read_text()
    blocks = {}
    for match in re.finditer(r"^## (Quick start: [^\n]+)\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        code = re.search(r"```bash\n(.*?)```", match.group(2), re.S)
        assert code, f"{match.group(1)} has no bash block"
        blocks[match.group(1)] = code.group(1)
    return blocks


def test_the_readme_has_three_quick_starts_each_ending_at_atc():
    blocks = quick_starts()
    assert list(blocks) == ["Quick start: LV-ViT with a checkpoint", "Quick start: any timm model by name",
                            "Quick start: an ONNX you already have"]
    for block in blocks.values():
        assert block.strip().splitlines()[-1].split()[:2] in (["grep", "'^atc"], ["lvvit-opt", "atc"])


def _run_block(block: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCEND", "LVVIT_FAKE"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, f"{block}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout


def _assert_before_after_and_atc(stdout: str) -> None:
    assert re.search(r"^model\s+bs\s+backend\s+fps\s+p50 ms\s+p90 ms\s+spread\s+ratio", stdout, re.M), stdout
    assert re.search(r"_opt\.onnx\s+\d+\s+onnxruntime\s.*\d\.\d+x \[", stdout), stdout  # the rewrite, with its ratio
    atc = [line for line in stdout.splitlines() if line.startswith("atc --framework=5 ")]
    assert atc and "_opt" in atc[-1] and "--soc_version=Ascend310" in atc[-1], stdout


@pytest.mark.slow  # a whole run (two exports, two benches); `run` on this model is also tested in test_cli_defects
def test_quick_start_lvvit_with_a_checkpoint(tmp_path, golden_weights):
    block = quick_starts()["Quick start: LV-ViT with a checkpoint"]
    given = "--model lvvit_s --checkpoint lvvit_s-26M-224-83.3.pth.tar"
    assert given in block
    block = block.replace(given, f"--model lvvit_golden --checkpoint {golden_weights}").replace("run ", SHORT_RUN)
    stdout = _run_block(block, tmp_path)
    _assert_before_after_and_atc(stdout)
    assert (tmp_path / "runs" / "lvvit_s" / "report.md").is_file()


@pytest.mark.slow
def test_quick_start_a_timm_model_by_name(tmp_path):
    block = quick_starts()["Quick start: any timm model by name"]
    stdout = _run_block(block.replace("run ", SHORT_RUN), tmp_path)
    _assert_before_after_and_atc(stdout)
    assert "--input_shape=image:16,3,224,224" in stdout


def test_quick_start_an_onnx_you_already_have(tmp_path, golden_weights):
    from lvvit_opt.export import export_onnx

    export_onnx(tmp_path / "model.onnx", model="lvvit_golden", checkpoint=golden_weights, dynamic_batch=True,
                log=lambda _m: None)
    block = quick_starts()["Quick start: an ONNX you already have"]
    assert "--duration 10" in block
    stdout = _run_block(block.replace("--duration 10", "--duration 0.3 --rounds 1"), tmp_path)
    _assert_before_after_and_atc(stdout)
    assert "added by softmax_transpose" in stdout  # apply's list of the Transposes to whitelist


# ------------------------------------------------------------------------------ links

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    for link in _links(page):
        target, _, anchor = link.partition("#")
        resolved = (page.parent / target).resolve() if target else page
        assert resolved.exists(), f"{page.name}: {link} -> {resolved} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: {link}: no heading #{anchor} in {resolved.name}"


def test_every_docs_page_is_linked_from_the_readme_which_stays_short():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(README)}
    assert [p.name for p in PAGES if p.resolve() not in linked] == []
    assert len(README.read_text().splitlines()) <= 200


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad anchor](p.md#nope) [web](https://x.org)\n")
    assert _links(page) == ["#title", "missing.md", "p.md#nope"]
    assert _anchors(page) == {"title"}
    assert _slug("Previewing atc's precision") == "previewing-atcs-precision"
    assert _slug("The ViT family (`scripts/model_matrix.py`)") == "the-vit-family-scriptsmodel_matrixpy"
