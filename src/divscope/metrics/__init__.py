"""Post-hoc metrics of a subset and its metric card (DESIGN.md, "Post-hoc metrics"; docs/metrics.md)."""

from divscope.metrics.card import Resources, card_for_path, find_subsets, metric_card, types_covered
from divscope.metrics.lexical import compression_ratio, distinct_n, entropy_bits, self_bleu, self_bleu_scores
from divscope.metrics.semantic import mean_cosine_distance, vendi_score

__all__ = ["Resources", "card_for_path", "compression_ratio", "distinct_n", "entropy_bits", "find_subsets",
           "mean_cosine_distance", "metric_card", "self_bleu", "self_bleu_scores", "types_covered", "vendi_score"]
