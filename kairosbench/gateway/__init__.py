"""The gateway: agent tracking, admission, placement and the control loop around a policy."""
