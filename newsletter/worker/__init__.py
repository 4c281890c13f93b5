"""The worker edge: the Celery app and its tasks, kept thin.

``app`` holds the Celery app (configured by newsletter.runtime) and each worker process's
state, one ``Runtime`` plus what only a worker keeps; ``tasks`` the tasks (ids in, one call to
the domain, nothing else) and the worker's housekeeping; ``scheduler_tasks`` the tick Celery
beat sends for scheduled sends; ``automation_tasks`` the automated emails' task and the tick's and
reconciler's parts of them. Each imports ``app``, never ``tasks``. The domain
queues tasks by name (newsletter.delivery.send_queue) and never imports this package. An edge:
it may import the runtime, the dev tools, the domain, the store and the foundation; never its
sibling newsletter.http, nor newsletter.cli, which starts it.
"""
