"""The entry point ``accelerate launch`` runs in each training process: ``python -m divscope.train.worker JOB``.

Every process reads the job the launching process wrote (:mod:`divscope.train.launch`) and calls the same
:func:`divscope.train.sft.train`, which trains in place there (the Trainer joins the process group). Rank 0 then
hands its summary, or the one-line error every process raised, back through the job folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from divscope.errors import DivscopeError
from divscope.store.atomic import write_json
from divscope.train.launch import rank, read_job
from divscope.train.sft import train


def main(argv: list[str] | None = None) -> int:
    job_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    records, run, cfg, source = read_job(job_dir)
    import torch

    if torch.cuda.is_available() and cfg.device != "cpu":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is then this process's GPU
    try:
        result = train(records, run, cfg, source=source)
    except DivscopeError as e:
        if rank() == 0:
            write_json(job_dir / "error.json", {"error": str(e)})
        return 2
    if rank() == 0:
        write_json(job_dir / "summary.json", result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
