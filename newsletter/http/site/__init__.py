"""The subscriber site: the public pages and the providers' webhooks.

One module per resource holds its thin handlers: ``home``, ``subscribe`` (the public form, the
start of the double opt-in), ``confirm``, ``unsubscribe``, ``preferences``, ``archive``,
``webhooks`` (provider bounce and complaint events), ``media`` (the media library's images), ``docs`` (the API reference, served
locally), ``metrics`` and ``figures`` (Prometheus). It may import what newsletter.http shares
below it (context, errors, headers, ratelimit, uploads), the runtime, the domain, the store and
the foundation; never its siblings newsletter.http.api and newsletter.http.admin, nor
newsletter.http.app, which mounts it.
"""
