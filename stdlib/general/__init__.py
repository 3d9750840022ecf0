"""General-ability data for real checkpoints (loaded by `gatelang.measure.general`).

Factual and arithmetic questions (`qa.yaml`), a multiple-choice general-knowledge set
(`mcq.txt`) and a held-out English text for perplexity (`heldout_english.txt`), all written for
gatelang, so no model can have seen them verbatim in pretraining.
"""
