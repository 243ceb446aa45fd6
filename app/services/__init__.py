"""Business logic. Services know nothing of HTTP; routes and tasks call them."""
