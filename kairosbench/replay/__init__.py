"""Replay: the sans-IO agent planner, the aiohttp load generator and ``kairosbench run``."""
