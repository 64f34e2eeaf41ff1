"""Generation: providers, the job-queue worker, the library auto-save step, the workspace-temp sweeper.

Depends on ``storage`` only; nothing here imports strawberry or the HTTP app.
"""
