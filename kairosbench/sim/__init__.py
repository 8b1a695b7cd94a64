"""Virtual-time simulation of engines, agents and policies (no sockets, no sleeps)."""
