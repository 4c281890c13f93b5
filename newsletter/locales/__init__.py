"""Languages: what subscribers read, in theirs.

The catalogues of every text a subscriber reads (the public pages, the confirmation and
other notices, the email footer) live here, one folder per language in gettext's layout
(``<code>/LC_MESSAGES/messages.po`` and the compiled ``messages.mo``, made by
``make translations``). English is the source language: the templates and the code are
written in it, so it needs no catalogue.

* ``languages``: the languages shipped, a list's language checked, each one's translations;
* ``negotiation``: which shipped language a reader's ``Accept-Language`` asks for;
* ``translatable``: text written in English that can still be said in another language
  later (an error raised deep in the domain, shown on a page in the reader's language);
* ``formats``: dates, lifetimes ("7 days") and "A, B or C", said the way each language says them;
* ``templates``: a Jinja2 environment taught one language (``{% trans %}``, ``_()``, dates).

Foundation: it imports only newsletter.errors (and Babel, Jinja2).
"""
