"""The distributed mode's Celery side: the app, thin tasks, enqueue helpers, the worker/beat CLI.

Nothing here imports torch at module level: a worker's parent process loads
these modules and must never initialise CUDA (its prefork children do, lazily,
after ``CUDA_VISIBLE_DEVICES`` is set for each).
"""
