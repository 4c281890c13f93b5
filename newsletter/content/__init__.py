"""Content: what an issue says and how it looks.

``issues`` stores editions as drafts, checks and previews them; ``issue_files`` reads Markdown
with a YAML front matter; ``rendering`` renders an issue once (Jinja2 layout from
templates/email, Markdown body, CSS inlined) and personalises it per recipient for the cost of
a join; ``email_templates`` keeps the layouts admins store and says which one an issue gets,
``template_sandbox`` the Jinja2 sandbox they are rendered in; ``markdown_text`` makes the
text/plain part; ``archive`` is what readers see of the issues a list was sent; ``media`` is the
media library (``images``: checked, resized and stripped with Pillow; ``media_stores``: a local
folder or an S3 bucket, boto3). It may import subscribers (the list an issue is written for),
newsletter.access, newsletter.store and the foundation; never mail, delivery, feedback or an edge.
"""
