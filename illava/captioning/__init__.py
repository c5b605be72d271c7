"""Captioning: prompt styles, and a folder job from plan to written captions.

``styles`` the built-in prompts; ``plan`` which files to caption and in what order; ``batch`` one batch
encoded and answered; ``memory`` how many items fit a batch; ``outputs`` where captions are written
(.txt, JSONL, Parquet); ``folder`` the local engine; ``ray_engine`` the same job on a Ray cluster.
"""
