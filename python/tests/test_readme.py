# SPDX-License-Identifier: MIT
"""The Python quick starts of README.md and python/README.md run as written and give attention."""
import os
import re

import numpy as np
import pytest

from reference import assert_close, reference_attention

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("readme", ["README.md", os.path.join("python", "README.md")])
def test_first_python_block_runs(readme):
    path = os.path.join(REPO, readme)
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found (tests run outside the repository)")
    with open(path, encoding="utf-8") as text:
        blocks = re.findall(r"```python\n(.*?)```", text.read(), re.S)
    assert blocks, f"{readme} has no ```python block"
    names = {}
    exec(compile(blocks[0], readme, "exec"), names)  # noqa: S102 (our own README)
    q, k, v, out = names["q"], names["k"], names["v"], names["out"]
    assert out.shape == (2, 8, 128, 64) and out.dtype == np.float32
    assert_close(out, reference_attention(q, k, v, is_causal=True)[0], np.float32)
