"""Terminal helpers around the nodes (keyboard control of the recorder)."""
