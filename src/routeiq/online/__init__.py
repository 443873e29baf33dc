"""Online learning from the operator's traffic: a router corrected by feedback while serving."""

from routeiq.online.router import OnlineContext, OnlineRouter, OnlineSettings

__all__ = ["OnlineContext", "OnlineRouter", "OnlineSettings"]
