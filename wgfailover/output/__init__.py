"""Output: what the commands print, as human text and as JSON.

One module per command, turning an action's result into text; nothing here
changes state or asks anyone anything.
"""
