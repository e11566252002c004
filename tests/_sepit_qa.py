"""A `tiny` SEPIT model taught one answer, saved to a folder: what the API, server and web tests load.

A random tiny model answers only whitespace, so an empty answer would pass unnoticed. Here the tiny model is fitted
for a few seconds on one conversation (question → ``ANSWER``) and one yes/no pair, so the tests can check that an
answer really comes out of the whole path (protein tokens, chat template, generate, decoding) and that P(yes)
moves.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRAMBIN = REPO / "tests" / "data" / "structures" / "1crn.cif.gz"  # 46 residues, chain A (see NOTICE there)
SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQ"
QUESTION = "What is the function of this protein?"
ANSWER = "It binds ATP."
YES_QUESTION = "Is this protein an enzyme?"


def make_tiny_model(out: Path, steps: int = 200, seed: int = 0) -> Path:
    """Build ``tiny()``, fit it on the conversations above until greedy decoding gives them back, save to ``out``."""
    import torch

    from sepit.api import ProteinQA
    from sepit.model import build_model, save_model, tiny

    torch.manual_seed(seed)
    model = build_model(tiny(), seed=seed)
    convs = [
        [{"role": "user", "content": f"<protein>\n{QUESTION}"}, {"role": "assistant", "content": ANSWER}],
        [{"role": "user", "content": f"<protein>\n{YES_QUESTION}"}, {"role": "assistant", "content": "yes"}],
    ]
    batch = model.processor(convs, [[SEQUENCE], [SEQUENCE]])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    qa = ProteinQA(model)
    for step in range(steps):
        model.train()
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.4 and step % 5 == 0:
            model.eval()
            if (qa.ask(SEQUENCE, QUESTION, max_new_tokens=24) == ANSWER
                    and qa.yes_no(SEQUENCE, YES_QUESTION) > 0.95):
                break
    else:
        raise AssertionError(f"the tiny model did not learn its answer in {steps} steps (loss {loss.item():.3f})")
    model.eval()
    save_model(model, out)
    return out


class Endless:
    """Mixin for a ``sepit.api.ProteinQA`` whose generation never ends by itself: a token every 10 ms until
    ``should_stop()``, then GenerationStopped. ``on_start()`` / ``on_end()`` hook the bookkeeping of subclasses."""

    def on_start(self) -> None:
        pass

    def on_end(self) -> None:
        pass

    def generate(self, proteins, conversations, *, on_text=None, should_stop=None, **kw):
        import time

        from sepit.errors import GenerationStopped

        self.on_start()
        try:
            while not (should_stop and should_stop()):
                if on_text:
                    on_text(0, "x")
                time.sleep(0.01)
            raise GenerationStopped("stopped")
        finally:
            self.on_end()
