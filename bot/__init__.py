"""Telegram bot front-end (python-telegram-bot); a producer that never imports TensorFlow."""
