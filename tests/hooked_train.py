"""``revsnn`` (``python tests/hooked_train.py train ...``) with two test hooks patched in, so a
test in another process can kill a run at a chosen point (tests/training/test_reliability.py). The
library carries no hook; they are set by environment variables of that process:

* ``REVSNN_TEST_PAUSE_IN_SAVE=STEP``: orbax's atomic-rename commit of checkpoint ``STEP`` waits
  (an hour) after the checkpoint's files are written and before their rename, printing
  ``REVSNN_TEST paused in save of step STEP``;
* ``REVSNN_TEST_STEP_DELAY=SECONDS``: every training step sleeps that long after its update.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any


def pause_before_commit(step: int) -> None:
    """Hold orbax's commit (rename) of checkpoint ``step`` once its files are written."""
    from orbax.checkpoint.path import atomicity

    cls = atomicity.AtomicRenameTemporaryPath
    finalize = cls.finalize

    async def paused(self: Any, *args: Any, **kwargs: Any) -> None:
        if self.get_final().name == str(step):
            print(f"REVSNN_TEST paused in save of step {step} ({self.get().name})", flush=True)
            await asyncio.sleep(3600)
        await finalize(self, *args, **kwargs)

    cls.finalize = paused


def slow_steps(seconds: float) -> None:
    """Sleep ``seconds`` after every training step."""
    from revsnn_jax.training.state import Trainer

    step = Trainer.train_step

    def slow(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        metrics = step(self, *args, **kwargs)
        time.sleep(seconds)
        return metrics

    Trainer.train_step = slow


def main() -> int:
    if os.environ.get("REVSNN_TEST_PAUSE_IN_SAVE"):
        pause_before_commit(int(os.environ["REVSNN_TEST_PAUSE_IN_SAVE"]))
    if float(os.environ.get("REVSNN_TEST_STEP_DELAY") or 0.0):
        slow_steps(float(os.environ["REVSNN_TEST_STEP_DELAY"]))
    from revsnn_jax.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
