"""Light-weight code shared by the worker, the bot and the producers.

Nothing in this package imports TensorFlow or python-telegram-bot, so the bot and the producer
scripts install and start without them.
"""
