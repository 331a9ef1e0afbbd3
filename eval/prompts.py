"""The one prompt system: named templates, the format the bundled models were trained in, and
how a question (or a training example) becomes model text.

A template is a string holding ``{question}``; it is filled with ``str.replace``, never
``str.format``, because templates hold ``\\boxed{}``.
"""

from __future__ import annotations

from cola_models.errors import ColaError

PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
"""The training format of the procedural tasks (the "qa" template): the completion is
``" " + solution``, so training and sampling agree. Saved in every trained model's config."""

PROMPT_TEMPLATES = {
    # The format the bundled models were trained with: a tiny model knows no other.
    "qa": PROMPT_TEMPLATE,
    # The paper's math instruction (reference eval script) inside the same Question/Answer frame.
    "boxed": "Question: {question}\nPlease reason step by step, and put your final answer within "
    "\\boxed{}.\nAnswer:",
    # GSM8K's own answer convention.
    "hashes": "Question: {question}\nSolve step by step, then write the final answer as "
    "'#### N'.\nAnswer:",
    # The paper's exact evaluation prompt (reference: "User: {}\nAssistant: " around the instruction).
    "cola": "User: Please reason step by step, and put your final answer within \\boxed{}.\n\n"
    "{question}\nAssistant: ",
}
DEFAULT_TEMPLATE = {"math500": "boxed", "gsm8k": "boxed", "arith": "qa", "countdown": "qa"}


def get_template(template: str | None, task: str | None = None) -> str:
    """A template string: a name from PROMPT_TEMPLATES, a literal holding ``{question}`` (e.g. a
    model's own ``generation_defaults["prompt_template"]``), or None for the task's default."""
    if template is None:
        template = DEFAULT_TEMPLATE.get(task or "", "qa")
    if template in PROMPT_TEMPLATES:
        return PROMPT_TEMPLATES[template]
    if "{question}" not in template:
        raise ColaError(
            f"prompt template {template!r} is neither one of {', '.join(PROMPT_TEMPLATES)} "
            "nor a string containing {question}"
        )
    return template


def fill(template: str, question: str) -> str:
    return template.replace("{question}", question)


def question_of(template: str, prompt: str) -> str:
    """The question a prompt posed with ``template`` holds (``fill`` undone), or the prompt as it
    is when it does not read as that template filled."""
    before, _, after = template.partition("{question}")
    if (
        len(prompt) >= len(before) + len(after)
        and prompt.startswith(before)
        and prompt.endswith(after)
    ):
        return prompt[len(before) : len(prompt) - len(after)].strip()
    return prompt


def format_prompt(question: str, template: str | None = None, *, task: str | None = None) -> str:
    """The prompt posing ``question``: by default in the training format."""
    return fill(get_template(template, task), question)


def format_example(problem) -> tuple[str, str]:
    """(prompt, completion) of a procedural problem for supervised training; the completion's
    leading space keeps BPE merges stable."""
    return format_prompt(problem.question), " " + problem.solution
