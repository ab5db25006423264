"""The TensorFlow model library: architectures, layers, batching, prediction and explanation.

Imported only by the worker service (``worker``), the offline tools (``worker.training``) and the
benchmarks; the bot and the producers never load it.
"""

#: A text of at most this many tokens is "short" (a chat message, a sentence: 5-40 words): the
#: length-gated blend and the calibration weigh it with coefficients fitted on sentences.
SHORT_TOKENS = 48
#: The served architecture: Kim CNN + review bag + sentence-crop bag, length-gated blend.
CROPS_ARCHITECTURE = "kim_ngram_crops"
