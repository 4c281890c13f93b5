"""The worker edge: the Celery app and its tasks, kept thin.

``tasks`` holds the Celery app, the tasks (ids in, one call to the domain, nothing else) and
the worker's housekeeping; ``scheduler_tasks`` is the tick Celery beat sends for scheduled
sends. The domain queues tasks by name (newsletter.delivery.send_queue) and never imports this
package. An edge: it may import the runtime (newsletter.runtime), the domain, the store and the
foundation, never its siblings newsletter.cli and newsletter.http.
"""
