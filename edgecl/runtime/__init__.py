"""Device runtime plumbing: sources, loop, hot swap, labels, learner process, monitor, server."""
