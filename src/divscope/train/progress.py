"""Training steps on the progress display: a transformers ``TrainerCallback`` that moves a ``divscope.ui`` bar
(plain lines off a terminal) on every optimizer step, so a study cell shows its steps, not a silent wait."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


def step_progress(description: str, on_step: Callable[[int, int], None] | None = None) -> Any:
    """A ``TrainerCallback`` showing ``description: step/max_steps`` (a resumed run starts at its step), and
    calling ``on_step(step, max_steps)`` as the steps advance."""
    from transformers import TrainerCallback

    from divscope.ui import progress_bar

    class StepProgress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._stack: contextlib.ExitStack | None = None
            self._advance: Any = None
            self._step = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:  # one bar per training, on the main process
                return
            self._stack = contextlib.ExitStack()
            self._advance = self._stack.enter_context(progress_bar(description, total=int(state.max_steps)))
            self._step = 0
            self._move(state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._move(state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._stack is not None:
                self._move(state)
                self._stack.close()
                self._stack = self._advance = None

        def _move(self, state: Any) -> None:
            if self._advance is not None and state.global_step > self._step:
                self._advance(state.global_step - self._step)
                self._step = state.global_step
                if on_step is not None:
                    on_step(int(state.global_step), int(state.max_steps))

    return StepProgress()
