"""The metrics stage's settings: ``divscope metrics`` options and the spec's ``metrics:`` section (one source).

Every sampled metric (pairwise cosine, Self-BLEU, Vendi) draws its sample with ``seed``; a card records them all.
"""

from __future__ import annotations

from divscope.features.settings import DEFAULT_RUNTIME, EmbedRuntime
from divscope.models import DEFAULT_EMBEDDER, DEFAULT_TOKENIZER
from divscope.settings import Settings, setting


class MetricSettings(Settings):
    seed: int = setting(0, "Seed of every sampled metric.")
    pairs_sample: int = setting(1000, "Samples (at most) whose embeddings enter the mean pairwise cosine distance.",
                                ge=2)
    bleu_sample: int = setting(200, "Samples (at most) scored by Self-BLEU, each against the other sampled ones.",
                               ge=2)
    vendi_sample: int = setting(1000, "Samples (at most) in the Vendi kernel.", ge=1)
    tokenizer: str = setting(DEFAULT_TOKENIZER, "Target tokenizer for lengths and token entropy: smollm2 | llama2 | "
                             "llama3 | gpt2 | HF id | folder | file.gguf.")
    embedder: str = setting(DEFAULT_EMBEDDER, "Sentence embedder (cached workspace embeddings of this model are "
                            "reused).")
    runtime: EmbedRuntime = setting(DEFAULT_RUNTIME, "What runs the embedder: auto | torch | onnx | onnx-int8 (as "
                                    "`featurize --runtime`; the workspace's embeddings of this runtime are reused).")
