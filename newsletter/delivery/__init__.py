"""Delivery: getting an issue, or a one-off email, to its recipients.

``sending`` starts a send (render once, freeze the edition, snapshot the recipients), steers it
and reads its log; ``audience`` says who a send mails and whether it may start; ``send_queue``
is the one place work is handed to the Celery workers (by task name: the domain never imports
the worker); ``batch_loop`` delivers one batch through the narrow interfaces of ``ports`` (a
recipient store, a transport raising temporary or permanent errors, a message source), which
``recipient_store`` (SQL claims and bulk outcomes) and ``editions`` (each send compiled once,
each recipient's copy) implement; ``stops`` says why a batch stopped, as a typed value;
``send_control`` is what a send's workers share in Redis (sent-journal, rate limit, error
counts); ``send_health`` says why a send is not moving; ``scheduling`` runs scheduled sends and
weekly slots; ``subject_variants`` (the plan, the test share's variants, the rest held back),
``subject_tests`` (the decision, taken once) and ``subject_test_status`` (its sentence, in plain
SQL) are a send's subject test; ``test_copies``, ``notices``, ``preferences_mail`` and ``confirmation_mailing``
send the other emails; ``automation_editions`` and ``automation_mailing`` deliver a list's
welcome, sequence steps and goodbye through the same batch loop. It may import mail, content, subscribers, access, store and the
foundation; never feedback (its sibling), the dev tools, the runtime or an edge.
"""
