"""The Hugging Face Hub: push, pull and load checkpoints, and the model cards (with their licenses) they carry."""
