"""Access: who may use the admin API and the admin UI.

``accounts`` holds API tokens, admin users, their roles, password hashes and sessions; the
web edge checks requests with it, the CLI creates and revokes them. It is domain code at the
level of ``subscribers`` (records over the store): it may import newsletter.store and the
foundation (errors, config, logs, resources), never content, mail, delivery, feedback or an edge.
"""
