"""Participants (organisations), their keys, client-assertion authentication and broker tokens."""
