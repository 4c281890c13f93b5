"""Feedback: what comes back after sending.

``inbound`` is the SMTP server for bounces, complaints and List-Unsubscribe mail;
``bounce_parsing`` tells a bounce, a complaint or an unsubscribe request from other mail and
proves it is about one of our deliveries; ``provider_events`` reads the events mail providers
post over HTTP (Amazon SES through SNS, a generic JSON form). What each event does to a
delivery, a subscription or a suppression is ``subscribers.bounces``. It may import mail,
content, subscribers, access, store and the foundation; never delivery (its sibling), the dev
tools, the runtime or an edge.
"""
