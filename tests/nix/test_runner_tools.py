"""nix/runner-tools.json names every tool the document pipeline looks up on PATH.

nix/images.nix reads the file: the runner image's build fails when one of these tools is not
on the image's PATH, and the pytest check runs with the same packages on its PATH.
"""

import json
from pathlib import Path

from wcu_ai.documents.process import REQUIRED_TOOLS

ROOT = Path(__file__).resolve().parents[2]


def test_every_tool_the_code_needs_is_in_the_runner_image() -> None:
    tools = json.loads((ROOT / "nix" / "runner-tools.json").read_text())["tools"]
    missing = sorted(set(REQUIRED_TOOLS) - set(tools))
    assert not missing, f"add {missing} to nix/runner-tools.json and their packages to nix/images.nix"
    # OCR (pdftoppm renders a page, tesseract reads it) is in the image before the code asks.
    assert {"pdftoppm", "tesseract"} <= set(tools)
    assert len(tools) == len(set(tools))
