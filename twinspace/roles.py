"""Participant roles: part of the protocol (tokens, agreements and policies name them)."""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    provider = "provider"
    consumer = "consumer"
    auditor = "auditor"
    operator = "operator"
