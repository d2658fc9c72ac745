"""The browser console served by the broker at ``/console`` (server-rendered pages, a little vanilla JS).

Participants log in with their own org key: the browser signs an RFC 7523 client assertion with
WebCrypto (the private key never leaves the browser) and the broker verifies it through the same
``identity.service.authenticate`` path as the API. See docs/threat-model.md (console).
"""
