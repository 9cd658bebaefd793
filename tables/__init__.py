"""Tables of the pipeline app: what the agents look things up in."""
