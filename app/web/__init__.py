"""Server-rendered pages (Jinja2) with cookie sessions and CSRF-protected forms."""
