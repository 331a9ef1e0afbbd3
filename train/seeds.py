"""Named random streams of a training run, all derived from its one seed.

Every stochastic part of a stage draws from its own stream, so adding a draw to one part never
shifts another's, and a batch is a pure function of (seed, stream, step): resumed runs see
exactly the data they would have seen. The offsets are fixed for good; changing one changes
every model trained from that seed.
"""

from __future__ import annotations

import torch

STREAMS = {
    "batches": 0,  # which examples form each supervised batch
    "gumbel": 1,  # stage 1's Gumbel-softmax noise
    "held_out": 3,  # RL's fixed held-out problems (a seed of the task generator)
    "rollouts": 7,  # RL: prompts of each step and their sampled actions
    "q_samples": 11,  # the Q stage's best-of-N samples
    "q_batches": 13,  # the Q stage's minibatches
    "verifier_samples": 17,  # the verifier's policy samples
    "verifier_batches": 19,  # the verifier's minibatches of problems
    "verifier_heldout": 23,  # the policy's samples of the verifier's held-out problems
    "verifier_synthetic": 29,  # which numbers the verifier's synthetic wrong solutions change
    "q_heldout": 31,  # the policy's samples of the Q stage's held-out problems
    "q_init": 37,  # the initial weights of a fresh Q head
}


def stream_seed(seed: int, stream: str) -> int:
    if stream not in STREAMS:
        raise KeyError(f"no random stream {stream!r}; known: {', '.join(STREAMS)}")
    return seed + STREAMS[stream]


def generator(seed: int, stream: str, step: int = 0) -> torch.Generator:
    """The generator of ``stream`` at ``step`` of a run seeded with ``seed``: a host stream, so
    that which examples and problems a step draws is the same on every device."""
    # host: the same data on every device
    return torch.Generator().manual_seed(stream_seed(seed, stream) * 1_000_003 + step)


def on_device(g: torch.Generator, device: torch.device) -> torch.Generator:
    """A stream for sampling on ``device`` that follows from host stream ``g``: ``g`` itself on
    the CPU (so CPU runs draw exactly what they always drew), else a ``device`` generator seeded
    by ``g``'s next draw (a CPU generator cannot drive sampling of CUDA tensors)."""
    if device.type == "cpu":
        return g
    seed = int(torch.randint(0, 2**62, (1,), generator=g))  # host: one draw of the host stream
    return torch.Generator(device=device).manual_seed(seed)
