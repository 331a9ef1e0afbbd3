"""Published process reward models as judges (``cola_models.prm``): each format saved as a tiny
random model in a tmp dir (no published PRM can be downloaded here), loaded by its config or by
a flag, read at exactly its marks, cut at the search's own step boundaries, charged, and refused
in one line when it cannot be read."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cola_models.errors import ColaError
from cola_models.prm import ProcessRewardModel, aggregate_steps, judge_settings, load_judge
from cola_models.tokenizer import byte_tokenizer

QUESTION = "Tom has 4 bags of 11 apples and 21 more. How many?"
TEXT = "4*11=44. 21+44=65. \\boxed{65}"
STEPS = ["4*11=44.", "21+44=65.", "\\boxed{65}"]


def _tok(*extra):
    tok = byte_tokenizer()
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    return tok


def _llama(tok, **more):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **more,
    )  # fmt: skip


def _save(model, tok, d, marker=None):
    torch.manual_seed(0)
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    if marker is not None:
        (d / "latent_search.json").write_text(json.dumps(marker))
    return d


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import (
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        LlamaForTokenClassification,
        Qwen2Config,
        Qwen2Model,
    )

    root = tmp_path_factory.mktemp("prm")
    tok = _tok()
    torch.manual_seed(0)
    out = {
        "token": _save(LlamaForTokenClassification(_llama(tok, num_labels=2)), tok, root / "tok"),
        "tag": _save(LlamaForCausalLM(_llama(tok)), tok, root / "tag", {"step_tag": " ки"}),
        "lm": _save(LlamaForCausalLM(_llama(tok)), tok, root / "lm"),
        "outcome": _save(LlamaForSequenceClassification(_llama(tok, num_labels=1)), tok, root / "rm"),
    }  # fmt: skip
    # Qwen2.5-Math-PRM's layout: a Qwen2Model under "model.", score.0 Linear(H, H), ReLU,
    # score.2 Linear(H, 2), and remote code that must never run.
    qtok = _tok("<extra_0>", "<|im_start|>", "<|im_end|>")
    cfg = Qwen2Config(
        vocab_size=len(qtok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=qtok.pad_token_id,
    )  # fmt: skip
    q = root / "qwen"
    q.mkdir()
    state = {f"model.{k}": v.contiguous() for k, v in Qwen2Model(cfg).state_dict().items()}
    state |= {
        "score.0.weight": torch.randn(32, 32) * 0.3, "score.0.bias": torch.randn(32) * 0.3,
        "score.2.weight": torch.randn(2, 32) * 0.3, "score.2.bias": torch.randn(2) * 0.3,
    }  # fmt: skip
    save_file(state, str(q / "model.safetensors"), metadata={"format": "pt"})
    config = cfg.to_dict() | {
        "architectures": ["Qwen2ForProcessRewardModel"],
        "auto_map": {
            "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
            "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
        },
    }
    (q / "config.json").write_text(json.dumps(config))
    for f in ("modeling_qwen2_rm.py", "configuration_qwen2_rm.py"):
        (q / f).write_text("raise RuntimeError('remote code ran')\n")
    qtok.save_pretrained(q)
    out["qwen"] = q
    return out


# ------------------------------------------------------------------------------ formats


def test_each_format_loads_by_its_config(dirs):
    from cola_models.reward_model import RewardModel

    for fmt in ("token", "qwen", "tag"):
        prm = load_judge(dirs[fmt], device="cpu")
        assert isinstance(prm, ProcessRewardModel) and prm.settings.format == fmt
    assert load_judge(dirs["qwen"], device="cpu").settings.mark == "<extra_0>"
    assert load_judge(dirs["token"], device="cpu").settings.mark == "\n\n"
    assert isinstance(load_judge(dirs["outcome"], device="cpu"), RewardModel)  # as before


def test_a_flag_chooses_the_format_and_overrides_the_marker(dirs):
    prm = load_judge(dirs["lm"], {"format": "tag"}, device="cpu")  # no marker: default tag
    assert prm.settings.format == "tag" and prm.settings.mark == " ки"
    prm = load_judge(dirs["tag"], {"step_tag": " <t>", "aggregate": "prod"}, device="cpu")
    assert prm.settings.mark == " <t>" and prm.settings.aggregate == "prod"
    assert judge_settings(dirs["token"], {"format": "auto"})[0] == "token"
    assert judge_settings(dirs["outcome"], {"format": "outcome"}) == ("outcome", None)


def _manual_token(prm, question, steps):
    """TRL's layout by hand: BOS, prompt, then each step's ids and the separator's."""
    tok = prm.tokenizer
    ids, at = [tok.bos_token_id, *tok.encode(question, add_special_tokens=False)], []
    for st in steps:
        ids += tok.encode(st, add_special_tokens=False) + tok.encode(
            "\n\n", add_special_tokens=False
        )
        at.append(len(ids) - 1)
    logits = prm.model(input_ids=torch.tensor([ids])).logits[0]  # [T, 2]
    return torch.softmax(logits, -1)[at, 1].tolist(), len(ids)


@torch.no_grad()
def test_a_token_prm_reads_p_label_1_at_each_separator(dirs):
    prm = load_judge(dirs["token"], device="cpu")
    want, n = _manual_token(prm, QUESTION, STEPS)
    (got,), costs = prm.score_steps([(QUESTION, STEPS)])
    assert got == pytest.approx(want, abs=1e-5) and costs == [n]
    # Batched with a shorter row (right padding) gives the same scores.
    (a, b), _ = prm.score_steps([(QUESTION, STEPS[:1]), (QUESTION, STEPS)])
    assert a == pytest.approx(want[:1], abs=1e-5) and b == pytest.approx(want, abs=1e-5)


@torch.no_grad()
def test_a_qwen_prm_runs_its_head_rebuilt_from_the_weights_at_each_extra_0(dirs):
    from safetensors.torch import load_file

    prm = load_judge(dirs["qwen"], device="cpu")
    w = load_file(str(dirs["qwen"] / "model.safetensors"))
    tok = prm.tokenizer
    text = prm.settings.prompt_template.replace("{question}", QUESTION)
    text += "".join(st + "<extra_0>" for st in STEPS)
    ids = torch.tensor([tok(text)["input_ids"]])
    at = (ids[0] == tok.convert_tokens_to_ids("<extra_0>")).nonzero()[:, 0]
    assert len(at) == len(STEPS)
    h = prm.model(input_ids=ids).last_hidden_state[0, at]  # [S, H]
    h = torch.relu(h @ w["score.0.weight"].T + w["score.0.bias"])
    want = torch.softmax(h @ w["score.2.weight"].T + w["score.2.bias"], -1)[:, 1]
    (got,), costs = prm.score_steps([(QUESTION, STEPS)])
    assert got == pytest.approx(want.tolist(), abs=1e-5) and costs == [ids.shape[1]]
    assert type(prm.model).__module__.startswith("transformers.")  # the stock Qwen2Model


@torch.no_grad()
def test_a_tag_prm_reads_good_over_good_plus_bad_at_each_tag(dirs):
    prm = load_judge(dirs["tag"], device="cpu")
    tok = prm.tokenizer
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    text = QUESTION + " " + "\n".join(st + " ки" for st in STEPS)
    ids = tok(text)["input_ids"]
    # Each tag's last token, found by tokenizing the text up to it (" ки" is 5 byte tokens).
    at, upto = [], QUESTION + " "
    for i, st in enumerate(STEPS):
        upto += ("\n" if i else "") + st + " ки"
        at.append(len(tok(upto)["input_ids"]) - 1)
    logits = prm.model(input_ids=torch.tensor([ids])).logits[0, at]  # [S, V]
    want = torch.softmax(logits[:, [plus, minus]], -1)[:, 0]
    (got,), costs = prm.score_steps([(QUESTION, STEPS)])
    assert got == pytest.approx(want.tolist(), abs=1e-5) and costs == [len(ids)]


# ------------------------------------------------------------------- as a search's judge


class _Meter:
    def __init__(self, starts):
        self.starts = starts
        self.charged: list[list[int]] = []

    def charge(self, costs):
        self.charged.append(list(costs))


def _seqs(texts):
    """Rows posed as a search holds them: the searched model's prompt ids, then the text's."""
    tok = _tok()
    prompt = tok.encode(QUESTION, add_special_tokens=False)
    rows = [prompt + tok.encode(t, add_special_tokens=False) for t in texts]
    return rows, [len(prompt)] * len(texts), (lambda ids: tok.decode(ids, skip_special_tokens=True))


def test_the_text_is_cut_where_the_search_s_steps_end(dirs, monkeypatch):
    from latent_search.backends.reward import prm_scorer, prm_value_fn
    from latent_search.beam import BeamConfig
    from latent_search.mcts import MCTSConfig
    from latent_search.steps import STEP_STOP, split_steps

    assert BeamConfig().step_stop == MCTSConfig().step_stop == STEP_STOP  # one definition
    assert split_steps(TEXT) == ["4*11=44.", " 21+44=65.", " \\boxed{65}"]
    assert "".join(split_steps("a.\nb")) == "a.\nb" and split_steps("") == []
    prm = load_judge(dirs["token"], device="cpu")
    seen = []
    real = prm.score_steps
    monkeypatch.setattr(prm, "score_steps", lambda items: seen.append(items) or real(items))
    rows, starts, decode = _seqs([TEXT, "4*11=44. 21+4"])
    prm_scorer(prm, decode)(rows[:1], _Meter(starts[:1]))
    assert seen[-1] == [(QUESTION, STEPS)]
    prm_value_fn(prm, decode)(rows[1:], [False], _Meter(starts[1:]))  # between steps
    assert seen[-1] == [(QUESTION, ["4*11=44.", "21+4"])]  # complete steps + the partial one


def test_the_prm_reads_the_question_the_searched_prompt_poses():
    from eval.prompts import PROMPT_TEMPLATE, fill, question_of

    assert question_of(PROMPT_TEMPLATE, fill(PROMPT_TEMPLATE, QUESTION)) == QUESTION
    assert question_of(PROMPT_TEMPLATE, "2+2=") == "2+2="  # not that template: as it is


def test_step_scores_are_aggregated_min_last_or_prod(dirs):
    from latent_search.backends.reward import prm_scorer

    assert aggregate_steps([0.9, 0.2, 0.5], "min") == 0.2
    assert aggregate_steps([0.9, 0.2, 0.5], "last") == 0.5
    assert aggregate_steps([0.9, 0.2, 0.5], "prod") == pytest.approx(0.09)
    rows, starts, decode = _seqs([TEXT])
    (steps,), _ = load_judge(dirs["token"], device="cpu").score_steps([(QUESTION, STEPS)])
    for how in ("min", "last", "prod"):
        prm = load_judge(dirs["token"], {"aggregate": how}, device="cpu")
        (got,) = prm_scorer(prm, decode)(rows, _Meter(starts))
        assert got == pytest.approx(aggregate_steps(steps, how), abs=1e-6)


def test_every_token_the_prm_reads_is_charged_to_its_row(dirs):
    from latent_search.backends.reward import prm_value_fn

    prm = load_judge(dirs["qwen"], device="cpu")
    rows, starts, decode = _seqs([TEXT, "4*11=44.", "  "])
    meter = _Meter(starts)
    values = prm_value_fn(prm, decode)(rows, [True, False, False], meter)
    want = [len(prm.row(QUESTION, STEPS)[0]), len(prm.row(QUESTION, STEPS[:1])[0]), 0]
    assert meter.charged == [want]
    assert values[2] == 1.0  # nothing written yet: nothing wrong yet, and nothing run


# ------------------------------------------------------------------------------ refusals


def test_what_cannot_be_read_is_a_one_line_error(dirs, tmp_path):
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForTokenClassification"]})
    )
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    cases = [
        (tmp_path / "missing", {}, "is not a directory"),
        (tmp_path / "pickled", {}, "no safetensors weights"),
        (dirs["lm"], {}, "not a sequence-classification reward model"),  # no tag: not a PRM
        (dirs["outcome"], {"format": "tag"}, "--verifier-format tag needs a *ForCausalLM"),
        (dirs["lm"], {"format": "token"}, "needs a *ForTokenClassification"),
        (dirs["outcome"], {"step_separator": "\n"}, "for process reward models"),
        (dirs["token"], {"step_tag": " ки"}, "not read by a token PRM"),
        (dirs["token"], {"good_token": "y"}, "tag PRMs only"),
        (dirs["token"], {"aggregate": "mean"}, "must be one of min, last, prod"),
        (dirs["token"], {"format": "pairwise"}, "must be one of auto"),
        (dirs["token"], {"step_separator": ""}, "must not be empty"),
        (dirs["tag"], {"good_token": "++"}, "is 2 tokens of its tokenizer"),
        (dirs["tag"], {"good_token": "+", "bad_token": "+"}, "the same token"),
        (dirs["token"], {"temperature": 1}, "unknown reward-model option"),
    ]
    for path, options, message in cases:
        with pytest.raises(ColaError) as err:
            load_judge(path, options, device="cpu")
        assert message in str(err.value) and "\n" not in str(err.value), (options, err.value)


# --------------------------------------------------------------------------- end to end


def test_a_token_prm_judges_a_search_of_the_bundled_model_through_the_cli(dirs):
    from latent_search_cli.app import app

    runner = CliRunner()
    question = "Sara has 8 coins. She gets 5 more. How many coins does she have?"
    base = ["solve", question, "--model", "tiny-arith", "--max-new-tokens", "24", "--json"]
    judge = ["--scorer", "verifier", "--verifier", str(dirs["token"])]
    res = runner.invoke(app, [*base, "--search", "best-of-n", "--n", "3", *judge])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    scores = out["stats"]["scores"]
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)
    greedy = json.loads(runner.invoke(app, [*base, "--search", "greedy"]).stdout)
    assert out["tokens"] > 3 * greedy["tokens"]  # the PRM's own tokens are charged too
    beam = ["--search", "beam", "--beam-width", "2", "--expand-k", "2", "--prm-aggregate", "last"]
    res = runner.invoke(app, [*base, *beam, *judge, "--step-separator", "\\n"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["config"]["judge"] == {
        "aggregate": "last",
        "step_separator": "\n",
    }
    bad = runner.invoke(app, [*base, "--search", "beam", *judge, "--step-tag", " ки"])
    assert bad.exit_code == 2 and "not read by a token PRM" in bad.output
    orphan = runner.invoke(app, [*base, "--search", "beam", "--prm-aggregate", "min"])
    assert orphan.exit_code == 2 and "read a --verifier DIR" in orphan.output


def test_an_eval_run_of_a_prm_records_its_settings_and_old_runs_keep_their_identity(dirs, tmp_path):
    from eval.rundir import differences
    from eval.runner import EvalConfig
    from latent_search_cli.app import app

    # No judge flags: nothing recorded, so a run made before the flags existed still resumes.
    assert differences({"task": "arith"}, {"task": "arith", "judge": EvalConfig().judge}) == []
    args = ["eval", "--out", str(tmp_path / "run"), "--limit", "2", "--search", "best-of-n"]
    args += ["--n", "2", "--max-new-tokens", "16", "--scorer", "verifier"]
    args += ["--verifier", str(dirs["tag"]), "--prm-aggregate", "prod", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    held = json.loads((tmp_path / "run" / "config.json").read_text())
    assert held["judge"] == {"aggregate": "prod"} and json.loads(res.stdout)["n"] == 2
