"""The `vislang` command line with the tiny test model in place of the default one.

    python tests/ddp_worker.py TOKENIZER_DIR train RECIPE --out RUN --nproc 2

Everything else is the real path: cli.main, `--nproc 2` relaunching this same file through torchrun's
launcher, each launched process training as one rank. Every rank also writes the rows it built
(answer, number of images), a list a micro-batch, to RUN/rows-rank<RANK>.json: the tests check how
the batches were split.
"""

import json
import os
import sys
from pathlib import Path

from test_train import tiny_model
from vislang.cli import main
from vislang.models.default import DefaultVLM
from vislang.train import cli, distributed, loop

tokenizer, argv = Path(sys.argv[1]), sys.argv[2:]
cli.PROGRAM = [__file__, str(tokenizer)]  # the launched processes run this file, not `-m vislang`
loop.build_model = lambda recipe: tiny_model(tokenizer)

seen: list[list] = []  # [answer, images] per row, a list per micro-batch
training_batch = DefaultVLM.training_batch


def recording_batch(self, examples):
    images = [sum(part["type"] == "image" for part in messages[0]["content"]) for messages, _ in examples]
    seen.append([[answer, n] for (_, answer), n in zip(examples, images)])
    return training_batch(self, examples)


DefaultVLM.training_batch = recording_batch
code = main(argv)
if distributed.launched() and code == 0:
    out = Path(argv[argv.index("--out") + 1])
    (out / f"rows-rank{os.environ['RANK']}.json").write_text(json.dumps(seen))
raise SystemExit(code)
